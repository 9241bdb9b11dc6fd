//! What the engine reports: [`Alert`], its [`AlertState`], and the [`AlertEvent`] of a change.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use crate::rules::Severity;

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
