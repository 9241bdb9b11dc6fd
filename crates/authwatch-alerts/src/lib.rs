//! Alerts for authwatch: the spec's alert rules evaluated in-process, brute-force detection in
//! bounded memory, notifications to the log, Alertmanager and a Slack-compatible webhook, and
//! generators of the matching Prometheus rules, Alertmanager config and Grafana dashboards.
//!
//! The [`AlertEngine`] is an [`EventSink`](authwatch_layer::EventSink): the layer hands it
//! every finished auth request, which it counts in per-thread atomics (and, for failures with a
//! client address, in the [brute-force detector](detector)). Rules are evaluated on the engine's
//! own thread every tick (5 s by default), never on a request. The default rules
//! ([`default_rules`]) are the spec's 14 alerts ([`SPEC_ALERTS`]) plus
//! `AuthDistributedBruteForce`, `AuthLockoutSpike` and the four account-level rules
//! ([`ACCOUNT_ALERTS`]: password spraying, an account brute-forced or attacked from many
//! addresses, credential stuffing), which read the login failures the application reports.
//!
//! The facade crate `authwatch` wires all this up (`AuthWatch::builder().alerts(…)`); used alone:
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use authwatch_alerts::{AlertConfig, AlertEngine, ManualClock};
//! use authwatch_layer::{AuthEvent, AuthOp, EventSink, FailureReason, Outcome};
//!
//! let clock = Arc::new(ManualClock::new());
//! let engine = AlertEngine::new(
//!     AlertConfig::new()
//!         .tick(Duration::ZERO) // evaluate on demand only
//!         .clock(clock.clone()),
//! );
//! let attacker = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
//! for _ in 0..51 {
//!     let e = AuthEvent::new(
//!         AuthOp::Login,
//!         Outcome::Failure(FailureReason::InvalidCredentials),
//!         Duration::from_millis(3),
//!         Instant::now(),
//!     )
//!     .with_route("/api/auth/sign-in/email")
//!     .with_client_ip(Some(attacker));
//!     engine.record(&e);
//! }
//! clock.advance(Duration::from_secs(5));
//! engine.evaluate();
//! let firing = engine.firing();
//! let brute = firing.iter().find(|a| a.name == "AuthBruteForceSuspected").unwrap();
//! assert_eq!(brute.labels["client_ip"], "203.0.113.7");
//! // 51 failures out of 51 logins: the failure-rate alerts fire too.
//! assert!(firing.iter().any(|a| a.name == "AuthLoginFailureRateHigh"));
//!
//! // The same rules for Prometheus, and the Alertmanager config that routes them.
//! let rules = authwatch_alerts::generate::prometheus_rules_yaml(
//!     engine.config().rule_set(),
//!     "https://runbooks.example/auth",
//! );
//! assert!(rules.contains("alert: AuthBruteForceSuspected"));
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod accounts;
mod clock;
pub mod detector;
mod engine;
pub mod generate;
mod notify;
mod rules;
mod settings;

pub use accounts::{
    AccountConfig, AccountDetections, AccountLevels, AccountUnderAttack, SprayingClient,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use detector::{BruteForceConfig, RouteFailures, Suspect};
pub use engine::{
    mask_ip, AccountRun, Alert, AlertConfig, AlertEngine, AlertEvent, AlertState, CountSource,
    Detections, FailureOutbox, FailureRun, NotifyGate, QuantileSource, Reloaded, RequestCounts,
    SharedDetections, DEFAULT_RUNBOOKS,
};
pub use notify::{alertmanager_alert, slack_message, NotifierStats};
pub use rules::{
    default_rules, Channel, Rule, RuleKind, Severity, Signal, ACCOUNT_ALERTS, SECURITY_ALERTS,
    SPEC_ALERTS,
};
pub use settings::{SettingError, ThresholdUnit};
