//! `/metrics` and `/auth/health` as plain tower services (and an axum `Router` of both).

use std::convert::Infallible;
use std::future::{ready, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::AuthWatch;

/// The response body of the endpoints.
pub type EndpointBody = Full<Bytes>;

/// The content type of the Prometheus text exposition.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) fn plain(status: StatusCode, text: &'static str) -> Response<EndpointBody> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A response that is never cached; for `HEAD`, the headers without the body.
pub(crate) fn uncached(
    status: StatusCode,
    content_type: &'static str,
    body: String,
    head: bool,
) -> Response<EndpointBody> {
    let mut r = Response::new(if head {
        Full::default()
    } else {
        Full::new(Bytes::from(body))
    });
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn method_allowed(m: &Method) -> bool {
    *m == Method::GET || *m == Method::HEAD
}

pub(crate) fn not_allowed() -> Response<EndpointBody> {
    let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
}

/// Whether the request carries the metrics bearer token (always, when none is configured): in
/// `Authorization: Bearer …`, or, when `query` allows it (the dashboard page, whose browser
/// cannot set headers on the page load), as `?token=…`.
pub(crate) fn authorized<B>(watch: &AuthWatch, req: &Request<B>, query: bool) -> bool {
    let Some(token) = watch.inner.metrics_token.as_deref() else {
        return true;
    };
    let header_ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|t| constant_time_eq(t, token.as_bytes()));
    let query_ok = query
        && req.uri().query().is_some_and(|q| {
            q.split('&')
                .filter_map(|kv| kv.strip_prefix("token="))
                .filter_map(percent_decode)
                .any(|t| constant_time_eq(&t, token.as_bytes()))
        });
    header_ok || query_ok
}

/// `%XX` escapes decoded (a `+` stays a `+`, as `encodeURIComponent` writes it); `None` for a
/// malformed escape.
pub(crate) fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

pub(crate) fn unauthorized() -> Response<EndpointBody> {
    let mut r = plain(StatusCode::UNAUTHORIZED, "unauthorized\n");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"metrics\""),
    );
    r
}

/// Compares without an early exit, so the time taken says nothing about the token.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves the Prometheus text exposition of every authwatch instrument, whatever the path.
/// Answers `GET` and `HEAD`; `401` without the bearer token when one is configured
/// ([`AuthWatchBuilder::metrics_bearer_token`](crate::AuthWatchBuilder::metrics_bearer_token));
/// `404` when the exposition is off.
#[derive(Clone, Debug)]
pub struct MetricsService {
    pub(crate) watch: AuthWatch,
}

impl MetricsService {
    /// The response, or `None` when the exposition must be rendered (off the async threads).
    fn check<B>(&self, req: &Request<B>) -> Option<Response<EndpointBody>> {
        if !method_allowed(req.method()) {
            return Some(not_allowed());
        }
        let allowed = authorized(&self.watch, req, false);
        self.watch.note_access("/metrics", req, allowed);
        if !allowed {
            return Some(unauthorized());
        }
        None
    }

    fn render(watch: &AuthWatch, head: bool) -> Response<EndpointBody> {
        let Some(text) = watch.metrics_text() else {
            return plain(StatusCode::NOT_FOUND, "metrics exposition is off\n");
        };
        uncached(StatusCode::OK, PROMETHEUS_CONTENT_TYPE, text, head)
    }
}

impl<B> tower_service::Service<Request<B>> for MetricsService {
    type Response = Response<EndpointBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(r) = self.check(&req) {
            return Box::pin(ready(Ok(r)));
        }
        let (watch, head) = (self.watch.clone(), req.method() == Method::HEAD);
        Box::pin(async move {
            // Rendering runs every collection callback (the HDR merges, the pending latencies)
            // under the SDK's lock: not on an async worker.
            let r = tokio::task::spawn_blocking(move || Self::render(&watch, head))
                .await
                .unwrap_or_else(|_| {
                    plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "metrics rendering failed\n",
                    )
                });
            Ok(r)
        })
    }
}

/// Serves the health report as JSON, whatever the path: 200 when healthy or degraded, 503 when
/// a critical check fails. See [`AuthWatch::health`].
#[derive(Clone, Debug)]
pub struct HealthService {
    pub(crate) watch: AuthWatch,
}

impl<B> tower_service::Service<Request<B>> for HealthService {
    type Response = Response<EndpointBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let watch = self.watch.clone();
        let method = req.method().clone();
        if method_allowed(&method) {
            watch.note_access("/auth/health", &req, true);
        }
        // Details by default to loopback clients only (an operator's curl on the host, a
        // sidecar), not to whoever can reach the port.
        let details = watch.inner.health.public_details.unwrap_or_else(|| {
            watch
                .inner
                .client_ip
                .resolve(&req)
                .is_some_and(|ip| ip.to_canonical().is_loopback())
        });
        Box::pin(async move {
            if !method_allowed(&method) {
                return Ok(not_allowed());
            }
            let mut report = watch.health().await;
            if !details {
                report = report.without_details();
            }
            Ok(uncached(
                report.status.http_status(),
                "application/json",
                report.to_json(),
                method == Method::HEAD,
            ))
        })
    }
}

#[cfg(feature = "axum")]
pub(crate) fn router(watch: &AuthWatch) -> axum::Router {
    let mut r = axum::Router::new()
        .route_service("/metrics", watch.metrics_service())
        .route_service("/auth/health", watch.health_service());
    if watch.inner.admin_token.is_some() {
        r = r.route_service("/auth/blocks", watch.blocks_service());
    }
    if watch.inner.dashboard {
        r.route_service("/auth/stats", watch.stats_service())
            .route_service("/auth/dashboard", watch.dashboard_service())
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_tokens_are_percent_decoded() {
        assert_eq!(percent_decode("a%2Bb+c").unwrap(), b"a+b+c");
        assert_eq!(percent_decode("%41"), Some(b"A".to_vec()));
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
