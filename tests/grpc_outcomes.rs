//! gRPC over real HTTP/2 on 127.0.0.1: `grpc-status` in the head (trailers-only responses) or
//! in the trailers, and the clock stopping at the end of the stream.

mod common;

use std::time::Duration;

use authwatch::{AuthOp, AuthWatch, FailureReason, Outcome};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use http_body::Frame;

/// Answers like a gRPC server. `x-test-status` is the status to send; `x-test-mode` is
/// `head` (trailers-only), `trailers` (a message, then trailers), `none` (no status at all),
/// or `slow` (a message, 200 ms, then trailers).
async fn grpc(headers: HeaderMap) -> Response {
    let code = headers
        .get("x-test-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_else(|| "0".into());
    let mode = headers
        .get("x-test-mode")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_else(|| "trailers".into());
    let builder = Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    let message = Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"));
    if mode == "hang" {
        // A message, then nothing: a stream the client gives up on.
        let frames = futures_util::stream::iter([Ok::<_, std::io::Error>(message)])
            .chain(futures_util::stream::pending());
        return builder
            .body(Body::new(http_body_util::StreamBody::new(frames)))
            .unwrap();
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_str(&code).unwrap());
    match mode.as_str() {
        "head" => builder
            .header("grpc-status", code)
            .body(Body::empty())
            .unwrap(),
        "none" => builder.body(Body::from("\0\0\0\0\x02hi")).unwrap(),
        "slow" => {
            let frames = futures_util::stream::iter([message, Frame::trailers(trailers)])
                .enumerate()
                .then(|(i, f)| async move {
                    if i == 1 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Ok::<_, std::io::Error>(f)
                });
            builder
                .body(Body::new(http_body_util::StreamBody::new(frames)))
                .unwrap()
        }
        _ => {
            let frames = futures_util::stream::iter([
                Ok::<_, std::io::Error>(message),
                Ok(Frame::trailers(trailers)),
            ]);
            builder
                .body(Body::new(http_body_util::StreamBody::new(frames)))
                .unwrap()
        }
    }
}

async fn call(c: &HttpClient, addr: std::net::SocketAddr, method: &str, status: &str, mode: &str) {
    let req = request("POST", addr, &format!("/acme.auth.v1.AuthService/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-test-status", status)
        .header("x-test-mode", mode);
    let (code, _) = send(c, req).await;
    assert_eq!(code, 200);
}

/// The fake gRPC service behind authwatch, served over HTTP/2 on loopback.
async fn grpc_app() -> (Recorder, AuthWatch, std::net::SocketAddr) {
    let rec = Recorder::default();
    let watch = AuthWatch::builder().sink(rec.sink()).build().unwrap();
    let app = Router::new()
        .route("/acme.auth.v1.AuthService/{method}", post(grpc))
        .layer(watch.layer());
    let addr = serve(app).await;
    (rec, watch, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_status_in_head_or_trailers_follows_the_table() {
    use FailureReason::*;
    let (rec, watch, addr) = grpc_app().await;
    let c = http2();
    let rows: &[(&str, &str, Outcome, Option<u16>)] = &[
        ("Login", "0", Outcome::Success, Some(0)),
        (
            "Login",
            "16",
            Outcome::Failure(InvalidCredentials),
            Some(16),
        ),
        ("Login", "7", Outcome::Failure(Forbidden), Some(7)),
        ("Register", "3", Outcome::Failure(BadRequest), Some(3)),
        ("Register", "6", Outcome::Failure(Conflict), Some(6)),
        ("Login", "8", Outcome::RateLimited, Some(8)),
        ("Login", "13", Outcome::Error, Some(13)),
        ("Login", "14", Outcome::Error, Some(14)),
        (
            "ValidateToken",
            "16",
            Outcome::Failure(InvalidToken),
            Some(16),
        ),
        ("ValidateToken", "0", Outcome::Success, Some(0)),
        ("Login", "not-a-number", Outcome::Error, None),
    ];
    let mut n = 0;
    for mode in ["head", "trailers"] {
        for (method, status, want, code) in rows {
            call(&c, addr, method, status, mode).await;
            n += 1;
            let ev = rec.wait_for(n).await;
            let e = ev.last().unwrap();
            assert_eq!(
                (e.outcome, e.grpc_status),
                (*want, *code),
                "{method} {status} in {mode}"
            );
            assert_eq!(e.route, format!("/{{service}}/{method}"));
            assert_eq!(e.rpc_method.as_deref(), Some(*method));
        }
    }
    // No status at all: the call failed.
    call(&c, addr, "Login", "0", "none").await;
    let ev = rec.wait_for(n + 1).await;
    assert_eq!(ev.last().unwrap().outcome, Outcome::Error);

    let s = watch.snapshot();
    let login = s.op(AuthOp::Login);
    assert_eq!(login.success, 2);
    assert_eq!(login.rate_limited, 2);
    assert_eq!(login.errors, 7);
    assert_eq!(login.failure, 4 + 7);
    assert_eq!(s.op(AuthOp::Registration).failure, 4);
    let tv = s.op(AuthOp::TokenValidation);
    assert_eq!((tv.success, tv.invalid_token), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timing_ends_with_the_trailers() {
    let (rec, watch, addr) = grpc_app().await;
    call(&http2(), addr, "Login", "0", "slow").await;
    let ev = rec.wait_for(1).await;
    assert_eq!(ev[0].outcome, Outcome::Success);
    assert!(
        ev[0].latency >= Duration::from_millis(200),
        "{:?}",
        ev[0].latency
    );
    let p50 = watch.snapshot().op(AuthOp::Login).p50.unwrap();
    assert!(p50 >= Duration::from_millis(200), "{p50:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_looking_paths_without_grpc_content_type_are_not_auth() {
    let (rec, watch, addr) = grpc_app().await;
    let (code, _) = send(
        &http1(),
        request("POST", addr, "/acme.auth.v1.AuthService/Login"),
    )
    .await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rec.events().is_empty());
    assert_eq!(watch.snapshot().op(AuthOp::Login).total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_client_that_resets_the_stream_is_one_cancellation() {
    let (rec, watch, addr) = grpc_app().await;
    let c = http2();
    let req = request("POST", addr, "/acme.auth.v1.AuthService/Login")
        .header("content-type", "application/grpc")
        .header("x-test-mode", "hang")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let res = c.request(req).await.unwrap();
    let mut body = res.into_body();
    let first = http_body_util::BodyExt::frame(&mut body)
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_data());
    drop(body); // RST_STREAM
    let ev = rec.wait_for(1).await;
    assert_eq!(ev[0].outcome, Outcome::Cancelled);
    let l = watch.snapshot().op(AuthOp::Login);
    assert_eq!((l.success, l.failure, l.cancelled), (0, 0, 1));
}
