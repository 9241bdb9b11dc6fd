//! `authwatch.toml`: one file for the routes, the alert rules and their notifiers, blocking,
//! fleet mode, the audit trail, the endpoints and CrowdSec.
//!
//! The builder reads it with [`AuthWatchBuilder::config_file`](crate::AuthWatchBuilder::config_file),
//! or from the file `AUTHWATCH_CONFIG` names; builder calls after it win, field by field.
//! `authwatch rules|alertmanager|dashboards --config FILE` read the same file, so the
//! generated Prometheus rules and the in-process engine agree by construction, and
//! [`AuthWatch::reload_config`](crate::AuthWatch::reload_config) (or `SIGHUP`, with
//! [`reload_on_sighup`](crate::AuthWatchBuilder::reload_on_sighup)) takes a changed file
//! without a restart.
//!
//! ```toml
//! [service]
//! name = "auth-api"
//!
//! [routes]
//! "/api/v2/login" = "login"
//!
//! [alerts]
//! tick = "5s"                       # evaluation interval
//! alertmanager = "http://alertmanager:9093"
//!
//! [alerts.rules.AuthLoginFailureRateHigh]
//! threshold = 0.2                   # the rule's own unit: a ratio, milliseconds, a count, a multiple
//! window = "5m"
//! min_events = 20
//! severity = "critical"
//! enabled = true
//!
//! [blocking]
//! ttl = "15m"
//! allow = ["10.0.0.0/8"]
//!
//! [endpoints]
//! metrics_bearer_token_file = "/run/secrets/metrics-token"
//! ```
//!
//! Secrets never sit in the file: tokens, keys and passwords are read from the files it
//! names. `authwatch config print` prints every setting with its default.
//!
//! Errors name the file, the line and the key: a wrong type, an unknown rule (with the
//! nearest valid name), a negative or zero window, a threshold outside its unit.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use authwatch_alerts::{AlertConfig, Channel, Rule, Severity};
use serde::{Deserialize, Serialize};

/// The variable that names a configuration file for [`AuthWatch::builder`](crate::AuthWatch::builder).
pub const CONFIG_ENV: &str = "AUTHWATCH_CONFIG";

/// A duration written as text (`"5m"`, `"1h30m"`, `"250ms"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let s = String::deserialize(d)?;
        let t = s.trim();
        if t.starts_with('-') {
            return Err(D::Error::custom(format!(
                "{s:?} is negative: a duration is 0 or more (\"5m\", \"30s\")"
            )));
        }
        humantime::parse_duration(t).map(Dur).map_err(|e| {
            D::Error::custom(format!(
                "{s:?} is not a duration ({e}): write \"5m\", \"30s\", \"1h30m\", \"250ms\""
            ))
        })
    }
}

/// One rule's settings, `[alerts.rules.NAME]`. Each is optional: what is left out keeps the
/// rule's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// In the rule's own unit: a ratio (0.2), milliseconds, a count, a multiple (5 for 5×).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The rule's own window (not for the rules that read a detector's window).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Dur>,
    /// The least volume in the window before the rule can hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_events: Option<u64>,
    /// A spike's baseline, before its window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Dur>,
    /// `critical`, `warning` or `info`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// How long the condition must hold before the alert fires.
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<Dur>,
    /// Where it goes: `page`, `slack`, `email`, `security`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<String>>,
    /// Off: never evaluated (and left out of the generated Prometheus rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// A webhook per channel, `[alerts.webhooks]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhooks {
    /// The pager's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// Slack's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slack: Option<String>,
    /// E-mail's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The security team's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security: Option<String>,
}

/// The brute-force detector, `[alerts.brute_force]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BruteForceSettings {
    /// How far back failures from one address count (default 10 minutes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Dur>,
    /// IPv6 clients are counted per prefix of this many bits (default 64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_prefix: Option<u8>,
}

/// The account detector, `[alerts.accounts]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    /// How far back failures count (default 10 minutes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Dur>,
    /// Credential stuffing's baseline, before the window (default an hour).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Dur>,
}

/// `[alerts]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// Off: no alert engine at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// How often the rules are evaluated (default 5 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick: Option<Dur>,
    /// An Alertmanager (its v2 API) that does the paging, Slack and e-mail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<String>,
    /// A Slack-compatible webhook for every alert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// A webhook per channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Webhooks>,
    /// How often firing alerts are sent again (default 60 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resend: Option<Dur>,
    /// Where the `runbook_url` annotations point.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runbook_base: Option<String>,
    /// The brute-force detector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brute_force: Option<BruteForceSettings>,
    /// The account detector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts: Option<AccountSettings>,
    /// Per rule, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, RuleSettings>,
}

/// `[blocking]`: temporary blocks of the addresses the attack alerts name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockingSettings {
    /// Off: only people block (default on when the section is there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// A first offence's block (default 15 minutes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Dur>,
    /// The longest block, repeat offences doubling up to it (default 24 hours).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<Dur>,
    /// Networks never blocked (`"10.0.0.0/8"`, `"192.0.2.1"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// Record and log only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Refuse a blocked address on every route, not only the auth routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_routes: Option<bool>,
    /// The most blocks held at once (default 100,000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_blocks: Option<usize>,
}

/// `[attack_limit]`: a per-address limit on the login routes while an attack alert fires.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackLimitSettings {
    /// Sign-ins per address and minute.
    pub per_minute: u32,
    /// How many at once (default `per_minute`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// `[fleet]`: several instances sharing their counts through Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSettings {
    /// `redis://…` or `rediss://…`.
    pub redis: String,
    /// The key prefix of this fleet (default the service name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// How often each instance flushes (default 1 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_interval: Option<Dur>,
    /// This instance's name (default `host:pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
}

/// `[audit]`: the local, tamper-evident audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// The folder of the log (none: no local log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// A file holding the HMAC key of the chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// age recipients (`age1…`) the records are encrypted to at rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipients: Option<Vec<String>>,
    /// An `auth.request` record for every failed auth request (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<bool>,
    /// And for those that succeeded (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_successes: Option<bool>,
}

/// `[endpoints]`: `/metrics`, `/auth/health`, `/auth/stats`, `/auth/dashboard`, `/auth/blocks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSettings {
    /// A file holding the bearer token of `/metrics`, `/auth/stats` and the dashboard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_bearer_token_file: Option<PathBuf>,
    /// A file holding the bearer token of `/auth/blocks` (without one, it does not exist).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    /// The checks' messages and details in `/auth/health`: `"loopback"` (the default: to
    /// clients on the host only), `"always"` or `"never"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_details: Option<String>,
    /// `/auth/dashboard` and `/auth/stats` (default on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<bool>,
    /// Addresses and accounts in full on the dashboard (default masked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dashboard_unmasked_ips: Option<bool>,
}

/// `[crowdsec]`: the blocks as decisions in a CrowdSec Local API, and its bans enforced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrowdSecSettings {
    /// The Local API.
    pub url: String,
    /// The watcher's machine id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// A file holding its password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// A file holding a bouncer key (to enforce CrowdSec's bans).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bouncer_key_file: Option<PathBuf>,
    /// How often the decision stream is read (default 10 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_interval: Option<Dur>,
}

/// `[service]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// `service.name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `authwatch.toml` as read: every key optional, what is left out keeps its default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[service]`.
    #[serde(default)]
    pub service: ServiceSettings,
    /// `[routes]`: route template → operation (`login`, `register`, `token_validation`, …),
    /// added to the default routes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, String>,
    /// `[alerts]`.
    #[serde(default)]
    pub alerts: AlertSettings,
    /// `[blocking]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocking: Option<BlockingSettings>,
    /// `[attack_limit]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack_limit: Option<AttackLimitSettings>,
    /// `[fleet]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetSettings>,
    /// `[audit]`.
    #[serde(default)]
    pub audit: AuditSettings,
    /// `[endpoints]`.
    #[serde(default)]
    pub endpoints: EndpointSettings,
    /// `[crowdsec]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crowdsec: Option<CrowdSecSettings>,
}

/// What is wrong with a configuration file: where, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// Its line (1-based), when known.
    pub line: Option<usize>,
    /// The key, dotted (`alerts.rules.AuthLoginFailureRateHigh.window`).
    pub key: String,
    /// Why.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// A configuration file read and checked: the file's values and its text (for the lines of
/// later errors).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Where it was read from.
    pub path: PathBuf,
    /// What it says.
    pub file: ConfigFile,
    text: String,
}

impl Loaded {
    /// Reads and checks `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref().to_path_buf();
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            file: path.clone(),
            line: None,
            key: String::new(),
            message: format!("cannot read it: {e}"),
        })?;
        Self::parse(path, text)
    }

    /// Checks `text`, read from `path` (named in errors).
    pub fn parse(path: impl Into<PathBuf>, text: impl Into<String>) -> Result<Self, ConfigError> {
        let (path, text) = (path.into(), text.into());
        let de = toml::Deserializer::parse(&text).map_err(|e| toml_error(&path, &text, "", &e))?;
        let file: ConfigFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            toml_error(&path, &text, if key == "." { "" } else { &key }, e.inner())
        })?;
        let loaded = Self { path, file, text };
        loaded.check()?;
        Ok(loaded)
    }

    /// An error at `key` (dotted), located in the text.
    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            line: locate(&self.text, key),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// What build and reload would find wrong, found now.
    fn check(&self) -> Result<(), ConfigError> {
        self.alerts(AlertConfig::new())?;
        for (route, op) in &self.file.routes {
            op_of(op).ok_or_else(|| {
                self.error(
                    &format!("routes.{route}"),
                    format!("unknown operation {op:?}: one of {}", ops().join(", ")),
                )
            })?;
        }
        if let Some(b) = &self.file.blocking {
            self.block_policy(b)?.networks().map_err(|e| {
                self.error(
                    "blocking.allow",
                    e.to_string().replace("invalid setting: ", ""),
                )
            })?;
        }
        if let Some(h) = &self.file.endpoints.health_details {
            if !["loopback", "always", "never"].contains(&h.as_str()) {
                return Err(self.error(
                    "endpoints.health_details",
                    format!("{h:?}: \"loopback\", \"always\" or \"never\""),
                ));
            }
        }
        if let Some(l) = &self.file.attack_limit {
            if l.per_minute == 0 {
                return Err(self.error("attack_limit.per_minute", "must be at least 1"));
            }
        }
        if let Some(c) = &self.file.crowdsec {
            if c.machine.is_some() != c.password_file.is_some() {
                return Err(self.error(
                    "crowdsec",
                    "a watcher needs both `machine` and `password_file`",
                ));
            }
            if c.machine.is_none() && c.bouncer_key_file.is_none() {
                return Err(self.error(
                    "crowdsec",
                    "give `machine` and `password_file` (to push blocks), `bouncer_key_file` (to enforce CrowdSec's bans), or both",
                ));
            }
        }
        Ok(())
    }

    /// `base` with the file's `[alerts]` applied: its notifiers, detectors and rules.
    pub fn alerts(&self, base: AlertConfig) -> Result<AlertConfig, ConfigError> {
        let a = &self.file.alerts;
        let mut cfg = base;
        if let Some(t) = a.tick {
            cfg = cfg.tick(t.0);
        }
        if let Some(u) = &a.alertmanager {
            cfg = cfg.alertmanager(u.clone());
        }
        if let Some(u) = &a.webhook {
            cfg = cfg.webhook(u.clone());
        }
        if let Some(w) = &a.webhooks {
            for (c, u) in [
                (Channel::Page, &w.page),
                (Channel::Slack, &w.slack),
                (Channel::Email, &w.email),
                (Channel::Security, &w.security),
            ] {
                if let Some(u) = u {
                    cfg = cfg.webhook_for(c, u.clone());
                }
            }
        }
        if let Some(r) = a.resend {
            cfg = cfg.resend_interval(r.0);
        }
        if let Some(r) = &a.runbook_base {
            cfg = cfg.runbook_base(r.clone());
        }
        if let Some(b) = &a.brute_force {
            let mut bf = *cfg.brute_force_config();
            if let Some(w) = b.window {
                if w.0 < Duration::from_secs(1) {
                    return Err(self.error("alerts.brute_force.window", "must be at least 1s"));
                }
                bf = bf.window(w.0);
            }
            if let Some(p) = b.ipv6_prefix {
                if !(1..=128).contains(&p) {
                    return Err(self.error(
                        "alerts.brute_force.ipv6_prefix",
                        format!("a prefix length is 1 to 128, not {p}"),
                    ));
                }
                bf = bf.ipv6_prefix(p);
            }
            cfg = cfg.brute_force(bf);
        }
        if let Some(s) = &a.accounts {
            let mut ac = *cfg.account_config();
            if let Some(w) = s.window {
                if w.0 < Duration::from_secs(1) {
                    return Err(self.error("alerts.accounts.window", "must be at least 1s"));
                }
                ac = ac.window(w.0);
            }
            if let Some(b) = s.baseline {
                ac = ac.baseline(b.0);
            }
            cfg = cfg.accounts(ac);
        }
        let names: Vec<String> = cfg.rule_set().iter().map(|r| r.name.to_string()).collect();
        for (name, s) in &a.rules {
            if !names.contains(name) {
                let near = nearest(name, &names);
                return Err(self.error(
                    &format!("alerts.rules.{name}"),
                    match near {
                        Some(n) => format!("no rule is named {name:?}; did you mean {n:?}?"),
                        None => format!("no rule is named {name:?}"),
                    },
                ));
            }
            let mut failed = None;
            cfg = cfg.configure(name, |r| failed = self.apply_rule(name, s, r).err());
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok(cfg)
    }

    fn apply_rule(&self, name: &str, s: &RuleSettings, r: &mut Rule) -> Result<(), ConfigError> {
        let at = |k: &str| format!("alerts.rules.{name}.{k}");
        if let Some(t) = s.threshold {
            r.set_threshold(t)
                .map_err(|e| self.error(&at("threshold"), e.0))?;
        }
        if let Some(w) = s.window {
            r.set_window(w.0)
                .map_err(|e| self.error(&at("window"), e.0))?;
        }
        if let Some(b) = s.baseline {
            r.set_baseline(b.0)
                .map_err(|e| self.error(&at("baseline"), e.0))?;
        }
        if let Some(n) = s.min_events {
            r.set_min_events(n)
                .map_err(|e| self.error(&at("min_events"), e.0))?;
        }
        if let Some(sev) = &s.severity {
            r.severity = sev
                .parse::<Severity>()
                .map_err(|e| self.error(&at("severity"), e.0))?;
        }
        if let Some(f) = s.for_ {
            r.for_ = f.0;
        }
        if let Some(n) = &s.notify {
            r.channels = n
                .iter()
                .map(|c| c.parse::<Channel>())
                .collect::<Result<_, _>>()
                .map_err(|e| self.error(&at("notify"), e.0))?;
        }
        if let Some(on) = s.enabled {
            r.enabled = on;
        }
        Ok(())
    }

    /// The block policy of `[blocking]`.
    pub(crate) fn block_policy(
        &self,
        b: &BlockingSettings,
    ) -> Result<crate::BlockPolicy, ConfigError> {
        let mut p = crate::BlockPolicy::default();
        if let Some(t) = b.ttl {
            p = p.ttl(t.0);
        }
        if let Some(t) = b.max_ttl {
            p = p.max_ttl(t.0);
        }
        for n in b.allow.iter().flatten() {
            p = p.allow(n.clone());
        }
        if let Some(on) = b.dry_run {
            p = p.dry_run(on);
        }
        if let Some(on) = b.all_routes {
            p = p.all_routes(on);
        }
        if let Some(n) = b.max_blocks {
            if n == 0 {
                return Err(self.error("blocking.max_blocks", "must be at least 1"));
            }
            p = p.max_blocks(n);
        }
        Ok(p)
    }

    /// The contents of a file the configuration names (a token, a key, a password), trimmed.
    pub(crate) fn secret(&self, key: &str, path: &Path) -> Result<String, ConfigError> {
        let s = std::fs::read_to_string(path)
            .map_err(|e| self.error(key, format!("cannot read {}: {e}", path.display())))?;
        let s = s.trim().to_owned();
        if s.is_empty() {
            return Err(self.error(key, format!("{} is empty", path.display())));
        }
        Ok(s)
    }

    /// The effective configuration: the file's values, and every default it leaves out.
    #[must_use]
    pub fn effective(&self) -> ConfigFile {
        effective(&self.file, self.alerts(AlertConfig::new()).ok())
    }
}

/// The defaults, in the file's form (`authwatch config print` without a file).
#[must_use]
pub fn defaults() -> ConfigFile {
    effective(&ConfigFile::default(), Some(AlertConfig::new()))
}

fn effective(file: &ConfigFile, alerts: Option<AlertConfig>) -> ConfigFile {
    let mut out = file.clone();
    let cfg = alerts.unwrap_or_default();
    let a = &mut out.alerts;
    a.enabled.get_or_insert(true);
    a.tick.get_or_insert(Dur(cfg.tick_interval()));
    a.resend.get_or_insert(Dur(cfg.resend()));
    a.runbook_base
        .get_or_insert_with(|| cfg.runbook_base_url().to_owned());
    let bf = cfg.brute_force_config();
    let b = a.brute_force.get_or_insert_with(Default::default);
    b.window.get_or_insert(Dur(bf.window_len()));
    b.ipv6_prefix.get_or_insert(bf.ipv6_prefix_len());
    let ac = cfg.account_config();
    let s = a.accounts.get_or_insert_with(Default::default);
    s.window.get_or_insert(Dur(ac.window_len()));
    s.baseline.get_or_insert(Dur(ac.baseline_len()));
    for r in cfg.rule_set() {
        a.rules.insert(
            r.name.to_string(),
            RuleSettings {
                threshold: Some(r.threshold()),
                window: r.window().map(Dur),
                min_events: r.min_events(),
                baseline: r.baseline().map(Dur),
                severity: Some(r.severity.as_str().to_owned()),
                for_: Some(Dur(r.for_)),
                notify: Some(r.channels.iter().map(|c| c.as_str().to_owned()).collect()),
                enabled: Some(r.enabled),
            },
        );
    }
    let p = crate::BlockPolicy::default();
    let b = out.blocking.get_or_insert_with(|| BlockingSettings {
        enabled: Some(false),
        ..Default::default()
    });
    b.enabled.get_or_insert(true);
    b.ttl.get_or_insert(Dur(p.ttl_len()));
    b.max_ttl.get_or_insert(Dur(p.max_ttl_len()));
    b.allow.get_or_insert_with(Vec::new);
    b.dry_run.get_or_insert(false);
    b.all_routes.get_or_insert(false);
    b.max_blocks.get_or_insert(p.max_blocks_len());
    let e = &mut out.endpoints;
    e.health_details.get_or_insert_with(|| "loopback".into());
    e.dashboard.get_or_insert(true);
    e.dashboard_unmasked_ips.get_or_insert(false);
    let au = &mut out.audit;
    au.requests.get_or_insert(true);
    au.request_successes.get_or_insert(false);
    out
}

impl ConfigFile {
    /// As TOML.
    #[must_use]
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// The operation named `s` (`login`, `token_validation`, …).
pub(crate) fn op_of(s: &str) -> Option<crate::AuthOp> {
    crate::AuthOp::ALL.into_iter().find(|o| o.as_str() == s)
}

fn ops() -> Vec<&'static str> {
    crate::AuthOp::ALL.iter().map(|o| o.as_str()).collect()
}

/// The name in `names` nearest to `name` (a typo's fix), if one is near enough.
fn nearest(name: &str, names: &[String]) -> Option<String> {
    names
        .iter()
        .map(|n| {
            (
                strsim::levenshtein(&name.to_lowercase(), &n.to_lowercase()),
                n,
            )
        })
        .min_by_key(|(d, _)| *d)
        .filter(|(d, n)| *d <= n.len() / 3)
        .map(|(_, n)| n.clone())
}

fn toml_error(path: &Path, text: &str, key: &str, e: &toml::de::Error) -> ConfigError {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        .or_else(|| locate(text, key));
    ConfigError {
        file: path.to_path_buf(),
        line,
        key: key.to_owned(),
        message: e.message().trim().to_owned(),
    }
}

/// The line (1-based) where the dotted `key` is set: its table's header, then the key in it.
fn locate(text: &str, key: &str) -> Option<usize> {
    if key.is_empty() {
        return None;
    }
    let parts: Vec<&str> = key.split('.').collect();
    let lines: Vec<&str> = text.lines().collect();
    let bare = |l: &str| {
        l.trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .replace(['"', '\'', ' '], "")
    };
    // The longest table header that is a prefix of the key.
    for n in (1..=parts.len()).rev() {
        let table = parts[..n].join(".");
        let Some(h) = lines
            .iter()
            .position(|l| l.trim_start().starts_with('[') && bare(l) == table)
        else {
            continue;
        };
        let Some(rest) = parts.get(n) else {
            return Some(h + 1);
        };
        for (i, l) in lines.iter().enumerate().skip(h + 1) {
            let t = l.trim_start();
            if t.starts_with('[') {
                break;
            }
            let k = t
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches(['"', '\'']);
            if k == *rest || k.starts_with(&format!("{rest}.")) {
                return Some(i + 1);
            }
        }
        return Some(h + 1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Loaded, ConfigError> {
        Loaded::parse("authwatch.toml", text)
    }

    #[test]
    fn the_rules_layout_is_read_exactly_so() {
        let l = parse(
            r#"
[alerts]
tick = "5s"                       # evaluation interval

[alerts.rules.AuthLoginFailureRateHigh]
threshold = 0.3
window = "10m"
min_events = 40
severity = "warning"
enabled = true

[alerts.rules.AuthRegistrationSpike]
enabled = false
"#,
        )
        .unwrap();
        let cfg = l.alerts(AlertConfig::new()).unwrap();
        let r = cfg
            .rule_set()
            .iter()
            .find(|r| r.name == "AuthLoginFailureRateHigh")
            .unwrap();
        assert!((r.threshold() - 0.3).abs() < 1e-9);
        assert_eq!(r.window(), Some(Duration::from_secs(600)));
        assert_eq!(r.min_events(), Some(40));
        assert_eq!(r.severity, Severity::Warning);
        assert!(
            !cfg.rule_set()
                .iter()
                .find(|r| r.name == "AuthRegistrationSpike")
                .unwrap()
                .enabled
        );
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        let e = parse("[alerts]\ntick = \"5s\"\n\n[alerts.rules.AuthLoginFailureRateHigh]\nthreshold = \"high\"\n")
            .unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert_eq!(
            e.key, "alerts.rules.AuthLoginFailureRateHigh.threshold",
            "{e}"
        );
        assert!(e.to_string().starts_with("authwatch.toml:5: "), "{e}");

        let e = parse("[alerts.rules.AuthLoginFailureRateHig]\nthreshold = 0.3\n").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        assert!(
            e.message
                .contains("did you mean \"AuthLoginFailureRateHigh\""),
            "{e}"
        );

        let e = parse("[alerts.rules.AuthLoginFailureRateHigh]\n\nwindow = \"-5m\"\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(3), "alerts.rules.AuthLoginFailureRateHigh.window"),
            "{e}"
        );
        assert!(e.message.contains("negative"), "{e}");

        let e = parse("[alerts.rules.AuthLoginFailureRateHigh]\nthreshold = 2.0\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("ratio between 0 and 1"), "{e}");

        let e = parse("[alerts.rules.AuthBruteForceSuspected]\nwindow = \"5m\"\n").unwrap_err();
        assert!(e.message.contains("[alerts.brute_force] window"), "{e}");

        let e = parse("[alerts]\ntik = \"5s\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(2), "alerts.tik"), "{e}");
        assert!(e.message.contains("unknown field `tik`"), "{e}");

        let e = parse("[blocking]\nallow = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");

        let e = parse("[routes]\n\"/v2/login\" = \"logon\"\n").unwrap_err();
        assert!(e.message.contains("unknown operation"), "{e}");
    }

    #[test]
    fn the_guide_and_module_examples_are_valid_files() {
        let guide = include_str!("../docs/guide/configuration.md");
        let section = &guide[guide.find("## The file").unwrap()..];
        let block = section
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .unwrap();
        let l = parse(block).unwrap();
        assert_eq!(l.file.routes.len(), 2);
        assert!(l.file.crowdsec.is_some() && l.file.fleet.is_some());
        let doc: String = include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        parse(&doc).unwrap();
    }

    #[test]
    fn the_effective_configuration_has_every_default_and_reads_back() {
        let d = defaults();
        assert_eq!(d.alerts.rules.len(), AlertConfig::new().rule_set().len());
        let text = d.to_toml();
        assert!(
            text.contains("[alerts.rules.AuthLoginFailureRateHigh]"),
            "{text}"
        );
        let back = parse(&text).unwrap();
        assert_eq!(back.effective(), d);
    }
}
