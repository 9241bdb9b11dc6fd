//! Every row of the outcome table over real HTTP/1.1 on 127.0.0.1, through axum.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use authwatch::{AuthOp, AuthWatch, FailureReason, Outcome};
use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use http_body::Frame;
use tower_http::catch_panic::CatchPanicLayer;

fn status(code: u16) -> Response {
    StatusCode::from_u16(code).unwrap().into_response()
}

/// A slow body: `chunks` chunks, `gap` apart.
fn slow_body(chunks: usize, gap: Duration) -> Body {
    let s = futures_util::stream::iter(0..chunks).then(move |i| async move {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        Ok::<_, std::io::Error>(Frame::data(Bytes::from(format!("chunk{i}\n"))))
    });
    Body::new(http_body_util::StreamBody::new(s))
}

async fn app(rec: &Recorder) -> (AuthWatch, SocketAddr) {
    let (watch, addr, _) = app_with_signal(rec).await;
    (watch, addr)
}

/// The app, and a signal the `/hang` handler gives when it starts.
async fn app_with_signal(rec: &Recorder) -> (AuthWatch, SocketAddr, Arc<Notify>) {
    let started = Arc::new(Notify::new());
    let hang_started = started.clone();
    let watch = AuthWatch::builder()
        .route("/t/{code}", AuthOp::Login)
        .route("/tv/{code}", AuthOp::TokenValidation)
        .route("/panic", AuthOp::Login)
        .route("/stream", AuthOp::Login)
        .route("/body-error", AuthOp::Login)
        .route("/hang", AuthOp::Login)
        .route("/hang-body", AuthOp::Login)
        .route("/locked", AuthOp::Login)
        .route("/challenge", AuthOp::TokenRefresh)
        .sink(rec.sink())
        .build()
        .unwrap();
    let router = Router::new()
        .route(
            "/t/{code}",
            get(|axum::extract::Path(c): axum::extract::Path<u16>| async move { status(c) }),
        )
        .route(
            "/tv/{code}",
            get(|axum::extract::Path(c): axum::extract::Path<u16>| async move { status(c) }),
        )
        .route(
            "/panic",
            get(|| async { panic!("handler bug") as StatusCode }),
        )
        .route(
            "/stream",
            get(|| async { slow_body(3, Duration::from_millis(150)) }),
        )
        .route(
            "/body-error",
            get(|| async {
                let s = futures_util::stream::iter([
                    Ok(Frame::data(Bytes::from_static(b"partial"))),
                    Err(std::io::Error::other("database went away mid-body")),
                ]);
                Body::new(http_body_util::StreamBody::new(s))
            }),
        )
        .route(
            "/hang",
            get(move || async move {
                hang_started.notify_one();
                tokio::time::sleep(Duration::from_secs(3600)).await;
                StatusCode::OK
            }),
        )
        .route(
            "/hang-body",
            get(|| async { slow_body(2, Duration::from_secs(3600)) }),
        )
        .route(
            "/locked",
            post(|| async {
                let mut r = StatusCode::OK.into_response();
                r.extensions_mut()
                    .insert(Outcome::Failure(FailureReason::LockedOut));
                r
            }),
        )
        .route(
            "/challenge",
            get(|| async {
                (
                    StatusCode::UNAUTHORIZED,
                    [(
                        header::WWW_AUTHENTICATE,
                        r#"Bearer realm="api", error="invalid_token""#,
                    )],
                )
            }),
        )
        .route("/api/users", get(|| async { "not auth" }))
        .layer(CatchPanicLayer::new())
        .layer(watch.layer());
    let addr = serve(router).await;
    (watch, addr, started)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_follow_the_outcome_table() {
    use FailureReason::*;
    let rec = Recorder::default();
    let (watch, addr) = app(&rec).await;
    let c = http1();
    let rows: &[(&str, Outcome)] = &[
        ("/t/200", Outcome::Success),
        ("/t/201", Outcome::Success),
        ("/t/302", Outcome::Success),
        ("/t/401", Outcome::Failure(InvalidCredentials)),
        ("/t/403", Outcome::Failure(Forbidden)),
        ("/t/400", Outcome::Failure(BadRequest)),
        ("/t/409", Outcome::Failure(Conflict)),
        ("/t/422", Outcome::Failure(BadRequest)),
        ("/t/423", Outcome::Failure(LockedOut)),
        ("/t/404", Outcome::Failure(NotFound)),
        ("/t/415", Outcome::Failure(ClientError)),
        ("/t/429", Outcome::RateLimited),
        ("/t/500", Outcome::Error),
        ("/t/503", Outcome::Error),
        ("/tv/401", Outcome::Failure(InvalidToken)),
        ("/tv/200", Outcome::Success),
        ("/challenge", Outcome::Failure(InvalidToken)),
    ];
    for (i, (path, want)) in rows.iter().enumerate() {
        let (code, _) = send(&c, request("GET", addr, path)).await;
        let ev = rec.wait_for(i + 1).await;
        let e = ev.last().unwrap();
        assert_eq!(e.outcome, *want, "{path} answered {code}");
        assert_eq!(e.status, Some(code));
        assert!(
            !e.route.contains(|ch: char| ch.is_ascii_digit()),
            "template, not path: {}",
            e.route
        );
    }
    // A non-auth route: answered, not counted.
    let (code, body) = send(&c, request("GET", addr, "/api/users")).await;
    assert_eq!((code, &body[..]), (200, &b"not auth"[..]));
    rec.wait_for(rows.len()).await;

    let s = watch.snapshot();
    let login = s.op(AuthOp::Login);
    assert_eq!(login.success, 3);
    assert_eq!(login.failure, 8 + 2, "8 client failures + 2 server errors");
    assert_eq!(login.errors, 2);
    assert_eq!(login.rate_limited, 1);
    assert_eq!(login.cancelled, 0);
    let tv = s.op(AuthOp::TokenValidation);
    assert_eq!((tv.success, tv.failure, tv.invalid_token), (1, 1, 1));
    let refresh = s.op(AuthOp::TokenRefresh);
    assert_eq!((refresh.failure, refresh.invalid_token), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_under_catch_panic_is_an_error() {
    let rec = Recorder::default();
    let (watch, addr) = app(&rec).await;
    let (code, _) = send(&http1(), request("GET", addr, "/panic")).await;
    assert_eq!(code, 500);
    let ev = rec.wait_for(1).await;
    assert_eq!(ev[0].outcome, Outcome::Error);
    assert_eq!(watch.snapshot().op(AuthOp::Login).errors, 1);
    // The service keeps working.
    let (code, _) = send(&http1(), request("GET", addr, "/t/200")).await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latency_includes_streaming_the_body() {
    let rec = Recorder::default();
    let (watch, addr) = app(&rec).await;
    let (code, body) = send(&http1(), request("GET", addr, "/stream")).await;
    assert_eq!((code, body.len()), (200, 21));
    let ev = rec.wait_for(1).await;
    assert_eq!(ev[0].outcome, Outcome::Success);
    // Two gaps of 150 ms between the three chunks: the clock ran until the last one.
    assert!(
        ev[0].latency >= Duration::from_millis(300),
        "{:?}",
        ev[0].latency
    );
    assert!(watch.snapshot().op(AuthOp::Login).p50.unwrap() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_error_is_an_error() {
    let rec = Recorder::default();
    let (watch, addr) = app(&rec).await;
    let c = http1();
    // hyper may fail the response before or after the head: either way the client sees an error.
    let res = c
        .request(
            request("GET", addr, "/body-error")
                .body(Default::default())
                .unwrap(),
        )
        .await;
    if let Ok(res) = res {
        assert!(http_body_util::BodyExt::collect(res.into_body())
            .await
            .is_err());
    }
    let ev = rec.wait_for(1).await;
    assert_eq!(ev[0].outcome, Outcome::Error);
    let l = watch.snapshot().op(AuthOp::Login);
    assert_eq!((l.success, l.failure, l.errors, l.cancelled), (0, 1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_is_one_cancellation_and_nothing_else() {
    let rec = Recorder::default();
    let (watch, addr, started) = app_with_signal(&rec).await;
    let c = http1();
    let pending = tokio::spawn({
        let c = c.clone();
        async move { send(&c, request("GET", addr, "/hang")).await }
    });
    // Once the handler runs, give up.
    started.notified().await;
    assert!(rec.events().is_empty());
    pending.abort();
    let ev = rec.wait_for(1).await;
    assert_eq!(ev[0].outcome, Outcome::Cancelled);
    assert_eq!(ev[0].status, None);
    let l = watch.snapshot().op(AuthOp::Login);
    assert_eq!(
        (l.success, l.failure, l.rate_limited, l.cancelled),
        (0, 0, 0, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_body_is_one_cancellation() {
    let rec = Recorder::default();
    let (watch, addr) = app(&rec).await;
    let c = http1();
    let res = c
        .request(
            request("GET", addr, "/hang-body")
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = res.into_body();
    let first = http_body_util::BodyExt::frame(&mut body)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "chunk0\n");
    drop(body);
    drop(c);
    let ev = rec.wait_for(1).await;
    assert_eq!(
        (ev[0].outcome, ev[0].status),
        (Outcome::Cancelled, Some(200))
    );
    let l = watch.snapshot().op(AuthOp::Login);
    assert_eq!((l.success, l.failure, l.cancelled), (0, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_can_override_the_outcome() {
    let rec = Recorder::default();
    let (watch, addr) = app(&rec).await;
    let (code, _) = send(&http1(), request("POST", addr, "/locked")).await;
    assert_eq!(code, 200);
    let ev = rec.wait_for(1).await;
    assert_eq!(ev[0].outcome, Outcome::Failure(FailureReason::LockedOut));
    assert_eq!(watch.snapshot().op(AuthOp::Login).failure, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_are_each_counted_once() {
    let rec = Recorder::default();
    let (watch, addr) = app(&rec).await;
    let c = http1();
    let mut tasks = Vec::new();
    for i in 0..400 {
        let c = c.clone();
        let path = if i % 4 == 0 { "/t/401" } else { "/t/200" };
        tasks.push(tokio::spawn(async move {
            send(&c, request("GET", addr, path)).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    rec.wait_for(400).await;
    let l = watch.snapshot().op(AuthOp::Login);
    assert_eq!((l.success, l.failure, l.cancelled), (300, 100, 0));
    assert_eq!(l.latency.count, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_with_content_length_is_complete_not_cancelled() {
    // hyper drops such a body once the announced bytes are out, without polling it to the end.
    let rec = Recorder::default();
    let watch = AuthWatch::builder().sink(rec.sink()).build().unwrap();
    let app = Router::new()
        .route(
            "/login",
            post(|| async {
                let mut r = slow_body(3, Duration::from_millis(20)).into_response();
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, "21".parse().unwrap());
                r
            }),
        )
        .layer(watch.layer());
    let addr = serve(app).await;
    let (code, body) = send(&http1(), request("POST", addr, "/login")).await;
    assert_eq!((code, body.len()), (200, 21));
    let ev = rec.wait_for(1).await;
    assert_eq!(ev[0].outcome, Outcome::Success);
    assert!(
        ev[0].latency >= Duration::from_millis(40),
        "{:?}",
        ev[0].latency
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_no_content_responses_end_with_their_head() {
    let rec = Recorder::default();
    let watch = AuthWatch::builder().sink(rec.sink()).build().unwrap();
    let app = Router::new()
        .route(
            "/api/auth/get-session",
            get(|| async { "a session body hyper never sends" }),
        )
        .route(
            "/api/auth/sign-out",
            post(|| async { StatusCode::NO_CONTENT }),
        )
        .layer(watch.layer());
    let addr = serve(app).await;
    let c = http1();
    // The default table takes GET for get-session; HEAD goes to axum's GET handler.
    let watch_head = AuthWatch::builder()
        .routes(authwatch::Routes::empty().route("/api/auth/get-session", AuthOp::TokenValidation))
        .sink(rec.sink())
        .build()
        .unwrap();
    let head_app = Router::new()
        .route(
            "/api/auth/get-session",
            get(|| async { "a session body hyper never sends" }),
        )
        .layer(watch_head.layer());
    let head_addr = serve(head_app).await;
    assert_eq!(
        send(&c, request("HEAD", head_addr, "/api/auth/get-session"))
            .await
            .0,
        200
    );
    assert_eq!(
        send(&c, request("POST", addr, "/api/auth/sign-out"))
            .await
            .0,
        204
    );
    let ev = rec.wait_for(2).await;
    assert!(ev.iter().all(|e| e.outcome == Outcome::Success), "{ev:#?}");
    assert_eq!(watch.snapshot().op(AuthOp::Logout).success, 1);
    assert_eq!(watch_head.snapshot().op(AuthOp::TokenValidation).success, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_panic_outside_the_layer_still_records_an_error() {
    let rec = Recorder::default();
    let watch = AuthWatch::builder().sink(rec.sink()).build().unwrap();
    let app = Router::new()
        .route(
            "/login",
            post(|| async { panic!("handler bug") as StatusCode }),
        )
        .layer(watch.layer())
        .layer(CatchPanicLayer::new());
    let addr = serve(app).await;
    assert_eq!(send(&http1(), request("POST", addr, "/login")).await.0, 500);
    let ev = rec.wait_for(1).await;
    assert_eq!(ev[0].outcome, Outcome::Error);
    let l = watch.snapshot().op(AuthOp::Login);
    assert_eq!((l.errors, l.cancelled), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_routers_are_watched_by_their_full_path() {
    let rec = Recorder::default();
    let watch = AuthWatch::builder().sink(rec.sink()).build().unwrap();
    let auth = Router::new().route(
        "/sign-in/email",
        post(|| async { StatusCode::UNAUTHORIZED }),
    );
    let app = Router::new().nest("/api/auth", auth).layer(watch.layer());
    let addr = serve(app).await;
    assert_eq!(
        send(&http1(), request("POST", addr, "/api/auth/sign-in/email"))
            .await
            .0,
        401
    );
    let ev = rec.wait_for(1).await;
    assert_eq!(
        (ev[0].op, ev[0].route.as_str()),
        (AuthOp::Login, "/api/auth/sign-in/email")
    );
}
