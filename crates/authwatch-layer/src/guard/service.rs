//! [`TokenGuard`], which starts a request's ticket in front of your validator, and the
//! [`Probe`] behind it, which notes that the validator let the request through.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::future::{DropTicket, GuardFuture};
use super::layer::GuardShared;
#[cfg(doc)]
use super::layer::TokenGuardLayer;
use super::ticket::{probe_passed, Current, GuardRoute, TicketState};
use crate::auth::AuthLayer;
use crate::clock::Tick;
use crate::op::AuthOp;
use crate::routes::method_label;
use crate::session::Picked;
use crate::stripe::Striped;

/// The service [`TokenGuardLayer`] produces: your validator, with a [`Probe`] behind it.
#[derive(Clone)]
pub struct TokenGuard<V> {
    pub(super) inner: V,
    pub(super) shared: Arc<Striped<GuardShared>>,
}

impl<V> fmt::Debug for TokenGuard<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGuard").finish_non_exhaustive()
    }
}

/// Sits between the validator and your service, and notes that the validator let a request
/// through.
#[derive(Clone, Debug)]
pub struct Probe<S> {
    pub(super) inner: S,
}

impl<V, ReqBody, ResBody> Service<Request<ReqBody>> for TokenGuard<V>
where
    V: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = V::Error;
    type Future = GuardFuture<V::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let shared = self.shared.shared();
        if let Some(layer) = &shared.watched_by {
            let route = layer
                .routes()
                .lookup(req.method(), req.uri().path(), req.headers());
            if route.is_some_and(|r| r.op == AuthOp::TokenValidation) {
                // The layer counts this one already.
                return GuardFuture {
                    inner: self.inner.call(req),
                    ticket: DropTicket(None),
                };
            }
        }
        let route = GuardRoute::of(&req, &shared.sinks);
        // A child of the current span (your request span), timing the validator alone; none
        // at all until a subscriber is installed.
        let span = if !tracing::dispatcher::has_been_set()
            || !tracing::level_enabled!(tracing::Level::INFO)
        {
            tracing::Span::none()
        } else {
            tracing::info_span!(
            target: "authwatch::request",
            "auth.token_validation",
            otel.kind = "internal",
            auth.operation = "token_validation",
            http.route = route.as_str(shared),
            auth.outcome = tracing::field::Empty,
            auth.failure.reason = tracing::field::Empty,
            )
        };
        if !span.is_disabled() {
            // The caller's traceparent, when nothing local is the parent.
            if let Some(hook) = shared.watched_by.as_ref().and_then(AuthLayer::span_hook) {
                (hook.0)(&span, req.headers());
            }
        }
        let picked = Picked::from(req.headers());
        let mut ticket = Some(Box::new(TicketState {
            shared: self.shared.stripe(),
            start: Tick::now(),
            method: method_label(req.method()),
            client_ip: shared.client_ip.resolve(&req),
            user_agent: picked.user_agent.cloned(),
            route,
            session: shared
                .sessions
                .as_ref()
                .and_then(|k| k.of_picked(&picked, req.headers())),
            span: (!span.is_disabled()).then_some(span),
        }));
        let inner = {
            // The validator runs inside the span (its own spans nest under it), and one that
            // hands the request on at once (in its `call`) reaches the probe here.
            let _in_span = ticket.as_deref().and_then(TicketState::enter);
            let _current = Current::install(&mut ticket);
            self.inner.call(req)
        };
        GuardFuture {
            inner,
            ticket: DropTicket(ticket),
        }
    }
}

impl<S, ReqBody> Service<Request<ReqBody>> for Probe<S>
where
    S: Service<Request<ReqBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        probe_passed();
        self.inner.call(req)
    }
}
