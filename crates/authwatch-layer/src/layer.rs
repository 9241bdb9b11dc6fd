//! [`AuthLayer`] and [`AuthService`]: recognise, time, and hand over.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Method, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::classify::{classify_trailers, Classified};
use crate::client_ip::ClientIp;
use crate::clock::Tick;
use crate::event::{AuthEvent, EventSink, EventSource, Sinks};
use crate::future::ResponseFuture;
use crate::op::{AuthOp, Outcome};
use crate::routes::{method_label, RouteError, RouteTable, Routes};
use crate::stripe::{Stripe, Striped};

pub(crate) struct Shared {
    pub(crate) routes: RouteTable,
    pub(crate) client_ip: ClientIp,
    pub(crate) sinks: Sinks,
    pub(crate) span_hook: Option<SpanHook>,
    pub(crate) span_client_address: bool,
    pub(crate) sessions: Option<crate::session::SessionKeys>,
}

/// Called with each enabled `auth.request` span and the request's headers, before the inner
/// service runs: where an OpenTelemetry bridge sets the span's parent from a W3C `traceparent`
/// header (the facade does).
#[derive(Clone)]
pub struct SpanHook(pub Arc<dyn Fn(&tracing::Span, &http::HeaderMap) + Send + Sync>);

impl fmt::Debug for SpanHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpanHook")
    }
}

/// The Tower layer that watches auth routes. See the [crate docs](crate).
///
/// Cheap to clone (one `Arc`). Build it with [`AuthLayer::builder`], or get it from
/// `authwatch::AuthWatch::layer`, which wires it to authwatch's own sinks.
#[derive(Clone)]
pub struct AuthLayer {
    handle: Arc<Striped<Shared>>,
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("routes", &self.handle.shared().routes.routes().len())
            .field("client_ip", &self.handle.shared().client_ip)
            .field("sinks", &self.handle.shared().sinks)
            .finish()
    }
}

impl AuthLayer {
    /// A builder with the default [`Routes`], [`ClientIp::peer`] and no sink.
    pub fn builder() -> AuthLayerBuilder {
        AuthLayerBuilder {
            routes: Routes::default(),
            client_ip: ClientIp::default(),
            sinks: Sinks::new(),
            span_hook: None,
            span_client_address: false,
            sessions: Some(crate::session::SessionKeys::new(
                crate::session::DEFAULT_SESSION_COOKIES,
            )),
        }
    }

    /// The route table this layer matches against.
    #[must_use]
    pub fn routes(&self) -> &RouteTable {
        &self.handle.shared().routes
    }

    /// The client-address rules.
    #[must_use]
    pub fn client_ip(&self) -> ClientIp {
        self.handle.shared().client_ip
    }

    pub(crate) fn span_hook(&self) -> Option<&SpanHook> {
        self.handle.shared().span_hook.as_ref()
    }

    pub(crate) fn session_keys(&self) -> Option<&crate::session::SessionKeys> {
        self.handle.shared().sessions.as_ref()
    }
}

/// Builds an [`AuthLayer`].
#[derive(Debug)]
#[must_use]
pub struct AuthLayerBuilder {
    routes: Routes,
    client_ip: ClientIp,
    sinks: Sinks,
    span_hook: Option<SpanHook>,
    span_client_address: bool,
    sessions: Option<crate::session::SessionKeys>,
}

impl AuthLayerBuilder {
    /// The routes to watch (default: [`Routes::default`]).
    pub fn routes(mut self, routes: Routes) -> Self {
        self.routes = routes;
        self
    }

    /// How to find the client address (default: [`ClientIp::peer`]).
    pub fn client_ip(mut self, client_ip: ClientIp) -> Self {
        self.client_ip = client_ip;
        self
    }

    /// Adds a sink; every event goes to every sink, in the order added.
    pub fn sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sinks = self.sinks.with(sink);
        self
    }

    /// Replaces the sinks with `sinks`.
    pub fn sinks(mut self, sinks: Sinks) -> Self {
        self.sinks = sinks;
        self
    }

    /// Called with each enabled `auth.request` span and the request headers (see
    /// [`SpanHook`]).
    pub fn on_request_span(mut self, hook: SpanHook) -> Self {
        self.span_hook = Some(hook);
        self
    }

    /// Which cookies hold a session (default [`DEFAULT_SESSION_COOKIES`](crate::DEFAULT_SESSION_COOKIES));
    /// with the bearer token, they give each event its [`session`](AuthEvent::session) key.
    /// An empty list keeps only bearer tokens.
    pub fn session_cookies(mut self, names: &[&str]) -> Self {
        self.sessions = Some(crate::session::SessionKeys::new(names));
        self
    }

    /// Turns session keys on (the default) or off (events carry `session: None`; no token or
    /// cookie is read).
    pub fn session_keys(mut self, on: bool) -> Self {
        match (on, self.sessions.is_some()) {
            (false, _) => self.sessions = None,
            (true, false) => {
                self.sessions = Some(crate::session::SessionKeys::new(
                    crate::session::DEFAULT_SESSION_COOKIES,
                ));
            }
            (true, true) => {}
        }
        self
    }

    /// Puts the client address on the `auth.request` span as `client.address` (default off:
    /// spans carry no address, user id or token unless you opt in).
    pub fn span_client_address(mut self, on: bool) -> Self {
        self.span_client_address = on;
        self
    }

    /// Builds the layer.
    ///
    /// # Errors
    ///
    /// A [`RouteError`] when a route template is invalid or two conflict.
    pub fn build(self) -> Result<AuthLayer, RouteError> {
        crate::clock::init();
        Ok(AuthLayer {
            handle: Arc::new(Striped::new(Shared {
                routes: self.routes.build()?,
                client_ip: self.client_ip,
                sinks: self.sinks,
                span_hook: self.span_hook,
                span_client_address: self.span_client_address,
                sessions: self.sessions,
            })),
        })
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            handle: self.handle.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around yours.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    handle: Arc<Striped<Shared>>,
}

impl<S: fmt::Debug> fmt::Debug for AuthService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> AuthService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AuthService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let handle = &*self.handle;
        let route = handle
            .shared()
            .routes
            .lookup(req.method(), req.uri().path(), req.headers());
        // The inner future is built straight into the struct literal: the futures of a whole
        // router are large, and a detour through a constructor costs a copy of it per request.
        let Some(route) = route else {
            return ResponseFuture {
                inner: self.inner.call(req),
                tracker: Tracker::none(),
            };
        };
        let shared = handle.shared();
        let info = &shared.routes.routes()[usize::from(route.id.0)];
        let method = method_label(req.method());
        let client_ip = shared.client_ip.resolve(&req);
        // No span at all (one relaxed load) until a subscriber is installed; then disabled
        // unless it wants authwatch's spans.
        let span = if tracing::dispatcher::has_been_set() {
            tracing::info_span!(
            target: "authwatch::request",
            "auth.request",
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            auth.operation = info.op.as_str(),
            http.route = &*info.template,
            http.request.method = method,
            rpc.method = info.rpc_method.as_deref(),
            auth.outcome = tracing::field::Empty,
            auth.failure.reason = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            client.address = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        if !span.is_disabled() {
            if let Some(hook) = &shared.span_hook {
                (hook.0)(&span, req.headers());
            }
            if shared.span_client_address {
                if let Some(ip) = client_ip {
                    span.record("client.address", tracing::field::display(ip));
                }
            }
        }
        let session = shared.sessions.as_ref().and_then(|k| k.of(req.headers()));
        let tracker = Tracker {
            inner: Some(Box::new(TrackerState {
                shared: handle.stripe(),
                route: route.id.0,
                start: Tick::now(),
                method,
                head_only: req.method() == Method::HEAD,
                client_ip,
                user_agent: req.headers().get(http::header::USER_AGENT).cloned(),
                status: None,
                classified: Classified::RequiresTrailers,
                remaining: None,
                span: span.clone(),
                session,
            })),
        };
        if span.is_disabled() {
            return ResponseFuture {
                inner: self.inner.call(req),
                tracker,
            };
        }
        // Inner layers that work in `call` (a guard under a `ServiceBuilder`) run in the span.
        let entered = span.entered();
        let inner = self.inner.call(req);
        drop(entered);
        ResponseFuture { inner, tracker }
    }
}

/// The bookkeeping of one auth request, from `call` to the end of the body. Emits exactly one
/// event: through [`finish`](Self::finish), or, if dropped before that, as cancelled.
pub(crate) struct Tracker {
    /// Boxed: the tracker rides in the response future and then in the response body, which
    /// the router and the server move several times per request (axum's `Router::layer` also
    /// boxes the body). Eight bytes instead of 176: the allocation costs less than the copies
    /// it saves (an auth request 22-46 ns cheaper, `cargo bench --bench overhead --
    /// peers/auth`).
    inner: Option<Box<TrackerState>>,
}

struct TrackerState {
    shared: Arc<Stripe<Shared>>,
    route: u16,
    start: Tick,
    method: &'static str,
    head_only: bool,
    client_ip: Option<IpAddr>,
    /// The request's `User-Agent` (a reference-counted handle on the request's bytes), for
    /// sinks that keep an audit trail. Never a metric attribute.
    user_agent: Option<HeaderValue>,
    status: Option<u16>,
    classified: Classified,
    /// Body bytes still to come, when the response declared its length.
    remaining: Option<u64>,
    /// The `auth.request` span (disabled without a subscriber that wants it).
    span: tracing::Span,
    session: Option<u64>,
}

impl Tracker {
    #[inline]
    pub(crate) fn none() -> Self {
        Self { inner: None }
    }

    /// Enters the request's span for one poll, when it is enabled (the handler's own spans
    /// and events then nest under it).
    #[inline]
    pub(crate) fn enter(&self) -> Option<tracing::span::EnteredSpan> {
        let s = self.inner.as_ref()?;
        (!s.span.is_disabled()).then(|| s.span.clone().entered())
    }

    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        self.inner.is_some()
    }

    /// The operation, and whether the route may answer gRPC.
    #[inline]
    pub(crate) fn route(&self) -> Option<(AuthOp, bool)> {
        let s = self.inner.as_ref()?;
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
        let Some(s) = self.inner.as_mut() else {
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
        let Some(s) = self.inner.as_mut() else {
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
        if let Some(s) = self.inner.as_mut() {
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
        if let Some(s) = self.inner.take() {
            let (outcome, grpc) = s.classified.at_end();
            s.emit(outcome, grpc);
        }
    }

    /// The body reported its end (`None`, or `is_end_stream` after a frame). A body that ends
    /// before the bytes its `Content-Length` announced was cut short: hyper aborts such a
    /// response, so it is an error whatever the head said.
    pub(crate) fn finish_body(&mut self) {
        let short = self
            .inner
            .as_ref()
            .is_some_and(|s| s.remaining.is_some_and(|r| r > 0));
        if short {
            self.finish(Outcome::Error);
        } else {
            self.finish_classified();
        }
    }

    /// Emit `outcome` now (inner service error, body error).
    pub(crate) fn finish(&mut self, outcome: Outcome) {
        if let Some(s) = self.inner.take() {
            let (_, grpc) = s.classified.at_end();
            s.emit(outcome, grpc);
        }
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
            user_agent: self.user_agent.as_ref().and_then(|v| v.to_str().ok()),
            source: EventSource::Route,
            session: self.session,
        };
        let span = &self.span;
        if !span.is_disabled() {
            span.record("auth.outcome", outcome.as_str());
            if let Some(r) = outcome.reason() {
                span.record("auth.failure.reason", r.as_str());
            }
            if let Some(s) = self.status {
                span.record("http.response.status_code", s);
            }
            if outcome == Outcome::Error {
                span.record("otel.status_code", "ERROR");
            }
        }
        // The sinks run inside the span (an audit record can carry its trace id); the span
        // ends when this returns.
        let _in_span = span.enter();
        shared.sinks.record(&event);
    }
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
