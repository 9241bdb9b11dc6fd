//! The rule engine: counts fed by the layer's events, rules evaluated off the request path on
//! a tick, and the alert lifecycle (pending → firing → resolved).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use authwatch_layer::{AuthEvent, AuthOp, EventSink, FailureReason, Outcome};

use crate::clock::{Clock, SystemClock};
use crate::detector::{BruteForceConfig, Detector, RouteFailures, Suspect};
use crate::notify::{NotifierStats, Notifiers};
use crate::rules::{default_rules, Rule, RuleKind, Severity, Signal};

const OPS: usize = AuthOp::COUNT;
const S: usize = 0;
const F: usize = 1;
const RL: usize = 2;
const IT: usize = 3;
const LO: usize = 4;
const CANCELLED: usize = 5;
const LAT_N: usize = 6;
const LAT_US: usize = 7;
const KINDS: usize = 8;

type Counts = [[u64; KINDS]; OPS];

/// Where the percentile rules read latency quantiles: for an operation and a quantile, the
/// number of requests in the window and the quantile. The facade passes its HDR windows.
pub type QuantileSource = Arc<dyn Fn(AuthOp, f64) -> (u64, Option<Duration>) + Send + Sync>;

/// Settings of the [`AlertEngine`].
#[derive(Clone)]
pub struct AlertConfig {
    pub(crate) rules: Vec<Rule>,
    pub(crate) tick: Duration,
    pub(crate) brute_force: BruteForceConfig,
    pub(crate) alertmanager: Option<String>,
    pub(crate) webhook: Option<String>,
    pub(crate) resend: Duration,
    pub(crate) runbook_base: String,
    pub(crate) service: Option<String>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) quantiles: Option<QuantileSource>,
    pub(crate) on_tick: Option<Arc<dyn Fn() + Send + Sync>>,
    pub(crate) queue: usize,
    pub(crate) http_timeout: Duration,
}

impl fmt::Debug for AlertConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertConfig")
            .field("rules", &self.rules.len())
            .field("tick", &self.tick)
            .field("brute_force", &self.brute_force)
            .field("alertmanager", &self.alertmanager)
            .field("webhook", &self.webhook.as_ref().map(|_| "<set>"))
            .field("resend", &self.resend)
            .field("runbook_base", &self.runbook_base)
            .finish_non_exhaustive()
    }
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            rules: default_rules(),
            tick: Duration::from_secs(5),
            brute_force: BruteForceConfig::default(),
            alertmanager: None,
            webhook: None,
            resend: Duration::from_secs(60),
            runbook_base: DEFAULT_RUNBOOKS.to_owned(),
            service: None,
            clock: Arc::new(SystemClock::new()),
            quantiles: None,
            on_tick: None,
            queue: 1024,
            http_timeout: Duration::from_secs(5),
        }
    }
}

/// Where the `runbook_url` annotations point by default: the runbooks shipped with authwatch,
/// relative to the repository. Set your own with [`AlertConfig::runbook_base`].
pub const DEFAULT_RUNBOOKS: &str = "docs/runbooks.md";

impl AlertConfig {
    /// The default rules ([`default_rules`]), evaluated every 5 seconds, alerts to the log.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the rule set.
    #[must_use]
    pub fn rules(mut self, rules: Vec<Rule>) -> Self {
        self.rules = rules;
        self
    }

    /// Adds a rule, or replaces the one with the same name.
    #[must_use]
    pub fn rule(mut self, rule: Rule) -> Self {
        match self.rules.iter_mut().find(|r| r.name == rule.name) {
            Some(r) => *r = rule,
            None => self.rules.push(rule),
        }
        self
    }

    /// Changes the rule `name` (its threshold, window, severity, …); unknown names are ignored.
    ///
    /// ```
    /// use authwatch_alerts::{AlertConfig, RuleKind};
    ///
    /// let config = AlertConfig::new().configure("AuthLoginFailureRateHigh", |r| {
    ///     if let RuleKind::FailureRatio { above, min_requests, .. } = &mut r.kind {
    ///         *above = 0.3;
    ///         *min_requests = 100;
    ///     }
    /// });
    /// ```
    #[must_use]
    pub fn configure(mut self, name: &str, f: impl FnOnce(&mut Rule)) -> Self {
        if let Some(r) = self.rules.iter_mut().find(|r| r.name == name) {
            f(r);
        }
        self
    }

    /// Turns the rule `name` off.
    #[must_use]
    pub fn disable(self, name: &str) -> Self {
        self.configure(name, |r| r.enabled = false)
    }

    /// How often rules are evaluated (default 5 s). [`Duration::ZERO`] evaluates only when
    /// [`AlertEngine::evaluate`] is called.
    #[must_use]
    pub fn tick(mut self, every: Duration) -> Self {
        self.tick = every;
        self
    }

    /// Sizing of the brute-force detector.
    #[must_use]
    pub fn brute_force(mut self, cfg: BruteForceConfig) -> Self {
        self.brute_force = cfg;
        self
    }

    /// Sends alerts to an Alertmanager (`http://alertmanager:9093`) through its v2 API, re-sent
    /// while firing and with `endsAt` on resolve.
    #[must_use]
    pub fn alertmanager(mut self, url: impl Into<String>) -> Self {
        self.alertmanager = Some(url.into());
        self
    }

    /// Posts every firing and resolved alert to a webhook as Slack-compatible JSON (`text` plus
    /// one attachment).
    #[must_use]
    pub fn webhook(mut self, url: impl Into<String>) -> Self {
        self.webhook = Some(url.into());
        self
    }

    /// How often firing alerts are re-sent to Alertmanager (default 1 minute). Each carries an
    /// `endsAt` four intervals ahead, so Alertmanager resolves them if authwatch dies.
    #[must_use]
    pub fn resend_interval(mut self, every: Duration) -> Self {
        self.resend = every.max(Duration::from_millis(10));
        self
    }

    /// Where the `runbook_url` annotations point: `{base}#{alert name in lower case}`.
    #[must_use]
    pub fn runbook_base(mut self, base: impl Into<String>) -> Self {
        self.runbook_base = base.into();
        self
    }

    /// The `service` label of every alert.
    #[must_use]
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self
    }

    /// The engine's clock (tests pass a [`ManualClock`](crate::ManualClock)).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Where the percentile rules read quantiles. Without one they are not evaluated.
    #[must_use]
    pub fn quantiles(mut self, source: QuantileSource) -> Self {
        self.quantiles = Some(source);
        self
    }

    /// Called at the start of each evaluation. The facade starts a run of its health checks
    /// here (when their cache is stale) unless a hook is already set.
    #[must_use]
    pub fn on_tick(mut self, f: Arc<dyn Fn() + Send + Sync>) -> Self {
        self.on_tick = Some(f);
        self
    }

    /// Whether an [`on_tick`](Self::on_tick) hook is set.
    #[must_use]
    pub fn has_on_tick(&self) -> bool {
        self.on_tick.is_some()
    }

    /// How many notifications each notifier holds while its receiver is down (default 1,024);
    /// beyond it the oldest are dropped and counted.
    #[must_use]
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n.max(1);
        self
    }

    /// The timeout of one HTTP delivery (default 5 s).
    #[must_use]
    pub fn http_timeout(mut self, t: Duration) -> Self {
        self.http_timeout = t;
        self
    }

    /// Multiplies every window, baseline, `for` duration, the brute-force window and the tick by
    /// `factor` (thresholds and minimum volumes stay): `time_scale(1.0 / 20.0)` turns the spec's
    /// 5-minute windows into 15 seconds, for demos and load tests.
    #[must_use]
    pub fn time_scale(mut self, factor: f64) -> Self {
        let f = if factor.is_finite() && factor > 0.0 {
            factor
        } else {
            1.0
        };
        let mul = |d: Duration| {
            Duration::try_from_secs_f64(d.as_secs_f64() * f)
                .unwrap_or(Duration::MAX)
                .max(Duration::from_millis(1))
        };
        let scale = |d: &mut Duration| *d = mul(*d);
        for r in &mut self.rules {
            if !r.for_.is_zero() {
                scale(&mut r.for_);
            }
            match &mut r.kind {
                RuleKind::FailureRatio { window, .. }
                | RuleKind::Count { window, .. }
                | RuleKind::Mean { window, .. } => scale(window),
                RuleKind::Spike {
                    window, baseline, ..
                } => {
                    scale(window);
                    scale(baseline);
                }
                _ => {}
            }
        }
        let bf = mul(self.brute_force.window_len());
        self.brute_force = self.brute_force.window(bf);
        if !self.tick.is_zero() {
            scale(&mut self.tick);
        }
        self.resend = mul(self.resend).max(Duration::from_millis(10));
        self
    }

    /// The `service` label, when set.
    #[must_use]
    pub fn service_name(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// The rules.
    #[must_use]
    pub fn rule_set(&self) -> &[Rule] {
        &self.rules
    }

    /// The Alertmanager alerts go to, when set ([`alertmanager`](Self::alertmanager)).
    #[must_use]
    pub fn alertmanager_url(&self) -> Option<&str> {
        self.alertmanager.as_deref()
    }

    /// The webhook alerts are posted to, when set ([`webhook`](Self::webhook)).
    #[must_use]
    pub fn webhook_url(&self) -> Option<&str> {
        self.webhook.as_deref()
    }
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlertState {
    /// The condition holds, not yet for the rule's `for` duration.
    Pending,
    /// Notified.
    Firing,
    /// It fired and its condition no longer holds.
    Resolved,
}

/// One alert: a rule and a label set (for brute force, one per address).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Alert {
    /// The rule's name, e.g. `AuthBruteForceSuspected`.
    pub name: String,
    /// Its severity.
    pub severity: Severity,
    /// Where it is.
    pub state: AlertState,
    /// `alertname`, `severity`, `notify`, `service` (when set), and the rule's own:
    /// `client_ip`, `auth_operation`, `http_route`.
    pub labels: BTreeMap<String, String>,
    /// `summary`, `description` (with the measured value) and `runbook_url`.
    pub annotations: BTreeMap<String, String>,
    /// The measured value at the last evaluation.
    pub value: f64,
    /// When the condition started to hold.
    pub starts_at: SystemTime,
    /// When it resolved.
    pub ends_at: Option<SystemTime>,
}

impl Alert {
    /// A label's value.
    #[must_use]
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }

    /// The labels that tell this alert from others of its rule (`client_ip=…`,
    /// `auth_operation=…`), as `k=v` separated by spaces; the routing labels (`alertname`,
    /// `severity`, `notify`, `alertgroup`, `service`) left out.
    #[must_use]
    pub fn own_labels(&self) -> String {
        self.labels
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "alertname" | "severity" | "notify" | "alertgroup" | "service"
                )
            })
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.name, self.severity)?;
        let own = self.own_labels();
        if !own.is_empty() {
            write!(f, " {own}")?;
        }
        if let Some(d) = self.annotations.get("description") {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

/// A change of an alert's state, as notifiers receive it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AlertEvent {
    /// The alert after the change (`Firing` or `Resolved`).
    pub alert: Alert,
    /// When, on the engine's clock.
    pub at: Duration,
}

#[repr(align(128))]
struct Shard {
    cells: [[AtomicU64; KINDS]; OPS],
}

impl Shard {
    fn new() -> Self {
        Self {
            cells: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

#[derive(Debug)]
struct Instance {
    rule: usize,
    state: AlertState,
    active_since: Duration,
    alert: Alert,
}

struct State {
    started: Duration,
    last: Counts,
    history: VecDeque<(Duration, Counts)>,
    instances: HashMap<(usize, Vec<(String, String)>), Instance>,
    events: VecDeque<AlertEvent>,
}

struct Inner {
    cfg: AlertConfig,
    shards: Box<[Shard]>,
    detector: Mutex<Detector>,
    detector_threshold: u64,
    state: Mutex<State>,
    firing: RwLock<Arc<[Alert]>>,
    health_failures: AtomicU32,
    notifiers: Notifiers,
    wall0: SystemTime,
    t0: Duration,
    stop: Arc<(Mutex<bool>, Condvar)>,
    /// One evaluation at a time (the engine's thread and callers of `evaluate`).
    evaluating: Mutex<()>,
}

/// The alert engine. It is an [`EventSink`]: give it to the layer's sinks (the facade does), and
/// it counts each event in per-thread atomics; rules are evaluated on its own thread every tick.
///
/// Clones share the engine.
#[derive(Clone)]
pub struct AlertEngine {
    inner: Arc<Inner>,
}

impl fmt::Debug for AlertEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertEngine")
            .field("config", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

const HISTORY_EVENTS: usize = 512;
/// Most entries of the per-evaluation history (3 MiB); older ones are merged.
const HISTORY_ENTRIES: usize = 8192;

/// How far back the rules look (the longest window, a spike's baseline included).
fn max_span(rules: &[Rule]) -> Duration {
    rules
        .iter()
        .map(|r| match r.kind {
            RuleKind::FailureRatio { window, .. }
            | RuleKind::Count { window, .. }
            | RuleKind::Mean { window, .. } => window,
            RuleKind::Spike {
                window, baseline, ..
            } => window + baseline,
            _ => Duration::ZERO,
        })
        .max()
        .unwrap_or(Duration::ZERO)
}

/// The history, sized for one entry per tick over the longest span, written through once so
/// that its memory is resident from the start: it fills for the first hour (the spikes'
/// baselines), and memory growing that long would look like a leak.
fn history_for(cfg: &AlertConfig) -> VecDeque<(Duration, Counts)> {
    let ticks = if cfg.tick.is_zero() {
        0
    } else {
        (max_span(&cfg.rules).as_nanos() / cfg.tick.as_nanos()) as usize
    };
    let n = ticks.saturating_add(16).min(HISTORY_ENTRIES);
    let mut h = VecDeque::with_capacity(n);
    h.extend(std::iter::repeat_n((Duration::ZERO, [[0; KINDS]; OPS]), n));
    std::hint::black_box(&mut h).clear();
    h
}

impl AlertEngine {
    /// Starts an engine: the evaluation thread (unless the tick is zero) and one delivery
    /// thread per configured notifier.
    #[must_use]
    pub fn new(cfg: AlertConfig) -> Self {
        let now = cfg.clock.now();
        let threshold = cfg
            .rules
            .iter()
            .filter(|r| r.enabled)
            .filter_map(|r| match r.kind {
                RuleKind::PerIpFailures { above } => Some(above),
                _ => None,
            })
            .min()
            .unwrap_or(50);
        let shards = (0..authwatch_hdr::default_shards()).map(|_| Shard::new());
        let inner = Arc::new(Inner {
            shards: shards.collect(),
            detector: Mutex::new(Detector::new(cfg.brute_force, threshold, now)),
            detector_threshold: threshold,
            state: Mutex::new(State {
                started: now,
                last: [[0; KINDS]; OPS],
                history: history_for(&cfg),
                instances: HashMap::new(),
                events: VecDeque::new(),
            }),
            firing: RwLock::new(Arc::from(Vec::new())),
            health_failures: AtomicU32::new(0),
            notifiers: Notifiers::start(&cfg),
            wall0: SystemTime::now(),
            t0: now,
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            evaluating: Mutex::new(()),
            cfg,
        });
        if !inner.cfg.tick.is_zero() {
            let weak = Arc::downgrade(&inner);
            let stop = inner.stop.clone();
            let tick = inner.cfg.tick;
            let spawned = std::thread::Builder::new()
                .name("authwatch-alerts".into())
                .spawn(move || ticker(&weak, &stop, tick));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "authwatch: could not start the alert thread; alerts are evaluated only on demand");
            }
        }
        Self { inner }
    }

    /// The firing alerts, as of the last evaluation.
    #[must_use]
    pub fn firing(&self) -> Vec<Alert> {
        self.inner
            .firing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .to_vec()
    }

    /// The pending alerts (condition holding, `for` not yet reached).
    #[must_use]
    pub fn pending(&self) -> Vec<Alert> {
        let st = self.inner.lock_state();
        let mut v: Vec<Alert> = st
            .instances
            .values()
            .filter(|i| i.state == AlertState::Pending)
            .map(|i| i.alert.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.labels.cmp(&b.labels)));
        v
    }

    /// The last 512 state changes (fired, resolved), oldest first.
    #[must_use]
    pub fn history(&self) -> Vec<AlertEvent> {
        self.inner.lock_state().events.iter().cloned().collect()
    }

    /// Evaluates every rule now, on the engine's clock, and returns the state changes. The
    /// engine's thread calls it every tick; tests with a manual clock call it themselves.
    pub fn evaluate(&self) -> Vec<AlertEvent> {
        self.inner.evaluate()
    }

    /// Reports one run of the health checks: `false` when the service is down (the run that
    /// makes `/auth/health` answer 503). `AuthServiceDown` counts consecutive failed runs.
    pub fn observe_health(&self, healthy: bool) {
        if healthy {
            self.inner.health_failures.store(0, Ordering::Relaxed);
        } else {
            self.inner.health_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts an account lockout the application reported (not a request the layer saw), for
    /// `AuthLockoutSpike`.
    pub fn record_lockout(&self) {
        let inner = &*self.inner;
        let shard = &inner.shards[authwatch_hdr::thread_shard(inner.shards.len())];
        shard.cells[AuthOp::Login.index()][LO].fetch_add(1, Ordering::Relaxed);
    }

    /// How a client key appears in labels: `203.0.113.7`, `2001:db8:1:2::/64`.
    #[must_use]
    pub fn client_label(&self, ip: IpAddr) -> String {
        self.inner.cfg.brute_force.client_label(ip)
    }

    /// Clients over the brute-force threshold now, most failures first (never exported as
    /// metrics). IPv6 clients are keyed by their prefix (see [`BruteForceConfig::ipv6_prefix`]).
    #[must_use]
    pub fn suspects(&self) -> Vec<Suspect> {
        self.inner.lock_detector().suspects()
    }

    /// The most failures from one address over the window (an upper bound; the
    /// `auth.attack.top_ip.failures` gauge).
    #[must_use]
    pub fn top_ip_failures(&self) -> u64 {
        self.inner.lock_detector().top_failures()
    }

    /// Per route: failures and distinct failing addresses over the window.
    #[must_use]
    pub fn route_failures(&self) -> Vec<RouteFailures> {
        self.inner.lock_detector().routes()
    }

    /// The brute-force threshold: the smallest `above` of the enabled per-IP rules.
    #[must_use]
    pub fn brute_force_threshold(&self) -> u64 {
        self.inner.detector_threshold
    }

    /// Deliveries per notifier: sent, failed attempts, dropped.
    #[must_use]
    pub fn notifier_stats(&self) -> Vec<NotifierStats> {
        self.inner.notifiers.stats()
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &AlertConfig {
        &self.inner.cfg
    }

    /// Stops the evaluation thread and gives the notifiers up to `timeout` to deliver what they
    /// hold.
    pub fn shutdown(&self, timeout: Duration) {
        {
            let (m, cv) = &*self.inner.stop;
            *m.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_all();
        }
        self.inner.notifiers.flush(timeout);
    }
}

fn ticker(weak: &Weak<Inner>, stop: &(Mutex<bool>, Condvar), tick: Duration) {
    loop {
        {
            // Wait without holding the engine, so that dropping it ends the thread.
            let (m, cv) = stop;
            let stopped = m.lock().unwrap_or_else(|e| e.into_inner());
            if *stopped {
                return;
            }
            let (stopped, _) = cv
                .wait_timeout(stopped, tick)
                .unwrap_or_else(|e| e.into_inner());
            if *stopped {
                return;
            }
        }
        let Some(inner) = weak.upgrade() else { return };
        // A panicking rule source must not end the thread.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.evaluate()));
        if r.is_err() {
            tracing::error!("authwatch: an alert evaluation panicked; the next tick retries");
        }
    }
}

fn failure_reason(o: Outcome) -> Option<FailureReason> {
    match o {
        Outcome::Failure(r) => Some(r),
        _ => None,
    }
}

impl EventSink for AlertEngine {
    fn record(&self, e: &AuthEvent<'_>) {
        let inner = &*self.inner;
        let shard = &inner.shards[authwatch_hdr::thread_shard(inner.shards.len())];
        let row = &shard.cells[e.op.index()];
        let add = |k: usize, v: u64| {
            row[k].fetch_add(v, Ordering::Relaxed);
        };
        match e.outcome {
            Outcome::Success => add(S, 1),
            Outcome::Failure(r) => {
                add(F, 1);
                if r == FailureReason::InvalidToken {
                    add(IT, 1);
                } else if r == FailureReason::LockedOut {
                    add(LO, 1);
                }
            }
            Outcome::Error => add(F, 1),
            Outcome::RateLimited => add(RL, 1),
            _ => add(CANCELLED, 1),
        }
        if !matches!(e.outcome, Outcome::Cancelled) {
            add(LAT_N, 1);
            add(
                LAT_US,
                u64::try_from(e.latency.as_micros()).unwrap_or(u64::MAX),
            );
        }
        if let (Some(_), Some(ip)) = (failure_reason(e.outcome), e.client_ip) {
            inner.lock_detector().record(ip, e.route);
        }
    }
}

fn signal(c: &Counts, s: Signal) -> u64 {
    let all = |k: usize| c.iter().map(|r| r[k]).sum::<u64>();
    match s {
        Signal::Success(op) => c[op.index()][S],
        Signal::Failure(op) => c[op.index()][F],
        Signal::Attempts(op) => c[op.index()][S] + c[op.index()][F],
        Signal::RateLimited => all(RL),
        Signal::InvalidToken => all(IT),
        Signal::Lockout => all(LO),
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

struct Condition {
    labels: Vec<(String, String)>,
    value: f64,
    description: String,
}

impl Inner {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_detector(&self) -> std::sync::MutexGuard<'_, Detector> {
        self.detector.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wall(&self, t: Duration) -> SystemTime {
        self.wall0 + t.saturating_sub(self.t0)
    }

    fn cumulative(&self) -> Counts {
        let mut c = [[0; KINDS]; OPS];
        for shard in self.shards.iter() {
            for (op, row) in shard.cells.iter().enumerate() {
                for (k, v) in row.iter().enumerate() {
                    c[op][k] += v.load(Ordering::Relaxed);
                }
            }
        }
        c
    }

    fn max_span(&self) -> Duration {
        max_span(&self.cfg.rules)
    }

    fn evaluate(&self) -> Vec<AlertEvent> {
        let _one = self.evaluating.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = &self.cfg.on_tick {
            f();
        }
        let mut now = self.cfg.clock.now();
        let (suspects, routes) = {
            let mut d = self.lock_detector();
            d.advance(now);
            (d.suspects(), d.routes())
        };
        let mut st = self.lock_state();
        // Time never goes back within the engine, whatever the clock does.
        if let Some((last, _)) = st.history.back() {
            now = now.max(*last);
        }
        let cum = self.cumulative();
        let mut delta = [[0; KINDS]; OPS];
        for op in 0..OPS {
            for k in 0..KINDS {
                delta[op][k] = cum[op][k].saturating_sub(st.last[op][k]);
            }
        }
        st.last = cum;
        match st.history.back_mut() {
            Some((t, c)) if *t >= now => add_into(c, &delta),
            _ => st.history.push_back((now, delta)),
        }
        let keep_from = now.saturating_sub(self.max_span());
        while st.history.len() > 1 && st.history.front().is_some_and(|(t, _)| *t < keep_from) {
            st.history.pop_front();
        }
        // Bound the entries (3 MiB) whatever the tick: merge the two oldest.
        while st.history.len() > HISTORY_ENTRIES {
            if let (Some((_, a)), Some((_, b))) = (st.history.pop_front(), st.history.front_mut()) {
                add_into(b, &a);
            }
        }
        let mut conditions: Vec<(usize, Condition)> = Vec::new();
        // The warning and the critical p95 rules read the same quantiles: one HDR snapshot
        // per operation and quantile per evaluation.
        let mut quantiles = Vec::new();
        for (i, rule) in self.cfg.rules.iter().enumerate() {
            if !rule.enabled {
                continue;
            }
            for c in self.conditions(&st, rule, now, &suspects, &routes, &mut quantiles) {
                conditions.push((i, c));
            }
        }
        let events = self.transition(&mut st, now, conditions);
        let mut firing: Vec<Alert> = st
            .instances
            .values()
            .filter(|i| i.state == AlertState::Firing)
            .map(|i| i.alert.clone())
            .collect();
        firing.sort_by(|a, b| {
            a.severity
                .cmp(&b.severity)
                .then(a.name.cmp(&b.name))
                .then(a.labels.cmp(&b.labels))
        });
        for e in &events {
            if st.events.len() == HISTORY_EVENTS {
                st.events.pop_front();
            }
            st.events.push_back(e.clone());
        }
        drop(st);
        *self.firing.write().unwrap_or_else(|e| e.into_inner()) = Arc::from(firing.clone());
        self.notifiers
            .deliver(&events, &firing, now, self.wall(now));
        events
    }

    /// The counts recorded in `(from_excl, to_incl]`; `None` reaches back to the start.
    fn sum(st: &State, from_excl: Option<Duration>, to_incl: Duration) -> Counts {
        let mut c = [[0; KINDS]; OPS];
        for (t, d) in st.history.iter().rev() {
            if from_excl.is_some_and(|f| *t <= f) {
                break;
            }
            if *t <= to_incl {
                add_into(&mut c, d);
            }
        }
        c
    }

    fn conditions(
        &self,
        st: &State,
        rule: &Rule,
        now: Duration,
        suspects: &[Suspect],
        routes: &[RouteFailures],
        quantiles: &mut Vec<((AuthOp, u64), (u64, Option<Duration>))>,
    ) -> Vec<Condition> {
        let window_sum = |w: Duration| {
            let from = now.checked_sub(w).filter(|f| *f > st.started);
            Self::sum(st, from, now)
        };
        let plain = |value: f64, description: String| {
            vec![Condition {
                labels: Vec::new(),
                value,
                description,
            }]
        };
        match rule.kind {
            RuleKind::FailureRatio {
                op,
                window,
                above,
                min_requests,
            } => {
                let c = window_sum(window);
                let (s, f) = (c[op.index()][S], c[op.index()][F]);
                let total = s + f;
                if total == 0 || total < min_requests {
                    return Vec::new();
                }
                let ratio = f as f64 / total as f64;
                if ratio > above {
                    return plain(
                        ratio,
                        format!(
                            "{op} failure rate {:.1}% ({f} of {total} attempts) over {}, above {:.0}%",
                            ratio * 100.0,
                            human(window),
                            above * 100.0
                        ),
                    );
                }
                Vec::new()
            }
            RuleKind::Count {
                signal: sig,
                window,
                above,
            } => {
                let v = signal(&window_sum(window), sig);
                if v > above {
                    return plain(
                        v as f64,
                        format!("{v} {} in {}, above {above}", sig.describe(), human(window)),
                    );
                }
                Vec::new()
            }
            RuleKind::Percentile {
                op,
                quantile,
                above,
                min_requests,
            } => {
                let Some(source) = &self.cfg.quantiles else {
                    return Vec::new();
                };
                let ops: Vec<AuthOp> = op.map_or_else(|| AuthOp::ALL.to_vec(), |op| vec![op]);
                let mut out = Vec::new();
                for op in ops {
                    let key = (op, quantile.to_bits());
                    let (n, q) = match quantiles.iter().find(|(k, _)| *k == key) {
                        Some((_, v)) => *v,
                        None => {
                            let v = source(op, quantile);
                            quantiles.push((key, v));
                            v
                        }
                    };
                    let Some(q) = q else { continue };
                    if n >= min_requests && q > above {
                        out.push(Condition {
                            labels: vec![("auth_operation".into(), op.as_str().into())],
                            value: q.as_secs_f64() * 1000.0,
                            description: format!(
                                "p{} response time of {op} is {:.0} ms over {n} requests, above {} ms",
                                (quantile * 100.0).round(),
                                q.as_secs_f64() * 1000.0,
                                above.as_millis()
                            ),
                        });
                    }
                }
                out
            }
            RuleKind::Mean {
                op,
                window,
                above,
                min_requests,
            } => {
                let c = window_sum(window);
                let (n, us) = (c[op.index()][LAT_N], c[op.index()][LAT_US]);
                if n == 0 || n < min_requests {
                    return Vec::new();
                }
                let mean_ms = us as f64 / n as f64 / 1000.0;
                if mean_ms > above.as_secs_f64() * 1000.0 {
                    return plain(
                        mean_ms,
                        format!(
                            "mean {op} time {mean_ms:.1} ms over {n} in {}, above {} ms",
                            human(window),
                            above.as_millis()
                        ),
                    );
                }
                Vec::new()
            }
            RuleKind::Spike {
                signal: sig,
                window,
                baseline,
                factor,
                min_count,
            } => {
                let cur = signal(&window_sum(window), sig);
                let window_start = now.saturating_sub(window);
                let covered = baseline.min(window_start.saturating_sub(st.started));
                if cur < min_count.max(1) || covered < window {
                    return Vec::new();
                }
                let from = window_start - covered;
                let from = (from > st.started).then_some(from);
                let base = signal(&Self::sum(st, from, window_start), sig);
                let per_window = base as f64 * window.as_secs_f64() / covered.as_secs_f64();
                if cur as f64 >= factor * per_window && cur as f64 > per_window {
                    let ratio = if per_window > 0.0 {
                        cur as f64 / per_window
                    } else {
                        f64::INFINITY
                    };
                    return plain(
                        ratio,
                        format!(
                            "{cur} {} in {}, against a baseline of {per_window:.1} per {} over the {} before ({factor}× or more)",
                            sig.describe(),
                            human(window),
                            human(window),
                            human(covered)
                        ),
                    );
                }
                Vec::new()
            }
            RuleKind::PerIpFailures { above } => suspects
                .iter()
                .filter(|s| s.failures > above)
                .map(|s| {
                    let client = self.cfg.brute_force.client_label(s.ip);
                    Condition {
                        description: format!(
                            "{} failed auth attempts from {client} in {}, above {above}",
                            s.failures,
                            human(self.cfg.brute_force.window_len())
                        ),
                        labels: vec![("client_ip".into(), client)],
                        value: s.failures as f64,
                    }
                })
                .collect(),
            RuleKind::Distributed {
                min_ips,
                min_failures,
            } => routes
                .iter()
                .filter(|r| r.ips >= min_ips && r.failures >= min_failures)
                .map(|r| Condition {
                    labels: vec![("http_route".into(), r.route.clone())],
                    value: r.ips as f64,
                    description: format!(
                        "{} failed attempts on {} from {} addresses in {}",
                        r.failures,
                        r.route,
                        r.ips,
                        human(self.cfg.brute_force.window_len())
                    ),
                })
                .collect(),
            RuleKind::HealthFailures { above } => {
                let n = self.health_failures.load(Ordering::Relaxed);
                if n > above {
                    return plain(
                        f64::from(n),
                        format!("the health checks failed {n} consecutive times"),
                    );
                }
                Vec::new()
            }
        }
    }

    fn alert(&self, rule: &Rule, c: &Condition, state: AlertState, since: Duration) -> Alert {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_owned(), rule.name.to_string());
        labels.insert("severity".to_owned(), rule.severity.as_str().to_owned());
        labels.insert("notify".to_owned(), rule.notify_label());
        labels.insert("alertgroup".to_owned(), rule.group.to_string());
        if let Some(s) = &self.cfg.service {
            labels.insert("service".to_owned(), s.clone());
        }
        for (k, v) in &c.labels {
            labels.insert(k.clone(), v.clone());
        }
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".to_owned(), rule.summary.to_string());
        annotations.insert("description".to_owned(), c.description.clone());
        annotations.insert(
            "runbook_url".to_owned(),
            format!("{}#{}", self.cfg.runbook_base, rule.runbook_anchor()),
        );
        Alert {
            name: rule.name.to_string(),
            severity: rule.severity,
            state,
            labels,
            annotations,
            value: c.value,
            starts_at: self.wall(since),
            ends_at: None,
        }
    }

    fn transition(
        &self,
        st: &mut State,
        now: Duration,
        conditions: Vec<(usize, Condition)>,
    ) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (ri, c) in conditions {
            let rule = &self.cfg.rules[ri];
            let key = (ri, c.labels.clone());
            seen.insert(key.clone());
            let inst = st.instances.entry(key).or_insert_with(|| Instance {
                rule: ri,
                state: AlertState::Pending,
                active_since: now,
                alert: self.alert(rule, &c, AlertState::Pending, now),
            });
            let since = inst.active_since;
            let state =
                if inst.state == AlertState::Firing || now.saturating_sub(since) >= rule.for_ {
                    AlertState::Firing
                } else {
                    AlertState::Pending
                };
            let fired = state == AlertState::Firing && inst.state != AlertState::Firing;
            inst.state = state;
            inst.alert = self.alert(rule, &c, state, since);
            if fired {
                events.push(AlertEvent {
                    alert: inst.alert.clone(),
                    at: now,
                });
            }
        }
        let gone: Vec<_> = st
            .instances
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(inst) = st.instances.remove(&k) {
                debug_assert_eq!(inst.rule, k.0);
                if inst.state == AlertState::Firing {
                    let mut alert = inst.alert;
                    alert.state = AlertState::Resolved;
                    // The real time (the monotonic clock may have drifted from it), never before
                    // the start.
                    alert.ends_at = Some(SystemTime::now().max(alert.starts_at));
                    events.push(AlertEvent { alert, at: now });
                }
            }
        }
        events
    }
}

fn add_into(a: &mut Counts, b: &Counts) {
    for op in 0..OPS {
        for k in 0..KINDS {
            a[op][k] += b[op][k];
        }
    }
}

/// An address masked for display (the dashboard's default): the first two octets of an IPv4
/// address, the first two groups of an IPv6 one.
#[must_use]
pub fn mask_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.x.x", o[0], o[1])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:…", s[0], s[1])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_is_sized_for_the_longest_span_up_front_and_bounded() {
        // Default rules: the spikes look back 10 minutes plus a 60-minute baseline; one entry
        // per 5-s tick.
        let h = history_for(&AlertConfig::default());
        assert!(h.is_empty());
        assert!(h.capacity() >= 70 * 12 + 16, "{}", h.capacity());
        assert!(h.capacity() < 2 * (70 * 12 + 16), "{}", h.capacity());
        // A tiny tick is capped; evaluating only on demand keeps a small one.
        let fast = history_for(&AlertConfig::default().tick(Duration::from_millis(1)));
        assert!(fast.capacity() >= HISTORY_ENTRIES && fast.capacity() < 2 * HISTORY_ENTRIES);
        let none = history_for(&AlertConfig::default().tick(Duration::ZERO));
        assert!(none.capacity() >= 16 && none.capacity() < 64);
    }
}
