//! TokenGuard over tower-http's real bearer validator, over real sockets.

mod common;

use std::time::Duration;

use authwatch::{AuthOp, AuthWatch, EventSource, FailureReason, Outcome};
use axum::routing::get;
use axum::Router;
use common::*;
use tower_http::validate_request::ValidateRequestHeaderLayer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_validation_is_counted_and_timed_without_the_handler() {
    let rec = Recorder::default();
    let watch = AuthWatch::builder().sink(rec.sink()).build().unwrap();
    let api = Router::new()
        .route(
            "/api/orders/{id}",
            get(|| async {
                // A slow handler: its time must not count as validation time.
                tokio::time::sleep(Duration::from_millis(400)).await;
                "order"
            }),
        )
        // tower-http marks `bearer` deprecated as "too basic"; it is still the validator a
        // user is most likely to have, which is what this test is about.
        .layer(watch.token_guard(
            #[allow(deprecated)]
            ValidateRequestHeaderLayer::bearer("s3cret"),
        ));
    let app = Router::new()
        .merge(api)
        .route("/public", get(|| async { "public" }))
        .layer(watch.layer());
    let addr = serve(app).await;
    let c = http1();

    for _ in 0..3 {
        let req = request("GET", addr, "/api/orders/42").header("authorization", "Bearer s3cret");
        assert_eq!(send(&c, req).await, (200, "order".into()));
    }
    for bad in ["Bearer wrong", "Basic czNjcmV0", "Bearer"] {
        let req = request("GET", addr, "/api/orders/42").header("authorization", bad);
        assert_eq!(send(&c, req).await.0, 401);
    }
    assert_eq!(send(&c, request("GET", addr, "/api/orders/7")).await.0, 401);
    assert_eq!(send(&c, request("GET", addr, "/public")).await.0, 200);

    let ev = rec.wait_for(7).await;
    for e in &ev {
        assert_eq!(e.op, AuthOp::TokenValidation);
        assert_eq!(e.source, EventSource::TokenGuard);
        assert_eq!(
            e.route, "/api/orders/{id}",
            "the template from axum's MatchedPath"
        );
        assert!(
            e.latency < Duration::from_millis(400),
            "validation only: {:?}",
            e.latency
        );
    }
    let ok = ev.iter().filter(|e| e.outcome == Outcome::Success).count();
    let bad = ev
        .iter()
        .filter(|e| e.outcome == Outcome::Failure(FailureReason::InvalidToken))
        .count();
    assert_eq!((ok, bad), (3, 4));

    let s = watch.snapshot();
    let tv = s.op(AuthOp::TokenValidation);
    assert_eq!((tv.success, tv.failure, tv.invalid_token), (3, 4, 4));
    assert_eq!(s.token_validation_time().count, 7);
    assert!(s.token_validation_time().p99.unwrap() < Duration::from_millis(400));
    assert_eq!(s.response_time().count, 0, "no auth route was called");
}
