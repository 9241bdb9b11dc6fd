//! The authwatch Tower layer: one `.layer()` that watches the authentication routes of any
//! Axum, Tonic or Hyper service.
//!
//! This crate is for integrators who want authwatch's request handling without its exporters:
//! it recognises auth routes, times them to the end of the response body, classifies every
//! outcome, and hands one [`AuthEvent`] per request to the [`EventSink`]s you give it. It has
//! no OpenTelemetry dependency. Most users want the `authwatch` crate, which wires this layer to
//! its sinks (in-process counters and percentiles) and gives a snapshot API.
//!
//! The [`catalog`] module is the metric catalog (every instrument authwatch exports, its name,
//! kind, unit and attribute keys) as plain data, for exporters, alert rules and dashboards.
//!
//! # What happens to a request
//!
//! 1. [`AuthService`] looks the method and path up in the [`RouteTable`] (a hash of the path;
//!    a radix-tree walk only for paths that start like a template with parameters). A request
//!    that is not an auth route goes straight to your service and costs nothing more.
//! 2. For an auth route it starts the clock, reads the client address under the configured
//!    [`ClientIp`] rules, and calls your service.
//! 3. When the response head arrives, it is classified into an [`Outcome`] by the table below.
//!    A gRPC response without `grpc-status` in its head is classified from its trailers; a
//!    gRPC-Web one from the trailers frame at the end of its body (binary or base64 `-text`).
//! 4. When the body ends (its last frame, its trailers, `is_end_stream`, or the last byte its
//!    `Content-Length` announced), the clock stops and the [`AuthEvent`] goes to every sink. A
//!    HEAD request, a 1xx/204/304 response or an empty body ends with its head.
//! 5. If the response future or the body is dropped first (the client went away, an outer
//!    timeout), the event is emitted from the drop as [`Outcome::Cancelled`]. A panic while
//!    polling either is an [`Outcome::Error`], even if an outer layer catches it. Nothing is
//!    lost and nothing is counted twice.
//!
//! Add the layer to the outermost axum router (after `nest`): a nested router sees its paths
//! with the prefix stripped.
//!
//! | response | outcome |
//! |---|---|
//! | 2xx, 3xx; grpc-status 0 | [`Outcome::Success`] |
//! | 401, 403, 400, 409, 422, 423, 404/405, other 4xx; grpc 16, 7, 3, 6 | [`Outcome::Failure`] with a [`FailureReason`] |
//! | 401 on [`AuthOp::TokenValidation`], `WWW-Authenticate: … error="invalid_token"`, grpc 16 on token validation, a [`TokenGuardLayer`] rejection | `Failure(InvalidToken)`: also an invalid-token attempt |
//! | 429; grpc 8 | [`Outcome::RateLimited`] |
//! | 5xx; other grpc codes; malformed or missing grpc-status; a body error; an error from your service; a panic | [`Outcome::Error`] |
//! | future or body dropped before the end | [`Outcome::Cancelled`] |
//!
//! A handler may decide instead by inserting an [`Outcome`] into the response extensions.
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use authwatch_layer::{AuthEvent, AuthLayer, AuthOp, Outcome};
//! use axum::{routing::post, Router, http::StatusCode};
//! use tower::ServiceExt;
//! use http_body_util::BodyExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let sink = {
//!     let seen = seen.clone();
//!     move |e: &AuthEvent<'_>| seen.lock().unwrap().push((e.op, e.outcome, e.route.to_owned()))
//! };
//! let layer = AuthLayer::builder().sink(Arc::new(sink)).build().unwrap();
//!
//! let app = Router::new()
//!     .route("/api/auth/sign-in/email", post(|| async { StatusCode::UNAUTHORIZED }))
//!     .layer(layer);
//!
//! let req = http::Request::post("/api/auth/sign-in/email").body(axum::body::Body::empty()).unwrap();
//! let res = app.oneshot(req).await.unwrap();
//! res.into_body().collect().await.unwrap(); // the event is emitted at the end of the body
//!
//! let seen = seen.lock().unwrap();
//! assert_eq!(seen[0].0, AuthOp::Login);
//! assert_eq!(seen[0].1, Outcome::Failure(authwatch_layer::FailureReason::InvalidCredentials));
//! assert_eq!(seen[0].2, "/api/auth/sign-in/email");
//! # }
//! ```
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | no | the client address from `ConnectInfo<SocketAddr>`; guarded routes labelled by `MatchedPath` |
//!
//! # Privacy
//!
//! Route labels are templates from the [`RouteTable`], never raw paths; methods are bounded
//! (`_OTHER` for non-standard ones). The client address is handed to sinks for brute-force
//! detection and auditing; it must never become a metric attribute.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod ascii;
mod auth;
mod blocks;
pub mod catalog;
mod classify;
mod client_ip;
mod clock;
mod event;
mod grpc_web;
mod guard;
mod op;
mod routes;
mod session;
mod stripe;

pub use auth::{AuthLayer, AuthLayerBuilder, AuthService, ResponseBody, ResponseFuture, SpanHook};
pub use blocks::{BlockSource, BlockedIp, Blocklist, Inserted, Limiter, Synced};
pub use classify::LOCKOUT_HEADER;
pub use client_ip::{peer_addr, ClientIp, MAX_TRUSTED_HOPS};
pub use clock::now;
pub use event::{AuthEvent, EventSink, EventSource, Interest, Only, Sinks, MAX_GUARD_ROUTES};
pub use guard::{GuardFuture, Probe, TokenGuard, TokenGuardLayer, DEFAULT_GUARD_ROUTE};
pub use op::{AuthOp, FailureReason, Outcome};
pub use routes::{
    method_label, Methods, RouteError, RouteId, RouteInfo, RouteTable, Routes, DEFAULT_BASE_PATH,
};
pub use session::DEFAULT_SESSION_COOKIES;

/// Parsers exposed for fuzzing and property tests. Not a stable API.
#[doc(hidden)]
pub mod __private {
    /// `grpc-status` bytes to a code; `None` when malformed.
    pub fn parse_grpc_status(b: &[u8]) -> Option<u16> {
        crate::classify::parse_grpc_status(b).ok()
    }
    /// Whether a `WWW-Authenticate` value says `error="invalid_token"`.
    pub fn challenge_says_invalid_token(v: &[u8]) -> bool {
        crate::classify::challenge_says_invalid_token(v)
    }
    /// One forwarded-address entry to an address.
    pub fn parse_addr(b: &[u8]) -> Option<std::net::IpAddr> {
        crate::client_ip::parse_addr(b)
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
