//! [`AuthService`]: looks the request up in the route table and starts its [`Tracker`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::net::IpAddr;

use http::{HeaderMap, Method, Request, Response};
use tower_service::Service;

use super::body::ResponseBody;
use super::future::{Inner, ResponseFuture};
#[cfg(doc)]
use super::layer::AuthLayer;
use super::layer::Shared;
use super::tracker::{Tracker, TrackerState};
use crate::blocks::{Blocklist, Refusal};
use crate::classify::Classified;
use crate::clock::Tick;
use crate::routes::{method_label, RouteInfo};
use crate::session::Picked;
use crate::stripe::Striped;

/// The service [`AuthLayer`] wraps around yours.
#[derive(Clone)]
pub struct AuthService<S> {
    pub(super) inner: S,
    pub(super) handle: Arc<Striped<Shared>>,
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
        // While blocks are in force, the client is looked up once, here.
        let mut resolved = None;
        if let Some(blocks) = &handle.shared().blocks {
            if blocks.armed() {
                match refusal(blocks, handle.shared(), route, &req) {
                    Ok(refusal) => {
                        return ResponseFuture {
                            inner: Inner::Refused { refusal },
                            tracker: Tracker::none(),
                        };
                    }
                    Err(ip) => resolved = ip,
                }
            }
        }
        // The inner future is built straight into the struct literal: the futures of a whole
        // router are large, and a detour through a constructor costs a copy of it per request.
        let Some(route) = route else {
            return ResponseFuture {
                inner: Inner::Call {
                    f: self.inner.call(req),
                },
                tracker: Tracker::none(),
            };
        };
        let shared = handle.shared();
        let info = &shared.routes.routes()[usize::from(route.id.0)];
        let method = method_label(req.method());
        let client_ip = match resolved {
            Some(ip) => ip,
            None => shared.client_ip.resolve(&req),
        };
        // The attack-time limit, while it is on: a refusal is still this request's event.
        let limited = match &shared.limiter {
            Some(l) if l.active() => limit(&**l, info, client_ip),
            _ => None,
        };
        // No span at all (one relaxed load) until a subscriber is installed; then none unless
        // it wants authwatch's spans.
        let span = if tracing::dispatcher::has_been_set()
            && tracing::level_enabled!(tracing::Level::INFO)
        {
            request_span(shared, info, method, client_ip, req.headers())
        } else {
            None
        };
        let picked = Picked::from(req.headers());
        let session = shared
            .sessions
            .as_ref()
            .and_then(|k| k.of_picked(&picked, req.headers()));
        let in_span = span.is_some();
        let tracker = Tracker::new(TrackerState {
            shared: handle.stripe(),
            route: route.id.0,
            start: Tick::now(),
            method,
            head_only: req.method() == Method::HEAD,
            client_ip,
            user_agent: picked.user_agent.cloned(),
            status: None,
            classified: Classified::RequiresTrailers,
            remaining: None,
            span,
            session,
        });
        if let Some(refusal) = limited {
            return ResponseFuture {
                inner: Inner::Refused { refusal },
                tracker,
            };
        }
        if in_span {
            return call_in_span(&mut self.inner, req, tracker);
        }
        // Built in place, as above: a detour through a local costs a copy of the future.
        ResponseFuture {
            inner: Inner::Call {
                f: self.inner.call(req),
            },
            tracker,
        }
    }
}

/// The attack-time limit's refusal of this request, if it refuses it. Out of line: only while
/// the limit is on.
#[inline(never)]
fn limit(
    limiter: &dyn crate::blocks::Limiter,
    info: &RouteInfo,
    client_ip: Option<IpAddr>,
) -> Option<Refusal> {
    let wait = limiter.check(client_ip?, info.op)?;
    Some(Refusal::new(wait, info.grpc))
}

/// The refusal of a request from a blocked address, when it is one (on an auth route, or on
/// any with [`Blocklist::all_routes`]); otherwise the client address, when it was looked up.
/// Out of line: only while blocks are in force.
#[inline(never)]
fn refusal<B>(
    blocks: &Blocklist,
    shared: &Shared,
    route: Option<&RouteInfo>,
    req: &Request<B>,
) -> Result<Refusal, Option<Option<IpAddr>>> {
    if route.is_none() && !blocks.all_routes() {
        return Err(None);
    }
    let ip = shared.client_ip.resolve(req);
    let Some(left) = ip.and_then(|ip| blocks.check_armed(ip, route.map(|r| r.op))) else {
        return Err(Some(ip));
    };
    Ok(Refusal::new(left, route.is_some_and(|r| r.grpc)))
}

/// Calls the inner service inside the request's span: inner layers that work in `call` (a
/// guard under a `ServiceBuilder`) then run in it. Out of line: only with a subscriber.
#[inline(never)]
fn call_in_span<S, ReqBody>(
    inner: &mut S,
    req: Request<ReqBody>,
    tracker: Tracker,
) -> ResponseFuture<S::Future>
where
    S: Service<Request<ReqBody>>,
{
    let entered = tracker.enter();
    let f = inner.call(req);
    drop(entered);
    ResponseFuture {
        inner: Inner::Call { f },
        tracker,
    }
}

/// The request's `auth.request` span, when the subscriber wants it: out of line, so that the
/// request path without one stays short.
#[inline(never)]
fn request_span(
    shared: &Shared,
    info: &RouteInfo,
    method: &'static str,
    client_ip: Option<IpAddr>,
    headers: &HeaderMap,
) -> Option<tracing::Span> {
    let span = tracing::info_span!(
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
    );
    if span.is_disabled() {
        return None;
    }
    if let Some(hook) = &shared.span_hook {
        (hook.0)(&span, headers);
    }
    if shared.span_client_address {
        if let Some(ip) = client_ip {
            span.record("client.address", tracing::field::display(ip));
        }
    }
    Some(span)
}
