//! `/auth/health`: registered checks, run concurrently with timeouts, cached briefly.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Extra facts a check reports (pool size, idle connections, …), shown in its `details`.
pub type Details = serde_json::Map<String, serde_json::Value>;

type CheckFuture = Pin<Box<dyn Future<Output = Result<Details, String>> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// One health check: an async function that succeeds (with optional details) or fails with a
/// message. Registered with [`AuthWatchBuilder::health_check`](crate::AuthWatchBuilder::health_check).
///
/// ```
/// use authwatch::health::{Details, HealthCheck};
/// use std::time::Duration;
///
/// let check = HealthCheck::new("token-signing-key", || async {
///     // e.g. load the JWKS; Err("…") marks the check unhealthy
///     Ok::<_, String>(Details::new())
/// })
/// .timeout(Duration::from_millis(500))
/// .critical(true);
/// ```
#[derive(Clone)]
pub struct HealthCheck {
    name: Arc<str>,
    critical: bool,
    timeout: Duration,
    check: CheckFn,
}

impl fmt::Debug for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthCheck")
            .field("name", &self.name)
            .field("critical", &self.critical)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HealthCheck {
    /// A critical check with a 2-second timeout. `name` becomes the `auth.health.check`
    /// attribute; keep it short and fixed.
    pub fn new<F, Fut, E>(name: impl Into<Arc<str>>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Details, E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        let check: CheckFn = Arc::new(move || {
            let fut = check();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        });
        Self {
            name: name.into(),
            critical: true,
            timeout: Duration::from_secs(2),
            check,
        }
    }

    /// Whether a failure makes the service unhealthy (503). A failing non-critical check only
    /// makes it `degraded` (still 200). Default true.
    #[must_use]
    pub fn critical(mut self, critical: bool) -> Self {
        self.critical = critical;
        self
    }

    /// How long the check may take before it counts as failed. Default 2 s.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The check's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self) -> CheckReport {
        use futures_util::FutureExt as _;
        use std::panic::AssertUnwindSafe;
        let start = Instant::now();
        // A check that panics (building its future or running it) is a failed check, not a
        // broken endpoint.
        let res = match std::panic::catch_unwind(AssertUnwindSafe(|| (self.check)())) {
            Ok(fut) => tokio::time::timeout(self.timeout, AssertUnwindSafe(fut).catch_unwind())
                .await
                .map(|r| r.unwrap_or_else(|_| Err("the check panicked".to_owned()))),
            Err(_) => Ok(Err("the check panicked".to_owned())),
        };
        let latency = start.elapsed();
        let (status, message, details) = match res {
            Ok(Ok(d)) => (Status::Healthy, None, d),
            Ok(Err(e)) => (Status::Unhealthy, Some(e), Details::new()),
            Err(_) => (
                Status::Unhealthy,
                Some(format!("timed out after {} ms", self.timeout.as_millis())),
                Details::new(),
            ),
        };
        CheckReport {
            name: self.name.to_string(),
            status,
            critical: self.critical,
            latency_ms: latency.as_secs_f64() * 1000.0,
            message,
            details,
        }
    }
}

/// A health status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Status {
    /// Everything passed.
    Healthy,
    /// A non-critical check failed; the service still serves (HTTP 200).
    Degraded,
    /// A critical check failed (HTTP 503).
    Unhealthy,
}

impl Status {
    /// The HTTP status `/auth/health` answers with: 200 unless unhealthy, then 503.
    #[must_use]
    pub fn http_status(self) -> http::StatusCode {
        match self {
            Self::Unhealthy => http::StatusCode::SERVICE_UNAVAILABLE,
            _ => http::StatusCode::OK,
        }
    }

    /// `healthy`, `degraded` or `unhealthy`, as in the JSON report.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct CheckReport {
    /// The check's name.
    pub name: String,
    /// Healthy or unhealthy.
    pub status: Status,
    /// Whether its failure makes the service unhealthy.
    pub critical: bool,
    /// How long it took, in milliseconds.
    pub latency_ms: f64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What it reported.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: Details,
}

/// What `/auth/health` returns.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// Overall status.
    pub status: Status,
    /// The service name.
    pub service: String,
    /// Seconds since the monitor started.
    pub uptime_seconds: f64,
    /// When the checks ran (RFC 3339, UTC).
    pub checked_at: String,
    /// One entry per registered check.
    pub checks: Vec<CheckReport>,
}

impl HealthReport {
    /// The report as JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// The report without the checks' messages and details (for a public endpoint).
    #[must_use]
    pub fn without_details(mut self) -> Self {
        for c in &mut self.checks {
            c.message = None;
            c.details = Details::new();
        }
        self
    }
}

/// The registered checks and the cache in front of them.
pub(crate) struct Health {
    service: String,
    started: Instant,
    checks: Vec<HealthCheck>,
    cache_for: Duration,
    /// Whether the HTTP endpoint shows messages and details: always, never, or (`None`) to
    /// loopback clients only.
    pub(crate) public_details: Option<bool>,
    /// Held while the checks run, so a flood of probes waits for one run.
    run: tokio::sync::Mutex<Option<(Instant, HealthReport)>>,
    /// The last report, for the gauges (read without waiting).
    last: Mutex<Option<HealthReport>>,
    /// Where the gauges start a refresh when the last report is stale: the runtime `build`
    /// ran in.
    runtime: Option<tokio::runtime::Handle>,
    /// Without one, a runtime of authwatch's own, started at the first refresh (`None` inside
    /// when its thread could not be started).
    own_runtime: std::sync::OnceLock<Option<OwnRuntime>>,
    /// Told the outcome of every run of the checks (the alert engine counts consecutive
    /// failures).
    pub(crate) on_run: std::sync::OnceLock<Arc<dyn Fn(bool) + Send + Sync>>,
}

/// The runtime the background runs of the checks use when `build` ran outside any: a
/// current-thread Tokio runtime driven by a thread of its own (`authwatch-health`).
///
/// A monitor built in plain `main` (before the service's runtime) has no runtime to run its
/// checks on; without this one the health gauges and the probe-less `AuthServiceDown` would
/// stay silent. It is only a fallback: when `build` runs in a runtime the checks run there,
/// because they often share clients and pools with the application, whose connections then
/// stay on the application's I/O driver rather than on one that ends with the monitor. Unlike
/// the export runtimes it keeps the normal scheduling priority: a check's latency is what it
/// measures, and a thread starved under load would turn a busy CPU into timed-out checks and a
/// page.
struct OwnRuntime {
    handle: tokio::runtime::Handle,
    /// Dropped with the `Health`, it ends the thread (without waiting for it: the last
    /// reference to the `Health` may be a run on that very thread).
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl OwnRuntime {
    fn start() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("authwatch-health".into())
            .spawn(move || {
                // Runs the checks until the `Health` goes; a run still in progress is dropped
                // with the runtime, here, outside any async context.
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }
}

/// Registers `auth.health.status` and `auth.health.check.time.ms` on `meter`. They show the
/// last report; when it is older than the cache interval, reading them starts a run in the
/// background (on the runtime `build` ran in, or without one on a thread of authwatch's own),
/// so the next collection sees fresh results without a collection ever waiting on a check.
pub(crate) fn register_gauges(meter: &opentelemetry::metrics::Meter, health: &Arc<Health>) {
    use authwatch_otel::{attr, def, Measure};
    use opentelemetry::KeyValue;
    let d = def(Measure::HealthStatus);
    let h = health.clone();
    meter
        .u64_observable_gauge(d.name)
        .with_description(d.description)
        .with_unit(d.unit)
        .with_callback(move |obs| {
            let Some(r) = h.last_or_refresh() else { return };
            obs.observe(
                u64::from(r.status != Status::Unhealthy),
                &[KeyValue::new(attr::HEALTH_CHECK, "overall")],
            );
            for c in &r.checks {
                obs.observe(
                    u64::from(c.status == Status::Healthy),
                    &[KeyValue::new(attr::HEALTH_CHECK, c.name.clone())],
                );
            }
        })
        .build();
    let d = def(Measure::HealthCheckTime);
    let h = health.clone();
    meter
        .f64_observable_gauge(d.name)
        .with_description(d.description)
        .with_unit(d.unit)
        .with_callback(move |obs| {
            let Some(r) = h.last() else { return };
            for c in &r.checks {
                obs.observe(
                    c.latency_ms,
                    &[KeyValue::new(attr::HEALTH_CHECK, c.name.clone())],
                );
            }
        })
        .build();
}

impl Health {
    pub(crate) fn new(
        service: String,
        started: Instant,
        checks: Vec<HealthCheck>,
        cache_for: Duration,
        public_details: Option<bool>,
    ) -> Self {
        Self {
            service,
            started,
            checks,
            cache_for,
            public_details,
            run: tokio::sync::Mutex::new(None),
            last: Mutex::new(None),
            runtime: tokio::runtime::Handle::try_current().ok(),
            own_runtime: std::sync::OnceLock::new(),
            on_run: std::sync::OnceLock::new(),
        }
    }

    /// Whether any check is registered.
    pub(crate) fn has_checks(&self) -> bool {
        !self.checks.is_empty()
    }

    /// The last report; starts a run in the background when it is stale.
    pub(crate) fn last_or_refresh(self: &Arc<Self>) -> Option<HealthReport> {
        let last = self.last();
        let stale = match &last {
            Some(r) => {
                r.uptime_seconds + self.cache_for.as_secs_f64()
                    < self.started.elapsed().as_secs_f64()
            }
            None => true,
        };
        if stale {
            if !self.has_checks() {
                // Nothing to wait for: the report is ready at its first poll, here, and a
                // monitor without checks starts no thread for it.
                use futures_util::FutureExt as _;
                return self.report().now_or_never().or(last);
            }
            // Only when no run is in progress; the gauges never queue runs up.
            if let (Some(rt), Ok(guard)) = (self.background(), self.run.try_lock()) {
                drop(guard);
                let me = self.clone();
                rt.spawn(async move {
                    me.report().await;
                });
            }
        }
        last
    }

    /// Where background runs go: the runtime `build` ran in, else authwatch's own (started
    /// now, the first time).
    fn background(&self) -> Option<&tokio::runtime::Handle> {
        if let Some(rt) = &self.runtime {
            return Some(rt);
        }
        self.own_runtime
            .get_or_init(|| {
                OwnRuntime::start()
                    .map_err(|e| {
                        // Once: the gauges and `AuthServiceDown` must not go quiet unexplained.
                        tracing::warn!(
                            error = %e,
                            "authwatch: cannot start the health-check thread; the checks run \
                             only when the health report is asked for"
                        );
                    })
                    .ok()
            })
            .as_ref()
            .map(|o| &o.handle)
    }

    pub(crate) fn last(&self) -> Option<HealthReport> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The report: cached if younger than the cache interval, else every check run now,
    /// concurrently.
    pub(crate) async fn report(&self) -> HealthReport {
        let mut cached = self.run.lock().await;
        if let Some((at, r)) = &*cached {
            if at.elapsed() < self.cache_for {
                let mut r = r.clone();
                r.uptime_seconds = self.started.elapsed().as_secs_f64();
                return r;
            }
        }
        let checks = futures_util::future::join_all(self.checks.iter().map(HealthCheck::run)).await;
        let status = if checks
            .iter()
            .any(|c| c.critical && c.status == Status::Unhealthy)
        {
            Status::Unhealthy
        } else if checks.iter().any(|c| c.status == Status::Unhealthy) {
            Status::Degraded
        } else {
            Status::Healthy
        };
        let report = HealthReport {
            status,
            service: self.service.clone(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            checked_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            checks,
        };
        for c in &report.checks {
            if c.status != Status::Healthy {
                tracing::warn!(
                    check = %c.name,
                    critical = c.critical,
                    message = c.message.as_deref().unwrap_or(""),
                    "authwatch: health check failed"
                );
            }
        }
        if let Some(f) = self.on_run.get() {
            f(report.status != Status::Unhealthy);
        }
        *cached = Some((Instant::now(), report.clone()));
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
        report
    }
}

/// A check of a `sqlx` pool: runs `SELECT 1` and reports the query time, the pool's size,
/// idle connections and maximum. Fails when no connection can be had or the query fails.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
/// let watch = authwatch::AuthWatch::builder()
///     .health_check(authwatch::health::sqlx_pool("database", pool))
///     .build()?;
/// # Ok(()) }
/// ```
#[cfg(feature = "sqlx")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
pub fn sqlx_pool<DB>(name: impl Into<Arc<str>>, pool: sqlx::Pool<DB>) -> HealthCheck
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    HealthCheck::new(name, move || {
        let pool = pool.clone();
        async move {
            use sqlx::Executor as _;
            let start = Instant::now();
            let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
            let acquire = start.elapsed();
            let q = Instant::now();
            conn.execute("SELECT 1").await.map_err(|e| e.to_string())?;
            let query = q.elapsed();
            drop(conn);
            let mut d = Details::new();
            d.insert("query_ms".into(), (query.as_secs_f64() * 1000.0).into());
            d.insert("acquire_ms".into(), (acquire.as_secs_f64() * 1000.0).into());
            d.insert("pool_size".into(), pool.size().into());
            d.insert("pool_idle".into(), (pool.num_idle() as u64).into());
            d.insert(
                "pool_max".into(),
                pool.options().get_max_connections().into(),
            );
            Ok::<_, String>(d)
        }
    })
}
