//! The OpenTelemetry side of authwatch's `tracing` spans: the W3C `traceparent` of incoming
//! requests as the parent of `auth.request`, and the current trace for audit records.

use std::sync::Arc;

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceFlags, TraceId};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The trace and span a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceCtx {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) flags: TraceFlags,
}

/// The current span's OpenTelemetry context, when there is one: `None` at the cost of one
/// thread-local read when no subscriber records authwatch's spans.
pub(crate) fn current() -> Option<TraceCtx> {
    // No subscriber was ever installed: no span can be recording (a relaxed load, instead of
    // the thread-local lookups of `Span::current`).
    if !tracing::dispatcher::has_been_set() {
        return None;
    }
    // Outside any span (authwatch's own are off unless a subscriber records them) the answer
    // is known without cloning the current span's handle.
    if tracing::dispatcher::get_default(|d| d.current_span().id().is_none()) {
        return None;
    }
    let span = tracing::Span::current();
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let s = cx.span();
    let sc = s.span_context();
    sc.is_valid().then(|| TraceCtx {
        trace_id: sc.trace_id(),
        span_id: sc.span_id(),
        flags: sc.trace_flags(),
    })
}

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Makes the caller's span (W3C `traceparent`, `tracestate`) the parent of each `auth.request`
/// and `auth.token_validation` span that has no local parent.
pub(crate) fn traceparent_hook() -> authwatch_layer::SpanHook {
    authwatch_layer::SpanHook(Arc::new(|span, headers| {
        if !headers.contains_key(TRACEPARENT) {
            return;
        }
        // A local parent (your HTTP server span, which already took the traceparent) wins:
        // the remote one applies only when authwatch's span is the first of the request.
        if tracing::Span::current()
            .context()
            .span()
            .span_context()
            .is_valid()
        {
            return;
        }
        let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new()
            .extract(&Headers(headers));
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
    }))
}
