//! The authwatch demo: an auth service with the layer, driven by its own mixed traffic.
//!
//! Run with `cargo run --example demo` (add `-- --port 3000` to pick the port; the default is
//! an ephemeral one). It serves a small Better Auth-shaped service on 127.0.0.1, sends it a
//! mix of sign-ins (right and wrong passwords), sign-ups (new and taken e-mails), session checks
//! (valid and expired tokens), rate-limited bursts, protected calls behind a `TokenGuard`, a few
//! server errors and a few clients that give up, then prints what authwatch saw.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authwatch::{AuthOp, AuthWatch};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_http::validate_request::ValidateRequestHeaderLayer;

#[derive(Clone, Default)]
struct Db {
    users: Arc<Mutex<HashSet<String>>>,
    calls: Arc<AtomicU64>,
}

struct Credentials {
    email: String,
    password: String,
}

fn parse(body: &Bytes) -> Option<Credentials> {
    // "email:password"
    let s = std::str::from_utf8(body).ok()?;
    let (email, password) = s.split_once(':')?;
    Some(Credentials {
        email: email.to_owned(),
        password: password.to_owned(),
    })
}

async fn sign_in(State(db): State<Db>, body: Bytes) -> StatusCode {
    let n = db.calls.fetch_add(1, Ordering::Relaxed);
    // Password hashing takes time.
    tokio::time::sleep(Duration::from_millis(5 + n % 20)).await;
    let Some(c) = parse(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    if n % 97 == 0 {
        return StatusCode::SERVICE_UNAVAILABLE; // the user store hiccups
    }
    let known = db.users.lock().unwrap().contains(&c.email);
    if known && c.password == "correct horse" {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

async fn sign_up(State(db): State<Db>, body: Bytes) -> StatusCode {
    tokio::time::sleep(Duration::from_millis(8)).await;
    let Some(c) = parse(&body) else {
        return StatusCode::UNPROCESSABLE_ENTITY;
    };
    if db.users.lock().unwrap().insert(c.email) {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    }
}

async fn get_session(headers: HeaderMap) -> Result<Json<&'static str>, StatusCode> {
    tokio::time::sleep(Duration::from_millis(1)).await;
    match headers.get("authorization").map(|v| v.as_bytes()) {
        Some(b"Bearer session-ok") => Ok(Json("{\"user\":\"ada\"}")),
        _ => Err(StatusCode::UNAUTHORIZED),
    }
}

async fn sign_out() -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn refresh(State(db): State<Db>) -> StatusCode {
    // A limiter in front of refresh: every 4th call is over the limit.
    if db.calls.fetch_add(1, Ordering::Relaxed) % 4 == 0 {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::OK
    }
}

async fn slow_reset() -> StatusCode {
    tokio::time::sleep(Duration::from_millis(400)).await;
    StatusCode::OK
}

fn port_flag() -> u16 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let watch = AuthWatch::builder().service_name("demo-accounts").build()?;
    let db = Db::default();

    #[allow(deprecated)] // tower-http calls `bearer` "too basic"; it stands in for your JWT check.
    let validator = ValidateRequestHeaderLayer::bearer("api-token");
    let protected = Router::new()
        .route("/api/orders", get(|| async { "[]" }))
        .layer(watch.token_guard(validator));

    let app = Router::new()
        .route("/api/auth/sign-in/email", post(sign_in))
        .route("/api/auth/sign-up/email", post(sign_up))
        .route("/api/auth/get-session", get(get_session))
        .route("/api/auth/sign-out", post(sign_out))
        .route("/api/auth/refresh-token", post(refresh))
        .route("/api/auth/request-password-reset", post(slow_reset))
        .merge(protected)
        .with_state(db)
        .layer(watch.layer());

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port_flag())).await?;
    let addr = listener.local_addr()?;
    println!("authwatch demo serving on http://{addr}");
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("server failed");
    });

    drive(addr).await;
    println!("\nWhat authwatch saw (window {:?}):\n", watch.window());
    println!("{}", watch.snapshot());
    let s = watch.snapshot();
    let login = s.op(AuthOp::Login);
    println!(
        "\nlogin failure ratio {:.0}%, token validation p95 {:?}",
        login.failure_ratio().unwrap_or(0.0) * 100.0,
        s.token_validation_time().p95.unwrap_or_default()
    );
    Ok(())
}

/// The traffic: a normal mix with failures, rate limits, expired tokens and impatient clients.
async fn drive(addr: SocketAddr) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let send =
        |method: &'static str, path: &'static str, auth: Option<&'static str>, body: String| {
            let client = client.clone();
            async move {
                let mut req = http::Request::builder()
                    .method(method)
                    .uri(format!("http://{addr}{path}"));
                if let Some(a) = auth {
                    req = req.header("authorization", a);
                }
                let res = client
                    .request(req.body(Full::new(Bytes::from(body))).unwrap())
                    .await
                    .expect("request");
                let _ = res.into_body().collect().await;
            }
        };
    for i in 0..40 {
        send(
            "POST",
            "/api/auth/sign-up/email",
            None,
            format!("user{}@example.com:pw", i % 30),
        )
        .await;
    }
    let mut tasks = Vec::new();
    for i in 0..400u32 {
        let pw = if i % 5 == 0 { "wrong" } else { "correct horse" };
        let body = format!("user{}@example.com:{pw}", i % 30);
        tasks.push(tokio::spawn(send(
            "POST",
            "/api/auth/sign-in/email",
            None,
            body,
        )));
        let tok = if i % 10 == 0 {
            "Bearer expired"
        } else {
            "Bearer session-ok"
        };
        tasks.push(tokio::spawn(send(
            "GET",
            "/api/auth/get-session",
            Some(tok),
            String::new(),
        )));
        let api = if i % 8 == 0 {
            "Bearer nope"
        } else {
            "Bearer api-token"
        };
        tasks.push(tokio::spawn(send(
            "GET",
            "/api/orders",
            Some(api),
            String::new(),
        )));
        if i % 3 == 0 {
            tasks.push(tokio::spawn(send(
                "POST",
                "/api/auth/refresh-token",
                None,
                String::new(),
            )));
        }
        if i % 20 == 0 {
            tasks.push(tokio::spawn(send(
                "POST",
                "/api/auth/sign-out",
                None,
                String::new(),
            )));
            tasks.push(tokio::spawn(send(
                "POST",
                "/api/auth/request-password-reset",
                None,
                String::new(),
            )));
        }
    }
    // Some clients give up on the slow password reset after 50 ms.
    for _ in 0..5 {
        let _ = tokio::time::timeout(
            Duration::from_millis(50),
            send(
                "POST",
                "/api/auth/request-password-reset",
                None,
                String::new(),
            ),
        )
        .await;
    }
    for t in tasks {
        let _ = t.await;
    }
    // Let the server notice the clients that left.
    tokio::time::sleep(Duration::from_millis(1500)).await;
}
