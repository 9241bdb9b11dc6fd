//! gRPC-Web over real HTTP/1.1 on 127.0.0.1: the status travels in a trailers frame (flag
//! 0x80) at the end of the body, not in the head, and must still decide the outcome.

mod common;

use authwatch::{AuthOp, AuthWatch, FailureReason, Outcome};
use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use common::*;
use http_body::Frame;

/// One gRPC-Web frame: the flag byte, the big-endian length, the payload.
fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![flag];
    f.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A reply message (`\x0a\x02hi`), then the trailers frame with `grpc-status:{code}`.
fn reply(code: &str) -> Vec<u8> {
    let mut body = frame(0x00, b"\x0a\x02hi");
    body.extend(frame(
        0x80,
        format!("grpc-status:{code}\r\ngrpc-message:nope\r\n").as_bytes(),
    ));
    body
}

/// Standard base64 with padding, as `application/grpc-web-text` carries the frames.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Answers like a gRPC-Web server (an Envoy or tonic-web in front of the service).
/// `x-test-status` is the status for the trailers frame; `x-test-mode` is `whole` (one body
/// with a length), `split` (streamed in 3-byte chunks, so frames cross chunk boundaries) or
/// `text` (`application/grpc-web-text`: the frames in base64, each frame encoded apart).
async fn grpc_web(headers: HeaderMap) -> Response {
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    let (code, mode) = (header("x-test-status"), header("x-test-mode"));
    let body = reply(&code);
    let builder = Response::builder().status(200);
    match mode.as_str() {
        "whole" => builder
            .header("content-type", "application/grpc-web+proto")
            .body(Body::from(body))
            .unwrap(),
        "split" => {
            let chunks: Vec<_> = body
                .chunks(3)
                .map(|c| Ok::<_, std::io::Error>(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            builder
                .header("content-type", "application/grpc-web+proto")
                .body(Body::new(http_body_util::StreamBody::new(
                    futures_util::stream::iter(chunks),
                )))
                .unwrap()
        }
        "text" => {
            // The data frame (11 bytes) padded on its own, as servers encode frame by frame.
            let (data, trailers) = body.split_at(11);
            let text = base64(data) + &base64(trailers);
            let chunks: Vec<_> = text
                .into_bytes()
                .chunks(5)
                .map(|c| Ok::<_, std::io::Error>(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            builder
                .header("content-type", "application/grpc-web-text+proto")
                .body(Body::new(http_body_util::StreamBody::new(
                    futures_util::stream::iter(chunks),
                )))
                .unwrap()
        }
        other => panic!("unknown mode {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_status_in_the_trailers_frame_decides_the_outcome() {
    let rec = Recorder::default();
    let watch = AuthWatch::builder().sink(rec.sink()).build().unwrap();
    let app = Router::new()
        .route("/auth.v1.Auth/{method}", post(grpc_web))
        .layer(watch.layer());
    let addr = serve(app).await;
    let c = http1();
    let rows: &[(&str, &str, Outcome, Option<u16>)] = &[
        (
            "Login",
            "16",
            Outcome::Failure(FailureReason::InvalidCredentials),
            Some(16),
        ),
        ("Login", "0", Outcome::Success, Some(0)),
        ("Login", "8", Outcome::RateLimited, Some(8)),
        (
            "ValidateToken",
            "16",
            Outcome::Failure(FailureReason::InvalidToken),
            Some(16),
        ),
    ];
    let mut n = 0;
    for mode in ["whole", "split", "text"] {
        for (method, status, want, code) in rows {
            let ct = if mode == "text" {
                "application/grpc-web-text"
            } else {
                "application/grpc-web+proto"
            };
            let req = request("POST", addr, &format!("/auth.v1.Auth/{method}"))
                .header("content-type", ct)
                .header("x-grpc-web", "1")
                .header("x-test-status", *status)
                .header("x-test-mode", mode);
            let (http, body) = send(&c, req).await;
            assert_eq!(http, 200);
            // The client gets the body as the server sent it.
            assert!(!body.is_empty());
            n += 1;
            let ev = rec.wait_for(n).await;
            let e = ev.last().unwrap();
            assert_eq!(
                (e.op, e.outcome, e.grpc_status),
                (
                    if *method == "Login" {
                        AuthOp::Login
                    } else {
                        AuthOp::TokenValidation
                    },
                    *want,
                    *code
                ),
                "{method} grpc-status:{status} ({mode})"
            );
        }
    }
    let login = watch.snapshot().op(AuthOp::Login);
    assert_eq!(
        (
            login.success,
            login.failure,
            login.rate_limited,
            login.errors
        ),
        (3, 3, 3, 0)
    );
    let tv = watch.snapshot().op(AuthOp::TokenValidation);
    assert_eq!((tv.failure, tv.invalid_token), (3, 3));
}
