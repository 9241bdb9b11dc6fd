//! The OTLP copy of the records: the log export they go to, and their encoding as OTLP log
//! records.

use std::sync::Arc;
#[cfg(not(any(feature = "otlp-grpc", feature = "otlp-http")))]
use std::time::Duration;
use std::time::SystemTime;

use super::record::{AuditClass, AuditRecord};

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

/// Appends the OTLP log record of `r` to `batch`, encoded as it is written (no copy of its
/// strings, no allocation).
pub(super) fn otel_record(
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
        // The address formatted on the stack: at most 45 bytes (IPv6 with an IPv4 tail).
        let mut ip_buf = [0u8; 64];
        let ip = r.client_address.and_then(|ip| {
            let mut cur = std::io::Cursor::new(&mut ip_buf[..]);
            std::io::Write::write_fmt(&mut cur, format_args!("{ip}")).ok()?;
            usize::try_from(cur.position()).ok()
        });
        let ip = ip.and_then(|n| std::str::from_utf8(&ip_buf[..n]).ok());
        let mut opt = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                w.attr(k, v);
            }
        };
        opt("user.id", r.user_id.as_deref());
        opt("client.address", ip);
        opt("user_agent.original", r.user_agent.as_deref());
        opt("error.type", r.error_type.as_deref());
        opt("http.route", r.route.as_deref());
        opt("auth.token.type", r.token_type.as_deref());
        opt("db.query.name", r.db_query.as_deref());
        opt("auth.operation", r.operation);
        opt("auth.outcome", r.outcome);
        opt("http.request.method", r.method);
        if let Some(ms) = r.duration_ms {
            w.attr("auth.duration_ms", ms);
        }
        if let Some(t) = r.trace {
            w.trace_context(t.trace_id, t.span_id, t.flags);
        }
    });
}
