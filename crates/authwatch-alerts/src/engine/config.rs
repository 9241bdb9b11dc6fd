//! The engine's settings: [`AlertConfig`] and its builder methods.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use authwatch_layer::AuthOp;

use crate::accounts::AccountConfig;
use crate::clock::{Clock, SystemClock};
use crate::detector::BruteForceConfig;
use crate::rules::{default_rules, Rule, RuleKind};

/// Where the percentile rules read latency quantiles: for an operation and a quantile, the
/// number of requests in the window and the quantile. The facade passes its HDR windows.
pub type QuantileSource = Arc<dyn Fn(AuthOp, f64) -> (u64, Option<Duration>) + Send + Sync>;

/// The request counts of one operation since start, as a [`CountSource`] reports them.
///
/// `failure` includes server errors and every failure reason; `rate_limited` and `cancelled`
/// are apart. `timed` and `latency_us` are the requests with a latency (all but the cancelled
/// ones) and the sum of their latencies in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestCounts {
    /// Successes.
    pub success: u64,
    /// Failures, server errors included.
    pub failure: u64,
    /// Rate-limited requests.
    pub rate_limited: u64,
    /// Failures for an invalid token.
    pub invalid_token: u64,
    /// Lockouts: refusals of a locked account, and lockouts the application reported.
    pub locked_out: u64,
    /// Requests the client gave up on.
    pub cancelled: u64,
    /// Requests with a latency (all but the cancelled).
    pub timed: u64,
    /// The sum of their latencies, in microseconds.
    pub latency_us: u64,
    /// Server errors (a subset of `failure`). No rule reads them; a fleet shares them for its
    /// statistics.
    pub errors: u64,
}

/// Where the engine reads the request counts when something else already counts every event
/// (the facade's statistics): per operation, indexed by [`AuthOp::index`], cumulative since
/// start. With one, the engine counts nothing on the request path itself; as an
/// [`EventSink`](authwatch_layer::EventSink) it only takes the failing clients to the
/// brute-force detector.
pub type CountSource = Arc<dyn Fn() -> [RequestCounts; AuthOp::COUNT] + Send + Sync>;

/// Asked once per change of an alert's state (fired, resolved) before the webhook message is
/// sent: `false` skips the message. Instances of one fleet share one, so that one incident
/// sends one message rather than one per instance (see [`AlertConfig::notify_gate`]).
pub type NotifyGate = Arc<dyn Fn(&crate::Alert) -> bool + Send + Sync>;

/// Settings of the [`AlertEngine`](crate::AlertEngine).
#[derive(Clone)]
pub struct AlertConfig {
    pub(crate) rules: Vec<Rule>,
    pub(crate) tick: Duration,
    pub(crate) brute_force: BruteForceConfig,
    pub(crate) accounts: AccountConfig,
    pub(crate) alertmanager: Option<String>,
    pub(crate) webhook: Option<String>,
    /// A webhook per channel: the alerts whose `notify` label names it.
    pub(crate) receivers: Vec<(crate::Channel, String)>,
    pub(crate) resend: Duration,
    pub(crate) runbook_base: String,
    pub(crate) service: Option<String>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) quantiles: Option<QuantileSource>,
    pub(crate) counts: Option<CountSource>,
    pub(crate) on_tick: Option<Arc<dyn Fn() + Send + Sync>>,
    pub(crate) on_event: Option<Arc<dyn Fn(&super::AlertEvent) + Send + Sync>>,
    pub(crate) on_firing: Option<Arc<dyn Fn(&[super::Alert]) + Send + Sync>>,
    pub(crate) notify_gate: Option<NotifyGate>,
    pub(crate) failure_outbox: Option<Arc<super::FailureOutbox>>,
    pub(crate) shared_detections: Option<super::SharedDetections>,
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
            accounts: AccountConfig::default(),
            alertmanager: None,
            webhook: None,
            receivers: Vec::new(),
            resend: Duration::from_secs(60),
            runbook_base: DEFAULT_RUNBOOKS.to_owned(),
            service: None,
            clock: Arc::new(SystemClock::new()),
            quantiles: None,
            counts: None,
            on_tick: None,
            on_event: None,
            on_firing: None,
            notify_gate: None,
            failure_outbox: None,
            shared_detections: None,
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
    /// [`AlertEngine::evaluate`](crate::AlertEngine::evaluate) is called.
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

    /// Sizing and window of the account-level detector (password spraying, accounts under
    /// attack, credential stuffing).
    #[must_use]
    pub fn accounts(mut self, cfg: AccountConfig) -> Self {
        self.accounts = cfg;
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

    /// Also posts the Slack-compatible message of each change of an alert whose `notify`
    /// label names `channel` to `url`: a webhook per receiver (`page`, `slack`, `email`,
    /// `security`) beside, or instead of, the one for everything
    /// ([`webhook`](Self::webhook)). A second call for a channel replaces its URL.
    #[must_use]
    pub fn webhook_for(mut self, channel: crate::Channel, url: impl Into<String>) -> Self {
        self.receivers.retain(|(c, _)| *c != channel);
        self.receivers.push((channel, url.into()));
        self
    }

    /// The webhooks per channel ([`webhook_for`](Self::webhook_for)).
    #[must_use]
    pub fn receiver_webhooks(&self) -> &[(crate::Channel, String)] {
        &self.receivers
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

    /// Where the engine reads the request counts, instead of counting the events it is given
    /// (see [`CountSource`]): the source must count every event the engine would have, and
    /// the lockouts the application reports (the engine's
    /// [`record_lockout`](crate::AlertEngine::record_lockout) then counts nothing).
    #[must_use]
    pub fn counts(mut self, source: CountSource) -> Self {
        self.counts = Some(source);
        self
    }

    /// Called at the start of each evaluation. The facade starts a run of its health checks
    /// here (when their cache is stale) unless a hook is already set.
    #[must_use]
    pub fn on_tick(mut self, f: Arc<dyn Fn() + Send + Sync>) -> Self {
        self.on_tick = Some(f);
        self
    }

    /// Called with each change of an alert's state (fired, resolved), on the engine's thread,
    /// before the notifications go out. The facade blocks the addresses the attack alerts
    /// name here (its `BlockPolicy`).
    #[must_use]
    pub fn on_event(mut self, f: Arc<dyn Fn(&super::AlertEvent) + Send + Sync>) -> Self {
        self.on_event = Some(f);
        self
    }

    /// Called after each evaluation with the alerts firing, their values just measured (the
    /// facade follows each incident's peak here).
    #[must_use]
    pub fn on_firing(mut self, f: Arc<dyn Fn(&[super::Alert]) + Send + Sync>) -> Self {
        self.on_firing = Some(f);
        self
    }

    /// Decides, for each change of an alert's state, whether this engine sends the webhook
    /// message ([`NotifyGate`]). The log line is written either way, and Alertmanager gets the
    /// alert either way (it merges the same alert from several senders into one
    /// notification). Fleet mode sets one that lets exactly one instance through per change.
    #[must_use]
    pub fn notify_gate(mut self, gate: NotifyGate) -> Self {
        self.notify_gate = Some(gate);
        self
    }

    /// Where the engine also puts every failure it counts into its brute-force detector (the
    /// client key, the route, how many), for a fleet's flush to share
    /// ([`FailureOutbox::take`](super::FailureOutbox::take)).
    #[must_use]
    pub fn failure_outbox(mut self, outbox: Arc<super::FailureOutbox>) -> Self {
        self.failure_outbox = Some(outbox);
        self
    }

    /// Where the engine reads a fleet's brute-force detections, merged with its own at each
    /// evaluation and in [`suspects`](crate::AlertEngine::suspects),
    /// [`top_ip_failures`](crate::AlertEngine::top_ip_failures) and
    /// [`route_failures`](crate::AlertEngine::route_failures): per client and per route, the
    /// larger figure wins.
    #[must_use]
    pub fn shared_detections(mut self, source: super::SharedDetections) -> Self {
        self.shared_detections = Some(source);
        self
    }

    /// The brute-force detector's sizing ([`brute_force`](Self::brute_force)).
    #[must_use]
    pub fn brute_force_config(&self) -> &BruteForceConfig {
        &self.brute_force
    }

    /// The account-level detector's settings ([`accounts`](Self::accounts)).
    #[must_use]
    pub fn account_config(&self) -> &AccountConfig {
        &self.accounts
    }

    /// Whether a [`notify_gate`](Self::notify_gate) is set.
    #[must_use]
    pub fn has_notify_gate(&self) -> bool {
        self.notify_gate.is_some()
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
        let (aw, ab) = (
            mul(self.accounts.window_len()),
            mul(self.accounts.baseline_len()),
        );
        self.accounts = self.accounts.window(aw).baseline(ab);
        if !self.tick.is_zero() {
            scale(&mut self.tick);
        }
        self.resend = mul(self.resend).max(Duration::from_millis(10));
        self
    }

    /// The evaluation interval ([`tick`](Self::tick)).
    #[must_use]
    pub fn tick_interval(&self) -> Duration {
        self.tick
    }

    /// How often firing alerts are sent again ([`resend_interval`](Self::resend_interval)).
    #[must_use]
    pub fn resend(&self) -> Duration {
        self.resend
    }

    /// Where the `runbook_url` annotations point ([`runbook_base`](Self::runbook_base)).
    #[must_use]
    pub fn runbook_base_url(&self) -> &str {
        &self.runbook_base
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
