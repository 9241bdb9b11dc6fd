//! The metric catalog: every instrument authwatch exports, in one table.
//!
//! The instruments, the `/metrics` page, the guide's metric table (`docs/guide/metrics.md`) and
//! the generated alert rules and dashboards all read this table, so a name cannot drift between
//! them.

use std::fmt;

use crate::op::AuthOp;

/// The kind of an instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InstrumentKind {
    /// A monotonic counter (Prometheus `counter`, name ends in `_total`).
    Counter,
    /// A histogram (Prometheus `histogram`: `_bucket`, `_sum`, `_count`).
    Histogram,
    /// A gauge observed at collection time (Prometheus `gauge`).
    Gauge,
}

impl InstrumentKind {
    /// The Prometheus `# TYPE` of the instrument.
    #[must_use]
    pub const fn prometheus_type(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Histogram => "histogram",
            Self::Gauge => "gauge",
        }
    }
}

/// The metric attribute keys. Nothing else ever becomes an attribute: no client address, user
/// id, e-mail, token or raw path.
pub mod attr {
    /// `auth.operation`: `login`, `registration`, `token_validation`, `token_refresh`, `logout`,
    /// `password_reset`.
    pub const OPERATION: &str = "auth.operation";
    /// `auth.outcome`: `success`, `failure`, `rate_limited`, `error`, `cancelled`.
    pub const OUTCOME: &str = "auth.outcome";
    /// `auth.failure.reason`: `invalid_credentials`, `invalid_token`, `forbidden`,
    /// `bad_request`, `conflict`, `locked_out`, `not_found`, `client_error`, `server_error`.
    pub const FAILURE_REASON: &str = "auth.failure.reason";
    /// `http.route`: the route template, never the raw path.
    pub const HTTP_ROUTE: &str = "http.route";
    /// `http.request.method`: a standard method or `_OTHER`.
    pub const HTTP_METHOD: &str = "http.request.method";
    /// `rpc.method`: the gRPC method name, for gRPC routes.
    pub const RPC_METHOD: &str = "rpc.method";
    /// `auth.health.check`: the name of a health check registered in the builder.
    pub const HEALTH_CHECK: &str = "auth.health.check";
    /// `db.query.name`: the name the application gave a timed query (`find_user`), at most 64
    /// distinct names (then `_OTHER`).
    pub const DB_QUERY_NAME: &str = "db.query.name";

    /// `cpu.mode`: `user` or `system`, on `process.cpu.time`.
    pub const CPU_MODE: &str = "cpu.mode";
    /// `geo.country.iso_code`: the ISO 3166-1 alpha-2 code of the client's country from the
    /// GeoIP database (or `unknown`), on `auth.geo.attempts.count`: at most 677 values.
    pub const GEO_COUNTRY: &str = "geo.country.iso_code";
    /// `alert.name`: the name of an alert rule (bounded by the rule set), on `auth.alerts.firing`.
    pub const ALERT_NAME: &str = "alert.name";
    /// `alert.severity`: `critical`, `warning` or `info`, on `auth.alerts.firing`.
    pub const ALERT_SEVERITY: &str = "alert.severity";

    /// Every attribute key any instrument may carry.
    pub const ALL: [&str; 12] = [
        OPERATION,
        OUTCOME,
        FAILURE_REASON,
        HTTP_ROUTE,
        HTTP_METHOD,
        RPC_METHOD,
        HEALTH_CHECK,
        DB_QUERY_NAME,
        CPU_MODE,
        ALERT_NAME,
        ALERT_SEVERITY,
        GEO_COUNTRY,
    ];
}

const REQUEST_ATTRS: &[&str] = &[
    attr::OPERATION,
    attr::OUTCOME,
    attr::FAILURE_REASON,
    attr::HTTP_ROUTE,
    attr::HTTP_METHOD,
    attr::RPC_METHOD,
];
const TIMING_ATTRS: &[&str] = &[
    attr::OPERATION,
    attr::OUTCOME,
    attr::HTTP_ROUTE,
    attr::HTTP_METHOD,
    attr::RPC_METHOD,
];
const OP_ATTRS: &[&str] = &[attr::OPERATION];
const CHECK_ATTRS: &[&str] = &[attr::HEALTH_CHECK];

/// What one catalog entry measures; sinks use it to find their instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Measure {
    /// Successful requests of an operation.
    Success(AuthOp),
    /// Failed requests of an operation (client failures and server errors).
    Failure(AuthOp),
    /// Rate-limited requests, all operations.
    RateLimited,
    /// Invalid-token attempts, all operations.
    InvalidToken,
    /// Requests whose caller went away first, all operations.
    Cancelled,
    /// Response time of the auth routes.
    ResponseTime,
    /// Token validation time (token-validation routes and token guards).
    TokenValidationTime,
    /// A percentile of the response time over the window, per operation.
    ResponseTimeQuantile(Quantile),
    /// A percentile of the token validation time over the window.
    TokenValidationQuantile(Quantile),
    /// Health check status: 1 healthy, 0 unhealthy.
    HealthStatus,
    /// Duration of the last run of a health check.
    HealthCheckTime,
    /// Seconds since the monitor started.
    Uptime,
    /// Audit records dropped because the writer's queue was full.
    AuditDropped,
    /// Audit records the OTLP log export lost.
    AuditExportLost,
    /// Time of the application's own auth queries, timed with `AuthWatch::time_query`.
    DbQueryTime,
    /// Account lockouts.
    Lockout,
    /// CPU time of the process (Linux).
    ProcessCpuTime,
    /// Resident memory of the process (Linux).
    ProcessMemory,
    /// Open file descriptors of the process (Linux).
    ProcessOpenFiles,
    /// Estimated distinct active users over the window.
    ActiveUsers,
    /// Active sessions, as the application counts them.
    ActiveSessions,
    /// Distinct sessions seen over the window, estimated from keyed hashes of their tokens.
    EstimatedSessions,
    /// Auth attempts per client country (with a GeoIP database).
    GeoAttempts,
    /// The most failures from one client IP over the brute-force window.
    AttackTopIpFailures,
    /// Client IPs over the brute-force threshold.
    AttackSuspectedIps,
    /// Distinct client IPs failing on a route over the brute-force window.
    AttackFailingIps,
    /// The most failed logins of one account over the account window.
    AttackTopAccountFailures,
    /// Accounts over an account-level threshold (failures or distinct addresses) now.
    AttackAccountsUnderAttack,
    /// Firing alerts of the in-process engine, per rule.
    AlertsFiring,
    /// Whether fleet mode's last flush reached Redis.
    FleetConnected,
    /// Fleet mode's failed connection attempts and flushes.
    FleetErrors,
    /// Requests refused because their address is blocked, per operation.
    Blocked,
    /// Addresses blocked now.
    BlocksActive,
    /// Configuration reloads refused (the running configuration stayed).
    ConfigReloadErrors,
}

/// The window percentiles exported as gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantile {
    /// Median.
    P50,
    /// 95th percentile.
    P95,
    /// 99th percentile.
    P99,
}

impl Quantile {
    /// All three, in order.
    pub const ALL: [Self; 3] = [Self::P50, Self::P95, Self::P99];

    /// The quantile as a fraction (0.5, 0.95, 0.99).
    #[must_use]
    pub const fn fraction(self) -> f64 {
        match self {
            Self::P50 => 0.5,
            Self::P95 => 0.95,
            Self::P99 => 0.99,
        }
    }
}

/// One instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricDef {
    /// The OpenTelemetry instrument name, exactly as the spec writes it.
    pub name: &'static str,
    /// What it measures.
    pub measure: Measure,
    /// The instrument kind.
    pub kind: InstrumentKind,
    /// The OpenTelemetry unit. Histograms and gauges carry none because their names already end
    /// in `.ms`: a unit would make every Prometheus translation append `_milliseconds`. Counters
    /// carry the annotation `{request}`, which translations drop.
    pub unit: &'static str,
    /// The description (`# HELP`).
    pub description: &'static str,
    /// The attribute keys it may carry.
    pub attributes: &'static [&'static str],
}

impl MetricDef {
    /// The Prometheus metric name that both our `/metrics` page and a collector's OTLP→Prometheus
    /// translation derive: dots become `_`, the unit's word follows for `s` (`_seconds`) and
    /// `By` (`_bytes`) (the `auth.*` instruments carry none, see [`unit`](Self::unit)), and
    /// counters gain `_total`. Histograms add `_bucket`, `_sum`, `_count` to this base.
    #[must_use]
    pub fn prometheus_name(&self) -> String {
        let mut base = self.name.replace('.', "_");
        match self.unit {
            "s" => base += "_seconds",
            "By" => base += "_bytes",
            _ => {}
        }
        match self.kind {
            InstrumentKind::Counter => base + "_total",
            _ => base,
        }
    }
}

impl fmt::Display for MetricDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

macro_rules! op_counters {
    ($($op:ident, $ok:literal, $ko:literal, $what:literal;)*) => {
        [$(
            MetricDef {
                name: $ok,
                measure: Measure::Success(AuthOp::$op),
                kind: InstrumentKind::Counter,
                unit: "{request}",
                description: concat!("Successful ", $what, " (2xx, 3xx, gRPC OK)."),
                attributes: REQUEST_ATTRS,
            },
            MetricDef {
                name: $ko,
                measure: Measure::Failure(AuthOp::$op),
                kind: InstrumentKind::Counter,
                unit: "{request}",
                description: concat!(
                    "Failed ", $what,
                    " (4xx other than 429, 5xx, gRPC errors), by auth.failure.reason."
                ),
                attributes: REQUEST_ATTRS,
            },
        )*]
    };
}

const OP_COUNTERS: [MetricDef; 12] = op_counters![
    Login, "auth.login.success.count", "auth.login.failure.count", "logins";
    Registration, "auth.registration.success.count", "auth.registration.failure.count", "registrations";
    TokenValidation, "auth.token.validation.success.count", "auth.token.validation.failure.count", "token validations";
    TokenRefresh, "auth.token.refresh.success.count", "auth.token.refresh.failure.count", "token refreshes";
    Logout, "auth.logout.success.count", "auth.logout.failure.count", "logouts";
    PasswordReset, "auth.password.reset.success.count", "auth.password.reset.failure.count", "password resets";
];

const fn quantile_gauge(
    name: &'static str,
    q: Quantile,
    token: bool,
    description: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        measure: if token {
            Measure::TokenValidationQuantile(q)
        } else {
            Measure::ResponseTimeQuantile(q)
        },
        kind: InstrumentKind::Gauge,
        unit: "",
        description,
        attributes: if token { &[] } else { OP_ATTRS },
    }
}

const OTHERS: [MetricDef; 36] = [
    MetricDef {
        name: "auth.rate.limit.exceeded.count",
        measure: Measure::RateLimited,
        kind: InstrumentKind::Counter,
        unit: "{request}",
        description: "Auth requests refused by a rate limit (429, gRPC RESOURCE_EXHAUSTED).",
        attributes: REQUEST_ATTRS,
    },
    MetricDef {
        name: "auth.invalid.token.attempts.count",
        measure: Measure::InvalidToken,
        kind: InstrumentKind::Counter,
        unit: "{request}",
        description: "Requests that presented an invalid or expired token.",
        attributes: REQUEST_ATTRS,
    },
    MetricDef {
        name: "auth.lockout.count",
        measure: Measure::Lockout,
        kind: InstrumentKind::Counter,
        unit: "{request}",
        description: "Account lockouts: 423 responses, a handler's or middleware's Outcome::Failure(LockedOut) or x-authwatch-lockout header, and LoginAuditLogger::log_lockout calls (those without route labels).",
        attributes: REQUEST_ATTRS,
    },
    MetricDef {
        name: "auth.request.cancelled.count",
        measure: Measure::Cancelled,
        kind: InstrumentKind::Counter,
        unit: "{request}",
        description: "Auth requests whose caller went away before the response ended.",
        attributes: REQUEST_ATTRS,
    },
    MetricDef {
        name: "auth.response.time.ms",
        measure: Measure::ResponseTime,
        kind: InstrumentKind::Histogram,
        unit: "",
        description: "Response time of the auth routes in milliseconds, to the end of the body.",
        attributes: TIMING_ATTRS,
    },
    MetricDef {
        name: "auth.token.validation.time.ms",
        measure: Measure::TokenValidationTime,
        kind: InstrumentKind::Histogram,
        unit: "",
        description: "Token validation time in milliseconds (validation routes and token guards).",
        attributes: TIMING_ATTRS,
    },
    quantile_gauge(
        "auth.response.time.p50.ms",
        Quantile::P50,
        false,
        "Median response time in milliseconds over the sliding window, per operation.",
    ),
    quantile_gauge(
        "auth.response.time.p95.ms",
        Quantile::P95,
        false,
        "95th percentile response time in milliseconds over the sliding window, per operation.",
    ),
    quantile_gauge(
        "auth.response.time.p99.ms",
        Quantile::P99,
        false,
        "99th percentile response time in milliseconds over the sliding window, per operation.",
    ),
    quantile_gauge(
        "auth.token.validation.time.p50.ms",
        Quantile::P50,
        true,
        "Median token validation time in milliseconds over the sliding window.",
    ),
    quantile_gauge(
        "auth.token.validation.time.p95.ms",
        Quantile::P95,
        true,
        "95th percentile token validation time in milliseconds over the sliding window.",
    ),
    quantile_gauge(
        "auth.token.validation.time.p99.ms",
        Quantile::P99,
        true,
        "99th percentile token validation time in milliseconds over the sliding window.",
    ),
    MetricDef {
        name: "auth.health.status",
        measure: Measure::HealthStatus,
        kind: InstrumentKind::Gauge,
        unit: "",
        description: "Health check status: 1 healthy, 0 unhealthy (auth.health.check=overall for the whole service).",
        attributes: CHECK_ATTRS,
    },
    MetricDef {
        name: "auth.health.check.time.ms",
        measure: Measure::HealthCheckTime,
        kind: InstrumentKind::Gauge,
        unit: "",
        description: "Duration of the last run of each health check in milliseconds.",
        attributes: CHECK_ATTRS,
    },
    MetricDef {
        name: "auth.db.query.time.ms",
        measure: Measure::DbQueryTime,
        kind: InstrumentKind::Histogram,
        unit: "",
        description: "Time of the application's auth database queries in milliseconds, by query name.",
        attributes: &[attr::DB_QUERY_NAME],
    },
    MetricDef {
        name: "auth.audit.dropped.count",
        measure: Measure::AuditDropped,
        kind: InstrumentKind::Counter,
        unit: "{record}",
        description: "Audit records dropped because the audit writer's queue was full.",
        attributes: &[],
    },
    MetricDef {
        name: "auth.audit.export.lost.count",
        measure: Measure::AuditExportLost,
        kind: InstrumentKind::Counter,
        unit: "{record}",
        description: "Audit records the OTLP log export lost: the collector refused them or did not answer in time, or the export queue was full (the audit files still have them).",
        attributes: &[],
    },
    MetricDef {
        name: "auth.users.active",
        measure: Measure::ActiveUsers,
        kind: InstrumentKind::Gauge,
        unit: "{user}",
        description: "Distinct users seen by the audit logger (sign-ins, issued tokens, registrations, logouts) over the sliding window: a HyperLogLog estimate, relative standard error 1.6%.",
        attributes: &[],
    },
    MetricDef {
        name: "auth.sessions.active",
        measure: Measure::ActiveSessions,
        kind: InstrumentKind::Gauge,
        unit: "{session}",
        description: "Active sessions, as the application's session store counts them (AuthWatchBuilder::active_sessions).",
        attributes: &[],
    },
    MetricDef {
        name: "process.cpu.time",
        measure: Measure::ProcessCpuTime,
        kind: InstrumentKind::Counter,
        unit: "s",
        description: "CPU time the process used, by cpu.mode (user, system). Linux.",
        attributes: &[attr::CPU_MODE],
    },
    MetricDef {
        name: "process.memory.usage",
        measure: Measure::ProcessMemory,
        kind: InstrumentKind::Gauge,
        unit: "By",
        description: "Resident memory of the process in bytes. Linux.",
        attributes: &[],
    },
    MetricDef {
        name: "process.open_file_descriptor.count",
        measure: Measure::ProcessOpenFiles,
        kind: InstrumentKind::Gauge,
        unit: "{file_descriptor}",
        description: "Open file descriptors of the process (sockets included). Linux.",
        attributes: &[],
    },
    MetricDef {
        name: "auth.sessions.estimated",
        measure: Measure::EstimatedSessions,
        kind: InstrumentKind::Gauge,
        unit: "",
        description: "Distinct sessions (bearer tokens and session cookies, as keyed hashes) seen by auth routes and token guards over the sliding window: a HyperLogLog estimate, relative standard error 1.6%.",
        attributes: &[],
    },
    MetricDef {
        name: "auth.geo.attempts.count",
        measure: Measure::GeoAttempts,
        kind: InstrumentKind::Counter,
        unit: "{request}",
        description: "Auth attempts by the client's country (AuthWatchBuilder::geoip_database; off without one), operation and outcome (success, failure, rate_limited).",
        attributes: &[attr::OPERATION, attr::OUTCOME, attr::GEO_COUNTRY],
    },
    MetricDef {
        name: "auth.attack.top_ip.failures",
        measure: Measure::AttackTopIpFailures,
        kind: InstrumentKind::Gauge,
        unit: "",
        description: "Failed auth attempts from the one client IP with the most, over the brute-force window (10 min): an estimate never below the truth. The address itself is only in alert labels and logs.",
        attributes: &[],
    },
    MetricDef {
        name: "auth.attack.suspected_ips",
        measure: Measure::AttackSuspectedIps,
        kind: InstrumentKind::Gauge,
        unit: "",
        description: "Client IPs over the brute-force threshold (50 failures in 10 min) now.",
        attributes: &[],
    },
    MetricDef {
        name: "auth.attack.failing_ips",
        measure: Measure::AttackFailingIps,
        kind: InstrumentKind::Gauge,
        unit: "",
        description: "Distinct client IPs whose first failure in the brute-force window was on the route (an estimate): many addresses against one route is a distributed attack.",
        attributes: &[attr::HTTP_ROUTE],
    },
    MetricDef {
        name: "auth.attack.top_account.failures",
        measure: Measure::AttackTopAccountFailures,
        kind: InstrumentKind::Gauge,
        unit: "",
        description: "Failed logins of the one account with the most, over the account window (10 min), from the failures the application reports (LoginAuditLogger::log_login_failure): an estimate never below the truth. The account itself is only in alert labels, logs and the audit trail.",
        attributes: &[],
    },
    MetricDef {
        name: "auth.attack.accounts_under_attack",
        measure: Measure::AttackAccountsUnderAttack,
        kind: InstrumentKind::Gauge,
        unit: "",
        description: "Accounts over an account-level threshold now: more than 20 failed logins, or failures from 10 or more addresses, in 10 minutes.",
        attributes: &[],
    },
    MetricDef {
        name: "auth.alerts.firing",
        measure: Measure::AlertsFiring,
        kind: InstrumentKind::Gauge,
        unit: "",
        description: "Alerts of the in-process engine firing now, per rule (0 or the number of label sets, e.g. attacking IPs).",
        attributes: &[attr::ALERT_NAME, attr::ALERT_SEVERITY],
    },
    MetricDef {
        name: "auth.fleet.connected",
        measure: Measure::FleetConnected,
        kind: InstrumentKind::Gauge,
        unit: "",
        description: "Fleet mode (Fleet::redis, AUTHWATCH_REDIS_URL): 1 when the last flush reached Redis and the alert rules read the fleet's counts, 0 while they read this instance's own. Absent without fleet mode.",
        attributes: &[],
    },
    MetricDef {
        name: "auth.fleet.errors.count",
        measure: Measure::FleetErrors,
        kind: InstrumentKind::Counter,
        unit: "{error}",
        description: "Fleet mode's failed connections to Redis and failed flushes (down, slow, or answering garbage). Absent without fleet mode.",
        attributes: &[],
    },
    MetricDef {
        name: "auth.blocked.count",
        measure: Measure::Blocked,
        kind: InstrumentKind::Counter,
        unit: "{request}",
        description: "Requests refused (429, never reaching the handler) because their address is blocked (BlockPolicy, block_ip), per operation; `none` for other routes with BlockPolicy::all_routes.",
        attributes: &[attr::OPERATION],
    },
    MetricDef {
        name: "auth.blocks.active",
        measure: Measure::BlocksActive,
        kind: InstrumentKind::Gauge,
        unit: "",
        description: "Addresses blocked now (by the attack alerts or by hand; in a dry run, those that would be).",
        attributes: &[],
    },
    MetricDef {
        name: "auth.config.reload.errors.count",
        measure: Measure::ConfigReloadErrors,
        kind: InstrumentKind::Counter,
        unit: "{error}",
        description: "Reloads of the configuration file (AuthWatch::reload_config, SIGHUP) refused because the file could not be read or was wrong; the running configuration stayed.",
        attributes: &[],
    },
    MetricDef {
        name: "auth.uptime.seconds",
        measure: Measure::Uptime,
        kind: InstrumentKind::Gauge,
        unit: "",
        description: "Seconds since the monitor started.",
        attributes: &[],
    },
];

/// Every instrument authwatch exports.
pub static CATALOG: [MetricDef; 48] = {
    let mut all = [OTHERS[0]; 48];
    let mut i = 0;
    while i < OP_COUNTERS.len() {
        all[i] = OP_COUNTERS[i];
        i += 1;
    }
    let mut j = 0;
    while j < OTHERS.len() {
        all[i + j] = OTHERS[j];
        j += 1;
    }
    all
};

/// The catalog entry for a measure.
///
/// # Panics
///
/// Never for the measures authwatch defines: each has exactly one entry (a unit test checks).
#[must_use]
pub fn def(measure: Measure) -> &'static MetricDef {
    CATALOG
        .iter()
        .find(|d| d.measure == measure)
        .expect("every measure has a catalog entry")
}

/// The Markdown table of the catalog, as the guide's metric reference (`docs/guide/metrics.md`)
/// shows it.
#[must_use]
pub fn markdown_table() -> String {
    let mut s = String::from(
        "| OpenTelemetry instrument | kind | Prometheus name | attributes | description |\n\
         |---|---|---|---|---|\n",
    );
    for d in &CATALOG {
        let prom = match d.kind {
            InstrumentKind::Histogram => {
                let p = d.prometheus_name();
                format!("`{p}_bucket`, `{p}_sum`, `{p}_count`")
            }
            _ => format!("`{}`", d.prometheus_name()),
        };
        let attrs = if d.attributes.is_empty() {
            "—".to_owned()
        } else {
            d.attributes
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        s += &format!(
            "| `{}` | {} | {} | {} | {} |\n",
            d.name,
            d.kind.prometheus_type(),
            prom,
            attrs,
            d.description
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_measure_has_one_entry_and_names_are_unique() {
        let mut names = HashSet::new();
        let mut measures = HashSet::new();
        for d in &CATALOG {
            assert!(names.insert(d.name), "duplicate name {}", d.name);
            assert!(
                measures.insert(d.measure),
                "duplicate measure {:?}",
                d.measure
            );
            if d.name.starts_with("process.") {
                // OpenTelemetry's semantic conventions, units and all.
                continue;
            }
            assert!(d.name.starts_with("auth."), "{}", d.name);
            match d.kind {
                InstrumentKind::Counter => assert!(d.name.ends_with(".count"), "{}", d.name),
                InstrumentKind::Histogram => assert!(d.name.ends_with(".ms"), "{}", d.name),
                InstrumentKind::Gauge => {}
            }
            // No unit word would be appended by a Prometheus translation.
            assert!(d.unit.is_empty() || d.unit.starts_with('{'), "{}", d.name);
        }
        for op in AuthOp::ALL {
            assert_eq!(def(Measure::Success(op)).measure, Measure::Success(op));
            assert_eq!(def(Measure::Failure(op)).measure, Measure::Failure(op));
        }
        // The spec's names, exactly.
        for n in [
            "auth.login.success.count",
            "auth.login.failure.count",
            "auth.registration.success.count",
            "auth.registration.failure.count",
            "auth.token.validation.success.count",
            "auth.token.validation.failure.count",
            "auth.rate.limit.exceeded.count",
            "auth.invalid.token.attempts.count",
            "auth.response.time.ms",
            "auth.token.validation.time.ms",
            "auth.response.time.p95.ms",
            "auth.token.validation.time.p95.ms",
        ] {
            assert!(names.contains(n), "{n} missing");
        }
    }
}
