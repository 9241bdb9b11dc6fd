//! The Better Auth-shaped service the benchmarks measure: `examples/bench_server.rs` serves it
//! over TCP under each monitoring stack, `benches/overhead.rs` calls it in-process (its `mix`
//! rows). Sign-in answers 200 for `ada@example.com` / `correct horse`, 429 for
//! `limited@example.com`, 401 otherwise; `get-session` and `/api/me` want
//! `Authorization: Bearer tok-ada`. Sign-ins and session checks can be given CPU work
//! (`SIGN_IN_WORK`, `SESSION_WORK`).
#![allow(dead_code, unreachable_pub, missing_docs)]

use authwatch::AuthWatch;
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

/// CPU time each sign-in spends checking the password (`--sign-in-work-us`, default 0).
pub(crate) static SIGN_IN_WORK: std::sync::OnceLock<std::time::Duration> =
    std::sync::OnceLock::new();

/// CPU time each session check spends looking the session up (`--session-work-us`, default
/// 0): every `get-session`, and the session check in front of `/api/me`, whatever their answer.
pub(crate) static SESSION_WORK: std::sync::OnceLock<std::time::Duration> =
    std::sync::OnceLock::new();

/// The CPU time this thread has used. The sign-in's work is counted in it, not in wall time:
/// on a virtual machine the host takes the CPU away now and then (steal time), and a spin on
/// the wall clock would count those pauses as work done, so whichever stack the host paused
/// less during its spins would gain throughput for nothing. CPU time stops while the thread
/// is descheduled, as a real hash's progress does.
#[cfg(unix)]
fn thread_cpu_time() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Elsewhere, wall time since the first call (a pause counts as work there).
#[cfg(not(unix))]
fn thread_cpu_time() -> std::time::Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// Spends `work`'s CPU time (none when it is unset) on the request's thread.
fn spend(work: &std::sync::OnceLock<std::time::Duration>) {
    let work = work.get().copied().unwrap_or_default();
    if !work.is_zero() {
        let start = thread_cpu_time();
        while thread_cpu_time() - start < work {
            std::hint::spin_loop();
        }
    }
}

async fn sign_in(Json(c): Json<Credentials>) -> Response {
    // A password hash is CPU work on the request's thread (bcrypt and argon2 take milliseconds;
    // any figure here is far below them).
    spend(&SIGN_IN_WORK);
    match (c.email.as_str(), c.password.as_str()) {
        ("ada@example.com", "correct horse") => {
            Json(serde_json::json!({ "token": "tok-ada" })).into_response()
        }
        ("limited@example.com", _) => StatusCode::TOO_MANY_REQUESTS.into_response(),
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn sign_up(Json(c): Json<Credentials>) -> StatusCode {
    if c.password.len() < 8 || !c.email.contains('@') {
        StatusCode::BAD_REQUEST
    } else if c.email == "ada@example.com" {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    }
}

fn signed_in(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some("Bearer tok-ada")
}

async fn get_session(headers: HeaderMap) -> Response {
    // A session lookup (a store read, a signature check) is CPU work too, and a missing or
    // expired session costs the lookup as well.
    spend(&SESSION_WORK);
    if signed_in(&headers) {
        Json(serde_json::json!({ "user": { "email": "ada@example.com" } })).into_response()
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

async fn require_session(req: Request, next: Next) -> Response {
    spend(&SESSION_WORK);
    if signed_in(req.headers()) {
        next.run(req).await
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

fn routes() -> Router {
    Router::new()
        .route("/api/auth/sign-in/email", post(sign_in))
        .route("/api/auth/sign-up/email", post(sign_up))
        .route("/api/auth/get-session", get(get_session))
        .route("/api/orders/{id}", get(|| async { "an order" }))
}

fn me() -> Router {
    Router::new().route("/api/me", get(|| async { "you" }))
}

/// The service with `/api/me` behind the plain session check: the app every stack but
/// authwatch's serves (the peers add their layer to it).
pub(crate) fn bare() -> Router {
    routes().merge(me().layer(middleware::from_fn(require_session)))
}

/// The service as authwatch's stacks build it: the session check on `/api/me` timed by
/// `watch`'s token guard (the caller adds the layer and the endpoints).
pub(crate) fn watched(watch: &AuthWatch) -> Router {
    routes().merge(me().layer(watch.token_guard(middleware::from_fn(require_session))))
}
