//! The layer's records end to end: the sink, the thread shards and the worker's wake-ups.

use std::sync::atomic::Ordering;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Duration;

use authwatch_layer::{AuthEvent, AuthOp, EventSink, FailureReason, Outcome};

use super::buffers::SHARD_CAP;
use super::record::{AuditClass, AuditRecord};
use super::sink::AuditSink;
use super::worker::{drains_now, Auditor, Msg, DRAIN_EVERY};

/// An auditor whose worker is the test (it sees what the sink sends), its layer sink,
/// and a failed sign-in to record.
fn test_auditor() -> (
    Arc<Auditor>,
    std::sync::mpsc::Receiver<Msg>,
    AuditSink,
    AuthEvent<'static>,
) {
    let (tx, rx) = sync_channel(4);
    let auditor = Auditor::without_worker(tx, false);
    let sink = AuditSink {
        auditor: auditor.clone(),
        successes: false,
    };
    let e = AuthEvent::new(
        AuthOp::Login,
        Outcome::Failure(FailureReason::InvalidCredentials),
        Duration::from_millis(2),
        authwatch_layer::now(),
    )
    .with_route("/login");
    (auditor, rx, sink, e)
}

#[test]
fn records_after_the_last_drain_are_counted() {
    let (auditor, _rx, sink, e) = test_auditor();
    for _ in 0..3 {
        sink.record(&e);
    }
    // As at shutdown, once the worker's last drain is done.
    assert_eq!(auditor.layer.close(), 3, "left in the shards");
    // A request that passed the sink's `closed` check before shutdown pushes now.
    assert!(!auditor.closed.load(Ordering::Relaxed));
    sink.record(&e);
    assert_eq!(auditor.dropped.load(Ordering::Relaxed), 1);
    assert_eq!(auditor.layer.close(), 0, "nothing kept");
}

#[test]
fn a_half_full_shard_wakes_the_worker() {
    let (auditor, rx, sink, e) = test_auditor();
    // One thread: every record lands in the same shard.
    for _ in 0..SHARD_CAP / 2 - 1 {
        sink.record(&e);
    }
    assert!(rx.try_recv().is_err(), "no wake before half");
    sink.record(&e);
    assert!(matches!(rx.try_recv(), Ok(Msg::Drain)), "a wake at half");
    for _ in 0..SHARD_CAP / 2 {
        sink.record(&e);
    }
    assert!(rx.try_recv().is_err(), "one wake per half shard");
    // Full: the next is dropped and counted, nothing else is sent.
    sink.record(&e);
    assert_eq!(auditor.dropped.load(Ordering::Relaxed), 1);
    assert!(rx.try_recv().is_err());
    // Drained, the shard wakes the worker again at half.
    let mut n = 0;
    auditor.layer.drain(&mut Vec::new(), &mut |_, _| n += 1);
    assert_eq!(n, SHARD_CAP);
    for _ in 0..SHARD_CAP / 2 {
        sink.record(&e);
    }
    let wake = rx.try_recv().unwrap();
    assert!(matches!(wake, Msg::Drain));
    // The worker drains on the wake before its tick, and not on a logger's record.
    let now = std::time::Instant::now();
    let later = now + DRAIN_EVERY;
    assert!(drains_now(Some(&wake), now, later));
    assert!(!drains_now(None, now, later));
    let record = Msg::Record(Box::new(AuditRecord::new(
        "auth.login",
        AuditClass::Authentication,
        "app",
    )));
    assert!(!drains_now(Some(&record), now, later));
    assert!(drains_now(None, later, later));
}

/// Token-guard records keep their route by its number, apart from the table's routes of the
/// same number, and labels past the numbered ones still arrive.
#[test]
fn guard_records_keep_their_numbered_route() {
    let (auditor, _rx, sink, table_event) = test_auditor();
    let sinks = authwatch_layer::Sinks::new();
    let guarded = |route: &'static str| {
        let mut e = AuthEvent::new(
            AuthOp::TokenValidation,
            Outcome::Failure(FailureReason::InvalidToken),
            Duration::from_micros(90),
            authwatch_layer::now(),
        )
        .with_route(route)
        .with_source(authwatch_layer::EventSource::TokenGuard);
        e.route_id = sinks.guard_route(route);
        e
    };
    let me = guarded("/api/me");
    assert!(me.route_id.is_some());
    // A table route with the guard route's number.
    let mut table_event = table_event;
    table_event.route_id = me.route_id;
    sink.record(&table_event);
    sink.record(&me);
    sink.record(&guarded("/api/orders"));
    let mut got = Vec::new();
    auditor
        .layer
        .drain(&mut Vec::new(), &mut |r, _| got.push((r.source, r.route)));
    let got: Vec<(&str, Option<&str>)> = got.iter().map(|(s, r)| (*s, r.as_deref())).collect();
    assert_eq!(
        got,
        [
            ("layer", Some("/login")),
            ("token_guard", Some("/api/me")),
            ("token_guard", Some("/api/orders")),
        ]
    );
}
