//! [`TokenGuardLayer`]: measures an existing token-validating middleware without changing it.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::client_ip::ClientIp;
use crate::clock::Tick;
use crate::event::{AuthEvent, EventSink, EventSource, Sinks};
use crate::layer::AuthLayer;
use crate::op::{AuthOp, FailureReason, Outcome};
use crate::routes::{method_label, RouteId};
use crate::stripe::{Stripe, Striped};

/// The route label of guarded requests when no better one is known.
pub const DEFAULT_GUARD_ROUTE: &str = "(guarded)";

struct GuardShared {
    sinks: Sinks,
    client_ip: ClientIp,
    label: Box<str>,
    /// The label's number among the guard routes of `sinks` ([`Sinks::guard_route`]).
    label_id: Option<RouteId>,
    /// The auth layer in front, whose token-validation routes are not counted again.
    watched_by: Option<AuthLayer>,
    /// Session keys: the watching layer's (so a token counts once across both), else our own.
    sessions: Option<crate::session::SessionKeys>,
}

/// Wraps your token-validating middleware (say, tower-http's
/// `ValidateRequestHeaderLayer::bearer`, or an `axum::middleware::from_fn` JWT check) so that
/// every protected request is a [`AuthOp::TokenValidation`] event, without changing it.
///
/// The validator runs as before. authwatch puts a probe between it and your handler:
///
/// - when the validator hands the request on, that is a validation **success**, and the latency
///   is the time the validator took (not the handler's);
/// - when the validator answers by itself, that is a **failure** with reason
///   [`FailureReason::InvalidToken`] (one invalid-token attempt), or
///   [`Outcome::RateLimited`] for a 429, or [`Outcome::Error`] for a 5xx or a service error; the
///   latency is the time to its answer;
/// - when the request is dropped before either, it is [`Outcome::Cancelled`].
///
/// The route label is axum's `MatchedPath` when available (feature `axum`, layer added with
/// `Router::layer` or `route_layer`), else the label set with [`label`](Self::label)
/// ([`DEFAULT_GUARD_ROUTE`] by default).
///
/// A guard on a route that an [`AuthLayer`] already records as a token validation
/// (get-session, userinfo) would count each request twice; tell the guard about the layer with
/// [`watched_by`](Self::watched_by) and it leaves those to the layer.
#[derive(Clone)]
pub struct TokenGuardLayer<L> {
    validator: L,
    shared: Arc<Striped<GuardShared>>,
}

impl<L> fmt::Debug for TokenGuardLayer<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGuardLayer")
            .field("label", &self.shared.shared().label)
            .finish_non_exhaustive()
    }
}

impl<L> TokenGuardLayer<L> {
    /// Wraps `validator`, sending events to `sinks`.
    pub fn new(validator: L, sinks: Sinks) -> Self {
        Self {
            validator,
            shared: Arc::new(Striped::new(GuardShared {
                label_id: sinks.guard_route(DEFAULT_GUARD_ROUTE),
                sinks,
                client_ip: ClientIp::default(),
                label: DEFAULT_GUARD_ROUTE.into(),
                watched_by: None,
                sessions: Some(crate::session::SessionKeys::new(
                    crate::session::DEFAULT_SESSION_COOKIES,
                )),
            })),
        }
    }

    fn map_shared(self, f: impl FnOnce(&mut GuardShared)) -> Self {
        let old = self.shared.shared();
        let mut shared = GuardShared {
            sinks: old.sinks.clone(),
            client_ip: old.client_ip,
            label: old.label.clone(),
            label_id: old.label_id,
            watched_by: old.watched_by.clone(),
            sessions: old.sessions.clone(),
        };
        f(&mut shared);
        Self {
            validator: self.validator,
            shared: Arc::new(Striped::new(shared)),
        }
    }

    /// How to find the client address (default [`ClientIp::peer`]).
    #[must_use]
    pub fn client_ip(self, client_ip: ClientIp) -> Self {
        self.map_shared(|s| s.client_ip = client_ip)
    }

    /// Requests that `layer` already records as token validations (its `get-session`,
    /// `userinfo`, introspection routes) are not counted again by this guard, and session keys
    /// are the layer's (a token counts as one session across both).
    /// `authwatch::AuthWatch::token_guard` sets this for you.
    #[must_use]
    pub fn watched_by(self, layer: AuthLayer) -> Self {
        self.map_shared(|s| {
            s.sessions = layer.session_keys().cloned();
            s.watched_by = Some(layer);
        })
    }

    /// The route label when axum's `MatchedPath` is not available. Keep it a constant: it is a
    /// metric attribute.
    #[must_use]
    pub fn label(self, label: impl Into<Box<str>>) -> Self {
        let label = label.into();
        self.map_shared(|s| {
            s.label_id = s.sinks.guard_route(&label);
            s.label = label;
        })
    }
}

impl<S, L> Layer<S> for TokenGuardLayer<L>
where
    L: Layer<Probe<S>>,
{
    type Service = TokenGuard<L::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenGuard {
            inner: self.validator.layer(Probe { inner }),
            shared: self.shared.clone(),
        }
    }
}

/// The service [`TokenGuardLayer`] produces: your validator, with a [`Probe`] behind it.
#[derive(Clone)]
pub struct TokenGuard<V> {
    inner: V,
    shared: Arc<Striped<GuardShared>>,
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
    inner: S,
}

/// The per-request link between [`TokenGuard`] and its [`Probe`], carried in the request
/// extensions.
#[derive(Clone)]
struct Ticket(Arc<TicketState>);

struct TicketState {
    shared: Arc<Stripe<GuardShared>>,
    start: Tick,
    method: &'static str,
    client_ip: Option<IpAddr>,
    user_agent: Option<http::HeaderValue>,
    route: GuardRoute,
    done: AtomicBool,
    session: Option<u64>,
    /// The `auth.token_validation` span, closed at the decision; `None` when disabled.
    span: Option<std::sync::Mutex<tracing::Span>>,
}

impl TicketState {
    /// Enters the validation span for one poll, while it is open and enabled.
    fn enter(&self) -> Option<tracing::span::EnteredSpan> {
        let m = self.span.as_ref()?;
        let span = m
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        (!span.is_disabled()).then(|| span.entered())
    }

    /// Emits the event, once: the first caller wins (probe, future, or drop).
    fn emit_once(&self, outcome: Outcome, status: Option<u16>) {
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
            user_agent: self.user_agent.as_ref().and_then(|v| v.to_str().ok()),
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
enum GuardRoute {
    /// The guard's own label ([`TokenGuardLayer::label`]).
    Label,
    /// axum's `MatchedPath`, numbered among the guard routes: no copy per request.
    Numbered(RouteId),
    /// A `MatchedPath` past [`MAX_GUARD_ROUTES`](crate::MAX_GUARD_ROUTES) labels: copied.
    Unnumbered(Box<str>),
}

impl GuardRoute {
    fn of<B>(req: &Request<B>, sinks: &Sinks) -> Self {
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

    fn as_str<'a>(&'a self, shared: &'a GuardShared) -> &'a str {
        match self {
            Self::Label => &shared.label,
            Self::Numbered(id) => shared.sinks.guard_label(*id).unwrap_or(""),
            Self::Unnumbered(route) => route,
        }
    }
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

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
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
        let span = if !tracing::dispatcher::has_been_set() {
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
        let ticket = Arc::new(TicketState {
            shared: self.shared.stripe(),
            start: Tick::now(),
            method: method_label(req.method()),
            client_ip: shared.client_ip.resolve(&req),
            user_agent: req.headers().get(http::header::USER_AGENT).cloned(),
            route,
            done: AtomicBool::new(false),
            session: shared.sessions.as_ref().and_then(|k| k.of(req.headers())),
            span: (!span.is_disabled()).then(|| std::sync::Mutex::new(span)),
        });
        req.extensions_mut().insert(Ticket(ticket.clone()));
        // The validator runs inside the span (its own spans nest under it).
        let entered = ticket.enter();
        let inner = self.inner.call(req);
        drop(entered);
        GuardFuture {
            inner,
            ticket: DropTicket(Some(ticket)),
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

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        if let Some(Ticket(t)) = req.extensions_mut().remove::<Ticket>() {
            t.emit_once(Outcome::Success, None);
        }
        self.inner.call(req)
    }
}

/// Emits `Cancelled` if the guard's future is dropped before anything was decided.
struct DropTicket(Option<Arc<TicketState>>);

impl Drop for DropTicket {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            let outcome = if std::thread::panicking() {
                Outcome::Error
            } else {
                Outcome::Cancelled
            };
            t.emit_once(outcome, None);
        }
    }
}

/// Held across a poll of the validator: a panic there is a validation error.
struct TicketOnPanic<'a>(&'a mut DropTicket);

impl Drop for TicketOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(t) = self.0 .0.take() {
                t.emit_once(Outcome::Error, None);
            }
        }
    }
}

pin_project! {
    /// The response future of [`TokenGuard`].
    pub struct GuardFuture<F> {
        #[pin]
        inner: F,
        ticket: DropTicket,
    }
}

impl<F> fmt::Debug for GuardFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardFuture").finish_non_exhaustive()
    }
}

/// What the validator's own answer means, when it did not let the request through.
fn rejection<B>(res: &Response<B>) -> Outcome {
    if let Some(o) = res
        .extensions()
        .get::<Outcome>()
        .and_then(|o| o.normalize_override())
    {
        return o;
    }
    match res.status().as_u16() {
        200..=399 => Outcome::Success,
        429 => Outcome::RateLimited,
        400..=499 => Outcome::Failure(FailureReason::InvalidToken),
        _ => Outcome::Error,
    }
}

impl<F, B, E> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _in_span = this.ticket.0.as_ref().and_then(|t| t.enter());
        // If the validator panics, an outer catch-panic layer would otherwise make this look
        // like a cancellation.
        let guard = TicketOnPanic(this.ticket);
        let result = ready!(this.inner.poll(cx));
        drop(guard);
        if let Some(t) = this.ticket.0.take() {
            match &result {
                Ok(res) => t.emit_once(rejection(res), Some(res.status().as_u16())),
                Err(_) => t.emit_once(Outcome::Error, None),
            }
        }
        Poll::Ready(result)
    }
}
