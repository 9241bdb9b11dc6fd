//! Monitoring for the authentication routes of an Axum, Tonic or Hyper service,
//! added with one `.layer()`.
//!
//! authwatch times login, registration, token validation, token refresh, logout and password
//! reset, classifies every outcome (success, failure with a reason, rate limited, invalid token,
//! server error, cancelled), and keeps exact counters and HDR-histogram percentiles (p50, p95,
//! p99 over a sliding window) per operation. No handler changes: it recognises the usual auth
//! paths (Better Auth, OAuth2/OIDC, generic `/login`, gRPC `*/Login`, …) by itself.
//!
//! # Example
//!
//! ```
//! use authwatch::{AuthOp, AuthWatch};
//! use axum::{http::StatusCode, routing::post, Router};
//! use http_body_util::BodyExt;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let watch = AuthWatch::builder().service_name("accounts").build()?;
//!
//! async fn sign_in() -> StatusCode {
//!     StatusCode::UNAUTHORIZED // wrong password
//! }
//! let app = Router::new()
//!     .route("/api/auth/sign-in/email", post(sign_in))
//!     .layer(watch.layer());
//!
//! // Serve `app` as usual; here one request goes through it in-process.
//! let req = http::Request::post("/api/auth/sign-in/email").body(axum::body::Body::empty())?;
//! let res = app.oneshot(req).await?;
//! res.into_body().collect().await?;
//!
//! let s = watch.snapshot();
//! let login = s.op(AuthOp::Login);
//! assert_eq!((login.success, login.failure), (0, 1));
//! assert!(login.p95.is_some());
//! println!("{s}");
//! # Ok(())
//! # }
//! ```
//!
//! To have the client address in every event (for sinks that key on it; never a metric), serve with
//! `app.into_make_service_with_connect_info::<std::net::SocketAddr>()`, or tell authwatch about
//! your proxies with [`AuthWatchBuilder::client_ip`].
//!
//! # Token validation on protected routes
//!
//! Wrap the middleware that already checks tokens with [`AuthWatch::token_guard`]; authwatch then
//! counts and times every validation (success, invalid token) without changing it:
//!
//! ```
//! # use authwatch::AuthWatch;
//! use axum::{routing::get, Router};
//! use tower_http::validate_request::ValidateRequestHeaderLayer;
//!
//! # let watch = AuthWatch::builder().build().unwrap();
//! let api: Router = Router::new()
//!     .route("/api/me", get(|| async { "me" }))
//!     .layer(watch.token_guard(ValidateRequestHeaderLayer::bearer("s3cret")));
//! ```
//!
//! # Crates
//!
//! | crate | what it is |
//! |---|---|
//! | `authwatch` (this one) | the facade: [`AuthWatch`] wires the layer to its sinks |
//! | [`authwatch_layer`] | the Tower layer, routes, outcome rules, client IP, [`EventSink`] |
//! | [`authwatch_hdr`] | sliding-window HDR histograms with sharded recording |
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | yes | client address from axum's `ConnectInfo`, guarded routes labelled by `MatchedPath` |

#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(not(test), warn(clippy::print_stdout))]

mod stats;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use authwatch_hdr;
pub use authwatch_hdr::WindowConfig;
pub use authwatch_layer;
pub use authwatch_layer::{
    AuthEvent, AuthLayer, AuthOp, ClientIp, EventSink, EventSource, FailureReason, Methods,
    Outcome, RouteError, Routes, Sinks, TokenGuardLayer,
};
pub use stats::{Latency, OpStats, Snapshot};

use stats::Stats;

/// Why [`AuthWatchBuilder::build`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A route template is invalid or two conflict; the message names the route.
    #[error(transparent)]
    Routes(#[from] RouteError),
}

/// Monitoring for one service's auth routes. Cheap to clone; every clone is the same monitor.
///
/// Build it with [`AuthWatch::builder`], add [`layer`](Self::layer) to your service, read
/// [`snapshot`](Self::snapshot).
#[derive(Clone)]
pub struct AuthWatch {
    inner: Arc<Inner>,
}

struct Inner {
    service_name: String,
    layer: AuthLayer,
    sinks: Sinks,
    stats: Arc<Stats>,
    client_ip: ClientIp,
}

impl fmt::Debug for AuthWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthWatch")
            .field("service_name", &self.inner.service_name)
            .field("layer", &self.inner.layer)
            .finish_non_exhaustive()
    }
}

impl AuthWatch {
    /// A builder with the defaults: the default [`Routes`], [`ClientIp::peer`], a 5-minute
    /// window in 10 slots.
    pub fn builder() -> AuthWatchBuilder {
        AuthWatchBuilder {
            service_name: None,
            routes: Routes::default(),
            client_ip: ClientIp::default(),
            window: WindowConfig::default(),
            sinks: Vec::new(),
        }
    }

    /// The layer to add to your service: `Clone + Layer<S>` for any
    /// `Service<http::Request<B>>` whose response body is an `http_body::Body`.
    #[must_use]
    pub fn layer(&self) -> AuthLayer {
        self.inner.layer.clone()
    }

    /// Wraps your token-validating middleware so every protected request counts as a token
    /// validation. See [`TokenGuardLayer`].
    #[must_use]
    pub fn token_guard<L>(&self, validator: L) -> TokenGuardLayer<L> {
        TokenGuardLayer::new(validator, self.inner.sinks.clone())
            .client_ip(self.inner.client_ip)
            .watched_by(self.inner.layer.clone())
    }

    /// The in-process stats right now: counters since start, percentiles over the window.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_at(authwatch_layer::now())
    }

    /// The stats with the window ending at `now` (on authwatch's clock,
    /// [`authwatch_layer::now`]).
    #[must_use]
    pub fn snapshot_at(&self, now: Instant) -> Snapshot {
        self.inner.stats.snapshot(now)
    }

    /// Feeds an event measured elsewhere (a queue consumer, a non-HTTP login path) to every
    /// sink, as the layer does.
    pub fn record(&self, event: &AuthEvent<'_>) {
        self.inner.sinks.record(event);
    }

    /// The service name (`service.name`).
    #[must_use]
    pub fn service_name(&self) -> &str {
        &self.inner.service_name
    }

    /// The window percentiles are computed over.
    #[must_use]
    pub fn window(&self) -> Duration {
        self.inner.stats.window()
    }
}

/// Builds an [`AuthWatch`].
#[must_use]
pub struct AuthWatchBuilder {
    service_name: Option<String>,
    routes: Routes,
    client_ip: ClientIp,
    window: WindowConfig,
    sinks: Vec<Arc<dyn EventSink>>,
}

impl fmt::Debug for AuthWatchBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthWatchBuilder")
            .field("service_name", &self.service_name)
            .field("routes", &self.routes)
            .field("client_ip", &self.client_ip)
            .field("window", &self.window)
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl AuthWatchBuilder {
    /// The service name; default `OTEL_SERVICE_NAME`, else `unknown_service`.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// Replaces the route table (start from [`Routes::default`] to keep the defaults).
    pub fn routes(mut self, routes: Routes) -> Self {
        self.routes = routes;
        self
    }

    /// Adds (or replaces) one route; shorthand for `routes(routes.route(path, op))`.
    pub fn route(mut self, path: impl AsRef<str>, op: AuthOp) -> Self {
        self.routes = self.routes.route(path, op);
        self
    }

    /// How to find the client address (default [`ClientIp::peer`]: no header is trusted).
    pub fn client_ip(mut self, client_ip: ClientIp) -> Self {
        self.client_ip = client_ip;
        self
    }

    /// The percentile window (default 5 minutes in 10 slots).
    pub fn window(mut self, window: WindowConfig) -> Self {
        self.window = window;
        self
    }

    /// Adds a sink of your own; it gets every event after authwatch's own sinks.
    pub fn sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Builds the monitor.
    ///
    /// # Errors
    ///
    /// [`BuildError::Routes`] when a route template is invalid or conflicts with another.
    pub fn build(self) -> Result<AuthWatch, BuildError> {
        let stats = Arc::new(Stats::new(self.window));
        let mut sinks = Sinks::new().with(stats.clone());
        for s in self.sinks {
            sinks = sinks.with(s);
        }
        let layer = AuthLayer::builder()
            .routes(self.routes)
            .client_ip(self.client_ip)
            .sinks(sinks.clone())
            .build()?;
        let service_name = self
            .service_name
            .or_else(|| {
                std::env::var("OTEL_SERVICE_NAME")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "unknown_service".to_owned());
        Ok(AuthWatch {
            inner: Arc::new(Inner {
                service_name,
                layer,
                sinks,
                stats,
                client_ip: self.client_ip,
            }),
        })
    }
}

/// The README's examples, compiled and run as doctests so they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_routes_are_a_build_error() {
        let e = AuthWatch::builder()
            .route("/a/{x}", AuthOp::Login)
            .route("/a/{y}", AuthOp::Login)
            .build()
            .unwrap_err();
        assert!(matches!(e, BuildError::Routes(_)), "{e}");
    }

    #[test]
    fn service_name_prefers_the_builder() {
        let w = AuthWatch::builder()
            .service_name("accounts")
            .build()
            .unwrap();
        assert_eq!(w.service_name(), "accounts");
    }

    #[test]
    fn public_types_are_send_sync() {
        fn is<T: Send + Sync + 'static>() {}
        is::<AuthWatch>();
        is::<Snapshot>();
        is::<OpStats>();
        is::<BuildError>();
    }
}
