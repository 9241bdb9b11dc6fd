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

mod active;
mod alert_gauges;
pub mod alerts;
pub mod audit;
mod dashboard;
mod endpoints;
pub mod export;
mod geo;
pub mod health;
pub mod layer;
pub mod metrics;
mod stats;
mod tracing_ctx;
pub mod window;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
pub use stats::{Latency, OpStats, Snapshot};

use authwatch_otel::{OtelSink, Pipeline, PipelineBuilder};
use health::Health;
use stats::Stats;

/// Why [`AuthWatchBuilder::build`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A route template is invalid or two conflict; the message names the route.
    #[error(transparent)]
    Routes(#[from] RouteError),
    /// The OpenTelemetry pipeline could not be built (an invalid `OTEL_*` variable, an
    /// endpoint the exporter rejects).
    #[error(transparent)]
    Telemetry(#[from] authwatch_otel::PipelineError),
    /// The audit log could not be started (its folder cannot be created or opened).
    #[error("audit log: {0}")]
    Audit(#[from] std::io::Error),
    /// The GeoIP database could not be read.
    #[error("{0}")]
    GeoIp(String),
    /// A setting that cannot work (an empty metrics token, which would protect nothing).
    #[error("invalid setting: {0}")]
    Config(String),
}

/// An axum app with authwatch around it: what [`AuthWatch::wrap`] returns.
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub type Wrapped = tower::util::MapResponse<
    authwatch_layer::AuthService<axum::Router>,
    fn(http::Response<authwatch_layer::ResponseBody<axum::body::Body>>) -> axum::response::Response,
>;

/// Why [`AuthWatch::shutdown`] reported a problem. The exporters are stopped either way.
#[derive(Debug, thiserror::Error)]
#[error("authwatch shutdown: {0}")]
pub struct ShutdownError(String);

/// Monitoring for one service's auth routes. Cheap to clone; every clone is the same monitor.
///
/// Build it with [`AuthWatch::builder`], add [`layer`](Self::layer) to your service, read
/// [`snapshot`](Self::snapshot).
#[derive(Clone)]
pub struct AuthWatch {
    inner: Arc<Inner>,
}

// Dropped in this order: the pipeline first, while the sinks its last collection reads are
// still alive.
struct Inner {
    pipeline: Pipeline,
    service_name: String,
    layer: AuthLayer,
    sinks: Sinks,
    stats: Arc<Stats>,
    client_ip: ClientIp,
    health: Arc<Health>,
    metrics_token: Option<String>,
    audit: LoginAuditLogger,
    queries: authwatch_otel::QueryTimer,
    slow_query: Duration,
    active_users: Arc<active::ActiveUsers>,
    sessions: Arc<active::Distinct<u64>>,
    alerts: Option<AlertEngine>,
    started: Instant,
    // Read by the endpoints, which need axum.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    dashboard: bool,
    dashboard_unmasked: bool,
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
            otlp: OtlpOptions::default(),
            pipeline: Pipeline::builder(),
            checks: Vec::new(),
            health_cache: Duration::from_secs(2),
            health_details: true,
            metrics_token: None,
            audit_file: None,
            audit_key: None,
            audit_requests: true,
            audit_request_successes: false,
            audit_queue: audit::DEFAULT_QUEUE,
            slow_query: Duration::from_millis(100),
            active_sessions: None,
            alerts: Some(AlertConfig::new()),
            dashboard: true,
            dashboard_unmasked: false,
            span_client_address: false,
            session_estimate: true,
            session_cookies: None,
            geoip: None,
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
    /// [`layer::now`]).
    #[must_use]
    pub fn snapshot_at(&self, now: Instant) -> Snapshot {
        let mut s = self.inner.stats.snapshot(now);
        if let Some(e) = &self.inner.alerts {
            s.alerts = e.firing();
        }
        s
    }

    /// The alert engine, unless alerting was turned off ([`AuthWatchBuilder::alerting`]).
    #[must_use]
    pub fn alert_engine(&self) -> Option<&AlertEngine> {
        self.inner.alerts.as_ref()
    }

    /// Evaluates the alert rules now (the engine does it every tick by itself) and returns the
    /// changes: alerts that fired and resolved.
    pub fn evaluate_alerts(&self) -> Vec<AlertEvent> {
        self.inner
            .alerts
            .as_ref()
            .map(AlertEngine::evaluate)
            .unwrap_or_default()
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

    /// `/metrics` and `/auth/health` as an axum `Router`, to
    /// [`merge`](axum::Router::merge) into your app.
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn endpoints(&self) -> axum::Router {
        endpoints::router(self)
    }

    /// `app` with authwatch around it, as one service `axum::serve` takes: the fastest way to
    /// watch an axum app.
    ///
    /// `Router::layer(watch.layer())` works too, but axum then clones the layered service and
    /// boxes its future for every request (measured: about +400 ns a login against +240 ns
    /// wrapped, and worse with several threads, which share the clone's reference count).
    /// Wrapped, the layer also sees every request before routing, so nested routers need no
    /// care.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use axum::{extract::Request, routing::post, Router};
    /// use std::net::SocketAddr;
    ///
    /// let watch = authwatch::AuthWatch::builder().build()?;
    /// let app = Router::new()
    ///     .route("/api/auth/sign-in/email", post(|| async { "ok" }))
    ///     .merge(watch.endpoints());
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// let service = watch.wrap(app);
    /// axum::serve(
    ///     listener,
    ///     axum::ServiceExt::<Request>::into_make_service_with_connect_info::<SocketAddr>(service),
    /// )
    /// .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "axum")]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub fn wrap(&self, app: axum::Router) -> Wrapped {
        // `with_state(())` turns every handler into its route once, as
        // `Router::into_make_service` does; a router called as a plain service would do it on
        // every request.
        tower::ServiceExt::<axum::extract::Request>::map_response(
            tower::Layer::layer(&self.inner.layer, app.with_state(())),
            axum::response::IntoResponse::into_response,
        )
    }

    /// Runs `query` (your auth database call: find the user, check the session) and records its
    /// time in `auth.db.query.time.ms` under `name` (a short fixed name such as `find_user`; at
    /// most 64 distinct names). A query slower than the
    /// [threshold](AuthWatchBuilder::slow_query_threshold) also goes to the audit trail. A query
    /// that is dropped before it finishes records nothing.
    ///
    /// ```
    /// # async fn f(watch: authwatch::AuthWatch) {
    /// let user = watch
    ///     .time_query("find_user", async { Some("ada") /* sqlx::query(..).fetch_optional(&pool) */ })
    ///     .await;
    /// # }
    /// ```
    pub async fn time_query<F: std::future::Future>(&self, name: &str, query: F) -> F::Output {
        let start = Instant::now();
        let out = query.await;
        let took = start.elapsed();
        self.inner.queries.record(name, took);
        if took > self.inner.slow_query {
            self.inner.audit.log_slow_query(name, took);
        }
        out
    }

    /// The estimated number of distinct users the audit logger saw over the window (sign-ins,
    /// issued tokens, registrations, logouts): a HyperLogLog estimate with a relative standard
    /// error of 1.6 % (`auth.users.active`).
    #[must_use]
    pub fn active_users(&self) -> f64 {
        self.inner.active_users.estimate(authwatch_layer::now())
    }

    /// The estimated number of distinct sessions over the window (`auth.sessions.estimated`).
    #[must_use]
    pub fn active_sessions_estimate(&self) -> f64 {
        self.inner.sessions.estimate(authwatch_layer::now())
    }

    /// The audit logger of this monitor (the spec's `LoginAuditLogger`).
    #[must_use]
    pub fn audit_logger(&self) -> LoginAuditLogger {
        self.inner.audit.clone()
    }

    /// The Prometheus exposition as a tower service (for hyper and tonic servers).
    #[must_use]
    pub fn metrics_service(&self) -> MetricsService {
        MetricsService {
            watch: self.clone(),
        }
    }

    /// `/auth/stats` as a tower service (see [`AuthWatch::stats_json`]).
    #[must_use]
    pub fn stats_service(&self) -> StatsService {
        StatsService {
            watch: self.clone(),
        }
    }

    /// `/auth/dashboard` as a tower service: one self-contained HTML page that polls
    /// `/auth/stats` (served next to it) and charts the spec's three dashboards live.
    #[must_use]
    pub fn dashboard_service(&self) -> DashboardService {
        DashboardService {
            watch: self.clone(),
        }
    }

    /// The health report as a tower service (for hyper and tonic servers).
    #[must_use]
    pub fn health_service(&self) -> HealthService {
        HealthService {
            watch: self.clone(),
        }
    }

    /// The Prometheus text exposition of every instrument, as `/metrics` serves it; `None` when
    /// the exposition is off.
    #[must_use]
    pub fn metrics_text(&self) -> Option<String> {
        self.inner.pipeline.render_prometheus()
    }

    /// Runs the health checks (or returns the report cached within the last
    /// [`health_cache`](AuthWatchBuilder::health_cache) interval).
    pub async fn health(&self) -> HealthReport {
        self.inner.health.report().await
    }

    /// The OpenTelemetry pipeline: the OTLP logger provider and its `tracing` bridge live here.
    #[must_use]
    pub fn pipeline(&self) -> &Pipeline {
        &self.inner.pipeline
    }

    /// Flushes every exporter and stops them. Call it once, before the process exits; recording
    /// afterwards is harmless but exports nothing.
    ///
    /// # Errors
    ///
    /// [`ShutdownError`] when the last export failed (the collector unreachable).
    pub async fn shutdown(&self) -> Result<(), ShutdownError> {
        let watch = self.clone();
        if let Some(e) = self.inner.alerts.clone() {
            // Up to 2 s for queued notifications to reach Alertmanager and the webhook.
            tokio::task::spawn_blocking(move || e.shutdown(Duration::from_secs(2)))
                .await
                .map_err(|e| ShutdownError(e.to_string()))?;
        }
        let audit = self.inner.audit.clone();
        // The audit records first (their OTLP log records then go out with the flush below).
        let audit_done = tokio::task::spawn_blocking(move || audit.shutdown())
            .await
            .map_err(|e| ShutdownError(e.to_string()))?;
        if !audit_done {
            return Err(ShutdownError(
                "the audit writer did not finish within 10 s".into(),
            ));
        }
        // The SDK's flush blocks its caller; on a current-thread runtime, inline, it would
        // wait for a task that can never run.
        tokio::task::spawn_blocking(move || watch.inner.pipeline.shutdown())
            .await
            .map_err(|e| ShutdownError(e.to_string()))?
            .map_err(ShutdownError)
    }
}

/// Builds an [`AuthWatch`].
///
/// Every call sets the fields it names and keeps the others, so later calls win field by
/// field: `otlp_endpoint(url)` then `otlp_options(opts)` keeps `url` unless `opts` has an
/// endpoint of its own, and `alertmanager(url)` then `alerts(config)` keeps `url` unless
/// `config` names an Alertmanager. A call that takes a whole table says it replaces it
/// ([`routes`](Self::routes)).
#[must_use]
pub struct AuthWatchBuilder {
    service_name: Option<String>,
    routes: Routes,
    client_ip: ClientIp,
    window: WindowConfig,
    sinks: Vec<Arc<dyn EventSink>>,
    otlp: OtlpOptions,
    pipeline: PipelineBuilder,
    checks: Vec<HealthCheck>,
    health_cache: Duration,
    health_details: bool,
    metrics_token: Option<String>,
    audit_file: Option<audit::FileSettings>,
    audit_key: Option<Vec<u8>>,
    audit_requests: bool,
    audit_request_successes: bool,
    audit_queue: usize,
    slow_query: Duration,
    active_sessions: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
    alerts: Option<AlertConfig>,
    dashboard: bool,
    dashboard_unmasked: bool,
    span_client_address: bool,
    session_estimate: bool,
    session_cookies: Option<Vec<String>>,
    geoip: Option<std::path::PathBuf>,
}

impl fmt::Debug for AuthWatchBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthWatchBuilder")
            .field("service_name", &self.service_name)
            .field("routes", &self.routes)
            .field("client_ip", &self.client_ip)
            .field("window", &self.window)
            .field("sinks", &self.sinks.len())
            .field("otlp", &self.otlp)
            .field("checks", &self.checks)
            .finish_non_exhaustive()
    }
}

impl AuthWatchBuilder {
    /// The service name (`service.name`); default `OTEL_SERVICE_NAME`, else `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`, else `unknown_service:<executable>`.
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

    /// The OTLP collector's base URL (`http://collector:4318`, `https://collector:4317`);
    /// turns OTLP export on. Without it, export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`) is set. For HTTP, `/v1/metrics` and `/v1/logs`
    /// are appended.
    pub fn otlp_endpoint(mut self, url: impl Into<String>) -> Self {
        self.otlp.endpoint = Some(url.into());
        self
    }

    /// Turns OTLP export off (`false`) whatever the environment says, or on (`true`) with the
    /// default endpoint.
    pub fn otlp(mut self, on: bool) -> Self {
        self.otlp.enabled = Some(on);
        self
    }

    /// The OTLP transport; default `OTEL_EXPORTER_OTLP_METRICS_PROTOCOL` (and `…_LOGS_…` for
    /// logs), else `OTEL_EXPORTER_OTLP_PROTOCOL`, else HTTP/protobuf (gRPC when authwatch-otel
    /// is built without its `http` feature). An invalid value in the environment is logged and
    /// ignored.
    pub fn otlp_protocol(mut self, protocol: Protocol) -> Self {
        self.otlp.protocol = Some(protocol);
        self
    }

    /// A header (HTTP) or metadata entry (gRPC) sent with every export, such as an API key.
    /// Headers from `OTEL_EXPORTER_OTLP_HEADERS` are sent too; one with the same name replaces
    /// this one (the exporter's precedence).
    pub fn otlp_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.otlp.headers.push((name.into(), value.into()));
        self
    }

    /// The timeout of one export; default `OTEL_EXPORTER_OTLP_TIMEOUT`, else 10 s.
    pub fn otlp_timeout(mut self, timeout: Duration) -> Self {
        self.otlp.timeout = Some(timeout);
        self
    }

    /// How long the audit trail's OTLP log export keeps trying a batch the collector did not
    /// take (a connection refused or timed out, gRPC `UNAVAILABLE`, HTTP 429/502/503), with
    /// waits from 0.2 s doubling to 5 s; default 30 s, `Duration::ZERO` tries each batch
    /// once. A batch that got no answer within [`otlp_timeout`](Self::otlp_timeout) is not
    /// tried again: the collector may have it. What is not delivered in the end is counted in
    /// `auth.audit.export.lost.count` (a local log, [`audit_dir`](Self::audit_dir), keeps it).
    pub fn audit_export_retry(mut self, budget: Duration) -> Self {
        self.otlp.log_retry = Some(budget);
        self
    }

    /// How often metrics are exported; default `OTEL_METRIC_EXPORT_INTERVAL`, else 60 s.
    pub fn export_interval(mut self, interval: Duration) -> Self {
        self.otlp.interval = Some(interval);
        self
    }

    /// Cumulative, delta (Datadog) or low-memory temporality; default
    /// `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`, else cumulative.
    pub fn temporality(mut self, temporality: Temporality) -> Self {
        self.otlp.temporality = Some(temporality);
        self
    }

    /// Explicit buckets (default) or base-2 exponential histograms on the OTLP path.
    pub fn histogram_aggregation(mut self, aggregation: HistogramAggregation) -> Self {
        self.otlp.histogram = Some(aggregation);
        self
    }

    /// Several OTLP settings at once. Like every call here, it wins field by field over the
    /// calls before it: what `options` leaves unset (an endpoint given by
    /// [`otlp_endpoint`](Self::otlp_endpoint), say) is kept, and its headers join those of
    /// [`otlp_header`](Self::otlp_header) ([`OtlpOptions::merge`]).
    pub fn otlp_options(mut self, options: OtlpOptions) -> Self {
        self.otlp = std::mem::take(&mut self.otlp).merge(options);
        self
    }

    /// Records into your meter provider instead of building an OTLP one (you export and shut
    /// it down); `/metrics` stays authwatch's own.
    pub fn meter_provider<P: opentelemetry::metrics::MeterProvider>(
        mut self,
        provider: &P,
    ) -> Self {
        self.pipeline = self.pipeline.meter_provider(provider);
        self
    }

    /// Serve the Prometheus exposition on `/metrics` (default on).
    pub fn prometheus(mut self, on: bool) -> Self {
        self.pipeline = self.pipeline.prometheus(on);
        self
    }

    /// Require `Authorization: Bearer <token>` on `/metrics` (the spec: limit access to
    /// metrics). Configure Prometheus with `authorization: {credentials: <token>}`.
    pub fn metrics_bearer_token(mut self, token: impl Into<String>) -> Self {
        self.metrics_token = Some(token.into());
        self
    }

    /// Registers a health check for `/auth/health`.
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.checks.push(check);
        self
    }

    /// Whether `/auth/health` shows each check's failure message and details (default true).
    /// Turn it off when the endpoint is public and messages could name hosts or users: the
    /// response then has each check's name, status and latency only; the messages still go to
    /// the log and to [`AuthWatch::health`].
    pub fn health_details(mut self, show: bool) -> Self {
        self.health_details = show;
        self
    }

    /// Also write the audit trail to a local tamper-evident log in `dir` (JSON lines, one file
    /// per retention class per day, hash-chained, pruned after 90 days / 1 year, flushed in
    /// small batches). Check it with `authwatch audit verify DIR`.
    pub fn audit_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.audit_file = Some(audit::FileSettings::new(dir));
        self
    }

    /// The local audit log with its settings (flush policy, clock).
    pub fn audit_file(mut self, settings: audit::FileSettings) -> Self {
        self.audit_file = Some(settings);
        self
    }

    /// A secret for the audit trail: user ids become `hmac-sha256:<hex>` of it, and the local
    /// log's chain is keyed with it (forging a record then needs the key).
    pub fn audit_key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.audit_key = Some(key.as_ref().to_vec());
        self
    }

    /// Whether the layer writes an `auth.request` audit record (security class) for every
    /// auth request that failed, was rate limited, locked out or refused its token (default
    /// true). The [`LoginAuditLogger`] works either way. See
    /// [`audit_request_successes`](Self::audit_request_successes) for the other requests.
    pub fn audit_requests(mut self, on: bool) -> Self {
        self.audit_requests = on;
        self
    }

    /// Whether the layer's `auth.request` records also cover the requests that succeeded or
    /// were cancelled (authentication class; default false). They carry no user (the layer
    /// reads no bodies) and repeat what the metrics count, at about a microsecond of
    /// background work and an exported log record each: measured end to end
    /// (`scripts/e2e-bench.sh`, one server core, 200 µs sign-ins) they took throughput from
    /// 97.0 % to 95.0 % of bare and p99 from +18.7 % to +27.5 %, and at tens of thousands of
    /// requests a second the OpenTelemetry SDK's log queue (`OTEL_BLRP_MAX_QUEUE_SIZE`, 2,048)
    /// drops records. The successes your handlers log through the [`LoginAuditLogger`] (with
    /// the user) are recorded either way.
    pub fn audit_request_successes(mut self, on: bool) -> Self {
        self.audit_request_successes = on;
        self
    }

    /// How many of the logger's audit records may wait for the writer before new ones are
    /// dropped and counted in `auth.audit.dropped.count` (default 8192). The layer's records
    /// wait in per-thread buffers of 2048, drained every 50 ms or as soon as one is half full,
    /// with the same accounting (a buffer's half-full wake-up takes one place in this queue
    /// while it waits).
    pub fn audit_queue(mut self, records: usize) -> Self {
        self.audit_queue = records;
        self
    }

    /// The application's exact count of active sessions (from its session store), read at
    /// each collection into `auth.sessions.active`. Keep it cheap: it runs on the exporter's
    /// thread.
    pub fn active_sessions(mut self, count: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.active_sessions = Some(Arc::new(count));
        self
    }

    /// The alert rules, thresholds, notifiers and brute-force sizing (default:
    /// [`AlertConfig::new`], the spec's alerts evaluated every 5 s, to the log). The service
    /// name, the HDR percentiles and the health checks are wired in by [`build`](Self::build).
    ///
    /// ```
    /// use authwatch::{AlertConfig, AuthWatch};
    ///
    /// let watch = AuthWatch::builder()
    ///     .alerts(
    ///         AlertConfig::new()
    ///             .alertmanager("http://127.0.0.1:9093")
    ///             .disable("AuthRegistrationSpike"),
    ///     )
    ///     .build()?;
    /// # Ok::<(), authwatch::BuildError>(())
    /// ```
    ///
    /// Later calls win field by field: an Alertmanager or webhook set before (with
    /// [`alertmanager`](Self::alertmanager), [`alert_webhook`](Self::alert_webhook) or an
    /// earlier config) is kept unless `config` names its own.
    pub fn alerts(mut self, config: AlertConfig) -> Self {
        let mut config = config;
        if let Some(earlier) = self.alerts.take() {
            if let (None, Some(url)) = (config.alertmanager_url(), earlier.alertmanager_url()) {
                config = config.alertmanager(url);
            }
            if let (None, Some(url)) = (config.webhook_url(), earlier.webhook_url()) {
                config = config.webhook(url);
            }
        }
        self.alerts = Some(config);
        self
    }

    /// Serves `/auth/dashboard` (a live HTML page, no CDN) and `/auth/stats` (its JSON) from
    /// [`AuthWatch::endpoints`] (default on). Both are protected by the
    /// [`metrics_bearer_token`](Self::metrics_bearer_token) when one is set: as a header, or as
    /// `?token=` on the page's URL.
    pub fn dashboard(mut self, on: bool) -> Self {
        self.dashboard = on;
        self
    }

    /// Shows the top offending client addresses in full on the dashboard and in `/auth/stats`
    /// (default: masked to their first two octets or groups, `203.0.x.x`).
    pub fn dashboard_unmasked_ips(mut self, unmasked: bool) -> Self {
        self.dashboard_unmasked = unmasked;
        self
    }

    /// Puts the client address on the `auth.request` spans as `client.address` (default off:
    /// spans carry the operation, route, method and outcome, never an address, user id or
    /// token unless you opt in here).
    pub fn span_client_address(mut self, on: bool) -> Self {
        self.span_client_address = on;
        self
    }

    /// Estimates distinct active sessions (`auth.sessions.estimated`) from keyed hashes of the
    /// bearer tokens and session cookies auth requests present (default on; the key is random
    /// per process and only hashes are kept). Off, no token or cookie is read for it.
    pub fn session_estimate(mut self, on: bool) -> Self {
        self.session_estimate = on;
        self
    }

    /// Counts auth attempts per client country (`auth.geo.attempts.count`, attribute
    /// `geo.country.iso_code`) by looking the client address up in a MaxMind-format database
    /// (GeoLite2 or GeoIP2 Country/City `.mmdb`). Off without one. Needs the client address
    /// ([`client_ip`](Self::client_ip), or axum's `ConnectInfo`).
    pub fn geoip_database(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.geoip = Some(path.into());
        self
    }

    /// The cookies that hold a session id, for the session estimate (default
    /// [`layer::DEFAULT_SESSION_COOKIES`]: Better Auth's, `sessionid`, `session_id`,
    /// `sid`, `connect.sid`, `JSESSIONID`). Name only server-side session ids: a client-side
    /// cookie store re-signed on every response would count each request as a new session.
    pub fn session_cookies<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.session_cookies = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Turns the alert engine on (the default) or off.
    pub fn alerting(mut self, on: bool) -> Self {
        self.alerts = match (on, self.alerts.take()) {
            (true, Some(c)) => Some(c),
            (true, None) => Some(AlertConfig::new()),
            (false, _) => None,
        };
        self
    }

    /// Sends alerts to an Alertmanager (its v2 API), so it does the paging, Slack and e-mail.
    /// Shorthand for `alerts(AlertConfig::new().alertmanager(url))` on the current config.
    pub fn alertmanager(mut self, url: impl Into<String>) -> Self {
        self.alerts = Some(self.alerts.take().unwrap_or_default().alertmanager(url));
        self
    }

    /// Posts alerts to a Slack-compatible webhook.
    pub fn alert_webhook(mut self, url: impl Into<String>) -> Self {
        self.alerts = Some(self.alerts.take().unwrap_or_default().webhook(url));
        self
    }

    /// Queries timed with [`AuthWatch::time_query`] that take longer than this are written to
    /// the audit trail as `auth.db.slow_query` (security class). Default 100 ms.
    pub fn slow_query_threshold(mut self, threshold: Duration) -> Self {
        self.slow_query = threshold;
        self
    }

    /// How long a health report is reused, so a flood of probes runs the checks once per
    /// interval (default 2 s; zero runs them on every probe).
    pub fn health_cache(mut self, interval: Duration) -> Self {
        self.health_cache = interval;
        self
    }

    /// Builds the monitor.
    ///
    /// # Errors
    ///
    /// [`BuildError::Routes`] when a route template is invalid or conflicts with another;
    /// [`BuildError::Telemetry`] when the OpenTelemetry settings are invalid.
    pub fn build(self) -> Result<AuthWatch, BuildError> {
        // Routes and the GeoIP file first: bad input must not start (and then stop) exporters.
        self.routes.build()?;
        if self.metrics_token.as_deref().is_some_and(str::is_empty) {
            return Err(BuildError::Config(
                "metrics_bearer_token is empty: it would protect nothing".into(),
            ));
        }
        let geo = self
            .geoip
            .as_deref()
            .map(geo::Geo::open)
            .transpose()
            .map_err(BuildError::GeoIp)?
            .map(Arc::new);
        let started = Instant::now();
        let stats = Arc::new(Stats::new(self.window));
        let mut pipeline = self.pipeline.otlp(self.otlp);
        if let Some(name) = self.service_name {
            pipeline = pipeline.service_name(name);
        }
        let pipeline = pipeline.build()?;
        let service_name = pipeline.service_name();
        let health = Arc::new(Health::new(
            service_name.clone(),
            started,
            self.checks,
            self.health_cache,
            self.health_details,
        ));
        for meter in pipeline.meters() {
            let s = stats.clone();
            authwatch_otel::register_quantile_gauges(
                meter,
                Arc::new(move || s.quantiles(authwatch_layer::now())),
            );
            authwatch_otel::register_uptime_gauge(meter, started);
            authwatch_otel::register_process_gauges(meter);
            health::register_gauges(meter, &health);
        }
        let otel_sink = Arc::new(OtelSink::new(pipeline.meters()));
        let app_lockouts = otel_sink.application_lockouts();
        let otel: Arc<dyn EventSink> = otel_sink;
        let pipeline_meters: Vec<opentelemetry::metrics::Meter> = pipeline.meters().to_vec();
        // The audit trail's OTLP copy has an export of its own (see `LogExport`).
        #[cfg(any(feature = "otlp-grpc", feature = "otlp-http"))]
        let audit_export = pipeline.log_export("authwatch::audit")?.map(Arc::new);
        #[cfg(not(any(feature = "otlp-grpc", feature = "otlp-http")))]
        let audit_export: Option<Arc<audit::LogExport>> = None;
        let auditor = audit::Auditor::start(
            audit::Outputs {
                otel: audit_export.clone().map(|export| audit::OtelOut { export }),
                file: self.audit_file,
            },
            self.audit_queue,
            self.audit_key,
        )?;
        for meter in pipeline.meters() {
            let a = Arc::downgrade(&auditor);
            authwatch_otel::register_u64_counter(
                meter,
                authwatch_otel::Measure::AuditDropped,
                move || a.upgrade().map(|a| a.dropped()),
            );
            // Always a series (0 without an OTLP log export), like every catalog instrument.
            let x = audit_export.as_ref().map(Arc::downgrade);
            authwatch_otel::register_u64_counter(
                meter,
                authwatch_otel::Measure::AuditExportLost,
                move || {
                    x.as_ref()
                        .map_or(Some(0), |x| x.upgrade().map(|x| x.lost()))
                },
            );
        }
        let active_users = Arc::new(active::ActiveUsers::new(
            self.window.window(),
            self.window.slots() as usize,
            authwatch_layer::now(),
        ));
        for meter in pipeline.meters() {
            let a = active_users.clone();
            authwatch_otel::register_f64_gauge(
                meter,
                authwatch_otel::Measure::ActiveUsers,
                move || a.estimate(authwatch_layer::now()),
            );
            if let Some(f) = &self.active_sessions {
                let f = f.clone();
                authwatch_otel::register_u64_gauge(
                    meter,
                    authwatch_otel::Measure::ActiveSessions,
                    move || f(),
                );
            }
        }
        let alerts = self.alerts.map(|cfg| {
            let mut cfg = cfg;
            if cfg.service_name().is_none() {
                cfg = cfg.service(service_name.clone());
            }
            let st = stats.clone();
            cfg = cfg.quantiles(Arc::new(move |op, q| {
                st.op_quantile(op, q, authwatch_layer::now())
            }));
            // Each tick runs the health checks (when stale), so that `AuthServiceDown` works
            // without probes; a hook of the caller's own replaces this.
            if health.has_checks() && !cfg.has_on_tick() {
                // Weak: the health checks hold the engine (`on_run`); a strong reference back
                // would keep both alive, and the engine's thread running, after the monitor is
                // dropped.
                let h = Arc::downgrade(&health);
                cfg = cfg.on_tick(Arc::new(move || {
                    if let Some(h) = h.upgrade() {
                        h.last_or_refresh();
                    }
                }));
            }
            let engine = AlertEngine::new(cfg);
            let e = engine.clone();
            let _ = health.on_run.set(Arc::new(move |ok| e.observe_health(ok)));
            for meter in pipeline.meters() {
                alert_gauges::register(meter, &engine);
            }
            engine
        });
        // Distinct sessions from the keyed token hashes the layer and the guards hand over
        // (on the request path: one ring per thread shard).
        let sessions = Arc::new(active::Distinct::<u64>::with_shards(
            self.window.window(),
            self.window.slots() as usize,
            authwatch_layer::now(),
            authwatch_hdr::default_shards(),
        ));
        for meter in pipeline.meters() {
            let a = sessions.clone();
            authwatch_otel::register_f64_gauge(
                meter,
                authwatch_otel::Measure::EstimatedSessions,
                move || a.estimate(authwatch_layer::now()),
            );
        }
        let audit = LoginAuditLogger::new(auditor.clone())
            .with_lockouts(app_lockouts, stats.clone())
            .with_alerts(alerts.clone())
            .with_active_users(active_users.clone());
        audit::set_global(&audit);
        let mut sinks = Sinks::new().with(stats.clone());
        // With no meter (no OTLP, no /metrics) the OpenTelemetry sink would count into cells
        // nobody reads: leave it off the request path.
        if !pipeline.meters().is_empty() {
            sinks = sinks.with(otel);
        }
        if self.audit_requests {
            sinks = sinks.with(Arc::new(audit::AuditSink {
                auditor,
                successes: self.audit_request_successes,
            }));
        }
        if let Some(e) = &alerts {
            sinks = sinks.with(Arc::new(e.clone()));
        }
        if let Some(geo) = geo {
            for meter in pipeline.meters() {
                let g = geo.clone();
                let d = authwatch_otel::def(authwatch_otel::Measure::GeoAttempts);
                meter
                    .u64_observable_counter(d.name)
                    .with_description(d.description)
                    .with_unit(d.unit)
                    .with_callback(move |obs| {
                        use authwatch_otel::attr;
                        use opentelemetry::KeyValue;
                        for (op, outcome, country, n) in g.totals() {
                            obs.observe(
                                n,
                                &[
                                    KeyValue::new(attr::OPERATION, op.as_str()),
                                    KeyValue::new(attr::OUTCOME, outcome),
                                    KeyValue::new(attr::GEO_COUNTRY, country),
                                ],
                            );
                        }
                    })
                    .build();
            }
            sinks = sinks.with(geo);
        }
        if self.session_estimate {
            let s = sessions.clone();
            // Only credentials that worked: forged or expired tokens are not sessions (an
            // attacker spraying tokens must not move the estimate).
            sinks = sinks.with(Arc::new(move |e: &AuthEvent<'_>| {
                if let (Some(k), Outcome::Success) = (e.session, e.outcome) {
                    s.insert(&k, e.finished_at);
                }
            }));
        }
        for s in self.sinks {
            sinks = sinks.with(s);
        }
        let mut layer = AuthLayer::builder();
        if let Some(names) = &self.session_cookies {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            layer = layer.session_cookies(&names);
        }
        let layer = layer
            .routes(self.routes)
            .client_ip(self.client_ip)
            .sinks(sinks.clone())
            .on_request_span(tracing_ctx::traceparent_hook())
            .session_keys(self.session_estimate)
            .span_client_address(self.span_client_address)
            .build()?;
        Ok(AuthWatch {
            inner: Arc::new(Inner {
                service_name,
                layer,
                sinks,
                stats,
                client_ip: self.client_ip,
                pipeline,
                health,
                metrics_token: self.metrics_token,
                audit,
                queries: authwatch_otel::QueryTimer::new(pipeline_meters.iter()),
                slow_query: self.slow_query,
                active_users,
                alerts,
                sessions,
                started,
                dashboard: self.dashboard,
                dashboard_unmasked: self.dashboard_unmasked,
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

    /// README's metric table is the catalog's, word for word; when it is not, the failure
    /// prints the table to paste.
    #[test]
    fn readme_metric_table_is_the_catalog() {
        let readme = include_str!("../README.md");
        let table = authwatch_otel::markdown_table();
        assert!(
            readme.contains(&table),
            "README's metric table differs from the catalog; replace it with:\n{table}"
        );
    }

    /// Later builder calls win field by field; they never drop what an earlier call set and
    /// they do not name.
    #[test]
    fn builder_calls_merge() {
        let b = AuthWatch::builder()
            .otlp_endpoint("http://a:4318")
            .otlp_header("Key", "1")
            .otlp_header("other", "kept")
            .otlp_options(
                OtlpOptions::new()
                    .timeout(Duration::from_secs(5))
                    .header("key", "2"),
            );
        assert_eq!(b.otlp.endpoint.as_deref(), Some("http://a:4318"));
        assert_eq!(b.otlp.timeout, Some(Duration::from_secs(5)));
        let headers: Vec<(&str, &str)> = b
            .otlp
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(headers, [("other", "kept"), ("key", "2")]);
        let b = b
            .otlp_options(OtlpOptions::new().endpoint("http://b:4318"))
            .otlp_timeout(Duration::from_secs(7));
        assert_eq!(b.otlp.endpoint.as_deref(), Some("http://b:4318"));
        assert_eq!(b.otlp.timeout, Some(Duration::from_secs(7)));

        let urls = |b: AuthWatchBuilder| {
            let a = b.alerts.expect("alerting on");
            (
                a.alertmanager_url().map(str::to_owned),
                a.webhook_url().map(str::to_owned),
            )
        };
        let am = |u: &str| Some(u.to_owned());
        let b = AuthWatch::builder()
            .alertmanager("http://am:9093")
            .alert_webhook("http://hook")
            .alerts(AlertConfig::new().tick(Duration::from_secs(1)));
        assert_eq!(urls(b), (am("http://am:9093"), am("http://hook")));
        let b = AuthWatch::builder()
            .alertmanager("http://am:9093")
            .alerts(AlertConfig::new().alertmanager("http://am2:9093"));
        assert_eq!(urls(b), (am("http://am2:9093"), None));
        let b = AuthWatch::builder()
            .alerts(AlertConfig::new().webhook("http://hook"))
            .alertmanager("http://am3:9093");
        assert_eq!(urls(b), (am("http://am3:9093"), am("http://hook")));
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
