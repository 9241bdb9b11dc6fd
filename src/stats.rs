//! The in-process stats: exact counters and HDR windows per operation, read from the
//! OpenTelemetry sink's per-thread cells (each request is recorded once, there).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use authwatch_hdr::{Snapshot as Window, WindowConfig, WindowedHistogram};
use authwatch_layer::{AuthOp, EventSource};
use authwatch_otel::{LatencyWindows, OpCounts, OtelSink};

const OPS: usize = AuthOp::COUNT;

/// The HDR windows: response time per operation, and token validation time measured by
/// `TokenGuard`s. Filled by the OpenTelemetry sink's cells, in batches ([`LatencyWindows`]).
struct Windows {
    routes: [WindowedHistogram; OPS],
    guard: WindowedHistogram,
}

impl LatencyWindows for Windows {
    fn record_batch(
        &self,
        op: AuthOp,
        source: EventSource,
        values: &mut dyn Iterator<Item = (Duration, Instant)>,
    ) {
        // Cancelled requests keep their latency: a login that hangs until the client gives up
        // is exactly what p95 must show.
        match source {
            EventSource::TokenGuard => self.guard.record_batch(values),
            _ => self.routes[op.index()].record_batch(values),
        }
    }
}

/// Counts and windows for every operation, read from the one record each request makes: the
/// [`OtelSink`]'s per-thread cells count the events (the counters here are sums over them),
/// and hand their latencies to the windows in batches. A read flushes the batches first, so it
/// sees every event recorded before it.
pub(crate) struct Stats {
    sink: Arc<OtelSink>,
    windows: Arc<Windows>,
    /// Lockouts the application reported (not requests the layer saw).
    app_lockouts: [AtomicU64; OPS],
    window: WindowConfig,
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stats")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Stats {
    /// The statistics of the events `sink` records (which must be on the request path: it is
    /// the one record of each request).
    pub(crate) fn new(window: WindowConfig, sink: Arc<OtelSink>) -> Self {
        let shards = authwatch_hdr::default_shards();
        let base = authwatch_layer::now();
        let windows = Arc::new(Windows {
            routes: std::array::from_fn(|_| WindowedHistogram::with_shards(window, shards, base)),
            guard: WindowedHistogram::with_shards(window, shards, base),
        });
        if !sink.feed_windows(windows.clone()) {
            tracing::error!("authwatch: the OpenTelemetry sink already feeds other windows");
        }
        Self {
            sink,
            windows,
            app_lockouts: std::array::from_fn(|_| AtomicU64::new(0)),
            window,
        }
    }

    /// The sink that records every event.
    #[cfg(test)]
    pub(crate) fn sink(&self) -> &Arc<OtelSink> {
        &self.sink
    }

    /// The window's length.
    pub(crate) fn window(&self) -> Duration {
        self.window.window()
    }

    /// One lockout the application reported (not a request the layer saw).
    pub(crate) fn add_lockout(&self, op: AuthOp) {
        self.app_lockouts[op.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts per operation, the application's lockouts included.
    fn counts(&self) -> [OpCounts; OPS] {
        let mut c = self.sink.op_counts();
        for (c, l) in c.iter_mut().zip(&self.app_lockouts) {
            c.locked_out += l.load(Ordering::Relaxed);
        }
        c
    }

    /// The counts the alert engine reads (its [`CountSource`](authwatch_alerts::CountSource)),
    /// so that it counts nothing on the request path itself.
    pub(crate) fn request_counts(&self) -> [authwatch_alerts::RequestCounts; OPS] {
        let counts = self.counts();
        std::array::from_fn(|i| {
            let o = counts[i];
            let mut c = authwatch_alerts::RequestCounts::default();
            c.success = o.success;
            c.failure = o.failure;
            c.rate_limited = o.rate_limited;
            c.invalid_token = o.invalid_token;
            c.locked_out = o.locked_out;
            c.cancelled = o.cancelled;
            c.timed = c.success + c.failure + c.rate_limited;
            c.latency_us = o.latency_us;
            c.errors = o.errors;
            c
        })
    }

    /// p50/p95/p99 per operation and of token validation, for the quantile gauges.
    pub(crate) fn quantiles(&self, now: Instant) -> authwatch_otel::WindowQuantiles {
        let s = self.snapshot(now);
        let mut q = authwatch_otel::WindowQuantiles::empty();
        for (i, op) in s.ops.iter().enumerate() {
            q.ops[i] = [op.p50, op.p95, op.p99];
        }
        let t = s.token_validation_time;
        q.token_validation = [t.p50, t.p95, t.p99];
        q
    }

    /// The number of requests of `op` in the window and its `q` quantile (for token validation,
    /// routes and guards together), for the alert engine's percentile rules.
    pub(crate) fn op_quantile(&self, op: AuthOp, q: f64, now: Instant) -> (u64, Option<Duration>) {
        let w = self.op_window(op, now);
        (w.count(), w.quantile(q))
    }

    /// The window of `op` ending at `now` (for token validation, routes and guards together),
    /// as the percentile rules read it.
    pub(crate) fn op_window(&self, op: AuthOp, now: Instant) -> Window {
        self.sink.flush();
        let mut w = self.windows.routes[op.index()].snapshot_at(now);
        if op == AuthOp::TokenValidation {
            w.merge(&self.windows.guard.snapshot_at(now));
        }
        w
    }

    /// [`op_window`](Self::op_window) of every operation, for a fleet's flush.
    pub(crate) fn op_windows(&self, now: Instant) -> [Window; OPS] {
        std::array::from_fn(|i| self.op_window(AuthOp::ALL[i], now))
    }

    pub(crate) fn snapshot(&self, now: Instant) -> Snapshot {
        self.sink.flush();
        let counts = self.counts();
        let guard = self.windows.guard.snapshot_at(now);
        let mut response_time = Window::empty();
        let ops: [OpStats; OPS] = std::array::from_fn(|i| {
            let op = AuthOp::ALL[i];
            let mut w = self.windows.routes[i].snapshot_at(now);
            response_time.merge(&w);
            if op == AuthOp::TokenValidation {
                w.merge(&guard);
            }
            let c = counts[i];
            OpStats::of(
                op,
                [
                    c.success,
                    c.failure,
                    c.rate_limited,
                    c.invalid_token,
                    c.errors,
                    c.cancelled,
                    c.locked_out,
                ],
                &w,
            )
        });
        Snapshot {
            ops,
            response_time: Latency::from(&response_time),
            token_validation_time: ops[AuthOp::TokenValidation.index()].latency,
            window: self.window.window(),
            alerts: Vec::new(),
            scope: Scope::Local,
        }
    }
}

/// Whose figures a [`Snapshot`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scope {
    /// This instance's own requests ([`AuthWatch::snapshot`](crate::AuthWatch::snapshot)).
    Local,
    /// The fleet's: every instance's requests that this instance knows of
    /// ([`AuthWatch::fleet_snapshot`](crate::AuthWatch::fleet_snapshot)).
    Fleet,
}

impl Scope {
    /// `"local"` or `"fleet"`, as `/auth/stats` says it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Fleet => "fleet",
        }
    }
}

impl Snapshot {
    /// A fleet's snapshot from its `counts` and latency `windows` per operation (token
    /// validation's with the guards'). Response time is every operation's window together.
    pub(crate) fn fleet(
        counts: &[authwatch_alerts::RequestCounts; OPS],
        windows: &[Window; OPS],
        window: Duration,
    ) -> Self {
        let mut response_time = Window::empty();
        let ops: [OpStats; OPS] = std::array::from_fn(|i| {
            let (c, w) = (&counts[i], &windows[i]);
            response_time.merge(w);
            OpStats::of(
                AuthOp::ALL[i],
                [
                    c.success,
                    c.failure,
                    c.rate_limited,
                    c.invalid_token,
                    c.errors,
                    c.cancelled,
                    c.locked_out,
                ],
                w,
            )
        });
        Self {
            ops,
            response_time: Latency::from(&response_time),
            token_validation_time: ops[AuthOp::TokenValidation.index()].latency,
            window,
            alerts: Vec::new(),
            scope: Scope::Fleet,
        }
    }
}

/// Percentiles of one latency window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Latency {
    /// How many requests the window holds.
    pub count: u64,
    /// Median.
    pub p50: Option<Duration>,
    /// 90th percentile.
    pub p90: Option<Duration>,
    /// 95th percentile.
    pub p95: Option<Duration>,
    /// 99th percentile.
    pub p99: Option<Duration>,
    /// Mean.
    pub mean: Option<Duration>,
    /// Largest.
    pub max: Option<Duration>,
}

impl From<&Window> for Latency {
    fn from(w: &Window) -> Self {
        Self {
            count: w.count(),
            p50: w.p50(),
            p90: w.p90(),
            p95: w.p95(),
            p99: w.p99(),
            mean: w.mean(),
            max: w.max(),
        }
    }
}

/// The stats of one operation: counters since start, percentiles over the window.
///
/// `failure` includes `errors` (5xx) and `invalid_token`; `rate_limited` and `cancelled` are
/// counted apart. Every request is in exactly one of `success`, `failure`, `rate_limited`,
/// `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpStats {
    /// The operation.
    pub op: AuthOp,
    /// Successful requests since start.
    pub success: u64,
    /// Failed requests since start (client failures and server errors).
    pub failure: u64,
    /// Rate-limited requests (429, gRPC 8) since start.
    pub rate_limited: u64,
    /// Invalid-token attempts since start (a subset of `failure`).
    pub invalid_token: u64,
    /// Server errors since start (a subset of `failure`).
    pub errors: u64,
    /// Requests whose caller went away first, since start.
    pub cancelled: u64,
    /// Account lockouts since start: 423 responses, `Outcome::Failure(LockedOut)` set by a
    /// handler or middleware, and `LoginAuditLogger::log_lockout` calls (a subset of
    /// `failure` for the first two).
    pub locked_out: u64,
    /// Median latency over the window.
    pub p50: Option<Duration>,
    /// 95th percentile latency over the window.
    pub p95: Option<Duration>,
    /// 99th percentile latency over the window.
    pub p99: Option<Duration>,
    /// Everything about the window's latency.
    pub latency: Latency,
}

impl OpStats {
    /// The row of `op` from its counters (`success`, `failure`, `rate_limited`,
    /// `invalid_token`, `errors`, `cancelled`, `locked_out`) and its latency window: a local
    /// snapshot's and a fleet's alike.
    fn of(op: AuthOp, counts: [u64; 7], w: &Window) -> Self {
        let [success, failure, rate_limited, invalid_token, errors, cancelled, locked_out] = counts;
        Self {
            op,
            success,
            failure,
            rate_limited,
            invalid_token,
            errors,
            cancelled,
            locked_out,
            p50: w.p50(),
            p95: w.p95(),
            p99: w.p99(),
            latency: Latency::from(w),
        }
    }

    /// Every request since start.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.success + self.failure + self.rate_limited + self.cancelled
    }

    /// `failure / (success + failure)` since start; `None` before the first decided request.
    #[must_use]
    pub fn failure_ratio(&self) -> Option<f64> {
        let decided = self.success + self.failure;
        (decided > 0).then(|| self.failure as f64 / decided as f64)
    }
}

/// The in-process view of every auth operation at one moment. No exporter needed.
#[derive(Debug, Clone)]
pub struct Snapshot {
    ops: [OpStats; OPS],
    response_time: Latency,
    token_validation_time: Latency,
    window: Duration,
    pub(crate) alerts: Vec<authwatch_alerts::Alert>,
    scope: Scope,
}

impl Snapshot {
    /// The stats of one operation.
    ///
    /// For [`AuthOp::TokenValidation`] the latency is the token validation time: the
    /// response time of token-validation routes together with the time `TokenGuard`s measured.
    ///
    /// The row is a copy, so it outlives the snapshot:
    /// `let login = watch.snapshot().op(AuthOp::Login);` keeps it in a variable.
    #[must_use]
    pub fn op(&self, op: AuthOp) -> OpStats {
        self.ops[op.index()]
    }

    /// Every operation, in [`AuthOp::ALL`] order.
    #[must_use]
    pub fn ops(&self) -> &[OpStats] {
        &self.ops
    }

    /// Response time of all auth routes together (the spec's `auth.response.time.ms`), over the
    /// window.
    #[must_use]
    pub fn response_time(&self) -> &Latency {
        &self.response_time
    }

    /// Token validation time (the spec's `auth.token.validation.time.ms`), over the window.
    #[must_use]
    pub fn token_validation_time(&self) -> &Latency {
        &self.token_validation_time
    }

    /// The length of the percentile window.
    #[must_use]
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether the figures are this instance's ([`Scope::Local`]) or its fleet's
    /// ([`Scope::Fleet`]).
    #[must_use]
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The firing alerts, as of the alert engine's last evaluation (every tick, 5 s by
    /// default): each has a `name` (`alert.name == "AuthBruteForceSuspected"`) and `labels`
    /// (`client_ip` for brute force, `auth_operation` for latency).
    #[must_use]
    pub fn alerts(&self) -> &[authwatch_alerts::Alert] {
        &self.alerts
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| {
            let ms = d.as_secs_f64() * 1e3;
            if ms < 1.0 {
                format!("{ms:.3}")
            } else {
                format!("{ms:.1}")
            }
        },
    )
}

impl fmt::Display for Snapshot {
    /// A fixed-width table, one row per operation.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<17} {:>8} {:>8} {:>6} {:>7} {:>6} {:>6} {:>9} {:>9} {:>9}",
            "operation",
            "success",
            "failure",
            "errors",
            "limited",
            "badtok",
            "cancel",
            "p50 ms",
            "p95 ms",
            "p99 ms"
        )?;
        for s in &self.ops {
            writeln!(
                f,
                "{:<17} {:>8} {:>8} {:>6} {:>7} {:>6} {:>6} {:>9} {:>9} {:>9}",
                s.op.as_str(),
                s.success,
                s.failure,
                s.errors,
                s.rate_limited,
                s.invalid_token,
                s.cancelled,
                ms(s.p50),
                ms(s.p95),
                ms(s.p99)
            )?;
        }
        let r = &self.response_time;
        write!(
            f,
            "all auth routes: {} requests in the last {:?}, p50 {} ms, p95 {} ms, p99 {} ms",
            r.count,
            self.window,
            ms(r.p50),
            ms(r.p95),
            ms(r.p99)
        )?;
        for a in &self.alerts {
            write!(f, "\nALERT {a}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use authwatch_layer::{AuthEvent, EventSink, FailureReason, Outcome};

    /// Statistics over a sink with no meter (no OTLP, no `/metrics`).
    fn stats() -> Stats {
        Stats::new(WindowConfig::default(), Arc::new(OtelSink::new([])))
    }

    #[test]
    fn each_outcome_lands_in_its_counters() {
        let s = stats();
        let now = Instant::now();
        let ms = Duration::from_millis;
        for (outcome, n) in [
            (Outcome::Success, 5),
            (Outcome::Failure(FailureReason::InvalidCredentials), 3),
            (Outcome::Failure(FailureReason::InvalidToken), 2),
            (Outcome::Error, 1),
            (Outcome::RateLimited, 4),
            (Outcome::Cancelled, 6),
        ] {
            for _ in 0..n {
                s.sink()
                    .record(&AuthEvent::new(AuthOp::Login, outcome, ms(10), now));
            }
        }
        let snap = s.snapshot(now);
        let l = snap.op(AuthOp::Login);
        assert_eq!(
            (
                l.success,
                l.failure,
                l.invalid_token,
                l.errors,
                l.rate_limited,
                l.cancelled
            ),
            (5, 6, 2, 1, 4, 6)
        );
        assert_eq!(l.total(), 21);
        assert_eq!(l.failure_ratio(), Some(6.0 / 11.0));
        assert_eq!(l.latency.count, 21);
        assert_eq!(snap.op(AuthOp::Logout).total(), 0);
        assert_eq!(snap.op(AuthOp::Logout).p95, None);
        assert_eq!(snap.response_time().count, 21);
        // What the alert engine reads: the same counts, the timed requests (all but the
        // cancelled) and their latency sum; a reported lockout counts too.
        s.add_lockout(AuthOp::Login);
        let c = s.request_counts()[AuthOp::Login.index()];
        assert_eq!(
            (
                c.success,
                c.failure,
                c.invalid_token,
                c.rate_limited,
                c.cancelled,
                c.locked_out
            ),
            (5, 6, 2, 4, 6, 1)
        );
        assert_eq!((c.timed, c.latency_us), (15, 150_000));
        assert_eq!(s.request_counts()[AuthOp::Logout.index()].timed, 0);
    }

    #[test]
    fn guard_time_is_validation_time_not_response_time() {
        let s = stats();
        let now = Instant::now();
        s.sink().record(
            &AuthEvent::new(
                AuthOp::TokenValidation,
                Outcome::Success,
                Duration::from_millis(2),
                now,
            )
            .with_source(EventSource::TokenGuard),
        );
        s.sink().record(&AuthEvent::new(
            AuthOp::Login,
            Outcome::Success,
            Duration::from_millis(80),
            now,
        ));
        let snap = s.snapshot(now);
        assert_eq!(snap.response_time().count, 1);
        assert_eq!(snap.token_validation_time().count, 1);
        assert_eq!(snap.op(AuthOp::TokenValidation).success, 1);
        let p95 = snap.op(AuthOp::TokenValidation).p95.unwrap();
        assert!(p95 >= Duration::from_millis(2) && p95 < Duration::from_micros(2_010));
        assert!(snap.to_string().contains("token_validation"));
    }
}
