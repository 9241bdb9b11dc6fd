//! Where and how batches are exported: the endpoint, headers, timeout and schedule delay, from
//! the builder's [`OtlpOptions`] and the `OTEL_*` variables.

use std::time::Duration;

use crate::pipeline::{builder_headers, env, OtlpOptions, PipelineError, Protocol};

/// An export's timeout when neither the builder nor `OTEL_EXPORTER_OTLP_(LOGS_)TIMEOUT` sets
/// one (the OTLP exporter specification's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a record may wait for a batch to fill when `OTEL_BLRP_SCHEDULE_DELAY` does not say
/// (the SDK's batch log processor's default).
const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_millis(1000);

/// The timeout of one export: the builder's, else `OTEL_EXPORTER_OTLP_LOGS_TIMEOUT`, else
/// `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), else 10 s.
pub(super) fn timeout(o: &OtlpOptions) -> Duration {
    o.timeout
        .or_else(|| {
            [
                "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ]
            .iter()
            .find_map(|v| env(v)?.trim().parse().ok())
            .map(Duration::from_millis)
        })
        .unwrap_or(DEFAULT_TIMEOUT)
}

/// The value of `OTEL_BLRP_SCHEDULE_DELAY` (milliseconds, spaces trimmed), else 1 s. An
/// unreadable value is ignored, as the SDK ignores it.
pub(super) fn schedule_delay(v: Option<&str>) -> Duration {
    v.and_then(|v| v.trim().parse().ok())
        .map_or(DEFAULT_SCHEDULE_DELAY, Duration::from_millis)
}

/// The value of `OTEL_BLRP_MAX_EXPORT_BATCH_SIZE` (records, spaces trimmed), else
/// [`MAX_EXPORT_BATCH`](crate::MAX_EXPORT_BATCH). An unreadable value or 0 is ignored, as the
/// SDK ignores it.
pub(super) fn max_export_batch(v: Option<&str>) -> usize {
    v.and_then(|v| v.trim().parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(crate::MAX_EXPORT_BATCH)
}

/// `key=value` pairs separated by commas, values percent-decoded, as in
/// `OTEL_EXPORTER_OTLP_HEADERS`; pairs without a key or a value are skipped.
fn parse_headers(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let (k, v) = (k.trim(), v.trim());
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .map_or_else(|_| v.to_owned(), std::borrow::Cow::into_owned);
            (!k.is_empty() && !v.is_empty()).then(|| (k.to_owned(), v))
        })
        .collect()
}

/// The builder's headers, then those of `OTEL_EXPORTER_OTLP_LOGS_HEADERS` (else
/// `OTEL_EXPORTER_OTLP_HEADERS`), which replace the builder's of the same name, as the SDK's
/// exporters merge them. A bad name or value is an error from the builder and skipped from the
/// environment, as the SDK does.
pub(super) fn headers(o: &OtlpOptions) -> Result<http::HeaderMap, PipelineError> {
    let mut out = builder_headers(o)?;
    let from_env = env("OTEL_EXPORTER_OTLP_LOGS_HEADERS")
        .or_else(|| env("OTEL_EXPORTER_OTLP_HEADERS"))
        .map(|s| parse_headers(&s))
        .unwrap_or_default();
    for (k, v) in from_env {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            out.insert(name, value);
        }
    }
    Ok(out)
}

/// The endpoint logs go to: the builder's (plus `/v1/logs` over HTTP), else
/// `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` as it is, else `OTEL_EXPORTER_OTLP_ENDPOINT` (plus
/// `/v1/logs` over HTTP), else the local collector's default port. One without a scheme gets
/// `https://`, or `http://` when `OTEL_EXPORTER_OTLP_(LOGS_)INSECURE` is `true`, as the SDK's
/// exporters do.
pub(super) fn endpoint(o: &OtlpOptions, p: Protocol) -> String {
    let e = resolve_endpoint(o, p);
    if e.contains("://") {
        return e;
    }
    let insecure = [
        "OTEL_EXPORTER_OTLP_LOGS_INSECURE",
        "OTEL_EXPORTER_OTLP_INSECURE",
    ]
    .iter()
    .find_map(|v| env(v))
    .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    format!("{}://{e}", if insecure { "http" } else { "https" })
}

fn resolve_endpoint(o: &OtlpOptions, p: Protocol) -> String {
    if let Some(e) = o.signal_endpoint(p, "/v1/logs") {
        return e;
    }
    if let Some(e) = env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT") {
        return e.trim().to_owned();
    }
    let base = env("OTEL_EXPORTER_OTLP_ENDPOINT");
    match p {
        Protocol::Grpc => {
            base.map_or_else(|| "http://localhost:4317".into(), |b| b.trim().to_owned())
        }
        Protocol::HttpProtobuf => format!(
            "{}/v1/logs",
            base.as_deref()
                .map_or("http://localhost:4318", |b| b.trim().trim_end_matches('/'))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_as_the_otlp_variables_write_them() {
        assert_eq!(
            parse_headers(" api-key = a%20b%2Cc ,x=1,=skipped,novalue=, bare ,y=%zz"),
            vec![
                ("api-key".to_owned(), "a b,c".to_owned()),
                ("x".to_owned(), "1".to_owned()),
                ("y".to_owned(), "%zz".to_owned()),
            ]
        );
        let o = OtlpOptions {
            headers: vec![("Api-Key".into(), "from-builder".into())],
            ..OtlpOptions::default()
        };
        let h = headers(&o).unwrap();
        assert_eq!(h.get_all("api-key").iter().count(), 1);
        assert_eq!(h["api-key"], "from-builder");
        let bad = OtlpOptions {
            headers: vec![("bad name".into(), "v".into())],
            ..OtlpOptions::default()
        };
        assert!(headers(&bad).is_err());
        // The endpoint keeps its scheme; one without gets https:// (no INSECURE set here).
        let o = OtlpOptions {
            endpoint: Some("collector:4317".into()),
            ..OtlpOptions::default()
        };
        assert_eq!(endpoint(&o, Protocol::Grpc), "https://collector:4317");
    }

    #[test]
    fn the_endpoint_gets_the_logs_path_over_http_only() {
        let o = OtlpOptions {
            endpoint: Some("http://collector:4318/".into()),
            ..OtlpOptions::default()
        };
        assert_eq!(
            endpoint(&o, Protocol::HttpProtobuf),
            "http://collector:4318/v1/logs"
        );
        assert_eq!(endpoint(&o, Protocol::Grpc), "http://collector:4318");
        let o = OtlpOptions {
            timeout: Some(Duration::from_millis(1500)),
            ..OtlpOptions::default()
        };
        assert_eq!(timeout(&o), Duration::from_millis(1500));
    }

    #[test]
    fn the_schedule_delay_is_read_in_milliseconds() {
        assert_eq!(schedule_delay(None), Duration::from_secs(1));
        assert_eq!(schedule_delay(Some(" 250 ")), Duration::from_millis(250));
        assert_eq!(schedule_delay(Some("0")), Duration::ZERO);
        assert_eq!(schedule_delay(Some("2s")), Duration::from_secs(1));
        assert_eq!(schedule_delay(Some("-5")), Duration::from_secs(1));
    }

    #[test]
    fn the_batch_size_is_a_positive_count_of_records() {
        assert_eq!(max_export_batch(None), crate::MAX_EXPORT_BATCH);
        assert_eq!(max_export_batch(Some(" 512 ")), 512);
        assert_eq!(max_export_batch(Some("1")), 1);
        assert_eq!(max_export_batch(Some("0")), crate::MAX_EXPORT_BATCH);
        assert_eq!(max_export_batch(Some("-5")), crate::MAX_EXPORT_BATCH);
        assert_eq!(max_export_batch(Some("lots")), crate::MAX_EXPORT_BATCH);
    }
}
