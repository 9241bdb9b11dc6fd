//! [`AuthWatchBuilder`]: the settings of a monitor, and [`build`](AuthWatchBuilder::build),
//! which starts each subsystem with them.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authwatch_otel::{Pipeline, PipelineBuilder};

use crate::watch::Inner;
use crate::{
    audit, geo, tracing_ctx, wiring, AlertConfig, AuthEvent, AuthLayer, AuthOp, AuthWatch,
    BuildError, ClientIp, EventSink, HealthCheck, HistogramAggregation, LoginAuditLogger,
    OtlpOptions, Protocol, Routes, Sinks, Temporality, WindowConfig,
};

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
    health_details: Option<bool>,
    metrics_token_file: Option<std::path::PathBuf>,
    metrics_token: Option<String>,
    audit_file: Option<audit::FileSettings>,
    audit_key: Option<Vec<u8>>,
    audit_requests: bool,
    audit_request_successes: bool,
    audit_queue: usize,
    slow_query: Duration,
    active_sessions: Option<wiring::users::SessionCount>,
    alerts: Option<AlertConfig>,
    dashboard: bool,
    dashboard_unmasked: bool,
    span_client_address: bool,
    session_estimate: bool,
    session_cookies: Option<Vec<String>>,
    geoip: Option<std::path::PathBuf>,
    fleet: Option<crate::Fleet>,
    blocking: Option<crate::BlockPolicy>,
    admin_token: Option<String>,
    attack_limit: Option<crate::AttackLimit>,
    crowdsec: Option<crate::CrowdSec>,
    /// The configuration file read, for reloads; or why it could not be.
    config: Option<ConfigSource>,
    config_error: Option<crate::config::ConfigError>,
    reload_on_sighup: bool,
}

/// An edit of the alert settings made in code after the configuration file: replayed on top
/// of the file at each reload, so that builder calls after the file keep winning.
pub(crate) type AlertEdit = Arc<dyn Fn(AlertConfig) -> AlertConfig + Send + Sync>;

/// Where the running configuration came from.
#[derive(Clone)]
pub(crate) struct ConfigSource {
    pub(crate) path: std::path::PathBuf,
    /// The alert settings before the file (the defaults, or the code's before it).
    pub(crate) base_alerts: AlertConfig,
    /// The code's edits after it.
    pub(crate) edits: Vec<AlertEdit>,
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

    /// Reads the bearer token of [`metrics_bearer_token`](Self::metrics_bearer_token) from a
    /// file at build (a Kubernetes or Docker secret; surrounding whitespace is ignored). A file
    /// that cannot be read, or is empty, fails the build.
    pub fn metrics_bearer_token_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.metrics_token_file = Some(path.into());
        self
    }

    /// Registers a health check for `/auth/health`.
    pub fn health_check(mut self, check: HealthCheck) -> Self {
        self.checks.push(check);
        self
    }

    /// Whether `/auth/health` shows each check's failure message and details to every client
    /// (`true`) or to none (`false`). By default, only to loopback clients (a `curl` on the
    /// host, a sidecar): messages can name hosts, databases or users, and a probe needs the
    /// status, not them. Without details the response has each check's name, status and
    /// latency; the messages still go to the log and to [`AuthWatch::health`].
    pub fn health_details(mut self, show: bool) -> Self {
        self.health_details = Some(show);
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
        let earlier = self.alerts.take();
        self.alerts = Some(merge_alerts(config.clone(), earlier.as_ref()));
        self.alert_edit(move |earlier| merge_alerts(config.clone(), Some(&earlier)));
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

    /// Shows the top offending client addresses, and the accounts under attack, in full on the
    /// dashboard and in `/auth/stats` (default: addresses masked to their first two octets or
    /// groups, `203.0.x.x`; accounts to a first letter and their domain, `a***@example.com`).
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
    /// [`layer::DEFAULT_SESSION_COOKIES`](crate::layer::DEFAULT_SESSION_COOKIES): Better Auth's, `sessionid`, `session_id`,
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
        let url = url.into();
        self.alerts = Some(
            self.alerts
                .take()
                .unwrap_or_default()
                .alertmanager(url.clone()),
        );
        self.alert_edit(move |c| c.alertmanager(url.clone()));
        self
    }

    /// Posts alerts to a Slack-compatible webhook.
    pub fn alert_webhook(mut self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.alerts = Some(self.alerts.take().unwrap_or_default().webhook(url.clone()));
        self.alert_edit(move |c| c.webhook(url.clone()));
        self
    }

    /// Posts the alerts whose `notify` label names `channel` to a webhook of its own: the
    /// pager's, Slack's, e-mail's, or the security team's (the attack alerts). See
    /// [`AlertConfig::webhook_for`].
    pub fn alert_webhook_for(
        mut self,
        channel: crate::alerts::Channel,
        url: impl Into<String>,
    ) -> Self {
        let url = url.into();
        self.alerts = Some(
            self.alerts
                .take()
                .unwrap_or_default()
                .webhook_for(channel, url.clone()),
        );
        self.alert_edit(move |c| c.webhook_for(channel, url.clone()));
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

    /// Fleet mode: the replicas of this service (the same service name) share their request
    /// counts through Redis, and every instance's alert rules evaluate the fleet's totals
    /// (see [`Fleet`](crate::Fleet)). Without this call, `AUTHWATCH_REDIS_URL` turns it on.
    /// Requests never wait for Redis; when it is away, each instance reads its own counts and
    /// says so (`auth.fleet.connected`, the non-critical `fleet` health check).
    pub fn fleet(mut self, fleet: crate::Fleet) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// Blocks the addresses the attack alerts name (`AuthBruteForceSuspected`,
    /// `AuthPasswordSpraying`) for a while: their requests get `429` with `Retry-After` and
    /// never reach your handlers. See [`BlockPolicy`](crate::BlockPolicy). Without this call,
    /// only [`AuthWatch::block_ip`] blocks.
    pub fn blocking(mut self, policy: crate::BlockPolicy) -> Self {
        self.blocking = Some(policy);
        self
    }

    /// Serves `/auth/blocks` from [`AuthWatch::endpoints`] (list, add and lift blocks; the
    /// `authwatch blocks` command's endpoint) to requests that carry this bearer token.
    /// Without a token, the endpoint does not exist.
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    /// Pushes the blocks to a CrowdSec Local API as decisions (so that its firewall bouncers
    /// enforce them) and, with a bouncer key, enforces its bans in the layer. See
    /// [`CrowdSec`](crate::CrowdSec).
    pub fn crowdsec(mut self, crowdsec: crate::CrowdSec) -> Self {
        self.crowdsec = Some(crowdsec);
        self
    }

    /// A per-address limit on the login routes while an attack alert fires (the spec's
    /// "increase rate limiting temporarily"). See [`AttackLimit`](crate::AttackLimit).
    pub fn attack_limit(mut self, limit: crate::AttackLimit) -> Self {
        self.attack_limit = Some(limit);
        self
    }

    /// Settings with the defaults ([`AuthWatch::builder`]).
    pub(crate) fn new() -> Self {
        let b = Self {
            service_name: None,
            routes: Routes::default(),
            client_ip: ClientIp::default(),
            window: WindowConfig::default(),
            sinks: Vec::new(),
            otlp: OtlpOptions::default(),
            pipeline: Pipeline::builder(),
            checks: Vec::new(),
            health_cache: Duration::from_secs(2),
            health_details: None,
            metrics_token_file: None,
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
            fleet: None,
            blocking: None,
            admin_token: None,
            attack_limit: None,
            crowdsec: None,
            config: None,
            config_error: None,
            reload_on_sighup: false,
        };
        match std::env::var_os(crate::config::CONFIG_ENV) {
            Some(p) if !p.is_empty() => b.config_file(p),
            _ => b,
        }
    }

    /// Reads `authwatch.toml` (see [`config`](crate::config)): routes, alert rules and their
    /// notifiers, blocking, fleet, audit, endpoints and CrowdSec. Builder calls after it win,
    /// field by field (and still do after a [`reload`](AuthWatch::reload_config)); settings
    /// it leaves out keep what was set before it. Without this call, the file
    /// `AUTHWATCH_CONFIG` names is read first. A file that cannot be read or is wrong makes
    /// [`build`](Self::build) fail with [`BuildError::ConfigFile`], naming the line and key.
    pub fn config_file(mut self, path: impl AsRef<std::path::Path>) -> Self {
        match crate::config::Loaded::read(path) {
            Ok(l) => match self.apply_config(&l) {
                Ok(b) => b,
                Err((mut b, e)) => {
                    b.config_error = Some(e);
                    b
                }
            },
            Err(e) => {
                self.config_error = Some(e);
                self
            }
        }
    }

    /// Reloads the configuration file on `SIGHUP` (Unix; default off), as
    /// [`AuthWatch::reload_config`] does.
    pub fn reload_on_sighup(mut self, on: bool) -> Self {
        self.reload_on_sighup = on;
        self
    }

    #[allow(clippy::result_large_err)]
    fn apply_config(
        mut self,
        l: &crate::config::Loaded,
    ) -> Result<Self, (Self, crate::config::ConfigError)> {
        let f = &l.file;
        if let Some(n) = &f.service.name {
            self.service_name = Some(n.clone());
        }
        for (route, op) in &f.routes {
            if let Some(op) = crate::config::op_of(op) {
                self.routes = self.routes.route(route, op);
            }
        }
        let base = self.alerts.clone().unwrap_or_default();
        if f.alerts.enabled == Some(false) {
            self.alerts = None;
        } else {
            match l.alerts(base.clone()) {
                Ok(c) => self.alerts = Some(c),
                Err(e) => return Err((self, e)),
            }
        }
        self.config = Some(ConfigSource {
            path: l.path.clone(),
            base_alerts: base,
            edits: Vec::new(),
        });
        if let Some(b) = &f.blocking {
            if b.enabled == Some(false) {
                self.blocking = None;
            } else {
                match l.block_policy(b) {
                    Ok(p) => self.blocking = Some(p),
                    Err(e) => return Err((self, e)),
                }
            }
        }
        if let Some(a) = &f.attack_limit {
            let mut lim = crate::AttackLimit::per_minute(a.per_minute);
            if let Some(b) = a.burst {
                lim = lim.burst(b);
            }
            self.attack_limit = Some(lim);
        }
        if let Some(fl) = &f.fleet {
            let mut fleet = crate::Fleet::redis(fl.redis.clone());
            if let Some(n) = &fl.namespace {
                fleet = fleet.namespace(n.clone());
            }
            if let Some(d) = fl.flush_interval {
                fleet = fleet.flush_interval(d.0);
            }
            if let Some(n) = &fl.instance_name {
                fleet = fleet.instance_name(n.clone());
            }
            self.fleet = Some(fleet);
        }
        let a = &f.audit;
        if let Some(d) = &a.dir {
            self.audit_file = Some(audit::FileSettings::new(d.clone()));
        }
        if let (Some(r), Some(f)) = (&a.recipients, self.audit_file.take()) {
            self.audit_file = Some(f.encrypt_to(r.clone()));
        }
        if let Some(k) = &a.key_file {
            match l.secret("audit.key_file", k) {
                Ok(k) => self.audit_key = Some(k.into_bytes()),
                Err(e) => return Err((self, e)),
            }
        }
        if let Some(on) = a.requests {
            self.audit_requests = on;
        }
        if let Some(on) = a.request_successes {
            self.audit_request_successes = on;
        }
        let e = &f.endpoints;
        if let Some(p) = &e.metrics_bearer_token_file {
            match l.secret("endpoints.metrics_bearer_token_file", p) {
                Ok(t) => self.metrics_token = Some(t),
                Err(e) => return Err((self, e)),
            }
        }
        if let Some(p) = &e.admin_token_file {
            match l.secret("endpoints.admin_token_file", p) {
                Ok(t) => self.admin_token = Some(t),
                Err(e) => return Err((self, e)),
            }
        }
        match e.health_details.as_deref() {
            Some("always") => self.health_details = Some(true),
            Some("never") => self.health_details = Some(false),
            Some(_) => self.health_details = None,
            None => {}
        }
        if let Some(on) = e.dashboard {
            self.dashboard = on;
        }
        if let Some(on) = e.dashboard_unmasked_ips {
            self.dashboard_unmasked = on;
        }
        if let Some(c) = &f.crowdsec {
            let mut cs = crate::CrowdSec::new(c.url.clone());
            if let (Some(m), Some(p)) = (&c.machine, &c.password_file) {
                match l.secret("crowdsec.password_file", p) {
                    Ok(pw) => cs = cs.watcher(m.clone(), pw),
                    Err(e) => return Err((self, e)),
                }
            }
            if let Some(p) = &c.bouncer_key_file {
                match l.secret("crowdsec.bouncer_key_file", p) {
                    Ok(k) => cs = cs.bouncer(k),
                    Err(e) => return Err((self, e)),
                }
            }
            if let Some(d) = c.stream_interval {
                cs = cs.stream_interval(d.0);
            }
            self.crowdsec = Some(cs);
        }
        Ok(self)
    }

    /// Records an edit of the alert settings made after the configuration file.
    fn alert_edit(&mut self, f: impl Fn(AlertConfig) -> AlertConfig + Send + Sync + 'static) {
        if let Some(c) = &mut self.config {
            c.edits.push(Arc::new(f));
        }
    }

    /// Builds the monitor.
    ///
    /// # Errors
    ///
    /// [`BuildError::Routes`] when a route template is invalid or conflicts with another;
    /// [`BuildError::Telemetry`] when the OpenTelemetry settings are invalid.
    pub fn build(mut self) -> Result<AuthWatch, BuildError> {
        if let Some(e) = self.config_error.take() {
            return Err(BuildError::ConfigFile(e));
        }
        // Routes and the GeoIP file first: bad input must not start (and then stop) exporters.
        self.routes.build()?;
        if let Some(p) = &self.blocking {
            p.networks()?;
        }
        if self
            .admin_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(BuildError::Config(
                "admin_token is empty: it would protect nothing".into(),
            ));
        }
        if let Some(p) = &self.metrics_token_file {
            let t = std::fs::read_to_string(p).map_err(|e| {
                BuildError::Config(format!("metrics_bearer_token_file {}: {e}", p.display()))
            })?;
            self.metrics_token = Some(t.trim().to_owned());
        }
        if self.metrics_token.as_deref().is_some_and(str::is_empty) {
            return Err(BuildError::Config(
                "metrics_bearer_token is empty: it would protect nothing".into(),
            ));
        }
        if self.metrics_token.is_none() {
            let mut open = vec!["/metrics"];
            if self.dashboard {
                open.extend(["/auth/stats", "/auth/dashboard"]);
            }
            tracing::warn!(
                target: "authwatch::endpoints",
                "authwatch: {} served without a bearer token: anyone who reaches them reads the auth metrics{}; set metrics_bearer_token_file (or [endpoints] metrics_bearer_token_file), or keep them off the public port",
                open.join(", "),
                if self.dashboard { " and the top offending addresses (masked)" } else { "" }
            );
        }
        let geo = self
            .geoip
            .as_deref()
            .map(geo::Geo::open)
            .transpose()
            .map_err(BuildError::GeoIp)?
            .map(Arc::new);
        let started = Instant::now();
        let mut pipeline = self.pipeline.otlp(self.otlp);
        if let Some(name) = self.service_name {
            pipeline = pipeline.service_name(name);
        }
        let pipeline = pipeline.build()?;
        let service_name = pipeline.service_name();
        let meters = pipeline.meters();

        let otel = wiring::metrics::sink(&pipeline);
        let stats = wiring::metrics::stats(self.window, started, meters, otel.clone());
        let fleet = self
            .fleet
            .or_else(crate::Fleet::from_env)
            .map(|f| wiring::fleet::start(&f, &service_name, &stats, meters))
            .transpose()?;
        let mut checks = self.checks;
        if let Some(f) = &fleet {
            checks.push(wiring::fleet::health_check(f));
        }
        // Bounded like the block list it feeds.
        let max_blocks = self.blocking.as_ref().map_or_else(
            || crate::BlockPolicy::default().max_blocks_len(),
            |p| p.max_blocks_len(),
        );
        let crowdsec = self
            .crowdsec
            .map(|c| crate::crowdsec::Link::new(c, max_blocks))
            .transpose()?;
        if let Some(l) = &crowdsec {
            checks.push(wiring::blocks::crowdsec_health_check(l));
        }
        let health = wiring::health::start(
            service_name.clone(),
            started,
            wiring::health::Settings {
                checks,
                cache: self.health_cache,
                details: self.health_details,
            },
            meters,
        );
        let auditor = wiring::audit::start(
            &pipeline,
            wiring::audit::Settings {
                file: self.audit_file,
                key: self.audit_key,
                queue: self.audit_queue,
            },
        )?;
        let access_auditor = auditor.clone();
        // Reloads that worked and that failed; the failures are exported.
        let config_reloads: Arc<[std::sync::atomic::AtomicU64; 2]> = Arc::default();
        for meter in meters {
            let r = config_reloads.clone();
            authwatch_otel::register_u64_counter(
                meter,
                authwatch_otel::Measure::ConfigReloadErrors,
                move || Some(r[1].load(std::sync::atomic::Ordering::Relaxed)),
            );
        }
        let active_users =
            wiring::users::active_users(self.window, self.active_sessions.as_ref(), meters);
        // Blocks key IPv6 clients as the detectors do, and pardon an unblocked address for as
        // long as their windows remember its failures.
        let (prefix, pardon) = self
            .alerts
            .as_ref()
            .map_or((64, Duration::from_secs(600)), |c| {
                (
                    c.brute_force_config().ipv6_prefix_len(),
                    c.brute_force_config()
                        .window_len()
                        .max(c.account_config().window_len()),
                )
            });
        let blocker = Arc::new(crate::blocks::Blocker::new(
            self.blocking,
            prefix,
            pardon,
            auditor.clone(),
        )?);
        wiring::blocks::register(&blocker, meters);
        if let Some(link) = crowdsec {
            link.start(&blocker)?;
            blocker.attach_crowdsec(link);
        }
        let limiter = self.attack_limit.map(|l| {
            Arc::new(crate::limit::AttackLimiter::new(
                l,
                blocker.list().clone(),
                auditor.clone(),
            ))
        });
        if let Some(f) = &fleet {
            f.attach_blocks(&blocker);
        }
        let incidents = Arc::new(crate::incidents::Incidents::new(
            auditor.clone(),
            self.alerts.as_ref().map(notifiers_of).unwrap_or_default(),
        ));
        let alerts = self.alerts.map(|cfg| {
            wiring::alerts::start(
                cfg,
                &service_name,
                &stats,
                fleet.as_ref(),
                &health,
                wiring::alerts::Responders {
                    blocker: &blocker,
                    limiter: limiter.as_ref(),
                    incidents: &incidents,
                },
                meters,
            )
        });
        let sessions = wiring::users::sessions(self.window, meters);
        if let Some(engine) = &alerts {
            auditor.feed_accounts(engine.clone());
        }
        let audit = LoginAuditLogger::new(auditor.clone())
            .with_lockouts(otel.application_lockouts(), stats.clone())
            .with_alerts(alerts.clone())
            .with_active_users(active_users.clone());
        audit::set_global(&audit);

        // The sinks, in the order they see each event. The OpenTelemetry sink's cells are the
        // one record of each request: the exported instruments and the statistics read them.
        let mut sinks = Sinks::new().with(otel);
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
            wiring::users::geo_counter(&geo, meters);
            sinks = sinks.with(geo);
        }
        if self.session_estimate {
            let s = sessions.clone();
            // Only credentials that worked: forged or expired tokens are not sessions (an
            // attacker spraying tokens must not move the estimate).
            sinks = sinks.with(Arc::new(authwatch_layer::Only::new(
                authwatch_layer::Interest::SUCCESS,
                move |e: &AuthEvent<'_>| {
                    if let Some(k) = e.session {
                        s.insert(&k, e.finished_at);
                    }
                },
            )));
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
            .blocklist(blocker.list().clone());
        let layer = match &limiter {
            Some(l) => layer.limiter(l.clone()),
            None => layer,
        }
        .build()?;
        let queries = authwatch_otel::QueryTimer::new(meters.iter());
        let watch = AuthWatch {
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
                queries,
                slow_query: self.slow_query,
                active_users,
                alerts,
                sessions,
                started,
                dashboard: self.dashboard,
                dashboard_unmasked: self.dashboard_unmasked,
                fleet,
                blocker,
                admin_token: self.admin_token,
                limiter,
                incidents,
                config: self.config.map(std::sync::Mutex::new),
                config_reloads,
                sighup: std::sync::OnceLock::new(),
                access: crate::access::AccessLog::new(access_auditor),
            }),
        };
        if self.reload_on_sighup {
            crate::watch::reload_on_sighup(&watch)?;
        }
        Ok(watch)
    }
}

/// Where `cfg` sends notifications: `alertmanager`, `webhook`, `webhook:security`, …
fn notifiers_of(cfg: &AlertConfig) -> Vec<String> {
    let mut v = Vec::new();
    if cfg.alertmanager_url().is_some() {
        v.push("alertmanager".to_owned());
    }
    if cfg.webhook_url().is_some() {
        v.push("webhook".to_owned());
    }
    for (c, _) in cfg.receiver_webhooks() {
        v.push(format!("webhook:{}", c.as_str()));
    }
    v
}

/// `config`, keeping the notifiers of the `earlier` settings it does not name.
fn merge_alerts(mut config: AlertConfig, earlier: Option<&AlertConfig>) -> AlertConfig {
    if let Some(earlier) = earlier {
        if let (None, Some(url)) = (config.alertmanager_url(), earlier.alertmanager_url()) {
            config = config.alertmanager(url);
        }
        if let (None, Some(url)) = (config.webhook_url(), earlier.webhook_url()) {
            config = config.webhook(url);
        }
        for (c, url) in earlier.receiver_webhooks() {
            if !config.receiver_webhooks().iter().any(|(x, _)| x == c) {
                config = config.webhook_for(*c, url.clone());
            }
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
