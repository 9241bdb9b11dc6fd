//! [`Ticket`]: the per-request state of a guarded request, which emits its event once,
//! whichever of the probe, the future or a drop decides first.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The per-request link between [`TokenGuard`] and its [`Probe`], carried in the request
/// extensions.
#[derive(Clone)]
pub(super) struct Ticket(pub(super) Arc<TicketState>);

pub(super) struct TicketState {
    pub(super) shared: Arc<Stripe<GuardShared>>,
    pub(super) start: Tick,
    pub(super) method: &'static str,
    pub(super) client_ip: Option<IpAddr>,
    pub(super) user_agent: Option<http::HeaderValue>,
    pub(super) route: GuardRoute,
    pub(super) done: AtomicBool,
    pub(super) session: Option<u64>,
    /// The `auth.token_validation` span, closed at the decision; `None` when disabled.
    pub(super) span: Option<std::sync::Mutex<tracing::Span>>,
}

impl TicketState {
    /// Enters the validation span for one poll, while it is open and enabled.
    pub(super) fn enter(&self) -> Option<tracing::span::EnteredSpan> {
        let m = self.span.as_ref()?;
        let span = m
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        (!span.is_disabled()).then(|| span.entered())
    }

    /// Emits the event, once: the first caller wins (probe, future, or drop).
    pub(super) fn emit_once(&self, outcome: Outcome, status: Option<u16>) {
        if self.done.swap(true, Ordering::AcqRel) {
            return;
        }
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
        let span = self.span.as_ref().map(|m| {
            std::mem::replace(
                &mut *m.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
                tracing::Span::none(),
            )
        });
        if let Some(span) = &span {
            span.record("auth.outcome", outcome.as_str());
            if let Some(r) = outcome.reason() {
                span.record("auth.failure.reason", r.as_str());
            }
        }
        let _in_span = span.as_ref().map(tracing::Span::enter);
        shared.sinks.record(&event);
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
