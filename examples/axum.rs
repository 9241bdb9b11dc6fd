//! A Better Auth-shaped axum service with authwatch: one `.layer()`, one `.merge()`.
//!
//! ```sh
//! cargo run --example axum                       # http://127.0.0.1:3000, /metrics, /auth/health
//! cargo run --example axum -- --port 0           # an ephemeral port (printed)
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 cargo run --example axum   # + OTLP export
//! AUTHWATCH_REDIS_URL=redis://127.0.0.1:6379 cargo run --example axum -- --port 0  # a replica
//! ```
//!
//! Routes: `POST /api/auth/sign-in/email` and `POST /api/auth/sign-up/email` (JSON
//! `{"email", "password"}`), `GET /api/auth/get-session`, `POST /api/auth/sign-out`,
//! `POST /api/auth/get-access-token` and `GET /api/me` (bearer token; `/api/me` sits behind a
//! `TokenGuard`), `POST /api/auth/request-password-reset` (JSON `{"email"}`, slow: it "sends an
//! e-mail"). Users: `ada@example.com` / `correct horse`. `GEOIP_DB=GeoLite2-Country.mmdb` counts
//! attempts per country; `ALERT_WEBHOOK=http://…` sends alert changes as Slack-compatible
//! messages; `AUTHWATCH_REDIS_URL` runs it as one replica of a fleet. Ctrl-C (or SIGTERM)
//! flushes the exporters and exits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authwatch::health::{Details, HealthCheck};
use authwatch::AuthWatch;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// jemalloc, as many long-running Rust services use: with glibc's malloc this server's
/// resident memory crept by about 65 KiB a minute under a 10-minute soak (a new connection
/// every 5 ms), in glibc's main arena, while its live heap stayed flat (heaptrack); with
/// jemalloc it stays flat. authwatch itself does not need it. See docs/performance.md, "Soak".
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Clone, Default)]
struct Db {
    /// The monitor, for timing the user lookup (set once it is built).
    watch: Arc<std::sync::OnceLock<AuthWatch>>,
    users: Arc<Mutex<HashMap<String, String>>>,
    sessions: Arc<Mutex<HashMap<String, String>>>,
    failures: Arc<Mutex<HashMap<String, u32>>>,
}

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

async fn sign_in(
    State(db): State<Db>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(c): Json<Credentials>,
) -> Response {
    // authwatch records every request by itself; the handler adds who it was (the spec's
    // LoginAuditLogger).
    let audit = authwatch::get_login_audit_logger();
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    // The user lookup, timed as a database query (`auth.db.query.time.ms`, name `find_user`).
    let lookup = async {
        // Password hashing takes time.
        tokio::time::sleep(Duration::from_millis(3)).await;
        db.users.lock().unwrap().get(&c.email) == Some(&c.password)
    };
    let ok = match db.watch.get() {
        Some(w) => w.time_query("find_user", lookup).await,
        None => lookup.await,
    };
    if c.email == "mallory@example.com" {
        // A locked account: 423 (the layer counts it as a lockout) and the audit record.
        audit.log_lockout(&c.email, Some(peer.ip()), ua, "locked by an administrator");
        return StatusCode::LOCKED.into_response();
    }
    let mut failures = db.failures.lock().unwrap();
    let n = failures.entry(c.email.clone()).or_default();
    if *n >= 5 {
        audit.log_rate_limited(Some(&c.email), Some(peer.ip()), ua);
        return StatusCode::TOO_MANY_REQUESTS.into_response();
    }
    if !ok {
        *n += 1;
        audit.log_login_failure(&c.email, Some(peer.ip()), ua, "Invalid credentials");
        return StatusCode::UNAUTHORIZED.into_response();
    }
    *n = 0;
    let token = format!("tok-{:016x}", rand_u64());
    db.sessions
        .lock()
        .unwrap()
        .insert(token.clone(), c.email.clone());
    audit.log_login_success(&c.email, Some(peer.ip()), ua);
    audit.log_token_issued(&c.email, "session", Some(peer.ip()), ua);
    Json(serde_json::json!({ "token": token })).into_response()
}

async fn sign_up(State(db): State<Db>, Json(c): Json<Credentials>) -> StatusCode {
    if c.password.len() < 8 || !c.email.contains('@') {
        return StatusCode::BAD_REQUEST;
    }
    let mut users = db.users.lock().unwrap();
    if users.contains_key(&c.email) {
        return StatusCode::CONFLICT;
    }
    users.insert(c.email, c.password);
    StatusCode::OK
}

fn session(db: &Db, headers: &HeaderMap) -> Option<String> {
    let token = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    db.sessions.lock().unwrap().get(token).cloned()
}

async fn get_session(State(db): State<Db>, headers: HeaderMap) -> Response {
    match session(&db, &headers) {
        Some(email) => Json(serde_json::json!({ "user": { "email": email } })).into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn sign_out(State(db): State<Db>, headers: HeaderMap) -> StatusCode {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token.and_then(|t| db.sessions.lock().unwrap().remove(t)) {
        Some(_) => StatusCode::OK,
        None => StatusCode::UNAUTHORIZED,
    }
}

async fn get_access_token(State(db): State<Db>, headers: HeaderMap) -> Response {
    match session(&db, &headers) {
        Some(_) => Json(serde_json::json!({ "accessToken": "short-lived" })).into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn request_password_reset(Json(body): Json<serde_json::Value>) -> StatusCode {
    // Sending the e-mail is slow.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if body.get("email").and_then(|e| e.as_str()).is_some() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}

/// The service's own token check, unchanged; authwatch's `TokenGuard` wraps it.
async fn require_session(State(db): State<Db>, req: Request, next: Next) -> Response {
    if session(&db, req.headers()).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    next.run(req).await
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// The app, with authwatch on it.
fn app(watch: &AuthWatch, db: Db) -> Router {
    let protected = Router::new()
        .route("/api/me", get(|| async { "you" }))
        .layer(watch.token_guard(middleware::from_fn_with_state(db.clone(), require_session)));
    Router::new()
        .route("/api/auth/sign-in/email", post(sign_in))
        .route("/api/auth/sign-up/email", post(sign_up))
        .route("/api/auth/get-session", get(get_session))
        .route("/api/auth/sign-out", post(sign_out))
        .route("/api/auth/get-access-token", post(get_access_token))
        .route(
            "/api/auth/request-password-reset",
            post(request_password_reset),
        )
        .merge(protected)
        .with_state(db)
        .layer(watch.layer())
        .merge(watch.endpoints())
}

fn port() -> u16 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .map_or(3000, |p| p.parse().expect("--port takes a number"))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // OTLP on when OTEL_EXPORTER_OTLP_ENDPOINT is set; /metrics and /auth/health always.
    let db = Db::default();
    db.users
        .lock()
        .unwrap()
        .insert("ada@example.com".into(), "correct horse".into());
    let store = db.clone();
    let sessions = db.sessions.clone();
    let mut builder = AuthWatch::builder()
        .service_name("accounts")
        // The exact count of active sessions, from the service's own store.
        .active_sessions(move || sessions.lock().map_or(0, |s| s.len() as u64));
    // User ids in the audit trail as keyed hashes, when a key is given.
    if let Ok(key) = std::env::var("AUDIT_KEY") {
        builder = builder.audit_key(key);
    }
    // A local tamper-evident audit log too (check it with `authwatch audit verify DIR`).
    if let Ok(dir) = std::env::var("AUDIT_DIR") {
        builder = builder.audit_dir(dir);
    }
    // Attempts per country, from a MaxMind-format database (GeoLite2-Country.mmdb).
    if let Ok(db) = std::env::var("GEOIP_DB") {
        builder = builder.geoip_database(db);
    }
    // The spec: limit access to metrics. Prometheus sends it with `authorization: {credentials: …}`.
    if let Ok(token) = std::env::var("METRICS_TOKEN") {
        builder = builder.metrics_bearer_token(token);
    }
    // Alert changes as Slack-compatible messages (one per incident for a whole fleet, when
    // AUTHWATCH_REDIS_URL puts the replicas in fleet mode).
    if let Ok(url) = std::env::var("ALERT_WEBHOOK") {
        builder = builder.alert_webhook(url);
    }
    let watch = builder
        // The user store answers (here: its lock is usable); a real service would ping its
        // database (see `authwatch::health::sqlx_pool`).
        .health_check(HealthCheck::new("user-store", move || {
            let users = store
                .users
                .lock()
                .map(|u| u.len())
                .map_err(|_| "user store lock poisoned");
            async move {
                let n = users?;
                let mut d = Details::new();
                d.insert("users".into(), n.into());
                Ok::<_, &str>(d)
            }
        }))
        .build()?;
    let _ = db.watch.set(watch.clone());

    // Logs: to stderr, and over OTLP when it is on (without the exporters' own crates, which
    // would otherwise log their export failures into themselves).
    let quiet = || {
        EnvFilter::new("info")
            .add_directive("hyper=off".parse().unwrap())
            .add_directive("h2=off".parse().unwrap())
            .add_directive("tonic=off".parse().unwrap())
            .add_directive("reqwest=off".parse().unwrap())
            .add_directive("opentelemetry=off".parse().unwrap())
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours for a terminal only: a file or a pipe gets plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(
                    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
                ),
        )
        .with(
            watch
                .pipeline()
                .tracing_bridge()
                .map(|b| b.with_filter(quiet())),
        )
        .init();

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port())).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    tracing::info!(%addr, otlp = ?watch.pipeline().otlp_protocol(), "authwatch axum example started");
    axum::serve(
        listener,
        app(&watch, db).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    println!("{}", watch.snapshot());
    // Flush the last export; a collector that is gone by now costs a warning, not the exit code.
    if let Err(e) = watch.shutdown().await {
        eprintln!("warning: {e}");
    }
    Ok(())
}
