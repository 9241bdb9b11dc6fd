//! Alerting: the rules, the engine that evaluates them in-process, brute-force detection, the
//! notifiers, and the generators of Prometheus rules, Alertmanager config and Grafana
//! dashboards.
//!
//! [`AuthWatchBuilder::alerts`](crate::AuthWatchBuilder::alerts) takes an [`AlertConfig`];
//! [`Snapshot::alerts`](crate::Snapshot::alerts) lists what is firing.
//!
//! ```
//! use std::time::Duration;
//! use authwatch::alerts::{
//!     default_rules, AccountConfig, AlertConfig, BruteForceConfig, ACCOUNT_ALERTS, SPEC_ALERTS,
//! };
//!
//! let config = AlertConfig::new()
//!     .tick(Duration::from_secs(1))
//!     .brute_force(BruteForceConfig::default().window(Duration::from_secs(600)))
//!     .accounts(AccountConfig::default().window(Duration::from_secs(900)))
//!     .disable("AuthRegistrationSpike");
//! // The spec's 14, two of authwatch's own, and the 4 account-level rules.
//! assert_eq!(default_rules().len(), SPEC_ALERTS.len() + 2 + ACCOUNT_ALERTS.len());
//! # drop(config);
//! ```

pub use authwatch_alerts::generate;
pub use authwatch_alerts::{
    default_rules, mask_ip, AccountConfig, AccountDetections, AccountLevels, AccountRun,
    AccountUnderAttack, Alert, AlertConfig, AlertEngine, AlertEvent, AlertState, BruteForceConfig,
    Channel, Clock, Detections, FailureOutbox, FailureRun, ManualClock, NotifierStats, NotifyGate,
    QuantileSource, Reloaded, RouteFailures, Rule, RuleKind, SettingError, Severity,
    SharedDetections, Signal, SprayingClient, Suspect, SystemClock, ThresholdUnit, ACCOUNT_ALERTS,
    DEFAULT_RUNBOOKS, SPEC_ALERTS,
};
