//! The OTLP copy of the records: the log export they go to, and their encoding as OTLP log
//! records.

use std::net::IpAddr;
use std::sync::Arc;
#[cfg(not(any(feature = "otlp-grpc", feature = "otlp-http")))]
use std::time::Duration;

use authwatch_otel::LogFields;

use super::record::{AuditClass, RecordView};

/// The OTLP copy of the records: the worker encodes them, the export has its own thread and
/// counts what it loses.
pub(crate) struct OtelOut {
    pub(crate) export: Arc<LogExport>,
}

#[cfg(any(feature = "otlp-grpc", feature = "otlp-http"))]
pub(crate) use authwatch_otel::LogExport;

/// Without an OTLP transport there is no log export: this type has no value.
#[cfg(not(any(feature = "otlp-grpc", feature = "otlp-http")))]
pub(crate) enum LogExport {}

#[cfg(not(any(feature = "otlp-grpc", feature = "otlp-http")))]
impl LogExport {
    pub(super) fn send(&self, _: authwatch_otel::LogBatch) {
        match *self {}
    }
    pub(super) fn empty_batch(&self) -> authwatch_otel::LogBatch {
        match *self {}
    }
    pub(super) fn schedule_delay(&self) -> Duration {
        match *self {}
    }
    pub(super) fn flush(&self, _: Duration) {
        match *self {}
    }
    pub(super) fn shutdown(&self) -> bool {
        match *self {}
    }
    pub(crate) fn lost(&self) -> u64 {
        match *self {}
    }
}

/// The OTLP log record of a record: what is the same in every record of its name, class and
/// source encoded once ([`LogFields`]), the rest as it is written (no copy of its strings, no
/// allocation).
#[derive(Default)]
pub(super) struct OtelEncoder {
    /// The fixed fields per name, class and source: a few kinds of records.
    fixed: Vec<(&'static str, AuditClass, &'static str, LogFields)>,
    /// The client address as text.
    ip: String,
}

/// Kinds of records whose fixed fields are kept (the crate writes about a dozen).
const MAX_FIXED: usize = 64;

impl OtelEncoder {
    /// Appends the OTLP log record of `r` to `batch`; `observed` in nanoseconds since the Unix
    /// epoch (when the record is added without it).
    pub(super) fn record(
        &mut self,
        batch: &mut authwatch_otel::LogBatch,
        r: &RecordView<'_>,
        observed: Option<u64>,
    ) {
        let i = self.fixed_index(r);
        let once;
        let fixed = match i {
            Some(i) => &self.fixed[i].3,
            None => {
                once = fixed_fields(r);
                &once
            }
        };
        let ip = r.client_address.map(|ip| {
            format_ip(ip, &mut self.ip);
            self.ip.as_str()
        });
        batch.push(|w| {
            if let Some(t) = observed {
                w.observed_time_nanos(t);
            }
            w.time_nanos(r.time_unix_nano).fields(fixed);
            let mut opt = |k: &str, v: Option<&str>| {
                if let Some(v) = v {
                    w.attr(k, v);
                }
            };
            opt("user.id", r.user_id);
            opt("client.address", ip);
            opt("user_agent.original", r.user_agent);
            opt("error.type", r.error_type);
            opt("http.route", r.route);
            opt("auth.token.type", r.token_type);
            opt("db.query.name", r.db_query);
            opt("auth.operation", r.operation);
            opt("auth.outcome", r.outcome);
            opt("http.request.method", r.method);
            opt("auth.block.source", r.block_source);
            opt("auth.block.reason", r.block_reason);
            if let Some(ms) = r.duration_ms {
                w.attr("auth.duration_ms", ms);
            }
            if let Some(i) = &r.incident {
                w.attr("auth.incident", i.to_string().as_str());
            }
            if let Some(a) = &r.access {
                w.attr("auth.access", a.to_string().as_str());
            }
            if let Some(c) = &r.checkpoint {
                w.attr("auth.audit.checkpoint", c.to_string().as_str());
            }
            for (k, v) in [
                ("auth.block.ttl_s", r.block_ttl_s),
                ("auth.block.refused", r.block_refused),
            ] {
                if let Some(v) = v {
                    w.attr(k, i64::try_from(v).unwrap_or(i64::MAX));
                }
            }
            if let Some(t) = r.trace {
                w.trace_context(t.trace_id, t.span_id, t.flags);
            }
        });
    }

    fn fixed_index(&mut self, r: &RecordView<'_>) -> Option<usize> {
        let same = |a: &str, b: &str| std::ptr::eq(a, b) || a == b;
        if let Some(i) = self
            .fixed
            .iter()
            .position(|(n, c, s, _)| *c == r.class && same(n, r.name) && same(s, r.source))
        {
            return Some(i);
        }
        if self.fixed.len() >= MAX_FIXED {
            return None;
        }
        self.fixed
            .push((r.name, r.class, r.source, fixed_fields(r)));
        Some(self.fixed.len() - 1)
    }
}

/// The fields of `r` that only its name, class and source decide.
fn fixed_fields(r: &RecordView<'_>) -> LogFields {
    use opentelemetry::logs::Severity;
    LogFields::encode(|w| {
        w.severity(match r.class {
            AuditClass::Security => Severity::Warn,
            _ => Severity::Info,
        })
        .event_name(r.name)
        .body(r.name)
        .attr("event.name", r.name)
        .attr("audit.class", r.class.as_str())
        .attr("audit.retention_days", i64::from(r.class.retention_days()))
        .attr("audit.source", r.source);
    })
}

/// `ip` as `Display` writes it, into `out`: an IPv4 address digit by digit (`core::fmt` took
/// a fifth of the worker's instructions per record for it), an IPv6 one formatted.
fn format_ip(ip: IpAddr, out: &mut String) {
    out.clear();
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if o >= 100 {
                    out.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    out.push(char::from(b'0' + o / 10 % 10));
                }
                out.push(char::from(b'0' + o % 10));
            }
        }
        IpAddr::V6(_) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{ip}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::AuditRecord;
    use crate::tracing_ctx::TraceCtx;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
    use std::time::SystemTime;

    /// The encoding as it was before the fixed fields and the digit-by-digit address: every
    /// field written with the generic writer, the address with `Display`.
    fn reference(
        batch: &mut authwatch_otel::LogBatch,
        r: &AuditRecord,
        observed: Option<SystemTime>,
    ) {
        use opentelemetry::logs::Severity;
        batch.push(|w| {
            if let Some(t) = observed {
                w.observed_time(t);
            }
            w.time(r.time)
                .severity(match r.class {
                    AuditClass::Security => Severity::Warn,
                    _ => Severity::Info,
                })
                .event_name(r.name)
                .body(r.name)
                .attr("event.name", r.name)
                .attr("audit.class", r.class.as_str())
                .attr("audit.retention_days", i64::from(r.class.retention_days()))
                .attr("audit.source", r.source);
            let ip = r.client_address.map(|ip| ip.to_string());
            let mut opt = |k: &str, v: Option<&str>| {
                if let Some(v) = v {
                    w.attr(k, v);
                }
            };
            opt("user.id", r.user_id.as_deref());
            opt("client.address", ip.as_deref());
            opt("user_agent.original", r.user_agent.as_deref());
            opt("error.type", r.error_type.as_deref());
            opt("http.route", r.route.as_deref());
            opt("auth.token.type", r.token_type.as_deref());
            opt("db.query.name", r.db_query.as_deref());
            opt("auth.operation", r.operation);
            opt("auth.outcome", r.outcome);
            opt("http.request.method", r.method);
            opt("auth.block.source", r.block_source);
            opt("auth.block.reason", r.block_reason.as_deref());
            if let Some(ms) = r.duration_ms {
                w.attr("auth.duration_ms", ms);
            }
            if let Some(i) = &r.incident {
                w.attr("auth.incident", i.to_string().as_str());
            }
            if let Some(a) = &r.access {
                w.attr("auth.access", a.to_string().as_str());
            }
            if let Some(c) = &r.checkpoint {
                w.attr("auth.audit.checkpoint", c.to_string().as_str());
            }
            for (k, v) in [
                ("auth.block.ttl_s", r.block_ttl_s),
                ("auth.block.refused", r.block_refused),
            ] {
                if let Some(v) = v {
                    w.attr(k, i64::try_from(v).unwrap_or(i64::MAX));
                }
            }
            if let Some(t) = r.trace {
                w.trace_context(t.trace_id, t.span_id, t.flags);
            }
        });
    }

    fn records() -> Vec<AuditRecord> {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(1_765_000_000_123_456_789);
        let ips: [Option<IpAddr>; 7] = [
            None,
            Some("127.0.0.1".parse().unwrap()),
            Some("0.0.0.0".parse().unwrap()),
            Some("255.255.255.255".parse().unwrap()),
            Some("10.9.100.42".parse().unwrap()),
            Some("2001:db8::1".parse().unwrap()),
            Some("::ffff:192.0.2.128".parse().unwrap()),
        ];
        let mut out = Vec::new();
        for (i, ip) in ips.into_iter().enumerate() {
            for class in AuditClass::ALL {
                for source in ["layer", "token_guard", "application"] {
                    let mut r = AuditRecord::at("auth.request", class, source, t);
                    r.client_address = ip;
                    if i % 2 == 0 {
                        r.user_agent = Some("curl/8.5.0".into());
                        r.error_type = Some("invalid_credentials".into());
                        r.operation = Some("login");
                        r.outcome = Some("failure");
                        r.route = Some("/api/auth/sign-in/email".into());
                        r.method = Some("POST");
                        r.duration_ms = Some(0.062 * i as f64);
                    } else {
                        r.name = "auth.login.failure";
                        r.user_id = Some("hmac-sha256:00ff".into());
                        r.token_type = Some("bearer".into());
                        r.db_query = Some("users.by_email".into());
                        r.set_trace(Some(TraceCtx {
                            trace_id: TraceId::from_bytes([i as u8; 16]),
                            span_id: SpanId::from_bytes([0xab; 8]),
                            flags: TraceFlags::SAMPLED,
                        }));
                    }
                    out.push(r);
                }
            }
        }
        out
    }

    #[test]
    fn the_encoding_is_byte_for_byte_the_field_by_field_one() {
        let observed = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_765_000_001);
        let mut enc = OtelEncoder::default();
        let (mut got, mut want) = (
            authwatch_otel::LogBatch::default(),
            authwatch_otel::LogBatch::default(),
        );
        // Twice: the fixed fields encoded, then reused.
        for _ in 0..2 {
            for r in records() {
                enc.record(
                    &mut got,
                    &r.view(),
                    Some(crate::audit::record::unix_nanos(observed)),
                );
                reference(&mut want, &r, Some(observed));
            }
        }
        assert_eq!(got.len(), want.len());
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
        assert!(enc.fixed.len() <= 2 * 2 * 3, "{}", enc.fixed.len());
    }

    #[test]
    fn ipv4_addresses_are_written_as_display_writes_them() {
        let mut buf = String::new();
        for a in [0u8, 1, 9, 10, 42, 99, 100, 101, 199, 200, 255] {
            for b in [0u8, 7, 10, 100, 255] {
                let ip = IpAddr::from([a, b, a ^ b, b.wrapping_mul(3)]);
                format_ip(ip, &mut buf);
                assert_eq!(buf, ip.to_string());
            }
        }
        let v6: IpAddr = "fe80::1:2".parse().unwrap();
        format_ip(v6, &mut buf);
        assert_eq!(buf, "fe80::1:2");
    }

    #[test]
    fn kinds_past_the_cap_are_still_encoded() {
        let mut enc = OtelEncoder::default();
        let names: Vec<&'static str> = (0..MAX_FIXED + 3)
            .map(|i| &*Box::leak(format!("kind.{i}").into_boxed_str()))
            .collect();
        let (mut got, mut want) = (
            authwatch_otel::LogBatch::default(),
            authwatch_otel::LogBatch::default(),
        );
        let t = SystemTime::UNIX_EPOCH;
        for name in names {
            let r = AuditRecord::at(name, AuditClass::Security, "application", t);
            enc.record(&mut got, &r.view(), Some(0));
            reference(&mut want, &r, Some(t));
        }
        assert_eq!(enc.fixed.len(), MAX_FIXED);
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
    }
}
