//! A reload takes new thresholds and switches rules off without losing what was counted or the
//! alerts' states: a firing alert whose new threshold no longer holds resolves at the next
//! evaluation; one still over it goes on firing without a second "fired".

use std::sync::Arc;
use std::time::{Duration, Instant};

use authwatch_alerts::{AlertConfig, AlertEngine, AlertState, ManualClock};
use authwatch_layer::{AuthEvent, AuthOp, EventSink, FailureReason, Outcome};

fn login(ok: bool) -> AuthEvent<'static> {
    AuthEvent::new(
        AuthOp::Login,
        if ok {
            Outcome::Success
        } else {
            Outcome::Failure(FailureReason::InvalidCredentials)
        },
        Duration::from_millis(2),
        Instant::now(),
    )
}

fn firing(e: &AlertEngine, name: &str) -> bool {
    e.firing().iter().any(|a| a.name == name)
}

#[test]
fn a_reload_changes_thresholds_and_keeps_counts_and_states() {
    let clock = Arc::new(ManualClock::new());
    let base = AlertConfig::new().tick(Duration::ZERO).clock(clock.clone());
    let engine = AlertEngine::new(base.clone());
    // 30 % of 100 logins fail: over the default 20 % (AuthLoginFailureRateHigh) and 10 %.
    for i in 0..100 {
        engine.record(&login(i % 10 >= 3));
    }
    clock.advance(Duration::from_secs(5));
    engine.evaluate();
    assert!(firing(&engine, "AuthLoginFailureRateHigh"));
    assert!(firing(&engine, "AuthLoginFailureRateElevated"));

    // The critical's threshold raised over the traffic's 30 %, the warning's lowered (still
    // held), and AuthServiceDown switched off.
    let next = base
        .clone()
        .configure("AuthLoginFailureRateHigh", |r| {
            r.set_threshold(0.5).unwrap()
        })
        .configure("AuthLoginFailureRateElevated", |r| {
            r.set_threshold(0.05).unwrap();
        })
        .disable("AuthServiceDown");
    let done = engine.reload(&next);
    assert_eq!(
        done.rules_changed,
        [
            "AuthServiceDown",
            "AuthLoginFailureRateHigh",
            "AuthLoginFailureRateElevated"
        ]
    );
    assert!(
        !done.notifiers_changed && done.needs_restart.is_empty(),
        "{done:?}"
    );
    let rules = engine.rules();
    let high = rules
        .iter()
        .find(|r| r.name == "AuthLoginFailureRateHigh")
        .unwrap();
    assert!((high.threshold() - 0.5).abs() < 1e-9);
    assert!(
        !rules
            .iter()
            .find(|r| r.name == "AuthServiceDown")
            .unwrap()
            .enabled
    );

    clock.advance(Duration::from_secs(5));
    let events = engine.evaluate();
    // The counts survived (the window still holds the 30 failures): the warning goes on
    // firing, with no new "fired"; the critical resolves.
    assert!(firing(&engine, "AuthLoginFailureRateElevated"));
    assert!(!firing(&engine, "AuthLoginFailureRateHigh"));
    let resolved: Vec<_> = events
        .iter()
        .filter(|e| e.alert.state == AlertState::Resolved)
        .map(|e| e.alert.name.as_str())
        .collect();
    assert_eq!(resolved, ["AuthLoginFailureRateHigh"], "{events:?}");
    assert!(
        !events.iter().any(|e| e.alert.state == AlertState::Firing),
        "{events:?}"
    );

    // Back to the defaults: it fires again from the same counts.
    engine.reload(&base);
    clock.advance(Duration::from_secs(5));
    engine.evaluate();
    assert!(firing(&engine, "AuthLoginFailureRateHigh"));

    // Settings a running engine cannot take are named.
    let done = engine.reload(&base.clone().tick(Duration::from_secs(1)));
    assert_eq!(done.needs_restart, ["tick"]);
}
