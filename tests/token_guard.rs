//! TokenGuard over tower-http's real bearer validator, over real sockets.

mod common;

use std::sync::Arc;

use tokio::sync::Semaphore;

use authwatch::{AuthOp, AuthWatch, EventSource, FailureReason, Outcome};
use axum::routing::get;
use axum::Router;
use common::*;
use tower_http::validate_request::ValidateRequestHeaderLayer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_validation_is_counted_and_timed_without_the_handler() {
    let rec = Recorder::default();
    let watch = AuthWatch::builder().sink(rec.sink()).build().unwrap();
    // The handler waits until the test lets it go: the guard's events must come before that,
    // so the handler's time cannot be in them.
    let gate = Arc::new(Semaphore::new(0));
    let handler_gate = gate.clone();
    let api = Router::new()
        .route(
            "/api/orders/{id}",
            get(move || {
                let gate = handler_gate.clone();
                async move {
                    gate.acquire().await.unwrap().forget();
                    "order"
                }
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

    let calls: Vec<_> = (0..3)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                let req =
                    request("GET", addr, "/api/orders/42").header("authorization", "Bearer s3cret");
                send(&c, req).await
            })
        })
        .collect();
    let validated = rec.wait_for(3).await;
    assert!(validated.iter().all(|e| e.outcome == Outcome::Success));
    gate.add_permits(3);
    for call in calls {
        assert_eq!(call.await.unwrap(), (200, "order".into()));
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
    assert_eq!(s.response_time().count, 0, "no auth route was called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_token_validation_route_is_counted_once() {
    let rec = Recorder::default();
    let watch = AuthWatch::builder().sink(rec.sink()).build().unwrap();
    // `/userinfo` is a default token-validation route: the layer counts it; the guard must not.
    let app = Router::new()
        .route("/userinfo", get(|| async { "{\"sub\":\"u1\"}" }))
        .layer(watch.token_guard(
            #[allow(deprecated)]
            ValidateRequestHeaderLayer::bearer("s3cret"),
        ))
        .layer(watch.layer());
    let addr = serve(app).await;
    let c = http1();
    let ok = request("GET", addr, "/userinfo").header("authorization", "Bearer s3cret");
    assert_eq!(send(&c, ok).await.0, 200);
    assert_eq!(send(&c, request("GET", addr, "/userinfo")).await.0, 401);
    let ev = rec.wait_for(2).await;
    assert!(ev.iter().all(|e| e.source == EventSource::Route), "{ev:#?}");
    let tv = watch.snapshot().op(AuthOp::TokenValidation);
    assert_eq!((tv.success, tv.failure, tv.invalid_token), (1, 1, 1));
}
