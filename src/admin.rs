//! `/auth/blocks`: the block list over HTTP, for operators and the `authwatch blocks` command.
//! Served only when an admin token is set
//! ([`AuthWatchBuilder::admin_token`](crate::AuthWatchBuilder::admin_token)), and only to a
//! request that carries it (`Authorization: Bearer …`).
//!
//! - `GET /auth/blocks`: `{"blocks": [...], "dry_run": …, "refused": {...}}`; with
//!   `?format=nftables|ipset|plain|json`, the list in that format
//!   ([`export`](crate::blocks::export)).
//! - `POST /auth/blocks` with `{"ip": "203.0.113.7", "ttl_seconds": 3600, "reason": "…"}`:
//!   blocks (`201`, the block); `400` for a bad body, `409` for an allow-listed address.
//! - `DELETE /auth/blocks?ip=203.0.113.7`: lifts the block (`200`, the block lifted), `404`
//!   when there was none.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::blocks::{block_json, export, ExportFormat};
use crate::endpoints::{constant_time_eq, uncached, EndpointBody};
use crate::AuthWatch;

/// The largest request body `POST /auth/blocks` reads.
const MAX_BODY: usize = 16 * 1024;

/// Serves `/auth/blocks`, whatever the path, to the admin token only
/// ([`AuthWatchBuilder::admin_token`](crate::AuthWatchBuilder::admin_token)):
///
/// - `GET`: `{"blocks": [...], "dry_run": …, "refused": {...}}`; with
///   `?format=nftables|ipset|plain|json`, the list in that format
///   ([`export`](crate::blocks::export)).
/// - `POST` `{"ip": "203.0.113.7", "ttl_seconds": 3600, "reason": "…"}`: blocks (`201`, the
///   block); `400` for a bad body, `409` for an allow-listed address.
/// - `DELETE ?ip=203.0.113.7`: lifts the block (`200`), `404` when there was none.
#[derive(Clone, Debug)]
pub struct BlocksService {
    pub(crate) watch: AuthWatch,
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<EndpointBody> {
    uncached(status, "application/json", format!("{v}\n"), false)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<EndpointBody> {
    json(status, &serde_json::json!({ "error": message.to_string() }))
}

fn query<'a>(q: Option<&'a str>, key: &str) -> Option<&'a str> {
    q?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

impl BlocksService {
    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(token) = self.watch.inner.admin_token.as_deref() else {
            return false;
        };
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .is_some_and(|t| constant_time_eq(t, token.as_bytes()))
    }

    fn list(&self, q: Option<&str>) -> Response<EndpointBody> {
        let blocks = self.watch.blocked_ips();
        if let Some(f) = query(q, "format") {
            return match f.parse::<ExportFormat>() {
                Ok(format) => {
                    let ct = if format == ExportFormat::Json {
                        "application/json"
                    } else {
                        "text/plain; charset=utf-8"
                    };
                    uncached(StatusCode::OK, ct, export(&blocks, format), false)
                }
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            };
        }
        json(
            StatusCode::OK,
            &serde_json::json!({
                "blocks": blocks.iter().map(block_json).collect::<Vec<_>>(),
                "dry_run": self.watch.inner.blocker.dry_run(),
                "refused": self.watch.blocked_requests_json(),
            }),
        )
    }

    fn add(&self, body: &[u8]) -> Response<EndpointBody> {
        let v: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("not JSON: {e}")),
        };
        let Some(ip) = v["ip"].as_str().and_then(|s| s.trim().parse().ok()) else {
            return error(StatusCode::BAD_REQUEST, "\"ip\": an IPv4 or IPv6 address");
        };
        let ttl = match &v["ttl_seconds"] {
            serde_json::Value::Null => Duration::from_secs(3600),
            t => match t.as_u64() {
                Some(s) if s > 0 => Duration::from_secs(s),
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "\"ttl_seconds\": a whole number of seconds, at least 1",
                    )
                }
            },
        };
        let reason = v["reason"]
            .as_str()
            .unwrap_or("blocked through /auth/blocks");
        match self.watch.block_ip(ip, ttl, reason) {
            Ok(b) => json(StatusCode::CREATED, &block_json(&b)),
            Err(e) => error(StatusCode::CONFLICT, e),
        }
    }

    fn remove(&self, q: Option<&str>) -> Response<EndpointBody> {
        let Some(ip) = query(q, "ip").and_then(|s| s.parse().ok()) else {
            return error(StatusCode::BAD_REQUEST, "?ip=: an IPv4 or IPv6 address");
        };
        match self.watch.unblock_ip(ip) {
            Some(b) => json(StatusCode::OK, &block_json(&b)),
            None => error(StatusCode::NOT_FOUND, format!("{ip} is not blocked")),
        }
    }
}

impl<B> tower_service::Service<Request<B>> for BlocksService
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<EndpointBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let allowed = this.authorized(&req);
            this.watch.note_access("/auth/blocks", &req, allowed);
            if !allowed {
                let mut r = error(StatusCode::UNAUTHORIZED, "a bearer token is needed");
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return Ok(r);
            }
            let q = req.uri().query().map(str::to_owned);
            Ok(match *req.method() {
                Method::GET => this.list(q.as_deref()),
                Method::DELETE => this.remove(q.as_deref()),
                Method::POST => match Limited::new(req.into_body(), MAX_BODY).collect().await {
                    Ok(b) => this.add(&b.to_bytes()),
                    Err(e) => error(StatusCode::BAD_REQUEST, format!("body: {e}")),
                },
                _ => {
                    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "GET, POST or DELETE");
                    r.headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
                    r
                }
            })
        })
    }
}
