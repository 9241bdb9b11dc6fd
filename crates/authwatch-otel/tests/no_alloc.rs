//! The record path allocates nothing once an event's attribute set has been seen.

use std::time::Duration;

use authwatch_layer::{
    AuthEvent, AuthOp, EventSink, EventSource, FailureReason, Outcome, Routes, Sinks,
};
use authwatch_otel::{OtelSink, OtlpOptions, Pipeline};

#[test]
fn recording_a_known_kind_of_event_does_not_allocate() {
    let p = Pipeline::builder()
        .otlp(OtlpOptions::new().enabled(false))
        .build()
        .unwrap();
    let sink = OtelSink::new(p.meters());
    let table = Routes::empty()
        .route("/login", AuthOp::Login)
        .build()
        .unwrap();
    let outcomes = [
        Outcome::Success,
        Outcome::Failure(FailureReason::InvalidCredentials),
        Outcome::RateLimited,
        Outcome::Error,
        Outcome::Cancelled,
    ];
    let ev = |o| {
        let mut e = AuthEvent::new(
            AuthOp::Login,
            o,
            Duration::from_millis(5),
            authwatch_layer::now(),
        )
        .with_route("/login");
        e.route_id = Some(table.routes()[0].id);
        e.method = "POST";
        e
    };
    for o in outcomes {
        sink.record(&ev(o)); // first sight binds (allocates)
    }
    let events: Vec<_> = outcomes.iter().map(|o| ev(*o)).collect();
    // The counter sees allocations on this thread (so a zero below means something).
    let control = allocation_counter::measure(|| {
        std::hint::black_box(vec![1u8]);
    });
    assert!(control.count_total >= 1);
    let info = allocation_counter::measure(|| {
        for _ in 0..100 {
            for e in &events {
                sink.record(e);
            }
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    assert!(p
        .render_prometheus()
        .unwrap()
        .contains("auth_login_success_count_total"));
}

/// The same for a token guard's events, numbered among the guard routes as the guard numbers
/// them (it copied its route and took a map's lock for each before).
#[test]
fn recording_a_known_kind_of_guard_event_does_not_allocate() {
    let p = Pipeline::builder()
        .otlp(OtlpOptions::new().enabled(false))
        .build()
        .unwrap();
    let sink = OtelSink::new(p.meters());
    let sinks = Sinks::new();
    let outcomes = [
        Outcome::Success,
        Outcome::Failure(FailureReason::InvalidToken),
        Outcome::RateLimited,
        Outcome::Error,
        Outcome::Cancelled,
    ];
    let id = sinks.guard_route("/api/me");
    assert!(id.is_some());
    let ev = |o| {
        let mut e = AuthEvent::new(
            AuthOp::TokenValidation,
            o,
            Duration::from_micros(80),
            authwatch_layer::now(),
        )
        .with_route("/api/me")
        .with_source(EventSource::TokenGuard);
        e.route_id = id;
        e.method = "GET";
        e
    };
    for o in outcomes {
        sink.record(&ev(o)); // first sight binds (allocates)
    }
    let events: Vec<_> = outcomes.iter().map(|o| ev(*o)).collect();
    let info = allocation_counter::measure(|| {
        for _ in 0..100 {
            for e in &events {
                sink.record(e);
            }
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    let text = p.render_prometheus().unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("auth_token_validation_success_count_total{"))
        .expect("the guard's success counter");
    assert!(line.contains("http_route=\"/api/me\""), "{line}");
    assert!(line.ends_with(" 101"), "{line}");
}
