//! [`Tracker`]: the state machine of one auth request, which the response future and the
//! response body call back into, and which emits its event exactly once.

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderValue;

use super::layer::Shared;
use crate::classify::{classify_trailers, Classified};
use crate::clock::Tick;
use crate::event::{AuthEvent, EventSink, EventSource};
use crate::op::{AuthOp, Outcome};
use crate::stripe::Stripe;

/// The bookkeeping of one auth request, from `call` to the end of the body. Emits exactly one
/// event: through [`finish`](Self::finish), or, if dropped before that, as cancelled.
pub(crate) struct Tracker {
    /// Boxed: the tracker rides in the response future and then in the response body, which
    /// the router and the server move several times per request (axum's `Router::layer` also
    /// boxes the body). Eight bytes instead of 176: the allocation costs less than the copies
    /// it saves (an auth request 22-46 ns cheaper, `cargo bench --bench overhead --
    /// peers/auth`). The box always holds a state while it is here; once the request is
    /// recorded, the emptied box is kept for the thread's next request ([`SPARE`]).
    inner: Option<Box<Option<TrackerState>>>,
}

thread_local! {
    /// Each thread's spare tracker box, emptied: the next auth request on the thread fills it
    /// instead of allocating one, and the request that ends here returns it instead of
    /// freeing it. A malloc and a free saved per request (about 100 instructions under
    /// `scripts/instructions.sh`), one box per thread at most.
    static SPARE: Cell<Option<Box<Option<TrackerState>>>> = const { Cell::new(None) };
}

pub(super) struct TrackerState {
    pub(super) shared: Arc<Stripe<Shared>>,
    pub(super) route: u16,
    pub(super) start: Tick,
    pub(super) method: &'static str,
    pub(super) head_only: bool,
    pub(super) client_ip: Option<IpAddr>,
    /// The request's `User-Agent` (a reference-counted handle on the request's bytes), for
    /// sinks that keep an audit trail. Never a metric attribute.
    pub(super) user_agent: Option<HeaderValue>,
    pub(super) status: Option<u16>,
    pub(super) classified: Classified,
    /// Body bytes still to come, when the response declared its length.
    pub(super) remaining: Option<u64>,
    /// The `auth.request` span, when a subscriber wants it.
    pub(super) span: Option<tracing::Span>,
    pub(super) session: Option<u64>,
}

impl Tracker {
    #[inline]
    pub(crate) fn none() -> Self {
        Self { inner: None }
    }

    /// Tracks a request: `state` goes into the thread's spare box, or a new one.
    #[inline]
    pub(super) fn new(state: TrackerState) -> Self {
        let slot = match SPARE.try_with(Cell::take) {
            Ok(Some(mut slot)) => {
                *slot = Some(state);
                slot
            }
            _ => Box::new(Some(state)),
        };
        Self { inner: Some(slot) }
    }

    #[inline]
    fn state(&self) -> Option<&TrackerState> {
        self.inner.as_deref()?.as_ref()
    }

    #[inline]
    fn state_mut(&mut self) -> Option<&mut TrackerState> {
        self.inner.as_deref_mut()?.as_mut()
    }

    /// Ends the tracking: emits the event, with `outcome` if given, else the classified one
    /// (a gRPC response without status is an error); the box, emptied, becomes the thread's
    /// spare. Nothing happens when the request was recorded already.
    #[inline]
    fn end(&mut self, outcome: Option<Outcome>) {
        let Some(mut slot) = self.inner.take() else {
            return;
        };
        if let Some(s) = &*slot {
            let (classified, grpc) = s.classified.at_end();
            s.emit(outcome.unwrap_or(classified), grpc);
        }
        *slot = None;
        // A thread being torn down has no spare any more: the box is freed instead.
        let _ = SPARE.try_with(|spare| spare.set(Some(slot)));
    }

    /// Enters the request's span for one poll, when it is enabled (the handler's own spans
    /// and events then nest under it).
    #[inline]
    pub(crate) fn enter(&self) -> Option<tracing::span::EnteredSpan> {
        let span = self.state()?.span.as_ref()?;
        Some(span.clone().entered())
    }

    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        self.inner.is_some()
    }

    /// The operation, and whether the route may answer gRPC.
    #[inline]
    pub(crate) fn route(&self) -> Option<(AuthOp, bool)> {
        let s = self.state()?;
        let info = &s.shared.routes.routes()[usize::from(s.route)];
        Some((info.op, info.grpc))
    }

    /// Records the response head. Returns true when the response ends with its head (HEAD
    /// requests, 1xx/204/304, an empty body), in which case the event has been emitted.
    ///
    /// `declared_len` gives the body length the response announced (`Content-Length`, or an
    /// exact size hint): hyper stops polling a body once that many bytes are out, without
    /// waiting for its end, so the request ends there. It is only asked for when the body will
    /// be watched.
    pub(crate) fn head(
        &mut self,
        status: u16,
        classified: Classified,
        body_is_end: bool,
        declared_len: impl FnOnce() -> Option<u64>,
    ) -> bool {
        let Some(s) = self.state_mut() else {
            return false;
        };
        s.status = Some(status);
        s.classified = classified;
        let mut ended = s.head_only || body_is_end || matches!(status, 100..=199 | 204 | 304);
        if !ended && !matches!(classified, Classified::RequiresTrailers) {
            s.remaining = declared_len();
            ended = s.remaining == Some(0);
        }
        if ended {
            self.finish_classified();
        }
        ended
    }

    /// A data frame went out; ends the request when its bytes were the last declared ones. A
    /// gRPC-Web response's bytes are scanned for its trailers frame first.
    #[inline]
    pub(crate) fn sent(&mut self, data: &impl bytes::Buf) {
        let Some(s) = self.state_mut() else {
            return;
        };
        if let Classified::GrpcWeb(scan) = &mut s.classified {
            scan.feed_buf(data);
        }
        if let Some(r) = s.remaining.as_mut() {
            *r = r.saturating_sub(data.remaining() as u64);
            if *r == 0 {
                self.finish_classified();
            }
        }
    }

    /// The trailers arrived, always the last frame: read `grpc-status` from them if the head
    /// had none, and end the request.
    pub(crate) fn finish_trailers(&mut self, trailers: &http::HeaderMap) {
        if let Some(s) = self.state_mut() {
            if matches!(s.classified, Classified::RequiresTrailers) {
                let op = s.shared.routes.routes()[usize::from(s.route)].op;
                let (outcome, grpc_status) = classify_trailers(op, Some(trailers));
                s.classified = Classified::Ready {
                    outcome,
                    grpc_status,
                };
            }
        }
        self.finish_classified();
    }

    /// The body ended: emit the classified outcome (a gRPC response without status is an error).
    pub(crate) fn finish_classified(&mut self) {
        self.end(None);
    }

    /// The body reported its end (`None`, or `is_end_stream` after a frame). A body that ends
    /// before the bytes its `Content-Length` announced was cut short: hyper aborts such a
    /// response, so it is an error whatever the head said.
    pub(crate) fn finish_body(&mut self) {
        let short = self
            .state()
            .is_some_and(|s| s.remaining.is_some_and(|r| r > 0));
        if short {
            self.finish(Outcome::Error);
        } else {
            self.finish_classified();
        }
    }

    /// Emit `outcome` now (inner service error, body error).
    pub(crate) fn finish(&mut self, outcome: Outcome) {
        self.end(Some(outcome));
    }
}

impl TrackerState {
    fn emit(&self, outcome: Outcome, grpc_status: Option<u16>) {
        let end = Tick::now();
        let shared = &**self.shared;
        let info = &shared.routes.routes()[usize::from(self.route)];
        let event = AuthEvent {
            op: info.op,
            outcome,
            route: &info.template,
            route_id: Some(info.id),
            method: self.method,
            rpc_method: info.rpc_method.as_deref(),
            status: self.status,
            grpc_status,
            latency: end.since(self.start),
            finished_at: end.instant(),
            client_ip: self.client_ip,
            user_agent: self
                .user_agent
                .as_ref()
                .and_then(crate::ascii::visible_text),
            source: EventSource::Route,
            session: self.session,
        };
        match &self.span {
            None => shared.sinks.record(&event),
            Some(span) => in_span(span, &event, &shared.sinks),
        }
    }
}

/// Records the outcome on the request's span and runs the sinks inside it (an audit record
/// can carry its trace id); the span ends when the tracker is dropped, after this.
#[inline(never)]
fn in_span(span: &tracing::Span, event: &AuthEvent<'_>, sinks: &crate::event::Sinks) {
    let outcome = event.outcome;
    span.record("auth.outcome", outcome.as_str());
    if let Some(r) = outcome.reason() {
        span.record("auth.failure.reason", r.as_str());
    }
    if let Some(s) = event.status {
        span.record("http.response.status_code", s);
    }
    if outcome == Outcome::Error {
        span.record("otel.status_code", "ERROR");
    }
    let _in_span = span.enter();
    sinks.record(event);
}

/// Held across a poll of the inner future or body: if that poll panics, the unwind drops this
/// guard and the request is recorded as an error. Costs nothing when there is no panic.
pub(crate) struct OnPanic<'a>(pub(crate) &'a mut Tracker);

impl Drop for OnPanic<'_> {
    #[inline]
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.finish(Outcome::Error);
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if self.inner.is_some() {
            // Dropped while unwinding: the handler or the body panicked (no `CatchPanicLayer`
            // inside this layer turned it into a 500). That is a server error, not a client
            // that went away.
            let outcome = if std::thread::panicking() {
                Outcome::Error
            } else {
                Outcome::Cancelled
            };
            self.finish(outcome);
        }
    }
}
