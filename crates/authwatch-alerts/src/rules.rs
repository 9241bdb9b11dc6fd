//! Alert rules: what is measured, the threshold, the window, and where the alert goes.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use authwatch_layer::AuthOp;

/// How bad it is. Alertmanager routes on the `severity` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Severity {
    /// Someone acts now.
    Critical,
    /// Someone looks during working hours.
    Warning,
    /// For the record.
    Info,
}

impl Severity {
    /// `critical`, `warning`, `info`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a notification goes, as the spec's alert table says, plus the security team for the
/// attacks (the spec's incident response, step 4). It becomes the `notify` label (`page`,
/// `slack`, `email`, `security`, joined with `+`); the generated Alertmanager config routes on
/// it, and in-process each channel can have a webhook of its own
/// ([`AlertConfig::webhook_for`](crate::AlertConfig::webhook_for)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Channel {
    /// Page the on-call engineer.
    Page,
    /// A Slack channel.
    Slack,
    /// E-mail.
    Email,
    /// The security team: the attack alerts ([`SECURITY_ALERTS`]).
    Security,
}

impl Channel {
    /// `page`, `slack`, `email`, `security`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Page => "page",
            Self::Slack => "slack",
            Self::Email => "email",
            Self::Security => "security",
        }
    }

    /// Every channel.
    pub const ALL: [Self; 4] = [Self::Page, Self::Slack, Self::Email, Self::Security];
}

/// A count the engine keeps per operation over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// Successes of the operation.
    Success(AuthOp),
    /// Failures of the operation (refusals and server errors).
    Failure(AuthOp),
    /// Attempts of the operation: successes plus failures.
    Attempts(AuthOp),
    /// Rate-limited requests (429, gRPC `RESOURCE_EXHAUSTED`), every operation.
    RateLimited,
    /// Invalid-token attempts, every operation and the token guards.
    InvalidToken,
    /// Account lockouts (423, `Outcome::Failure(LockedOut)`), every operation.
    Lockout,
}

impl Signal {
    /// How logs, descriptions and generated rules name it: `login failures`,
    /// `rate-limit events`.
    #[must_use]
    pub fn describe(self) -> String {
        match self {
            Self::Success(op) => format!("{} successes", op.as_str()),
            Self::Failure(op) => format!("{} failures", op.as_str()),
            Self::Attempts(op) => format!("{} attempts", op.as_str()),
            Self::RateLimited => "rate-limit events".into(),
            Self::InvalidToken => "invalid-token attempts".into(),
            Self::Lockout => "account lockouts".into(),
        }
    }
}

/// What a rule measures and when it holds.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RuleKind {
    /// `failures / (successes + failures)` of `op` over `window` is above `above`, and at least
    /// `min_requests` attempts were made (so 1 failure out of 2 requests pages nobody).
    FailureRatio {
        /// The operation.
        op: AuthOp,
        /// The window.
        window: Duration,
        /// The ratio (0.2 for 20 %), strictly exceeded.
        above: f64,
        /// The minimum number of attempts in the window.
        min_requests: u64,
    },
    /// `signal` over `window` counts more than `above`.
    Count {
        /// What is counted.
        signal: Signal,
        /// The window.
        window: Duration,
        /// The count, strictly exceeded.
        above: u64,
    },
    /// The `quantile` of `op`'s response time over the HDR window is above `above`, with at
    /// least `min_requests` requests in that window. One alert per operation (label
    /// `auth_operation`).
    Percentile {
        /// The operation; `None` checks every operation.
        op: Option<AuthOp>,
        /// The quantile (0.95).
        quantile: f64,
        /// The latency, strictly exceeded.
        above: Duration,
        /// The minimum number of requests in the window.
        min_requests: u64,
    },
    /// The mean latency of `op` over `window` is above `above` (for token validation: routes and
    /// token guards), with at least `min_requests` measured.
    Mean {
        /// The operation.
        op: AuthOp,
        /// The window.
        window: Duration,
        /// The mean, strictly exceeded.
        above: Duration,
        /// The minimum number of measurements in the window.
        min_requests: u64,
    },
    /// `signal` over `window` is at least `factor` times its baseline: its average per
    /// `window` over the `baseline` before the window. Needs at least `min_count` in the window
    /// (a quiet night pages nobody) and a window's worth of history before it.
    Spike {
        /// What is counted.
        signal: Signal,
        /// The window.
        window: Duration,
        /// How far back the baseline reaches, before the window.
        baseline: Duration,
        /// The factor (3.0 for "200 % above", 5.0 for "5×"), reached or exceeded.
        factor: f64,
        /// The minimum count in the window.
        min_count: u64,
    },
    /// One client IP has more than `above` failures in the brute-force detector's window. One
    /// alert per address (label `client_ip`); the window and memory are
    /// [`BruteForceConfig`](crate::BruteForceConfig)'s.
    PerIpFailures {
        /// Failures from one address, strictly exceeded.
        above: u64,
    },
    /// One route has failures from at least `min_ips` distinct client IPs and at least
    /// `min_failures` failures in the detector's window: an attack spread thin enough that no
    /// single address crosses the per-IP threshold. One alert per route (label `http_route`).
    Distributed {
        /// Distinct failing addresses on the route, reached or exceeded.
        min_ips: u64,
        /// Failures on the route, reached or exceeded.
        min_failures: u64,
    },
    /// One client address failed logins on at least `accounts` distinct accounts in the
    /// account detector's window (password spraying). One alert per address (label
    /// `client_ip`); fed by the application's login failures
    /// ([`AlertEngine::record_account_failure`](crate::AlertEngine::record_account_failure)), the
    /// window and memory are [`AccountConfig`](crate::AccountConfig)'s.
    PerIpAccounts {
        /// Distinct accounts, reached or exceeded.
        accounts: u64,
    },
    /// One account has more than `above` failed logins in the account detector's window, from
    /// any addresses. One alert per account (label `user_id`).
    PerAccountFailures {
        /// Failed logins of one account, strictly exceeded.
        above: u64,
    },
    /// One account failed from at least `addresses` distinct client addresses in the account
    /// detector's window. One alert per account (label `user_id`).
    PerAccountAddresses {
        /// Distinct client addresses, reached or exceeded.
        addresses: u64,
    },
    /// Credential stuffing: the distinct accounts with a failed login in the account
    /// detector's window are at least `factor` times their baseline (their average per window
    /// over the [`AccountConfig::baseline`](crate::AccountConfig::baseline) before it) and at
    /// least `min_accounts`, while the login failure ratio over the window is above
    /// `failure_ratio`.
    CredentialStuffing {
        /// The factor over the baseline, reached or exceeded.
        factor: f64,
        /// Distinct failing accounts, reached or exceeded.
        min_accounts: u64,
        /// The login failure ratio over the window, strictly exceeded.
        failure_ratio: f64,
    },
    /// The health checks failed (`/auth/health` would answer 503) in more than `above`
    /// consecutive runs.
    HealthFailures {
        /// Consecutive failed runs, strictly exceeded.
        above: u32,
    },
}

/// One alert rule.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Rule {
    /// The alert name (`alertname`), e.g. `AuthLoginFailureRateHigh`.
    pub name: Cow<'static, str>,
    /// The severity.
    pub severity: Severity,
    /// What it measures.
    pub kind: RuleKind,
    /// How long the condition must hold before the alert fires (pending until then).
    pub for_: Duration,
    /// Where it goes.
    pub channels: Vec<Channel>,
    /// One line: what is wrong.
    pub summary: Cow<'static, str>,
    /// The alerts one of which inhibits the others in Alertmanager (a critical and its warning
    /// share a group).
    pub group: Cow<'static, str>,
    /// Off rules are kept (and generated commented out of nothing) but never evaluated.
    pub enabled: bool,
}

impl Rule {
    /// A rule, enabled, firing as soon as its condition holds, sent to Slack.
    #[must_use]
    pub fn new(name: impl Into<Cow<'static, str>>, severity: Severity, kind: RuleKind) -> Self {
        let name = name.into();
        Self {
            group: name.clone(),
            summary: name.clone(),
            name,
            severity,
            kind,
            for_: Duration::ZERO,
            channels: vec![Channel::Slack],
            enabled: true,
        }
    }

    /// How long the condition must hold before it fires.
    #[must_use]
    pub fn for_duration(mut self, d: Duration) -> Self {
        self.for_ = d;
        self
    }

    /// Where it goes.
    #[must_use]
    pub fn channels(mut self, channels: &[Channel]) -> Self {
        self.channels = channels.to_vec();
        self
    }

    /// The one-line summary.
    #[must_use]
    pub fn summary(mut self, summary: impl Into<Cow<'static, str>>) -> Self {
        self.summary = summary.into();
        self
    }

    /// The inhibition group.
    #[must_use]
    pub fn group(mut self, group: impl Into<Cow<'static, str>>) -> Self {
        self.group = group.into();
        self
    }

    /// The `notify` label: the channels joined with `+` (`slack+email`).
    #[must_use]
    pub fn notify_label(&self) -> String {
        self.channels
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join("+")
    }

    /// The anchor of the rule's section in `docs/runbooks.md` (the lower-cased name).
    #[must_use]
    pub fn runbook_anchor(&self) -> String {
        self.name.to_ascii_lowercase()
    }
}

const MIN: Duration = Duration::from_secs(60);

const fn mins(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

/// The names of the spec's 14 alerts, in the order of the spec's table. They are the contract
/// between the in-process engine, the generated Prometheus rules, the runbooks and the
/// dashboards.
pub const SPEC_ALERTS: [&str; 14] = [
    "AuthServiceDown",
    "AuthLoginFailureRateHigh",
    "AuthLoginFailureRateElevated",
    "AuthRegistrationFailureRateHigh",
    "AuthTokenValidationFailureRateHigh",
    "AuthResponseTimeP95Critical",
    "AuthResponseTimeP95High",
    "AuthTokenValidationSlow",
    "AuthTokenValidationDegraded",
    "AuthBruteForceSuspected",
    "AuthRateLimitEvents",
    "AuthRateLimitUnderAttack",
    "AuthInvalidTokenSpike",
    "AuthRegistrationSpike",
];

/// The account-level alerts: they read the login failures the application reports through
/// its audit logger (who, from where), which the layer cannot see.
pub const ACCOUNT_ALERTS: [&str; 4] = [
    "AuthPasswordSpraying",
    "AuthAccountBruteForce",
    "AuthAccountDistributedAttack",
    "AuthCredentialStuffing",
];

/// The default rule set: the spec's 14 alerts ([`SPEC_ALERTS`]) plus six of authwatch's own:
/// `AuthDistributedBruteForce` (failures from many addresses against one route),
/// `AuthLockoutSpike` (account lockouts 3× their baseline), and the account-level rules
/// [`ACCOUNT_ALERTS`] (password spraying, an account under attack by count or from many
/// addresses, credential stuffing), which read the login failures the application reports.
///
/// Minimum volumes: 20 attempts for the failure ratios, 10 requests for the latency rules,
/// 20 events for the spikes. Windows and thresholds are the spec's.
#[must_use]
pub fn default_rules() -> Vec<Rule> {
    use Channel::{Email, Page, Slack};
    use Severity::{Critical, Warning};
    let ratio = |op, above| RuleKind::FailureRatio {
        op,
        window: mins(5),
        above,
        min_requests: 20,
    };
    let p95 = |ms| RuleKind::Percentile {
        op: None,
        quantile: 0.95,
        above: Duration::from_millis(ms),
        min_requests: 10,
    };
    let mean = |ms| RuleKind::Mean {
        op: AuthOp::TokenValidation,
        window: mins(5),
        above: Duration::from_millis(ms),
        min_requests: 10,
    };
    let rate_limited = |above| RuleKind::Count {
        signal: Signal::RateLimited,
        window: MIN,
        above,
    };
    let mut rules = vec![
        Rule::new(
            "AuthServiceDown",
            Critical,
            RuleKind::HealthFailures { above: 2 },
        )
        .channels(&[Page])
        .summary("The auth service's health check failed more than 2 consecutive times"),
        Rule::new(
            "AuthLoginFailureRateHigh",
            Critical,
            ratio(AuthOp::Login, 0.20),
        )
        .channels(&[Slack, Email])
        .group("AuthLoginFailureRate")
        .summary("Login failure rate above 20% over 5 minutes"),
        Rule::new(
            "AuthLoginFailureRateElevated",
            Warning,
            ratio(AuthOp::Login, 0.10),
        )
        .group("AuthLoginFailureRate")
        .summary("Login failure rate above 10% over 5 minutes"),
        Rule::new(
            "AuthRegistrationFailureRateHigh",
            Warning,
            ratio(AuthOp::Registration, 0.10),
        )
        .summary("Registration failure rate above 10% over 5 minutes"),
        Rule::new(
            "AuthTokenValidationFailureRateHigh",
            Warning,
            ratio(AuthOp::TokenValidation, 0.05),
        )
        .summary("Token validation failure rate above 5% over 5 minutes"),
        Rule::new("AuthResponseTimeP95Critical", Critical, p95(1000))
            .group("AuthResponseTimeP95")
            .summary("p95 response time of an auth operation above 1000 ms"),
        Rule::new("AuthResponseTimeP95High", Warning, p95(500))
            .group("AuthResponseTimeP95")
            .summary("p95 response time of an auth operation above 500 ms"),
        Rule::new("AuthTokenValidationSlow", Critical, mean(100))
            .channels(&[Email])
            .group("AuthTokenValidationTime")
            .summary("Mean token validation time above 100 ms over 5 minutes"),
        Rule::new("AuthTokenValidationDegraded", Warning, mean(50))
            .channels(&[Email])
            .group("AuthTokenValidationTime")
            .summary("Mean token validation time above 50 ms over 5 minutes"),
        Rule::new(
            "AuthBruteForceSuspected",
            Critical,
            RuleKind::PerIpFailures { above: 50 },
        )
        .summary("More than 50 failed auth attempts from one IP in 10 minutes"),
        Rule::new("AuthRateLimitEvents", Warning, rate_limited(10))
            .group("AuthRateLimit")
            .summary("More than 10 rate-limit events in 1 minute"),
        Rule::new("AuthRateLimitUnderAttack", Critical, rate_limited(100))
            .group("AuthRateLimit")
            .summary("More than 100 rate-limit events in 1 minute"),
        Rule::new(
            "AuthInvalidTokenSpike",
            Warning,
            RuleKind::Spike {
                signal: Signal::InvalidToken,
                window: mins(5),
                baseline: mins(60),
                factor: 3.0,
                min_count: 20,
            },
        )
        .summary("Invalid-token attempts more than 200% above their baseline"),
        Rule::new(
            "AuthRegistrationSpike",
            Warning,
            RuleKind::Spike {
                signal: Signal::Attempts(AuthOp::Registration),
                window: mins(10),
                baseline: mins(60),
                factor: 5.0,
                min_count: 20,
            },
        )
        .channels(&[Email])
        .summary("Registrations at 5 times their baseline over 10 minutes"),
        Rule::new(
            "AuthDistributedBruteForce",
            Critical,
            RuleKind::Distributed {
                min_ips: 50,
                min_failures: 100,
            },
        )
        .summary("Failed auth attempts against one route from 50 or more IPs in 10 minutes"),
        Rule::new(
            "AuthLockoutSpike",
            Warning,
            RuleKind::Spike {
                signal: Signal::Lockout,
                window: mins(10),
                baseline: mins(60),
                factor: 3.0,
                min_count: 10,
            },
        )
        .summary("Account lockouts at 3 times their baseline over 10 minutes"),
        Rule::new(
            "AuthPasswordSpraying",
            Critical,
            RuleKind::PerIpAccounts { accounts: 20 },
        )
        .summary("One IP failed logins on 20 or more accounts in 10 minutes"),
        Rule::new(
            "AuthAccountBruteForce",
            Critical,
            RuleKind::PerAccountFailures { above: 20 },
        )
        .summary("More than 20 failed logins for one account in 10 minutes"),
        Rule::new(
            "AuthAccountDistributedAttack",
            Critical,
            RuleKind::PerAccountAddresses { addresses: 10 },
        )
        .summary("One account failed logins from 10 or more IPs in 10 minutes"),
        Rule::new(
            "AuthCredentialStuffing",
            Critical,
            RuleKind::CredentialStuffing {
                factor: 5.0,
                min_accounts: 50,
                failure_ratio: 0.5,
            },
        )
        .summary("Failing accounts at 5 times their baseline, with most logins failing"),
    ];
    // The attacks also go to the security team.
    for r in &mut rules {
        if SECURITY_ALERTS.contains(&&*r.name) {
            r.channels.push(Channel::Security);
        }
    }
    rules
}

/// The attack alerts, which also notify the security team ([`Channel::Security`]): their
/// `notify` label ends in `+security`.
pub const SECURITY_ALERTS: [&str; 8] = [
    "AuthBruteForceSuspected",
    "AuthRateLimitUnderAttack",
    "AuthInvalidTokenSpike",
    "AuthDistributedBruteForce",
    "AuthPasswordSpraying",
    "AuthAccountBruteForce",
    "AuthAccountDistributedAttack",
    "AuthCredentialStuffing",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_hold_the_spec_names_once_each() {
        let rules = default_rules();
        for name in SPEC_ALERTS.iter().chain(&ACCOUNT_ALERTS) {
            assert_eq!(
                rules.iter().filter(|r| r.name == *name).count(),
                1,
                "{name}"
            );
        }
        let mut names: Vec<_> = rules.iter().map(|r| r.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), rules.len());
    }
}
