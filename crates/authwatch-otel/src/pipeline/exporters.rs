//! The OTLP exporters and providers of each signal, over gRPC or HTTP/protobuf.

// Without a transport, only the Prometheus exposition is built; the OTLP helpers sit unused.
#![cfg_attr(
    not(any(feature = "grpc", feature = "http")),
    allow(dead_code, unused_imports)
)]

use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{
    Aggregation, Instrument, InstrumentKind, PeriodicReader, SdkMeterProvider, Stream,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

#[cfg(feature = "grpc")]
use super::options::env;
use super::{HistogramAggregation, OtlpOptions, PipelineError, Protocol, SCOPE};

#[cfg(any(feature = "grpc", feature = "http"))]
pub(super) fn otlp_meter_provider(
    o: &OtlpOptions,
    p: Protocol,
    resource: &Resource,
) -> Result<SdkMeterProvider, PipelineError> {
    let mut reader = PeriodicReader::builder(metric_exporter(o, p)?);
    if let Some(i) = o.interval {
        reader = reader.with_interval(i);
    }
    let mut provider = SdkMeterProvider::builder()
        .with_resource(resource.clone())
        .with_reader(reader.build());
    if o.resolved_histogram() == HistogramAggregation::Exponential {
        provider = provider.with_view(exponential_view);
    }
    Ok(provider.build())
}

#[cfg(any(feature = "grpc", feature = "http"))]
pub(super) fn otlp_logger_provider(
    o: &OtlpOptions,
    p: Protocol,
    resource: &Resource,
) -> Result<SdkLoggerProvider, PipelineError> {
    Ok(SdkLoggerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(log_exporter(o, p)?)
        .build())
}

#[cfg(any(feature = "grpc", feature = "http"))]
pub(super) fn otlp_tracer_provider(
    o: &OtlpOptions,
    p: Protocol,
    resource: &Resource,
) -> Result<SdkTracerProvider, PipelineError> {
    Ok(SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(span_exporter(o, p)?)
        .build())
}

#[cfg(not(any(feature = "grpc", feature = "http")))]
pub(super) fn otlp_tracer_provider(
    _: &OtlpOptions,
    p: Protocol,
    _: &Resource,
) -> Result<SdkTracerProvider, PipelineError> {
    Err(not_built_in(p))
}

#[cfg(not(any(feature = "grpc", feature = "http")))]
pub(super) fn otlp_meter_provider(
    _: &OtlpOptions,
    p: Protocol,
    _: &Resource,
) -> Result<SdkMeterProvider, PipelineError> {
    Err(not_built_in(p))
}

#[cfg(not(any(feature = "grpc", feature = "http")))]
pub(super) fn otlp_logger_provider(
    _: &OtlpOptions,
    p: Protocol,
    _: &Resource,
) -> Result<SdkLoggerProvider, PipelineError> {
    Err(not_built_in(p))
}

fn exponential_view(i: &Instrument) -> Option<Stream> {
    (i.kind() == InstrumentKind::Histogram && i.scope().name() == SCOPE)
        .then(|| {
            Stream::builder()
                .with_aggregation(Aggregation::Base2ExponentialHistogram {
                    max_size: 160,
                    max_scale: 20,
                    record_min_max: true,
                })
                .build()
                .ok()
        })
        .flatten()
}

#[cfg(any(feature = "grpc", feature = "http"))]
/// The endpoint and timeout of one signal's exporter, when the builder set them (otherwise
/// the exporter reads its `OTEL_*` variables itself).
fn export_config<B: opentelemetry_otlp::WithExportConfig>(
    mut b: B,
    o: &OtlpOptions,
    p: Protocol,
    http_path: &str,
) -> B {
    if let Some(e) = o.signal_endpoint(p, http_path) {
        b = b.with_endpoint(e);
    }
    if let Some(t) = o.timeout {
        b = b.with_timeout(t);
    }
    b
}

/// HTTP/protobuf with the builder's headers.
#[cfg(feature = "http")]
fn http_config<B: opentelemetry_otlp::WithExportConfig + opentelemetry_otlp::WithHttpConfig>(
    b: B,
    o: &OtlpOptions,
    path: &str,
) -> B {
    let mut b = export_config(b, o, Protocol::HttpProtobuf, path)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    if !o.headers.is_empty() {
        b = b.with_headers(
            o.headers
                .iter()
                .cloned()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    b
}

fn not_built_in(p: Protocol) -> PipelineError {
    PipelineError::Config(format!(
        "OTLP protocol {p:?} is not built in (enable the authwatch-otel feature)"
    ))
}

#[cfg(any(feature = "grpc", feature = "http"))]
#[allow(unused_variables, unreachable_code)]
fn metric_exporter(
    o: &OtlpOptions,
    p: Protocol,
) -> Result<opentelemetry_otlp::MetricExporter, PipelineError> {
    use opentelemetry_otlp::MetricExporter;
    let b = MetricExporter::builder();
    let b = match o.temporality {
        Some(t) => b.with_temporality(t),
        None => b,
    };
    match p {
        #[cfg(feature = "grpc")]
        Protocol::Grpc => {
            let b = export_config(b.with_tonic(), o, p, "");
            Ok(grpc_config(b, o, "METRICS")?.build()?)
        }
        #[cfg(feature = "http")]
        Protocol::HttpProtobuf => Ok(http_config(b.with_http(), o, "/v1/metrics").build()?),
        #[allow(unreachable_patterns)]
        other => Err(not_built_in(other)),
    }
}

#[cfg(any(feature = "grpc", feature = "http"))]
#[allow(unused_variables, unreachable_code)]
pub(crate) fn log_exporter(
    o: &OtlpOptions,
    p: Protocol,
) -> Result<opentelemetry_otlp::LogExporter, PipelineError> {
    use opentelemetry_otlp::LogExporter;
    match p {
        #[cfg(feature = "grpc")]
        Protocol::Grpc => {
            let b = export_config(LogExporter::builder().with_tonic(), o, p, "");
            Ok(grpc_config(b, o, "LOGS")?.build()?)
        }
        #[cfg(feature = "http")]
        Protocol::HttpProtobuf => {
            Ok(http_config(LogExporter::builder().with_http(), o, "/v1/logs").build()?)
        }
        #[allow(unreachable_patterns)]
        other => Err(not_built_in(other)),
    }
}

#[cfg(any(feature = "grpc", feature = "http"))]
#[allow(unused_variables, unreachable_code)]
fn span_exporter(
    o: &OtlpOptions,
    p: Protocol,
) -> Result<opentelemetry_otlp::SpanExporter, PipelineError> {
    use opentelemetry_otlp::SpanExporter;
    match p {
        #[cfg(feature = "grpc")]
        Protocol::Grpc => {
            let b = export_config(SpanExporter::builder().with_tonic(), o, p, "");
            Ok(grpc_config(b, o, "TRACES")?.build()?)
        }
        #[cfg(feature = "http")]
        Protocol::HttpProtobuf => {
            Ok(http_config(SpanExporter::builder().with_http(), o, "/v1/traces").build()?)
        }
        #[allow(unreachable_patterns)]
        other => Err(not_built_in(other)),
    }
}

/// Headers as gRPC metadata, and TLS with the webpki roots (plus the signal's or the generic
/// `OTEL_EXPORTER_OTLP_CERTIFICATE` when set) unless the signal's endpoint is `http://`
/// (schemeless endpoints are `https://` to the exporter).
#[cfg(feature = "grpc")]
fn grpc_config<B: opentelemetry_otlp::WithTonicConfig>(
    mut b: B,
    o: &OtlpOptions,
    signal: &str,
) -> Result<B, PipelineError> {
    if let Some(m) = grpc_metadata(o)? {
        b = b.with_metadata(m);
    }
    if let Some(tls) = grpc_tls(o, signal)? {
        b = b.with_tls_config(tls);
    }
    Ok(b)
}

/// The builder's headers as gRPC metadata, `None` when it set none.
#[cfg(feature = "grpc")]
fn grpc_metadata(
    o: &OtlpOptions,
) -> Result<Option<opentelemetry_otlp::tonic_types::metadata::MetadataMap>, PipelineError> {
    use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
    if o.headers.is_empty() {
        return Ok(None);
    }
    builder_headers(o).map(|h| Some(MetadataMap::from_headers(h)))
}

/// The builder's headers; a bad name or value is an error.
#[cfg(any(feature = "grpc", feature = "http"))]
pub(crate) fn builder_headers(o: &OtlpOptions) -> Result<http::HeaderMap, PipelineError> {
    let mut headers = http::HeaderMap::new();
    for (k, v) in &o.headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| PipelineError::Config(format!("OTLP header name {k:?}")))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|_| PipelineError::Config(format!("OTLP header {k:?} has a bad value")))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// TLS for the signal's gRPC endpoint, `None` when it is `http://` or not set.
#[cfg(feature = "grpc")]
fn grpc_tls(
    o: &OtlpOptions,
    signal: &str,
) -> Result<Option<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig>, PipelineError> {
    let endpoint = o
        .endpoint
        .clone()
        .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")))
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let tls_wanted = endpoint.is_some_and(|e| !e.trim().starts_with("http://"));
    if !tls_wanted {
        return Ok(None);
    }
    grpc_tls_config(signal).map(Some)
}

/// TLS with the webpki roots, plus the signal's or the generic `OTEL_EXPORTER_OTLP_CERTIFICATE`
/// when set.
#[cfg(feature = "grpc")]
pub(crate) fn grpc_tls_config(
    signal: &str,
) -> Result<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig, PipelineError> {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
    let mut tls = ClientTlsConfig::new().with_webpki_roots();
    let var = format!("OTEL_EXPORTER_OTLP_{signal}_CERTIFICATE");
    let ca = env(&var).map(|p| (var.as_str(), p)).or_else(|| {
        env("OTEL_EXPORTER_OTLP_CERTIFICATE").map(|p| ("OTEL_EXPORTER_OTLP_CERTIFICATE", p))
    });
    if let Some((var, path)) = ca {
        let pem = std::fs::read(&path)
            .map_err(|e| PipelineError::Config(format!("{var} {path}: {e}")))?;
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    Ok(tls)
}
