//! [`AuthWatch`]: the monitor, what it hands out (the layer, the endpoints) and what it
//! tells (snapshots, alerts, health).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authwatch_otel::Pipeline;

use crate::health::Health;
use crate::stats::Stats;
use crate::{
    active, AlertEngine, AlertEvent, AuthEvent, AuthLayer, AuthWatchBuilder, ClientIp,
    DashboardService, EventSink, HealthReport, HealthService, LoginAuditLogger, MetricsService,
    ShutdownError, Sinks, Snapshot, StatsService, TokenGuardLayer,
};

/// Monitoring for one service's auth routes. Cheap to clone; every clone is the same monitor.
///
/// Build it with [`AuthWatch::builder`], add [`layer`](Self::layer) to your service, read
/// [`snapshot`](Self::snapshot).
#[derive(Clone)]
pub struct AuthWatch {
    pub(crate) inner: Arc<Inner>,
}

// Dropped in this order: the pipeline first, while the sinks its last collection reads are
// still alive.
pub(crate) struct Inner {
    pub(crate) pipeline: Pipeline,
    pub(crate) service_name: String,
    pub(crate) layer: AuthLayer,
    pub(crate) sinks: Sinks,
    pub(crate) stats: Arc<Stats>,
    pub(crate) client_ip: ClientIp,
    pub(crate) health: Arc<Health>,
    pub(crate) metrics_token: Option<String>,
    pub(crate) audit: LoginAuditLogger,
    pub(crate) queries: authwatch_otel::QueryTimer,
    pub(crate) slow_query: Duration,
    pub(crate) active_users: Arc<active::ActiveUsers>,
    pub(crate) sessions: Arc<active::Distinct<u64>>,
    pub(crate) alerts: Option<AlertEngine>,
    pub(crate) started: Instant,
    // Read by the endpoints, which need axum.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) dashboard: bool,
    pub(crate) dashboard_unmasked: bool,
    pub(crate) fleet: Option<crate::fleet::FleetHandle>,
    pub(crate) blocker: Arc<crate::blocks::Blocker>,
    pub(crate) admin_token: Option<String>,
    pub(crate) limiter: Option<Arc<crate::limit::AttackLimiter>>,
    /// Held here: the engine's hooks hold it weakly.
    #[allow(dead_code)]
    pub(crate) incidents: Arc<crate::incidents::Incidents>,
    /// The configuration file, for reloads.
    pub(crate) config: Option<std::sync::Mutex<crate::builder::ConfigSource>>,
    /// Reloads that worked, and those that failed.
    pub(crate) config_reloads: Arc<[std::sync::atomic::AtomicU64; 2]>,
    /// The `SIGHUP` listener, closed with the monitor.
    pub(crate) sighup: std::sync::OnceLock<SighupGuard>,
    /// Who read the monitoring endpoints.
    pub(crate) access: crate::access::AccessLog,
}

/// Ends the `SIGHUP` listener's thread when the monitor goes.
pub(crate) struct SighupGuard(signal_hook::iterator::Handle);

impl Drop for SighupGuard {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Listens for `SIGHUP` and reloads the configuration file at each.
pub(crate) fn reload_on_sighup(watch: &AuthWatch) -> Result<(), crate::BuildError> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .map_err(|e| crate::BuildError::Config(format!("cannot listen for SIGHUP: {e}")))?;
    let _ = watch.inner.sighup.set(SighupGuard(signals.handle()));
    let weak = Arc::downgrade(&watch.inner);
    std::thread::Builder::new()
        .name("authwatch-sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                let Some(inner) = weak.upgrade() else { break };
                tracing::info!(target: "authwatch::config", "authwatch: SIGHUP: reloading the configuration file");
                let _ = AuthWatch { inner }.reload_config();
            }
        })
        .map_err(crate::BuildError::Audit)?;
    Ok(())
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
    /// A builder with the defaults: the default [`Routes`](crate::Routes), [`ClientIp::peer`], a 5-minute
    /// window in 10 slots.
    pub fn builder() -> AuthWatchBuilder {
        AuthWatchBuilder::new()
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

    /// `/auth/blocks` as a tower service (for hyper and tonic servers): the block list over
    /// HTTP, for the admin token only. See [`BlocksService`](crate::BlocksService).
    #[must_use]
    pub fn blocks_service(&self) -> crate::BlocksService {
        crate::BlocksService {
            watch: self.clone(),
        }
    }

    /// Blocks `ip` (an IPv6 address: its prefix, as the detectors group it) for `ttl` (at
    /// least a second): its requests get `429` with `Retry-After` and never reach your
    /// handlers. Replaces a block already there. Written to the audit trail and the log.
    ///
    /// # Errors
    ///
    /// [`BlockError::AllowListed`](crate::BlockError::AllowListed) when `ip` is in a network
    /// the [`BlockPolicy`](crate::BlockPolicy) allows.
    pub fn block_ip(
        &self,
        ip: std::net::IpAddr,
        ttl: Duration,
        reason: &str,
    ) -> Result<crate::BlockedIp, crate::BlockError> {
        self.inner.blocker.block_by_hand(ip, ttl, reason)
    }

    /// Lifts `ip`'s block, and forgets its offences (the next block is a first one again).
    /// The failures counted before do not block it again: the attack alerts leave it alone
    /// until they have left the detection window. The block lifted, if there was one.
    pub fn unblock_ip(&self, ip: std::net::IpAddr) -> Option<crate::BlockedIp> {
        self.inner.blocker.unblock(ip)
    }

    /// The blocks in force (in a dry run, those that would be), the one that ends last
    /// first, with the requests each refused.
    #[must_use]
    pub fn blocked_ips(&self) -> Vec<crate::BlockedIp> {
        self.inner.blocker.sweep();
        self.inner.blocker.list().list()
    }

    /// Reads the configuration file again ([`config_file`](crate::AuthWatchBuilder::config_file)
    /// or `AUTHWATCH_CONFIG`) and applies its alert rules and notifiers to the running
    /// engine: thresholds, windows, severities, channels, rules switched on or off,
    /// Alertmanager and webhooks. Counts, windows and alert states stay; a firing alert whose
    /// new threshold no longer holds resolves at the next evaluation. Builder calls made after
    /// the file still win. The other sections (and the tick, the detectors' sizes) take effect
    /// at the next start: the result names those that differ.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or is wrong (the error names the line and key), or no file
    /// at all: the running configuration stays as it was. Each failure is logged
    /// (`authwatch::config`) and counted in `auth.config.reload.errors.count`.
    pub fn reload_config(&self) -> Result<crate::alerts::Reloaded, crate::config::ConfigError> {
        use std::sync::atomic::Ordering::Relaxed;
        let result = self.reload_inner();
        match &result {
            Ok(r) => {
                self.inner.config_reloads[0].fetch_add(1, Relaxed);
                tracing::info!(
                    target: "authwatch::config",
                    changed = ?r.rules_changed,
                    notifiers = r.notifiers_changed,
                    "authwatch: configuration reloaded: {} rules changed{}{}",
                    r.rules_changed.len(),
                    if r.notifiers_changed { ", notifiers changed" } else { "" },
                    if r.needs_restart.is_empty() {
                        String::new()
                    } else {
                        format!("; at the next start: {}", r.needs_restart.join(", "))
                    }
                );
            }
            Err(e) => {
                self.inner.config_reloads[1].fetch_add(1, Relaxed);
                tracing::error!(
                    target: "authwatch::config",
                    error = %e,
                    "authwatch: the configuration was not reloaded (the running one stays): {e}"
                );
            }
        }
        result
    }

    fn reload_inner(&self) -> Result<crate::alerts::Reloaded, crate::config::ConfigError> {
        let Some(src) = &self.inner.config else {
            return Err(crate::config::ConfigError {
                file: std::path::PathBuf::new(),
                line: None,
                key: String::new(),
                message: "no configuration file to reload: give one with AuthWatchBuilder::config_file or AUTHWATCH_CONFIG".into(),
            });
        };
        let src = src
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let loaded = crate::config::Loaded::read(&src.path)?;
        let Some(engine) = &self.inner.alerts else {
            return Ok(crate::alerts::Reloaded::default());
        };
        let mut cfg = loaded.alerts(src.base_alerts.clone())?;
        for edit in &src.edits {
            cfg = edit(cfg);
        }
        // What the monitor itself set at build.
        let running = engine.config();
        if let Some(s) = running.service_name() {
            cfg = cfg.service(s.to_owned());
        }
        Ok(engine.reload(&cfg))
    }

    /// Counts a request to a monitoring endpoint for the access audit.
    pub(crate) fn note_access<B>(
        &self,
        endpoint: &'static str,
        req: &http::Request<B>,
        allowed: bool,
    ) {
        let client = self.inner.client_ip.resolve(req);
        self.inner.access.note(endpoint, client, req, allowed);
    }

    /// Configuration reloads that worked, and those that failed (the running configuration
    /// stayed).
    #[must_use]
    pub fn config_reloads(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.inner.config_reloads[0].load(Relaxed),
            self.inner.config_reloads[1].load(Relaxed),
        )
    }

    /// What the link to CrowdSec has done ([`CrowdSec`](crate::CrowdSec)); `None` without one.
    #[must_use]
    pub fn crowdsec_status(&self) -> Option<crate::CrowdSecStatus> {
        self.inner
            .blocker
            .crowdsec()
            .map(crate::crowdsec::Link::status)
    }

    /// Whether the attack-time limit is on now ([`AttackLimit`](crate::AttackLimit)): an
    /// attack alert fires. `false` without one.
    #[must_use]
    pub fn attack_limit_on(&self) -> bool {
        self.inner.limiter.as_ref().is_some_and(|l| l.is_on())
    }

    /// [`blocked_requests`](Self::blocked_requests) as JSON: per operation name, and `none`
    /// for other routes (`/auth/stats` and `/auth/blocks` show it).
    pub(crate) fn blocked_requests_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let refused = self.blocked_requests();
        crate::AuthOp::ALL
            .iter()
            .map(|op| (op.as_str(), refused[op.index()]))
            .chain(std::iter::once(("none", refused[crate::AuthOp::COUNT])))
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect()
    }

    /// Requests refused because their address was blocked: per operation
    /// ([`AuthOp::index`](crate::AuthOp::index)), then those on other routes.
    #[must_use]
    pub fn blocked_requests(&self) -> [u64; crate::AuthOp::COUNT + 1] {
        self.inner.blocker.list().refused()
    }

    /// Where fleet mode stands ([`AuthWatchBuilder::fleet`](crate::AuthWatchBuilder::fleet)):
    /// whether Redis is reached, and the instances of the fleet. `None` without fleet mode.
    #[must_use]
    pub fn fleet_status(&self) -> Option<crate::FleetStatus> {
        self.inner
            .fleet
            .as_ref()
            .map(crate::fleet::FleetHandle::status)
    }

    /// The in-process stats right now: counters since start, percentiles over the window.
    /// This instance's own requests, in fleet mode too ([`Scope::Local`](crate::Scope::Local);
    /// the fleet's are [`fleet_snapshot`](Self::fleet_snapshot)).
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_at(authwatch_layer::now())
    }

    /// In fleet mode ([`AuthWatchBuilder::fleet`](crate::AuthWatchBuilder::fleet)), the
    /// fleet's figures, what the alert rules read ([`Snapshot::scope`] is
    /// [`Scope::Fleet`](crate::Scope::Fleet)); `None` without fleet mode.
    ///
    /// - The counters are this instance's plus what every other instance counted since this
    ///   one joined the fleet (as of their last flush, a second ago by default).
    /// - The percentiles are over every instance's window merged: HDR histograms merge
    ///   exactly, so a p95 is the p95 of the union of their requests, to 3 significant
    ///   digits. While Redis is away, this instance's window alone
    ///   ([`FleetStatus::connected`](crate::FleetStatus::connected) says so).
    /// - The response time is every operation's window together (token validation's with
    ///   the `TokenGuard`s').
    /// - The alerts are the same as [`snapshot`](Self::snapshot)'s: each instance evaluates
    ///   the fleet's figures.
    ///
    /// [`snapshot`](Self::snapshot) keeps this instance's own, to find a slow replica.
    #[must_use]
    pub fn fleet_snapshot(&self) -> Option<Snapshot> {
        let f = self.inner.fleet.as_ref()?;
        let mut s = f.snapshot(self.inner.stats.window());
        if let Some(e) = &self.inner.alerts {
            s.alerts = e.firing();
        }
        Some(s)
    }

    /// The stats with the window ending at `now` (on authwatch's clock,
    /// [`layer::now`](crate::layer::now)).
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
        crate::endpoints::router(self)
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
    pub fn wrap(&self, app: axum::Router) -> crate::Wrapped {
        // `with_state(())` turns every handler into its route once, as
        // `Router::into_make_service` does; a router called as a plain service would do it on
        // every request.
        crate::wrapped::Wrapped {
            inner: tower::Layer::layer(&self.inner.layer, app.with_state(())),
        }
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
        if let Some(f) = self.inner.fleet.clone() {
            // A last flush, and out of the fleet (up to 2 s; Redis may be away).
            tokio::task::spawn_blocking(move || f.stop(Duration::from_secs(2)))
                .await
                .map_err(|e| ShutdownError(e.to_string()))?;
        }
        if let Some(l) = self.inner.blocker.crowdsec().cloned() {
            // Up to 2 s for the decisions queued for CrowdSec.
            tokio::task::spawn_blocking(move || l.stop(Duration::from_secs(2)))
                .await
                .map_err(|e| ShutdownError(e.to_string()))?;
        }
        if let Some(e) = self.inner.alerts.clone() {
            // Up to 2 s for queued notifications to reach Alertmanager and the webhook.
            tokio::task::spawn_blocking(move || e.shutdown(Duration::from_secs(2)))
                .await
                .map_err(|e| ShutdownError(e.to_string()))?;
        }
        // This hour's access records.
        self.inner.access.flush();
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
