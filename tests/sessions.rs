//! Distinct sessions from the credentials requests present (keyed hashes only), counted when
//! the request succeeded; and the lockout header, counted and kept from the client.

mod common;

use authwatch::{AuthOp, AuthWatch, LOCKOUT_HEADER};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use tower_http::validate_request::ValidateRequestHeaderLayer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_and_session_cookies_are_sessions_forged_ones_are_not() {
    let watch = AuthWatch::builder().build().unwrap();
    let guard = watch.token_guard(ValidateRequestHeaderLayer::custom(
        #[allow(clippy::result_large_err)]
        |req: &mut Request| -> Result<(), Response> {
            let ok = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("Bearer good-"));
            if ok {
                Ok(())
            } else {
                Err(StatusCode::UNAUTHORIZED.into_response())
            }
        },
    ));
    let app = Router::new()
        .route("/api/me", get(|| async { "me" }).layer(guard))
        // A Better Auth session check that accepts the session cookie.
        .route("/api/auth/get-session", get(|| async { "session" }))
        .layer(watch.layer());
    let addr = serve(app).await;
    let client = http1();
    // 40 live tokens, each used 3 times; 200 forged ones.
    for round in 0..3 {
        for t in 0..40 {
            let req =
                request("GET", addr, "/api/me").header("authorization", format!("Bearer good-{t}"));
            assert_eq!(send(&client, req).await.0, 200, "round {round}");
        }
    }
    for t in 0..200 {
        let req =
            request("GET", addr, "/api/me").header("authorization", format!("Bearer forged-{t}"));
        assert_eq!(send(&client, req).await.0, 401);
    }
    // 10 browser sessions by cookie (one also sends an unrelated cookie).
    for s in 0..10 {
        let req = request("GET", addr, "/api/auth/get-session").header(
            "cookie",
            format!("theme=dark; better-auth.session_token=tok{s}.sig"),
        );
        assert_eq!(send(&client, req).await.0, 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // 50 sessions. The hash key is random per process, so two of them may share a register of
    // the sketch: within ±3 (6 %); 200 forged tokens counted would give 250.
    let e = watch.active_sessions_estimate();
    assert!((47.0..=53.0).contains(&e), "{e}");
    let text = watch.metrics_text().unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("auth_sessions_estimated{"))
        .unwrap();
    let v: f64 = line.rsplit_once(' ').unwrap().1.parse().unwrap();
    assert!((47.0..=53.0).contains(&v), "{line}");
    assert!(
        !text.contains("good-") && !text.contains("tok1"),
        "no token in any series"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lockout_header_counts_a_lockout_and_never_reaches_the_client() {
    let watch = AuthWatch::builder()
        .route("/login", AuthOp::Login)
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/login",
            post(|| async { (StatusCode::UNAUTHORIZED, [(LOCKOUT_HEADER, "1")]) }),
        )
        .layer(watch.layer());
    let addr = serve(app).await;
    let res = http1()
        .request(
            request("POST", addr, "/login")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(
        res.headers().get(LOCKOUT_HEADER).is_none(),
        "{:?}",
        res.headers()
    );
    drop(res);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let login = watch.snapshot().op(AuthOp::Login);
    assert_eq!((login.failure, login.locked_out), (1, 1));
}

#[test]
fn an_empty_metrics_token_is_a_build_error() {
    let e = AuthWatch::builder()
        .metrics_bearer_token("")
        .build()
        .unwrap_err();
    assert!(matches!(e, authwatch::BuildError::Config(_)), "{e}");
}
