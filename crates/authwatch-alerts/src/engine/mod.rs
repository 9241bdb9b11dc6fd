//! The rule engine: counts fed by the layer's events, rules evaluated off the request path on
//! a tick, and the alert lifecycle (pending → firing → resolved).

mod alert;
mod conditions;
mod config;
mod counts;
mod evaluate;
mod history;
mod labels;
mod lifecycle;
mod pending;
mod shared;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use authwatch_layer::AuthOp;

pub use alert::{Alert, AlertEvent, AlertState};
pub use config::{
    AlertConfig, CountSource, NotifyGate, QuantileSource, RequestCounts, DEFAULT_RUNBOOKS,
};
pub use labels::mask_ip;
pub use shared::{AccountRun, Detections, FailureOutbox, FailureRun, SharedDetections};

use counts::{Counts, Shard, KINDS, LO, OPS};
use evaluate::ticker;
use history::history_for;

use crate::accounts::{AccountDetections, AccountDetector, AccountLevels};
use crate::detector::{Detector, RouteFailures, Suspect};
use crate::notify::{NotifierStats, Notifiers};
use crate::rules::{Rule, RuleKind};

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
    /// The account-level detector, fed by the application's login failures.
    accounts: Mutex<AccountDetector>,
    /// Full batches of failures handed to the engine's thread.
    ready: Mutex<Vec<Vec<pending::Run>>>,
    /// Whether the engine's thread runs, to take them.
    handoff: AtomicBool,
    /// The route labels of the failures waiting in the shards.
    labels: pending::Labels,
    detector_threshold: std::sync::atomic::AtomicU64,
    /// The rules evaluated: the configuration's, until [`AlertEngine::reload`] replaces them.
    rules: RwLock<Arc<[Rule]>>,
    state: Mutex<State>,
    firing: RwLock<Arc<[Alert]>>,
    health_failures: AtomicU32,
    notifiers: RwLock<Arc<Notifiers>>,
    wall0: SystemTime,
    t0: Duration,
    stop: Arc<(Mutex<Wake>, Condvar)>,
    /// One evaluation at a time (the engine's thread and callers of `evaluate`).
    evaluating: Mutex<()>,
}

/// The brute-force detector's threshold: the smallest `above` of the enabled per-IP rules
/// (50 without one).
fn brute_force_threshold(rules: &[Rule]) -> u64 {
    rules
        .iter()
        .filter(|r| r.enabled)
        .filter_map(|r| match r.kind {
            RuleKind::PerIpFailures { above } => Some(above),
            _ => None,
        })
        .min()
        .unwrap_or(50)
}

/// What [`AlertEngine::reload`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reloaded {
    /// The rules whose settings changed (or that came or went).
    pub rules_changed: Vec<String>,
    /// Whether the notifiers (Alertmanager, webhooks, resend interval) changed.
    pub notifiers_changed: bool,
    /// Settings that differ but take effect only at the next start.
    pub needs_restart: Vec<&'static str>,
}

/// The levels from which the account detector reports: the lowest thresholds of the enabled
/// account rules (the defaults' when none).
fn account_levels(rules: &[Rule]) -> AccountLevels {
    let d = AccountLevels::default();
    let min = |f: &dyn Fn(&RuleKind) -> Option<u64>, default: u64| {
        rules
            .iter()
            .filter(|r| r.enabled)
            .filter_map(|r| f(&r.kind))
            .min()
            .unwrap_or(default)
    };
    AccountLevels {
        account_failures_above: min(
            &|k| match k {
                RuleKind::PerAccountFailures { above } => Some(*above),
                _ => None,
            },
            d.account_failures_above,
        ),
        account_addresses: min(
            &|k| match k {
                RuleKind::PerAccountAddresses { addresses } => Some(*addresses),
                _ => None,
            },
            d.account_addresses,
        ),
        client_accounts: min(
            &|k| match k {
                RuleKind::PerIpAccounts { accounts } => Some(*accounts),
                _ => None,
            },
            d.client_accounts,
        ),
    }
}

/// What the engine's thread is woken for.
#[derive(Default)]
struct Wake {
    /// The engine is shut down.
    stopped: bool,
    /// Batches of failures were handed over ([`Inner::count_ready`]).
    work: bool,
}

/// The alert engine. It is an [`EventSink`](authwatch_layer::EventSink): give it to the layer's
/// sinks (the facade does), and it counts each event in per-thread atomics; rules are evaluated
/// on its own thread every tick.
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

impl AlertEngine {
    /// Starts an engine: the evaluation thread (unless the tick is zero) and one delivery
    /// thread per configured notifier.
    #[must_use]
    pub fn new(cfg: AlertConfig) -> Self {
        let now = cfg.clock.now();
        let threshold = brute_force_threshold(&cfg.rules);
        let shards = (0..authwatch_hdr::default_shards()).map(|_| Shard::new());
        let inner = Arc::new(Inner {
            shards: shards.collect(),
            detector: Mutex::new(Detector::new(cfg.brute_force, threshold, now)),
            accounts: Mutex::new(AccountDetector::new(
                cfg.accounts,
                account_levels(&cfg.rules),
                now,
            )),
            ready: Mutex::new(Vec::new()),
            handoff: AtomicBool::new(false),
            labels: pending::Labels::new(),
            detector_threshold: std::sync::atomic::AtomicU64::new(threshold),
            rules: RwLock::new(Arc::from(cfg.rules.clone())),
            state: Mutex::new(State {
                started: now,
                last: [[0; KINDS]; OPS],
                history: history_for(&cfg),
                instances: HashMap::new(),
                events: VecDeque::new(),
            }),
            firing: RwLock::new(Arc::from(Vec::new())),
            health_failures: AtomicU32::new(0),
            notifiers: RwLock::new(Arc::new(Notifiers::start(&cfg))),
            wall0: SystemTime::now(),
            t0: now,
            stop: Arc::new((Mutex::new(Wake::default()), Condvar::new())),
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
            match spawned {
                Ok(_) => inner.handoff.store(true, Ordering::Relaxed),
                Err(e) => {
                    tracing::error!(error = %e, "authwatch: could not start the alert thread; alerts are evaluated only on demand");
                }
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
        if inner.cfg.counts.is_some() {
            // The count source counts it.
            return;
        }
        let shard = &inner.shards[authwatch_hdr::thread_shard(inner.shards.len())];
        shard.cells[AuthOp::Login.index()][LO].fetch_add(1, Ordering::Relaxed);
    }

    /// How a client key appears in labels: `203.0.113.7`, `2001:db8:1:2::/64`.
    #[must_use]
    pub fn client_label(&self, ip: IpAddr) -> String {
        self.inner.cfg.brute_force.client_label(ip)
    }

    /// Counts a failed login of `account` (the application's id, or its keyed hash) from `ip`,
    /// for the account-level rules (password spraying, accounts under attack, credential
    /// stuffing). The facade calls it from the audit trail's worker for every
    /// `log_login_failure`, off the handler's thread. IPv6 addresses are grouped as for brute
    /// force ([`BruteForceConfig::client_key`](crate::BruteForceConfig::client_key)).
    pub fn record_account_failure(&self, account: &str, ip: Option<IpAddr>) {
        let client = ip.map(|ip| self.inner.cfg.brute_force.client_key(ip));
        self.inner
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record_failure(account, client);
        if let Some(o) = &self.inner.cfg.failure_outbox {
            o.add_account(account, client);
        }
    }

    /// The levels from which accounts and addresses are reported: the lowest thresholds of
    /// the enabled account-level rules (a fleet's shared detector reports from the same).
    #[must_use]
    pub fn account_levels(&self) -> AccountLevels {
        account_levels(&self.inner.rules())
    }

    /// The accounts and addresses the account-level rules look at now: accounts with many
    /// failures or failing from many addresses, addresses failing on many accounts, and the
    /// distinct failing accounts against their baseline.
    #[must_use]
    pub fn account_detections(&self) -> AccountDetections {
        let local = self.with_accounts(AccountDetector::detections);
        self.inner.with_shared_accounts(local)
    }

    /// Accounts over an account-level threshold now (failures, or distinct addresses): the
    /// `auth.attack.accounts_under_attack` gauge.
    #[must_use]
    pub fn accounts_under_attack(&self) -> u64 {
        if self.inner.shared().is_some_and(|d| d.accounts.is_some()) {
            return self.account_detections().accounts.len() as u64;
        }
        self.with_accounts(|d| d.accounts_at_levels() as u64)
    }

    /// The most failed logins of one account over the account window: the
    /// `auth.attack.top_account.failures` gauge.
    #[must_use]
    pub fn top_account_failures(&self) -> u64 {
        let local = self.with_accounts(AccountDetector::top_account_failures);
        let shared = self.inner.shared().and_then(|d| d.accounts);
        shared.map_or(local, |a| local.max(a.top_account_failures))
    }

    /// `f` on the account detector, its window moved to now: the gauges read one figure each
    /// this way, without building every detection.
    fn with_accounts<R>(&self, f: impl FnOnce(&AccountDetector) -> R) -> R {
        let mut d = self
            .inner
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        d.advance(self.inner.cfg.clock.now());
        f(&d)
    }

    /// Clients over the brute-force threshold now, most failures first (never exported as
    /// metrics). IPv6 clients are keyed by their prefix (see
    /// [`BruteForceConfig::ipv6_prefix`](crate::BruteForceConfig::ipv6_prefix)).
    #[must_use]
    pub fn suspects(&self) -> Vec<Suspect> {
        let local = self.inner.lock_detector().suspects();
        self.inner.with_shared_suspects(local)
    }

    /// The most failures from one address over the window (an upper bound; the
    /// `auth.attack.top_ip.failures` gauge).
    #[must_use]
    pub fn top_ip_failures(&self) -> u64 {
        let local = self.inner.lock_detector().top_failures();
        self.inner
            .shared()
            .map_or(local, |d| local.max(d.top_failures))
    }

    /// Per route: failures and distinct failing addresses over the window.
    #[must_use]
    pub fn route_failures(&self) -> Vec<RouteFailures> {
        let local = self.inner.lock_detector().routes();
        match self.inner.shared() {
            Some(d) => shared::merge_routes(local, &d.routes),
            None => local,
        }
    }

    /// The brute-force threshold: the smallest `above` of the enabled per-IP rules.
    #[must_use]
    pub fn brute_force_threshold(&self) -> u64 {
        self.inner.detector_threshold.load(Ordering::Relaxed)
    }

    /// Deliveries per notifier: sent, failed attempts, dropped.
    #[must_use]
    pub fn notifier_stats(&self) -> Vec<NotifierStats> {
        self.inner.notifiers().stats()
    }

    /// The configuration, as the engine was started with (the rules as now:
    /// [`rules`](Self::rules)).
    #[must_use]
    pub fn config(&self) -> &AlertConfig {
        &self.inner.cfg
    }

    /// The rules evaluated now.
    #[must_use]
    pub fn rules(&self) -> Arc<[Rule]> {
        self.inner.rules()
    }

    /// Takes the rules (thresholds, windows, severities, channels, on or off) and the
    /// notifiers (Alertmanager, webhooks, resend interval) of `cfg`, keeping everything
    /// counted, the windows and the alerts' states: a firing alert whose new threshold no
    /// longer holds resolves at the next evaluation, one still over it goes on firing. What a
    /// running engine cannot take (the tick, the detectors' windows and memory, the clock and
    /// the sources) is listed in the result and needs a restart.
    pub fn reload(&self, cfg: &AlertConfig) -> Reloaded {
        let inner = &self.inner;
        let old = inner.rules();
        let mut changed: Vec<String> = Vec::new();
        for r in &cfg.rules {
            match old.iter().find(|o| o.name == r.name) {
                Some(o) if o == r => {}
                _ => changed.push(r.name.to_string()),
            }
        }
        for o in old.iter() {
            if !cfg.rules.iter().any(|r| r.name == o.name) {
                changed.push(o.name.to_string());
            }
        }
        let new: Arc<[Rule]> = Arc::from(cfg.rules.clone());
        {
            let _one = inner.evaluating.lock().unwrap_or_else(|e| e.into_inner());
            let mut st = inner.lock_state();
            // The alerts' states follow their rule by name; those of a rule gone are dropped
            // (and resolved, if firing, at the next evaluation: nothing holds them).
            let map: Vec<Option<usize>> = old
                .iter()
                .map(|o| new.iter().position(|r| r.name == o.name))
                .collect();
            let instances = std::mem::take(&mut st.instances);
            for ((ri, labels), mut inst) in instances {
                if let Some(Some(ni)) = map.get(ri) {
                    inst.rule = *ni;
                    st.instances.insert((*ni, labels), inst);
                }
            }
            *inner.rules.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
        }
        let threshold = brute_force_threshold(&new);
        inner.detector_threshold.store(threshold, Ordering::Relaxed);
        inner.lock_detector().set_threshold(threshold);
        inner
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_levels(account_levels(&new));
        let was = &inner.cfg;
        let notifiers_changed = !inner.notifiers().same_as(cfg);
        if notifiers_changed {
            let mut fresh = cfg.clone();
            fresh.notify_gate.clone_from(&was.notify_gate);
            fresh.tick = was.tick;
            let next = Arc::new(Notifiers::start(&fresh));
            let old = std::mem::replace(
                &mut *inner.notifiers.write().unwrap_or_else(|e| e.into_inner()),
                next,
            );
            // What the old ones hold still goes out, off the caller's thread.
            let _ = std::thread::Builder::new()
                .name("authwatch-notify-old".into())
                .spawn(move || old.flush(Duration::from_secs(2)));
        }
        let mut restart = Vec::new();
        if cfg.tick != was.tick {
            restart.push("tick");
        }
        if cfg.brute_force != was.brute_force {
            restart.push("brute_force");
        }
        if cfg.accounts != was.accounts {
            restart.push("accounts");
        }
        Reloaded {
            rules_changed: changed,
            notifiers_changed,
            needs_restart: restart,
        }
    }

    /// Stops the evaluation thread and gives the notifiers up to `timeout` to deliver what they
    /// hold.
    pub fn shutdown(&self, timeout: Duration) {
        {
            // Batches recorded from now on are counted by their threads.
            self.inner.handoff.store(false, Ordering::Relaxed);
            let (m, cv) = &*self.inner.stop;
            m.lock().unwrap_or_else(|e| e.into_inner()).stopped = true;
            cv.notify_all();
        }
        self.inner.notifiers().flush(timeout);
    }
}

impl Inner {
    fn rules(&self) -> Arc<[Rule]> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn notifiers(&self) -> Arc<Notifiers> {
        self.notifiers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fleet's detections, when the engine has a source and it answers.
    fn shared(&self) -> Option<Detections> {
        self.cfg.shared_detections.as_ref().and_then(|f| f())
    }

    fn with_shared_suspects(&self, local: Vec<Suspect>) -> Vec<Suspect> {
        match self.shared() {
            Some(d) => {
                shared::merge_suspects(local, &d.suspects, self.cfg.brute_force.suspects_kept())
            }
            None => local,
        }
    }

    /// `local` account detections, merged with the fleet's when shared.
    fn with_shared_accounts(&self, local: AccountDetections) -> AccountDetections {
        match self.shared().and_then(|d| d.accounts) {
            Some(shared) => shared::merge_accounts(local, &shared),
            None => local,
        }
    }

    fn wall(&self, t: Duration) -> SystemTime {
        self.wall0 + t.saturating_sub(self.t0)
    }
}
