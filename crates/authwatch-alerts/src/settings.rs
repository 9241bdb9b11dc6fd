//! One rule's settings under uniform names, whatever its kind: a threshold in the rule's own
//! unit, its window, its minimum volume, its baseline. A configuration file (`authwatch.toml`'s
//! `[alerts.rules.NAME]`) reads and writes rules through these.

use std::str::FromStr;
use std::time::Duration;

use crate::rules::{Channel, Rule, RuleKind, Severity};

/// The unit of a rule's [`threshold`](Rule::threshold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ThresholdUnit {
    /// A ratio between 0 and 1 (0.2 for 20 %).
    Ratio,
    /// Milliseconds.
    Milliseconds,
    /// A whole count.
    Count,
    /// A multiple of a baseline (5 for 5×).
    Multiple,
}

impl ThresholdUnit {
    /// `ratio`, `milliseconds`, `count`, `multiple`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ratio => "ratio",
            Self::Milliseconds => "milliseconds",
            Self::Count => "count",
            Self::Multiple => "multiple",
        }
    }
}

/// Why a setting does not fit a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError(pub String);

impl std::fmt::Display for SettingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SettingError {}

fn err<T>(s: impl Into<String>) -> Result<T, SettingError> {
    Err(SettingError(s.into()))
}

impl Rule {
    /// The rule's threshold in its own [`unit`](Self::threshold_unit): the ratio of a failure
    /// ratio rule, the milliseconds of a latency rule, the count of a count or per-address rule,
    /// the multiple of a spike.
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn threshold(&self) -> f64 {
        match &self.kind {
            RuleKind::FailureRatio { above, .. } => *above,
            RuleKind::Count { above, .. }
            | RuleKind::PerIpFailures { above }
            | RuleKind::PerAccountFailures { above } => *above as f64,
            RuleKind::Percentile { above, .. } | RuleKind::Mean { above, .. } => {
                above.as_secs_f64() * 1000.0
            }
            RuleKind::Spike { factor, .. } | RuleKind::CredentialStuffing { factor, .. } => *factor,
            RuleKind::Distributed { min_ips, .. } => *min_ips as f64,
            RuleKind::PerIpAccounts { accounts } => *accounts as f64,
            RuleKind::PerAccountAddresses { addresses } => *addresses as f64,
            RuleKind::HealthFailures { above } => f64::from(*above),
        }
    }

    /// The unit of [`threshold`](Self::threshold).
    #[must_use]
    pub fn threshold_unit(&self) -> ThresholdUnit {
        match &self.kind {
            RuleKind::FailureRatio { .. } => ThresholdUnit::Ratio,
            RuleKind::Percentile { .. } | RuleKind::Mean { .. } => ThresholdUnit::Milliseconds,
            RuleKind::Spike { .. } | RuleKind::CredentialStuffing { .. } => ThresholdUnit::Multiple,
            _ => ThresholdUnit::Count,
        }
    }

    /// Sets the [`threshold`](Self::threshold): a ratio within 0–1, milliseconds and
    /// multiples above zero, counts whole and not negative.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::float_cmp
    )]
    pub fn set_threshold(&mut self, v: f64) -> Result<(), SettingError> {
        if !v.is_finite() {
            return err(format!("the threshold must be a number, not {v}"));
        }
        let unit = self.threshold_unit();
        match unit {
            ThresholdUnit::Ratio if !(0.0..=1.0).contains(&v) => {
                return err(format!(
                    "the threshold is a ratio between 0 and 1 (0.2 for 20 %), not {v}"
                ))
            }
            ThresholdUnit::Milliseconds | ThresholdUnit::Multiple if v <= 0.0 => {
                return err(format!(
                    "the threshold is {} above zero, not {v}",
                    if unit == ThresholdUnit::Multiple {
                        "a multiple"
                    } else {
                        "a latency in milliseconds"
                    }
                ))
            }
            ThresholdUnit::Count if v < 0.0 || v.fract() != 0.0 || v > u32::MAX as f64 => {
                return err(format!("the threshold is a whole count, not {v}"))
            }
            _ => {}
        }
        let n = v as u64;
        let ms = Duration::from_secs_f64(v / 1000.0);
        match &mut self.kind {
            RuleKind::FailureRatio { above, .. } => *above = v,
            RuleKind::Count { above, .. }
            | RuleKind::PerIpFailures { above }
            | RuleKind::PerAccountFailures { above } => *above = n,
            RuleKind::Percentile { above, .. } | RuleKind::Mean { above, .. } => *above = ms,
            RuleKind::Spike { factor, .. } | RuleKind::CredentialStuffing { factor, .. } => {
                *factor = v;
            }
            RuleKind::Distributed { min_ips, .. } => *min_ips = n,
            RuleKind::PerIpAccounts { accounts } => *accounts = n,
            RuleKind::PerAccountAddresses { addresses } => *addresses = n,
            RuleKind::HealthFailures { above } => *above = n as u32,
        }
        Ok(())
    }

    /// The rule's own window; `None` for the rules that read a detector's window (brute
    /// force, accounts), the latency histograms' window, or consecutive health checks.
    #[must_use]
    pub fn window(&self) -> Option<Duration> {
        match &self.kind {
            RuleKind::FailureRatio { window, .. }
            | RuleKind::Count { window, .. }
            | RuleKind::Mean { window, .. }
            | RuleKind::Spike { window, .. } => Some(*window),
            _ => None,
        }
    }

    /// Sets the rule's own [`window`](Self::window) (at least a second).
    pub fn set_window(&mut self, d: Duration) -> Result<(), SettingError> {
        if d < Duration::from_secs(1) {
            return err(format!(
                "the window must be at least 1s, not {}",
                humantime::format_duration(d)
            ));
        }
        match &mut self.kind {
            RuleKind::FailureRatio { window, .. }
            | RuleKind::Count { window, .. }
            | RuleKind::Mean { window, .. }
            | RuleKind::Spike { window, .. } => {
                *window = d;
                Ok(())
            }
            RuleKind::Percentile { .. } => err(
                "this rule reads the latency histograms' window (the builder's `window`), it has none of its own",
            ),
            RuleKind::PerIpFailures { .. } | RuleKind::Distributed { .. } => err(
                "this rule reads the brute-force detector's window: set `[alerts.brute_force] window`",
            ),
            RuleKind::PerIpAccounts { .. }
            | RuleKind::PerAccountFailures { .. }
            | RuleKind::PerAccountAddresses { .. }
            | RuleKind::CredentialStuffing { .. } => err(
                "this rule reads the account detector's window: set `[alerts.accounts] window`",
            ),
            RuleKind::HealthFailures { .. } => {
                err("this rule counts consecutive health checks, it has no window")
            }
        }
    }

    /// The least volume before the rule can hold: attempts, requests, events, failures or
    /// accounts in the window; `None` for the rules without one.
    #[must_use]
    pub fn min_events(&self) -> Option<u64> {
        match &self.kind {
            RuleKind::FailureRatio { min_requests, .. }
            | RuleKind::Percentile { min_requests, .. }
            | RuleKind::Mean { min_requests, .. } => Some(*min_requests),
            RuleKind::Spike { min_count, .. } => Some(*min_count),
            RuleKind::Distributed { min_failures, .. } => Some(*min_failures),
            RuleKind::CredentialStuffing { min_accounts, .. } => Some(*min_accounts),
            _ => None,
        }
    }

    /// Sets [`min_events`](Self::min_events).
    pub fn set_min_events(&mut self, n: u64) -> Result<(), SettingError> {
        match &mut self.kind {
            RuleKind::FailureRatio { min_requests, .. }
            | RuleKind::Percentile { min_requests, .. }
            | RuleKind::Mean { min_requests, .. } => *min_requests = n,
            RuleKind::Spike { min_count, .. } => *min_count = n,
            RuleKind::Distributed { min_failures, .. } => *min_failures = n,
            RuleKind::CredentialStuffing { min_accounts, .. } => *min_accounts = n,
            _ => return err("this rule has no minimum volume: its threshold is the count"),
        }
        Ok(())
    }

    /// How far back a spike's baseline reaches before its window; `None` for other rules.
    #[must_use]
    pub fn baseline(&self) -> Option<Duration> {
        match &self.kind {
            RuleKind::Spike { baseline, .. } => Some(*baseline),
            _ => None,
        }
    }

    /// Sets a spike's [`baseline`](Self::baseline) (at least its window).
    pub fn set_baseline(&mut self, d: Duration) -> Result<(), SettingError> {
        match &mut self.kind {
            RuleKind::Spike {
                baseline, window, ..
            } => {
                if d < *window {
                    return err(format!(
                        "the baseline must reach at least the window ({}), not {}",
                        humantime::format_duration(*window),
                        humantime::format_duration(d)
                    ));
                }
                *baseline = d;
                Ok(())
            }
            RuleKind::CredentialStuffing { .. } => err(
                "this rule's baseline is the account detector's: set `[alerts.accounts] baseline`",
            ),
            _ => err("only a spike rule has a baseline"),
        }
    }
}

impl FromStr for Severity {
    type Err = SettingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "critical" => Ok(Self::Critical),
            "warning" => Ok(Self::Warning),
            "info" => Ok(Self::Info),
            _ => err(format!("unknown severity {s:?}: critical, warning or info")),
        }
    }
}

impl FromStr for Channel {
    type Err = SettingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                SettingError(format!(
                    "unknown channel {s:?}: page, slack, email or security"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::default_rules;

    fn rule(name: &str) -> Rule {
        default_rules()
            .into_iter()
            .find(|r| r.name == name)
            .unwrap()
    }

    #[test]
    fn every_default_rule_reads_back_what_is_set() {
        for mut r in default_rules() {
            let t = match r.threshold_unit() {
                ThresholdUnit::Ratio => 0.33,
                ThresholdUnit::Milliseconds => 250.0,
                ThresholdUnit::Count => 7.0,
                ThresholdUnit::Multiple => 4.5,
            };
            r.set_threshold(t).unwrap();
            assert!((r.threshold() - t).abs() < 1e-9, "{}", r.name);
            if r.window().is_some() {
                r.set_window(Duration::from_secs(420)).unwrap();
                assert_eq!(r.window(), Some(Duration::from_secs(420)));
            } else {
                assert!(
                    r.set_window(Duration::from_secs(420)).is_err(),
                    "{}",
                    r.name
                );
            }
            if r.min_events().is_some() {
                r.set_min_events(9).unwrap();
                assert_eq!(r.min_events(), Some(9));
            }
        }
    }

    #[test]
    fn a_setting_that_cannot_fit_says_why() {
        let mut r = rule("AuthLoginFailureRateHigh");
        assert!(r.set_threshold(1.5).unwrap_err().0.contains("ratio"));
        assert!(r
            .set_window(Duration::ZERO)
            .unwrap_err()
            .0
            .contains("at least 1s"));
        let mut r = rule("AuthBruteForceSuspected");
        assert!(r.set_threshold(2.5).unwrap_err().0.contains("whole count"));
        assert!(r
            .set_window(Duration::from_secs(60))
            .unwrap_err()
            .0
            .contains("brute_force"));
        assert!(r.set_min_events(3).is_err());
        let mut r = rule("AuthResponseTimeP95High");
        assert!(r.set_threshold(0.0).unwrap_err().0.contains("milliseconds"));
        r.set_threshold(750.0).unwrap();
        assert!(
            matches!(r.kind, RuleKind::Percentile { above, .. } if above == Duration::from_millis(750))
        );
        let mut r = rule("AuthRegistrationSpike");
        assert!(r.set_baseline(Duration::from_secs(1)).is_err());
        assert_eq!("warning".parse::<Severity>(), Ok(Severity::Warning));
        assert!("loud".parse::<Severity>().is_err());
        assert_eq!("security".parse::<Channel>(), Ok(Channel::Security));
    }
}
