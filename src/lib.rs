//! Monitoring for the authentication routes of an Axum, Tonic or Hyper service,
//! added with one `.layer()`.
//!
//! authwatch times login, registration, token validation, token refresh, logout and password
//! reset, classifies every outcome (success, failure with a reason, rate limited, invalid token,
//! server error, cancelled), and keeps exact counters and HDR-histogram percentiles (p50, p95,
//! p99 over a sliding window) per operation. No handler changes: it recognises the usual auth
//! paths (Better Auth, OAuth2/OIDC, generic `/login`, gRPC `*/Login`, …) by itself.
//!
//! Everything is exported as OpenTelemetry metrics: over OTLP to any collector when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (or the builder says so), and as Prometheus text on
//! `/metrics` ([`AuthWatch::endpoints`], [`AuthWatch::metrics_service`]) without one, next to
//! `/auth/health` ([`AuthWatch::health_service`], [`health`]). The instruments are listed in
//! [`CATALOG`].
//!
//! The spec's alerts are evaluated in-process every 5 seconds ([`AlertConfig`]): firing alerts
//! go to the log, to Alertmanager or a webhook when configured, and into
//! [`Snapshot::alerts`]. The same rules for Prometheus, an Alertmanager config and Grafana
//! dashboards come from the `authwatch` command (`authwatch rules | alertmanager | dashboards`).
//!
//! # Quick start
//!
//! The README's: an axum service with authwatch, `/metrics`, `/auth/health` and the dashboard.
//!
//! ```no_run
//! use authwatch::AuthWatch;
//! use axum::{routing::post, Router};
//! use std::net::SocketAddr;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // OTLP export is on when OTEL_EXPORTER_OTLP_ENDPOINT is set; /metrics and /auth/health always.
//!     let watch = AuthWatch::builder().service_name("accounts").build()?;
//!     let app = Router::new()
//!         .route("/api/auth/sign-in/email", post(|| async { "ok" }))
//!         .layer(watch.layer())
//!         .merge(watch.endpoints()); // /metrics, /auth/health, /auth/dashboard, /auth/stats
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     // ConnectInfo gives authwatch the client address (events carry it; metrics never do).
//!     axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//!     watch.shutdown().await?; // flushes the exporters
//!     Ok(())
//! }
//! ```
//!
//! Tonic and hyper take the same `watch.layer()` (on `tonic::transport::Server::builder()`, in
//! a `tower::ServiceBuilder`); the `tonic` and `hyper` examples of the repository are complete
//! services. The guide (`docs/guide/` in the repository) covers configuration, every metric,
//! the alerts and their runbooks, the audit trail, fleet mode and incident response.
//!
//! # Example: one request, and what authwatch saw
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
//!
//! // The same, as Prometheus sees it on /metrics (`app.merge(watch.endpoints())`).
//! let text = watch.metrics_text().unwrap();
//! assert!(text.contains("auth_login_failure_count_total{"));
//! watch.shutdown().await?; // flushes the OTLP exporters, if any
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
//! # Modules
//!
//! The names most code needs are at the root. The rest, by what they are:
//!
//! | module | what it holds |
//! |---|---|
//! | [`layer`] | the Tower layer and token guard, the route table, [`AuthEvent`] and [`EventSink`] for sinks of your own |
//! | [`alerts`] | the rules, the alert engine, brute-force detection, notifiers, generated Prometheus rules, Alertmanager config and Grafana dashboards |
//! | [`audit`] | the audit trail: [`LoginAuditLogger`], the local tamper-evident log and its verification |
//! | [`health`] | health checks for `/auth/health` |
//! | [`metrics`] | the metric catalog: every instrument's name, kind, unit and attributes |
//! | [`export`] | OTLP export and the Prometheus exposition |
//! | [`window`] | the sliding window of the percentiles |
//!
//! The OpenTelemetry crates authwatch is built on are re-exported ([`opentelemetry`],
//! [`opentelemetry_sdk`], [`opentelemetry_otlp`], [`opentelemetry_prometheus`]), so your code
//! can use the same versions.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | yes | client address from axum's `ConnectInfo`, guarded routes labelled by `MatchedPath`, [`AuthWatch::endpoints`] |
//! | `otlp-grpc` | yes | OTLP export over gRPC (tonic; TLS with rustls and ring) |
//! | `otlp-http` | yes | OTLP export over HTTP/protobuf |
//! | `sqlx` | no | [`health::sqlx_pool`], a health check of a sqlx pool |
//! | `otlp-http-tls` | no | `https://` OTLP endpoints over HTTP/protobuf (gRPC has TLS without it) |
//! | `alerts-https` | no | `https://` Alertmanager and webhook URLs |

#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(not(test), warn(clippy::print_stdout))]

pub mod access;
mod active;
mod admin;
pub mod alerts;
pub mod audit;
pub mod blocks;
mod builder;
pub mod config;
pub mod crowdsec;
mod dashboard;
mod endpoints;
mod error;
pub mod export;
mod fleet;
mod geo;
pub mod health;
pub mod incidents;
pub mod layer;
mod limit;
pub mod metrics;
pub mod review;
mod stats;
mod tracing_ctx;
mod watch;
pub mod window;
mod wiring;
#[cfg(feature = "axum")]
mod wrapped;

pub use admin::BlocksService;
pub use audit::{get_login_audit_logger, AuditClass, AuditFlush, LoginAuditLogger};
pub use authwatch_alerts::{Alert, AlertConfig, AlertEngine, AlertEvent, AlertState, Severity};
pub use authwatch_hdr::WindowConfig;
pub use authwatch_layer::{
    AuthEvent, AuthLayer, AuthOp, ClientIp, EventSink, EventSource, FailureReason, Methods,
    Outcome, RouteError, Routes, Sinks, TokenGuardLayer, LOCKOUT_HEADER,
};
pub use authwatch_otel::reexports::{
    opentelemetry, opentelemetry_otlp, opentelemetry_prometheus, opentelemetry_sdk,
};
pub use authwatch_otel::{HistogramAggregation, OtlpOptions, Protocol, CATALOG};
pub use dashboard::{DashboardService, StatsService};
pub use endpoints::{EndpointBody, HealthService, MetricsService, PROMETHEUS_CONTENT_TYPE};
pub use health::{HealthCheck, HealthReport};
pub use opentelemetry_sdk::metrics::Temporality;
pub use stats::{Latency, OpStats, Scope, Snapshot};

pub use authwatch_layer::{BlockSource, BlockedIp};
pub use blocks::{BlockError, BlockPolicy, ExportFormat, BLOCKING_ALERTS};
pub use builder::AuthWatchBuilder;
pub use crowdsec::{CrowdSec, CrowdSecStatus};
pub use error::{BuildError, ShutdownError};
pub use fleet::{Fleet, FleetInstance, FleetStatus};
pub use limit::{AttackLimit, ATTACK_LIMIT_TRIGGERS};
pub use watch::AuthWatch;
#[cfg(feature = "axum")]
pub use wrapped::{Wrapped, WrappedFuture};

/// The README's examples, compiled and run as doctests so they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The guide's examples (`docs/guide/`), compiled and run as doctests, one page each.
#[cfg(doctest)]
mod guide_doctests {
    macro_rules! pages {
        ($($name:ident => $file:literal),* $(,)?) => {$(
            #[doc = include_str!(concat!("../docs/guide/", $file))]
            struct $name;
        )*};
    }
    pages! {
        Installation => "installation.md",
        Configuration => "configuration.md",
        Metrics => "metrics.md",
        Endpoints => "endpoints.md",
        Alerts => "alerts.md",
        Audit => "audit.md",
        Fleet => "fleet.md",
        IncidentResponse => "incident-response.md",
        Exporting => "exporting.md",
        Security => "security.md",
        Performance => "performance.md",
        Troubleshooting => "troubleshooting.md",
    }
}

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

    /// The guide's metric reference (`docs/guide/metrics.md`) holds the catalog's table, word
    /// for word; when it does not, the failure prints the table to paste.
    #[test]
    fn guide_metric_table_is_the_catalog() {
        let page = include_str!("../docs/guide/metrics.md");
        let table = authwatch_otel::markdown_table();
        assert!(
            page.contains(&table),
            "docs/guide/metrics.md's metric table differs from the catalog; replace it with:\n{table}"
        );
    }

    /// The first thing a newcomer writes keeps a row of a temporary snapshot in a variable (it
    /// did not compile while `op` returned a borrow of the snapshot).
    #[test]
    fn an_op_row_outlives_its_snapshot() {
        let watch = AuthWatch::builder().build().unwrap();
        let login = watch.snapshot().op(AuthOp::Login);
        let later = watch.snapshot().op(AuthOp::Login);
        assert_eq!(login, later);
        assert_eq!(
            (login.op, login.success, login.failure),
            (AuthOp::Login, 0, 0)
        );
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
