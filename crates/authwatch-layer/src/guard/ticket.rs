//! [`TicketState`]: the per-request state of a guarded request, which emits its event once,
//! whichever of the probe, the future or a drop decides first; and how the probe finds it.

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::Arc;

use http::Request;

use super::layer::GuardShared;
#[cfg(doc)]
use super::{Probe, TokenGuard, TokenGuardLayer};
use crate::clock::Tick;
use crate::event::{AuthEvent, EventSink, EventSource, Sinks};
use crate::op::{AuthOp, Outcome};
use crate::routes::RouteId;
use crate::stripe::Stripe;

/// One guarded request, from [`TokenGuard`]'s `call` to its event: whoever decides first (the
/// probe, the future, a drop) holds the one box, so it is emitted once. The box lives in the
/// guard's future, and on this thread's [`Current`] while the guard runs the validator: one
/// allocation, nothing in the request's extensions, eight bytes moved.
pub(super) struct TicketState {
    pub(super) shared: Arc<Stripe<GuardShared>>,
    pub(super) start: Tick,
    pub(super) method: &'static str,
    pub(super) client_ip: Option<IpAddr>,
    pub(super) user_agent: Option<http::HeaderValue>,
    pub(super) route: GuardRoute,
    pub(super) session: Option<u64>,
    /// The `auth.token_validation` span, closed at the decision; `None` when disabled.
    pub(super) span: Option<tracing::Span>,
}

impl TicketState {
    /// Enters the validation span for one poll, when it is enabled.
    pub(super) fn enter(&self) -> Option<tracing::span::EnteredSpan> {
        Some(self.span.as_ref()?.clone().entered())
    }

    /// Emits the event; the span closes when the ticket is dropped, after this.
    pub(super) fn emit(&self, outcome: Outcome, status: Option<u16>) {
        let end = Tick::now();
        let shared = &**self.shared;
        let event = AuthEvent {
            op: AuthOp::TokenValidation,
            outcome,
            route: self.route.as_str(shared),
            route_id: self.route.id(shared),
            method: self.method,
            rpc_method: None,
            status,
            grpc_status: None,
            latency: end.since(self.start),
            finished_at: end.instant(),
            client_ip: self.client_ip,
            user_agent: self
                .user_agent
                .as_ref()
                .and_then(crate::ascii::visible_text),
            source: EventSource::TokenGuard,
            session: self.session,
        };
        if let Some(span) = &self.span {
            span.record("auth.outcome", outcome.as_str());
            if let Some(r) = outcome.reason() {
                span.record("auth.failure.reason", r.as_str());
            }
        }
        let _in_span = self.span.as_ref().map(tracing::Span::enter);
        shared.sinks.record(&event);
    }
}

thread_local! {
    /// The ticket of the guard running its validator on this thread.
    static CURRENT: Cell<Option<Box<TicketState>>> = const { Cell::new(None) };
}

/// While it lives, the ticket it was given is this thread's current one, which a [`Probe`]
/// takes: the guard holds one across its call of the validator and across each poll of the
/// validator's future, which is where every validator that hands the request on
/// (`axum::middleware::from_fn`, tower-http's auth layers, a plain `Service`) calls the probe.
/// When dropped it gives the ticket back (unless the probe took it) and restores the previous
/// one, so guards nest; dropped by a panic, it emits the request as an error.
pub(super) struct Current<'a> {
    slot: &'a mut Option<Box<TicketState>>,
    prev: Option<Box<TicketState>>,
}

impl<'a> Current<'a> {
    /// Makes the ticket in `slot` (if any) this thread's current one.
    pub(super) fn install(slot: &'a mut Option<Box<TicketState>>) -> Self {
        let prev = CURRENT.replace(slot.take());
        Self { slot, prev }
    }
}

impl Drop for Current<'_> {
    fn drop(&mut self) {
        let ticket = CURRENT.replace(self.prev.take());
        match ticket {
            // The validator or the handler panicked on the way: a server error, even when a
            // `CatchPanicLayer` further out turns the panic into a response.
            Some(t) if std::thread::panicking() => t.emit(Outcome::Error, None),
            ticket => *self.slot = ticket,
        }
    }
}

/// The validator handed the request on: a success for the ticket of the guard running it on
/// this thread, if any. A validator that hands the request to another task (a `Buffer` inside
/// the guard) leaves the guard's future to decide from the response when it comes.
pub(super) fn probe_passed() {
    if let Some(ticket) = CURRENT.take() {
        ticket.emit(Outcome::Success, None);
    }
}

/// A guarded request's route label.
// Without the `axum` feature there is no `MatchedPath`, so only `Label` is ever built.
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(super) enum GuardRoute {
    /// The guard's own label ([`TokenGuardLayer::label`]).
    Label,
    /// axum's `MatchedPath`, numbered among the guard routes: no copy per request.
    Numbered(RouteId),
    /// A `MatchedPath` past [`MAX_GUARD_ROUTES`](crate::MAX_GUARD_ROUTES) labels: copied.
    Unnumbered(Box<str>),
}

impl GuardRoute {
    pub(super) fn of<B>(req: &Request<B>, sinks: &Sinks) -> Self {
        #[cfg(feature = "axum")]
        if let Some(m) = req.extensions().get::<axum::extract::MatchedPath>() {
            return match sinks.guard_route(m.as_str()) {
                Some(id) => Self::Numbered(id),
                None => Self::Unnumbered(m.as_str().into()),
            };
        }
        let _ = (req, sinks);
        Self::Label
    }

    fn id(&self, shared: &GuardShared) -> Option<RouteId> {
        match self {
            Self::Label => shared.label_id,
            Self::Numbered(id) => Some(*id),
            Self::Unnumbered(_) => None,
        }
    }

    pub(super) fn as_str<'a>(&'a self, shared: &'a GuardShared) -> &'a str {
        match self {
            Self::Label => &shared.label,
            Self::Numbered(id) => shared.sinks.guard_label(*id).unwrap_or(""),
            Self::Unnumbered(route) => route,
        }
    }
}
