//! The authwatch demo: a Better Auth-shaped service with authwatch, attacked and degraded by its
//! own traffic generator, with a live terminal view and a summary of which alert fired when.
//!
//! ```sh
//! cargo run --release --example demo                  # the story in 20 minutes, real windows
//! cargo run --release --example demo -- --speed       # windows scaled 1/20: about a minute
//! cargo run --release --example demo -- --no-traffic  # serve only (try the dashboard)
//! cargo run --release --example demo -- --speed --replicas 3  # a fleet of 3 on one Redis
//! cargo run --release --example demo -- --speed --block       # block the attackers too
//! ```
//!
//! Flags: `--port N` (default 3000, 0 for any), `--duration SECONDS` (the whole story),
//! `--speed`, `--no-traffic`, `--alertmanager URL` (alerts also go there), `--plain` (one line
//! per second instead of the live view; the default when stdout is not a terminal),
//! `--replicas N` (N instances of the service in fleet mode, on ports N, N+1, …; the traffic
//! goes round-robin over them, as behind a load balancer), `--redis URL` (their Redis;
//! default `AUTHWATCH_REDIS_URL`, else a `redis-server` the demo starts from `PATH` or
//! `.test-deps/bin`, which `scripts/test-deps.sh` installs), `--block` (a `BlockPolicy`: the
//! addresses the attack alerts name are refused with 429 for 15 minutes, 45 s with `--speed`;
//! the summary lists the blocks, the requests they refused and the incident report of the
//! audit trail).
//!
//! With replicas, the brute-force phase sends 40 failures per replica: no replica alone sees
//! the 50 the rule asks for, the fleet sees them all. Each replica's alert webhook goes to a
//! receiver in the demo, and the summary says how many replicas fired each alert and how
//! many messages it sent: one per incident.
//! `OTEL_EXPORTER_OTLP_ENDPOINT` exports everything to a collector. While it runs, open
//! `http://127.0.0.1:3000/auth/dashboard`; `/metrics`, `/auth/health` and `/auth/stats` are
//! served too.
//!
//! The service: `POST /api/auth/sign-in/email`, `POST /api/auth/sign-up/email` (JSON `email`,
//! `password`), `GET /api/auth/get-session`, `POST /api/auth/refresh-token` (rate limited per
//! client), `POST /api/auth/sign-out`, and `GET /api/me`, `GET /api/orders` behind a
//! `TokenGuard`. Users live in SQLite (in memory), checked by a health check. Clients are told
//! apart by `X-Forwarded-For` (one trusted proxy), as behind a load balancer.
//!
//! The phases: normal traffic; a brute-force burst from one IP; password spraying (one IP, one
//! password, 30 accounts); a rate-limit storm; an invalid-token spike; a latency regression; a
//! database outage; credential stuffing (leaked pairs from many addresses); recovery. Normal
//! traffic runs throughout. The account-level rules count over 2 minutes here (10 by default),
//! so that credential stuffing has windows before it to compare with.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authwatch::alerts::{AccountConfig, SystemClock};
use authwatch::health::HealthCheck;
use authwatch::{
    AlertConfig, AlertEvent, AlertState, AuthWatch, BlockPolicy, ClientIp, Fleet, WindowConfig,
};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqlitePool, SqlitePoolOptions};
use tokio::sync::Semaphore;
use tower_http::validate_request::ValidateRequestHeaderLayer;

// ---------------------------------------------------------------------------------------------
// The service

/// One replica of the service: its own monitor, and what every replica shares (the database,
/// the sessions, the rate limiter, the story's switches), as a real service keeps them in a
/// database and a cache.
struct App {
    pool: SqlitePool,
    watch: AuthWatch,
    db_down: Arc<AtomicBool>,
    extra_latency_ms: Arc<AtomicU64>,
    sessions: Arc<Mutex<HashMap<String, String>>>,
    /// Per client: (start of the current second, requests in it), for the refresh limit.
    limiter: Arc<Mutex<HashMap<IpAddr, (Instant, u32)>>>,
    next_token: Arc<AtomicU64>,
}

type Shared = Arc<App>;

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

/// A fast pseudo-random number (splitmix64 over a shared counter); the demo needs variety, not
/// secrecy.
fn rnd() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0x853c_49e6_748f_ea9b);
    let mut z = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn client(headers: &HeaderMap) -> Option<IpAddr> {
    headers
        .get("x-forwarded-for")?
        .to_str()
        .ok()?
        .rsplit(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

fn hash(password: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"authwatch-demo-salt:");
    h.update(password.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl App {
    async fn find_user(&self, email: &str) -> Result<Option<String>, StatusCode> {
        if self.db_down.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await; // the connect timeout
            return Err(StatusCode::SERVICE_UNAVAILABLE);
        }
        let q = sqlx::query_scalar::<_, String>("SELECT password_hash FROM users WHERE email = ?")
            .bind(email)
            .fetch_optional(&self.pool);
        self.watch
            .time_query("find_user", q)
            .await
            .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
    }

    fn issue(&self, email: &str) -> String {
        let t = format!(
            "s-{:x}-{:x}",
            self.next_token.fetch_add(1, Ordering::Relaxed),
            rnd()
        );
        self.sessions
            .lock()
            .unwrap()
            .insert(t.clone(), email.to_owned());
        t
    }

    fn session(&self, headers: &HeaderMap) -> Option<String> {
        let token = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        self.sessions.lock().unwrap().get(token).cloned()
    }
}

async fn sign_in(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let ip = client(&headers);
    let audit = app.watch.audit_logger();
    let Ok(c) = serde_json::from_slice::<Credentials>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    // Password hashing takes a few milliseconds, and longer in the latency-regression phase.
    let extra = app.extra_latency_ms.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(2 + rnd() % 5 + extra)).await;
    let stored = match app.find_user(&c.email).await {
        Ok(s) => s,
        Err(code) => return code.into_response(),
    };
    if stored.as_deref() != Some(hash(&c.password).as_str()) {
        audit.log_login_failure(&c.email, ip, None, "Invalid credentials");
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let token = app.issue(&c.email);
    audit.log_login_success(&c.email, ip, None);
    audit.log_token_issued(&c.email, "session", ip, None);
    Json(serde_json::json!({ "token": token })).into_response()
}

async fn sign_up(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(c) = serde_json::from_slice::<Credentials>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if c.password.len() < 8 || !c.email.contains('@') {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    if app.db_down.load(Ordering::Relaxed) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    tokio::time::sleep(Duration::from_millis(4)).await;
    let insert = sqlx::query("INSERT INTO users (email, password_hash) VALUES (?, ?)")
        .bind(&c.email)
        .bind(hash(&c.password))
        .execute(&app.pool);
    match app.watch.time_query("insert_user", insert).await {
        Ok(_) => {
            app.watch
                .audit_logger()
                .log_registration(&c.email, client(&headers), None);
            let token = app.issue(&c.email);
            Json(serde_json::json!({ "token": token })).into_response()
        }
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            StatusCode::CONFLICT.into_response()
        }
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn get_session(State(app): State<Shared>, headers: HeaderMap) -> Response {
    tokio::time::sleep(Duration::from_micros(300)).await;
    match app.session(&headers) {
        Some(email) => Json(serde_json::json!({ "user": { "email": email } })).into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn refresh_token(State(app): State<Shared>, headers: HeaderMap) -> Response {
    // At most 5 refreshes per second per client.
    if let Some(ip) = client(&headers) {
        let mut l = app.limiter.lock().unwrap();
        let now = Instant::now();
        let e = l.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= Duration::from_secs(1) {
            *e = (now, 0);
        }
        e.1 += 1;
        if e.1 > 5 {
            drop(l);
            app.watch
                .audit_logger()
                .log_rate_limited(None, Some(ip), None);
            return StatusCode::TOO_MANY_REQUESTS.into_response();
        }
    }
    match app.session(&headers) {
        Some(email) => Json(serde_json::json!({ "token": app.issue(&email) })).into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn sign_out(State(app): State<Shared>, headers: HeaderMap) -> StatusCode {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token.and_then(|t| app.sessions.lock().unwrap().remove(t)) {
        Some(email) => {
            app.watch
                .audit_logger()
                .log_logout(&email, client(&headers), None);
            StatusCode::OK
        }
        None => StatusCode::UNAUTHORIZED,
    }
}

/// Where the replicas of a fleet meet.
struct FleetSetup {
    redis: String,
    namespace: String,
    /// The alert webhook every replica posts to (the demo's own receiver).
    webhook: String,
}

/// The audit log of replica `k` with `--block` (a fresh folder under the system's temporary
/// one, for the incident report at the end).
fn audit_dir(k: usize) -> std::path::PathBuf {
    let d = audit_dir_path(k);
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// With `--block`: the blocks the attack alerts made, what they refused, and the incident
/// report of the audit trail.
fn block_summary(watches: &[AuthWatch]) {
    let refused: u64 = watches
        .iter()
        .map(|w| w.blocked_requests().iter().sum::<u64>())
        .sum();
    println!(
        "
blocks (--block): {refused} requests refused by the blocks"
    );
    for (k, w) in watches.iter().enumerate() {
        w.audit_logger().sync();
        let dir = audit_dir_path(k);
        for line in std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|f| std::fs::read_to_string(f.path()).ok())
            .flat_map(|t| t.lines().map(str::to_owned).collect::<Vec<_>>())
        {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["event.name"] == "auth.block.added" {
                println!(
                    "BLOCKED {} for {}s: {}",
                    v["client.address"].as_str().unwrap_or("?"),
                    v["auth.block.ttl_s"],
                    v["auth.block.reason"].as_str().unwrap_or("")
                );
            }
        }
        if k == 0 {
            match authwatch::incidents::report(
                &dir,
                Duration::from_secs(24 * 3600),
                authwatch::incidents::Addresses::Unmasked,
            ) {
                Ok(md) => println!(
                    "
incident report (authwatch incident report --audit-dir {} --unmasked):

{md}",
                    dir.display()
                ),
                Err(e) => println!("incident report: {e}"),
            }
        }
    }
}

/// [`audit_dir`] without emptying it.
fn audit_dir_path(k: usize) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "authwatch-demo-audit-{}-{}",
        std::process::id(),
        k + 1
    ))
}

/// The service: one replica, or `replicas` of them sharing one backend (in fleet mode on
/// `fleet`'s Redis).
async fn build(
    args: &Args,
    scale: f64,
    fleet: Option<&FleetSetup>,
) -> Result<Vec<(Shared, Router, AuthWatch)>, Box<dyn std::error::Error>> {
    // One connection: an in-memory SQLite database lives as long as its connection.
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await?;
    sqlx::query("CREATE TABLE users (email TEXT PRIMARY KEY, password_hash TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    for i in 0..USERS {
        sqlx::query("INSERT INTO users VALUES (?, ?)")
            .bind(user(i))
            .bind(hash(PASSWORD))
            .execute(&pool)
            .await?;
    }
    let db_down = Arc::new(AtomicBool::new(false));
    let extra_latency_ms = Arc::new(AtomicU64::new(0));
    let sessions = Arc::new(Mutex::new(HashMap::new()));
    let limiter = Arc::new(Mutex::new(HashMap::new()));
    let next_token = Arc::new(AtomicU64::new(1));
    let mut out = Vec::new();
    for k in 0..args.replicas.max(1) {
        let (check_pool, check_down) = (pool.clone(), db_down.clone());
        // The account-level rules over 2 minutes instead of 10: credential stuffing compares a
        // window with the windows before it, and a 20-minute story has room for a few of
        // 2 minutes (a few of 6 s with --speed) but not of 10.
        let mut alerts = AlertConfig::new()
            .accounts(AccountConfig::default().window(Duration::from_secs(120)))
            .time_scale(scale)
            .clock(Arc::new(SystemClock::new()));
        if let Some(url) = &args.alertmanager {
            alerts = alerts.alertmanager(url.clone());
        }
        if let Some(f) = fleet {
            alerts = alerts.webhook(f.webhook.clone());
        }
        let builder = AuthWatch::builder()
            .service_name("authwatch-demo")
            .client_ip(ClientIp::x_forwarded_for(1))
            .window(WindowConfig::new(
                Duration::from_secs(300).mul_f64(scale),
                10,
            )?)
            .health_cache(Duration::from_secs(2).mul_f64(scale))
            .health_check(
                HealthCheck::new("database", move || {
                    let (pool, down) = (check_pool.clone(), check_down.clone());
                    async move {
                        if down.load(Ordering::Relaxed) {
                            return Err("database unreachable: connection refused".to_owned());
                        }
                        sqlx::query("SELECT 1")
                            .execute(&pool)
                            .await
                            .map(|_| Default::default())
                            .map_err(|e| e.to_string())
                    }
                })
                .timeout(Duration::from_secs(1)),
            )
            .alerts(alerts);
        // With --block: the attack alerts' addresses are refused for 15 minutes (45 s with
        // --speed), and every decision and incident goes to an audit log of the demo's own.
        let builder = if args.block {
            builder
                .blocking(BlockPolicy::default().ttl(Duration::from_secs(900).mul_f64(scale)))
                .audit_dir(audit_dir(k))
        } else {
            builder
        };
        let builder = match fleet {
            Some(f) => builder.fleet(
                Fleet::redis(f.redis.clone())
                    .namespace(f.namespace.clone())
                    .instance_name(format!("replica-{}", k + 1))
                    .flush_interval(Duration::from_secs(1).mul_f64(scale)),
            ),
            None => builder,
        };
        let watch = builder.build()?;
        let app = Arc::new(App {
            pool: pool.clone(),
            watch: watch.clone(),
            db_down: db_down.clone(),
            extra_latency_ms: extra_latency_ms.clone(),
            sessions: sessions.clone(),
            limiter: limiter.clone(),
            next_token: next_token.clone(),
        });
        let guarded_app = app.clone();
        let guard = watch.token_guard(ValidateRequestHeaderLayer::custom(
            #[allow(clippy::result_large_err)] // the signature tower-http asks for
            move |req: &mut Request| -> Result<(), Response> {
                if guarded_app.session(req.headers()).is_some() {
                    Ok(())
                } else {
                    Err(StatusCode::UNAUTHORIZED.into_response())
                }
            },
        ));
        let protected = Router::new()
            .route(
                "/api/me",
                get(|| async { Json(serde_json::json!({ "user": "you" })) }),
            )
            .route("/api/orders", get(|| async { Json(serde_json::json!([])) }))
            .layer(guard);
        let router = Router::new()
            .route("/api/auth/sign-in/email", post(sign_in))
            .route("/api/auth/sign-up/email", post(sign_up))
            .route("/api/auth/get-session", get(get_session))
            .route("/api/auth/refresh-token", post(refresh_token))
            .route("/api/auth/sign-out", post(sign_out))
            .with_state(app.clone())
            .merge(protected)
            .merge(watch.endpoints());
        out.push((app, router, watch));
    }
    Ok(out)
}

/// A `redis-server` the demo started, stopped when the demo ends.
struct OwnRedis(std::process::Child);

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Redis of `--replicas`: `--redis`, else `AUTHWATCH_REDIS_URL`, else a `redis-server`
/// started here (from `PATH`, or `.test-deps/bin` where `scripts/test-deps.sh` puts it) on a
/// free loopback port, without persistence.
fn redis_for_replicas(args: &Args) -> Result<(String, Option<OwnRedis>), String> {
    if let Some(url) = args.redis.clone().or_else(|| {
        std::env::var("AUTHWATCH_REDIS_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
    }) {
        return Ok((url, None));
    }
    let local =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-deps/bin/redis-server");
    let bin = if local.exists() {
        local
    } else {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join("redis-server"))
            .find(|p| p.exists())
            .ok_or(
                "--replicas needs a Redis and none was found: run scripts/test-deps.sh \
                 (it installs redis-server into .test-deps/bin), or name one with \
                 --redis URL or AUTHWATCH_REDIS_URL",
            )?
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port for Redis: {e}"))?
        .port();
    let child = std::process::Command::new(&bin)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args([
            "--appendonly",
            "no",
            "--dir",
            &std::env::temp_dir().to_string_lossy(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let own = OwnRedis(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{} did not start on port {port}", bin.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((format!("redis://127.0.0.1:{port}"), Some(own)))
}

/// The alert webhook of the replicas: keeps the text of every message.
async fn webhook_receiver() -> std::io::Result<(String, Arc<Mutex<Vec<String>>>)> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let app = Router::new().route(
        "/hook",
        post(move |body: Bytes| {
            let g = g.clone();
            async move {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                    g.lock()
                        .unwrap()
                        .push(v["text"].as_str().unwrap_or_default().to_owned());
                }
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, got))
}

// ---------------------------------------------------------------------------------------------
// The traffic

const USERS: usize = 40;
const PASSWORD: &str = "correct horse battery";

fn user(i: usize) -> String {
    format!("user{i}@example.com")
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Clone)]
struct Traffic {
    client: HttpClient,
    /// Every replica's address; requests go round-robin over them.
    bases: Arc<Vec<String>>,
    next: Arc<AtomicU64>,
    /// With replicas: the brute-force failures sent to each so far (sent round-robin on
    /// their own, so each replica gets its exact share).
    brute: Arc<Vec<AtomicU64>>,
    /// Spraying attempts and stuffed pairs sent so far.
    sprayed: Arc<AtomicU64>,
    stuffed: Arc<AtomicU64>,
    inflight: Arc<Semaphore>,
    sent: Arc<AtomicU64>,
    tokens: Arc<Mutex<Vec<String>>>,
    /// Sign-ins and session checks so far: every 50th sign-in is a typo and every 100th
    /// session check carries an expired token, counted rather than drawn at random, so the
    /// first seconds of normal traffic never carry a burst of failures by chance.
    sign_ins: Arc<AtomicU64>,
    checks: Arc<AtomicU64>,
    /// The token the next sign-out uses: taken off the shared list one sign-out earlier
    /// (half a second), so no session check still in flight with it can lose the race to
    /// the sign-out and fail.
    retiring: Arc<Mutex<Option<String>>>,
}

impl Traffic {
    /// Sends one request in the background to the next replica (at most 256 at a time; when
    /// the service is slow, the generator waits rather than piling up).
    async fn send(
        &self,
        method: &str,
        path: &str,
        ip: String,
        token: Option<String>,
        body: Option<String>,
    ) {
        let replica = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.bases.len();
        self.send_to(replica, method, path, ip, token, body).await;
    }

    /// [`send`](Self::send) to one replica.
    async fn send_to(
        &self,
        replica: usize,
        method: &str,
        path: &str,
        ip: String,
        token: Option<String>,
        body: Option<String>,
    ) {
        let Ok(permit) = self.inflight.clone().acquire_owned().await else {
            return;
        };
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.bases[replica]))
            .header("x-forwarded-for", ip)
            .header("user-agent", "authwatch-demo/1.0");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("a valid request");
        let (client, sent, tokens) = (self.client.clone(), self.sent.clone(), self.tokens.clone());
        tokio::spawn(async move {
            if let Ok(res) = client.request(req).await {
                let ok = res.status().is_success();
                if let Ok(b) = res.into_body().collect().await {
                    if ok {
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b.to_bytes()) {
                            if let Some(t) = v["token"].as_str() {
                                let mut ts = tokens.lock().unwrap();
                                if ts.len() < 200 {
                                    ts.push(t.to_owned());
                                } else {
                                    let i = (rnd() as u32) as usize % ts.len();
                                    ts[i] = t.to_owned();
                                }
                            }
                        }
                    }
                }
            }
            sent.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
    }

    fn token(&self) -> Option<String> {
        let ts = self.tokens.lock().unwrap();
        (!ts.is_empty()).then(|| ts[(rnd() as u32) as usize % ts.len()].clone())
    }

    /// A live token to sign out with: the one taken off the shared list at the previous call
    /// (a new one is taken off now for the next call).
    fn take_token(&self) -> Option<String> {
        let next = {
            let mut ts = self.tokens.lock().unwrap();
            (!ts.is_empty()).then(|| {
                let i = (rnd() as u32) as usize % ts.len();
                ts.swap_remove(i)
            })
        };
        std::mem::replace(&mut *self.retiring.lock().unwrap(), next)
    }

    fn sign_in_body(i: usize, right: bool) -> Option<String> {
        let pw = if right { PASSWORD } else { "hunter2" };
        Some(format!(
            "{{\"email\":\"{}\",\"password\":\"{pw}\"}}",
            user(i)
        ))
    }

    /// One tick (20 per second) of the everyday mix, from 40 users on 10.0.x.x.
    async fn normal(&self, tick: u64) {
        let i = (rnd() as u32) as usize % USERS;
        let ip = format!("10.0.{}.{}", i / 200, 10 + i % 200);
        // Sign-ins: mostly right, 1 in 50 a typo.
        let right = self.sign_ins.fetch_add(1, Ordering::Relaxed) % 50 != 49;
        self.send(
            "POST",
            "/api/auth/sign-in/email",
            ip.clone(),
            None,
            Self::sign_in_body(i, right),
        )
        .await;
        // Session checks and protected calls with a live token (once someone has signed in);
        // 1 in 100 with an expired one.
        for _ in 0..2 {
            let Some(live) = self.token() else { break };
            let t = if self.checks.fetch_add(1, Ordering::Relaxed) % 100 == 99 {
                Some("s-expired".to_owned())
            } else {
                Some(live)
            };
            self.send("GET", "/api/auth/get-session", ip.clone(), t.clone(), None)
                .await;
            self.send("GET", "/api/me", ip.clone(), t, None).await;
        }
        if tick.is_multiple_of(4) {
            if let Some(t) = self.token() {
                self.send("POST", "/api/auth/refresh-token", ip.clone(), Some(t), None)
                    .await;
            }
        }
        if tick.is_multiple_of(5) {
            // Sign-ups: new addresses, 1 in 20 already taken.
            let email = if tick.is_multiple_of(100) {
                user(0)
            } else {
                format!("new{}-{tick}@example.com", (rnd() as u32))
            };
            let body = format!("{{\"email\":\"{email}\",\"password\":\"a long passphrase\"}}");
            self.send(
                "POST",
                "/api/auth/sign-up/email",
                ip.clone(),
                None,
                Some(body),
            )
            .await;
        }
        if tick.is_multiple_of(10) {
            if let Some(t) = self.take_token() {
                self.send("POST", "/api/auth/sign-out", ip, Some(t), None)
                    .await;
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Normal,
    BruteForce,
    Spraying,
    Stuffing,
    RateLimitStorm,
    InvalidTokens,
    Latency,
    DatabaseOutage,
    Recovery,
}

struct Phase {
    kind: Kind,
    name: &'static str,
    /// Share of the whole story.
    share: f64,
    /// The alert this phase must fire.
    expect: Option<&'static str>,
    /// The other alerts its traffic explains; any other that fires in it is marked in the
    /// summary as a side effect to look at.
    explains: &'static [&'static str],
}

const PHASES: [Phase; 9] = [
    Phase {
        kind: Kind::Normal,
        name: "normal traffic",
        share: 0.17,
        expect: None,
        explains: &[],
    },
    Phase {
        kind: Kind::BruteForce,
        name: "brute force from one IP",
        share: 0.11,
        expect: Some("AuthBruteForceSuspected"),
        explains: &[
            "AuthLoginFailureRateElevated",
            "AuthLoginFailureRateHigh",
            // Dozens of wrong passwords for each of the 4 accounts guessed.
            "AuthAccountBruteForce",
            // With --replicas, the 40 per replica go over the 40 accounts in turn: spraying too.
            "AuthPasswordSpraying",
        ],
    },
    Phase {
        kind: Kind::Spraying,
        name: "password spraying",
        share: 0.10,
        expect: Some("AuthPasswordSpraying"),
        explains: &["AuthLoginFailureRateElevated", "AuthLoginFailureRateHigh"],
    },
    Phase {
        kind: Kind::RateLimitStorm,
        name: "rate-limit storm",
        share: 0.10,
        expect: Some("AuthRateLimitUnderAttack"),
        explains: &["AuthRateLimitEvents"],
    },
    Phase {
        kind: Kind::InvalidTokens,
        name: "invalid-token spike",
        share: 0.10,
        expect: Some("AuthInvalidTokenSpike"),
        explains: &["AuthTokenValidationFailureRateHigh"],
    },
    Phase {
        kind: Kind::Latency,
        name: "latency regression",
        share: 0.11,
        expect: Some("AuthResponseTimeP95High"),
        explains: &["AuthResponseTimeP95Critical"],
    },
    Phase {
        kind: Kind::DatabaseOutage,
        name: "database outage",
        share: 0.10,
        expect: Some("AuthServiceDown"),
        explains: &[
            "AuthLoginFailureRateElevated",
            "AuthLoginFailureRateHigh",
            "AuthRegistrationFailureRateHigh",
        ],
    },
    Phase {
        kind: Kind::Stuffing,
        name: "credential stuffing",
        share: 0.10,
        expect: Some("AuthCredentialStuffing"),
        explains: &[
            "AuthLoginFailureRateElevated",
            "AuthLoginFailureRateHigh",
            // Many addresses failing on the sign-in route.
            "AuthDistributedBruteForce",
        ],
    },
    Phase {
        kind: Kind::Recovery,
        name: "recovery",
        share: 0.11,
        expect: None,
        explains: &[],
    },
];

const ATTACKER: &str = "203.0.113.66";
const STORM: &str = "198.51.100.23";
const SPRAYER: &str = "198.51.100.77";

/// Accounts the spraying phase tries, once each, with one common password: under the brute-force
/// rule's 50 failures from one address, over the spraying rule's 20 accounts. With replicas,
/// they go round-robin (10 each with three: the fleet counts them together).
const SPRAYED: u64 = 30;

/// Leaked pairs tried per tick in the credential-stuffing phase (40 a second), each account
/// once, each from its own address; 1 in 25 is a real user's real password.
const STUFFED_PER_TICK: u64 = 2;

/// The accounts the one-address brute force guesses the passwords of.
const BRUTE_ACCOUNTS: usize = 4;

/// Brute-force failures per replica with `--replicas`: under the rule's 50, while the fleet
/// sees them all.
const BRUTE_PER_REPLICA: u64 = 40;

/// One tick of the phase `kind`, `done` (0 to 1) of the way through it.
async fn attack(t: &Traffic, app: &App, kind: Kind, tick: u64, done: f64) {
    match kind {
        Kind::BruteForce if t.bases.len() > 1 => {
            // Spread over the first 90 % of the phase (a late tick must not leave any out),
            // round-robin: each replica gets BRUTE_PER_REPLICA.
            let n = t.bases.len() as u64;
            let share = (done / 0.9).min(1.0);
            let want =
                ((share * (BRUTE_PER_REPLICA * n) as f64).ceil() as u64).min(BRUTE_PER_REPLICA * n);
            let mut sent: u64 = t.brute.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            while sent < want {
                let replica = (sent % n) as usize;
                t.brute[replica].fetch_add(1, Ordering::Relaxed);
                t.send_to(
                    replica,
                    "POST",
                    "/api/auth/sign-in/email",
                    ATTACKER.into(),
                    None,
                    Traffic::sign_in_body(sent as usize % USERS, false),
                )
                .await;
                sent += 1;
            }
        }
        Kind::BruteForce => {
            // 3 wrong passwords per tick (60 a second) against 4 accounts: password guessing
            // (not spraying: too few accounts for AuthPasswordSpraying, which would otherwise
            // name, and with --block block, the address before AuthBruteForceSuspected does).
            for k in 0..3 {
                let i = (tick as usize * 3 + k) % BRUTE_ACCOUNTS;
                t.send(
                    "POST",
                    "/api/auth/sign-in/email",
                    ATTACKER.into(),
                    None,
                    Traffic::sign_in_body(i, false),
                )
                .await;
            }
        }
        Kind::Spraying => {
            app.extra_latency_ms.store(0, Ordering::Relaxed);
            app.db_down.store(false, Ordering::Relaxed);
            // One common password against SPRAYED accounts, spread over 90 % of the phase,
            // round-robin over the replicas.
            let n = t.bases.len() as u64;
            let want = (((done / 0.9).min(1.0) * SPRAYED as f64).ceil() as u64).min(SPRAYED);
            while t.sprayed.load(Ordering::Relaxed) < want {
                let k = t.sprayed.fetch_add(1, Ordering::Relaxed);
                let body = format!(
                    "{{\"email\":\"{}\",\"password\":\"Summer2026!\"}}",
                    user(k as usize)
                );
                t.send_to(
                    (k % n) as usize,
                    "POST",
                    "/api/auth/sign-in/email",
                    SPRAYER.into(),
                    None,
                    Some(body),
                )
                .await;
            }
        }
        Kind::Stuffing => {
            // The database is back.
            app.extra_latency_ms.store(0, Ordering::Relaxed);
            app.db_down.store(false, Ordering::Relaxed);
            for _ in 0..STUFFED_PER_TICK {
                let k = t.stuffed.fetch_add(1, Ordering::Relaxed);
                let ip = format!("100.64.{}.{}", (k / 250) % 250, k % 250 + 1);
                let body = if k % 25 == 24 {
                    Traffic::sign_in_body((k as usize) % USERS, true)
                } else {
                    Some(format!(
                        "{{\"email\":\"leaked{k}@example.net\",\"password\":\"hunter{k}\"}}"
                    ))
                };
                t.send("POST", "/api/auth/sign-in/email", ip, None, body)
                    .await;
            }
        }
        Kind::RateLimitStorm => {
            // 10 refreshes per tick (200 a second) from one client: all but 5 a second refused.
            for _ in 0..10 {
                t.send(
                    "POST",
                    "/api/auth/refresh-token",
                    STORM.into(),
                    t.token(),
                    None,
                )
                .await;
            }
        }
        Kind::InvalidTokens => {
            // Forged tokens from many addresses: 4 per tick.
            for k in 0..4 {
                let ip = format!("192.0.2.{}", (tick * 4 + k) % 250 + 1);
                let forged = format!("s-forged-{:x}", (rnd() as u32));
                t.send("GET", "/api/auth/get-session", ip, Some(forged), None)
                    .await;
            }
        }
        Kind::Latency => app.extra_latency_ms.store(700, Ordering::Relaxed),
        Kind::DatabaseOutage => {
            app.extra_latency_ms.store(0, Ordering::Relaxed);
            app.db_down.store(true, Ordering::Relaxed);
        }
        Kind::Normal | Kind::Recovery => {
            app.extra_latency_ms.store(0, Ordering::Relaxed);
            app.db_down.store(false, Ordering::Relaxed);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The terminal view

fn bar(done: f64, width: usize) -> String {
    let n = ((done.clamp(0.0, 1.0)) * width as f64).round() as usize;
    format!("{}{}", "█".repeat(n), "░".repeat(width - n))
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
}

fn view(
    watches: &[AuthWatch],
    urls: &[String],
    phase: usize,
    in_phase: f64,
    phase_len: f64,
    elapsed: f64,
) -> String {
    let (watch, url) = (&watches[0], &urls[0]);
    // With replicas, the fleet's figures (what the rules read).
    let s = watch.fleet_snapshot().unwrap_or_else(|| watch.snapshot());
    let mut out = String::new();
    out += &format!(
        "authwatch demo  {url}  (dashboard {url}/auth/dashboard, /metrics, /auth/health)\n\n"
    );
    if watches.len() > 1 {
        out += &format!(
            "a fleet of {}: the figures below are the fleet's; each replica alone:\n",
            watches.len()
        );
        for (w, u) in watches.iter().zip(urls) {
            let own = w.snapshot();
            let requests: u64 = own.ops().iter().map(|o| o.total()).sum();
            let fleet = w.fleet_status();
            out += &format!(
                "  {u:<24} {requests:>7} requests  p95 {:>6} ms  Redis {}\n",
                ms(own.response_time().p95),
                if fleet.is_some_and(|f| f.connected) {
                    "reached"
                } else {
                    "unreachable"
                }
            );
        }
        out += "\n";
    }
    let p = &PHASES[phase];
    out += &format!(
        "phase {}/{} {:<26} [{}] {:>5.1}/{:.1} s   elapsed {:.0} s\n\n",
        phase + 1,
        PHASES.len(),
        p.name,
        bar(in_phase / phase_len, 30),
        in_phase,
        phase_len,
        elapsed
    );
    out += &format!(
        "{:<17} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}\n",
        "operation", "requests", "failure%", "limited", "p50 ms", "p95 ms", "p99 ms"
    );
    for o in s.ops() {
        if o.total() == 0 {
            continue;
        }
        out += &format!(
            "{:<17} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}\n",
            o.op.as_str(),
            o.total(),
            o.failure_ratio()
                .map_or("-".into(), |r| format!("{:.1}", r * 100.0)),
            o.rate_limited,
            ms(o.p50),
            ms(o.p95),
            ms(o.p99)
        );
    }
    out += "\nfiring alerts:\n";
    if s.alerts().is_empty() {
        out += "  none\n";
    }
    for a in s.alerts() {
        let desc = a.annotations.get("description").map_or("", String::as_str);
        out += &format!(
            "  {:<8} {:<34} {desc}\n",
            a.severity.as_str().to_uppercase(),
            a.name
        );
    }
    if let Some(e) = watch.alert_engine() {
        let top = e.suspects();
        out += "\ntop offending IPs (failures in the brute-force window):\n";
        if top.is_empty() {
            out += "  none over the threshold\n";
        }
        for x in top.iter().take(5) {
            out += &format!("  {:<18} {}\n", x.ip.to_string(), x.failures);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------

struct Args {
    port: u16,
    replicas: usize,
    redis: Option<String>,
    duration: Option<f64>,
    speed: bool,
    no_traffic: bool,
    plain: bool,
    alertmanager: Option<String>,
    /// Block the addresses the attack alerts name, and end with the incident report.
    block: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        port: 3000,
        replicas: 1,
        redis: None,
        duration: None,
        speed: false,
        no_traffic: false,
        plain: !std::io::stdout().is_terminal(),
        alertmanager: None,
        block: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--port" => a.port = it.next().and_then(|v| v.parse().ok()).ok_or("--port N")?,
            "--duration" => {
                a.duration = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .filter(|d: &f64| *d >= 5.0)
                        .ok_or("--duration SECONDS (at least 5)")?,
                );
            }
            "--speed" => a.speed = true,
            "--no-traffic" => a.no_traffic = true,
            "--plain" => a.plain = true,
            "--alertmanager" => a.alertmanager = Some(it.next().ok_or("--alertmanager URL")?),
            "--replicas" => {
                a.replicas = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1..=16).contains(n))
                    .ok_or("--replicas N (1 to 16)")?;
            }
            "--redis" => a.redis = Some(it.next().ok_or("--redis URL")?),
            "--block" => a.block = true,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

const USAGE: &str = "usage: demo [--port N] [--duration SECONDS] [--speed] [--no-traffic] [--plain] [--alertmanager URL] [--replicas N] [--redis URL] [--block]";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("demo: {e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    // Alerts and health failures are logged; keep them off the live view.
    let scale = if args.speed { 1.0 / 20.0 } else { 1.0 };
    let total = args
        .duration
        // Real windows need 20 minutes: the invalid-token spike is judged against a baseline of
        // at least one 5-minute window before its own, so it can fire from the 10th minute on,
        // inside its phase (9 to 11.4 minutes).
        .unwrap_or(if args.speed { 60.0 } else { 1200.0 });
    // With replicas: a Redis (found, named or started here) and a webhook receiver that
    // counts the messages the fleet sends.
    let mut _own_redis = None;
    let mut hook = None;
    let fleet = if args.replicas > 1 {
        let (redis, own) = match redis_for_replicas(&args) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("demo: {e}");
                std::process::exit(2);
            }
        };
        _own_redis = own;
        let (webhook, got) = webhook_receiver().await?;
        hook = Some(got);
        Some(FleetSetup {
            redis,
            namespace: format!("demo-{}", std::process::id()),
            webhook,
        })
    } else {
        None
    };
    let replicas = build(&args, scale, fleet.as_ref()).await?;
    let (app, _, watch) = replicas[0].clone();
    let watches: Vec<AuthWatch> = replicas.iter().map(|r| r.2.clone()).collect();
    // Alerts and health failures go to stderr (off the live view); with OTLP on, the
    // `auth.request` spans are exported as traces too.
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        use tracing_subscriber::Layer as _;
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            // Colours for a terminal only: a file or a pipe gets plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "authwatch=warn".into()),
            );
        let traces = watch.pipeline().tracing_layer().map(|l| {
            l.with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("authwatch::request", tracing::Level::INFO),
            )
        });
        tracing_subscriber::registry()
            .with(logs)
            .with(traces)
            .init();
    }
    let mut urls = Vec::new();
    for (k, (_, router, w)) in replicas.iter().enumerate() {
        let port = if args.port == 0 {
            0
        } else {
            args.port.saturating_add(k as u16)
        };
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        if k == 0 {
            println!("listening on {url}");
            println!(
                "dashboard: {url}/auth/dashboard   metrics: {url}/metrics   health: {url}/auth/health"
            );
        } else {
            println!("replica {} on {url}", k + 1);
        }
        let service = w.wrap(router.clone());
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
                    SocketAddr,
                >(service),
            )
            .await;
        });
        urls.push(url);
    }
    if let Some(f) = &fleet {
        println!(
            "a fleet of {} replicas on {} (namespace {}), traffic round-robin over them",
            replicas.len(),
            f.redis,
            f.namespace
        );
    }
    if args.no_traffic {
        println!("serving only (--no-traffic); Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
        for w in &watches {
            w.shutdown().await?;
        }
        return Ok(());
    }
    let traffic = Traffic {
        client: Client::builder(TokioExecutor::new()).build_http(),
        bases: Arc::new(urls.clone()),
        next: Arc::new(AtomicU64::new(0)),
        brute: Arc::new((0..urls.len()).map(|_| AtomicU64::new(0)).collect()),
        sprayed: Arc::new(AtomicU64::new(0)),
        stuffed: Arc::new(AtomicU64::new(0)),
        inflight: Arc::new(Semaphore::new(256)),
        sent: Arc::new(AtomicU64::new(0)),
        tokens: Arc::new(Mutex::new(Vec::new())),
        sign_ins: Arc::new(AtomicU64::new(0)),
        checks: Arc::new(AtomicU64::new(0)),
        retiring: Arc::new(Mutex::new(None)),
    };
    let started = Instant::now();
    let mut bounds = Vec::new();
    let mut at = 0.0;
    for p in &PHASES {
        bounds.push((at, at + p.share * total));
        at += p.share * total;
    }
    let mut tick = 0u64;
    let mut last_view = Instant::now() - Duration::from_secs(1);
    let mut phase = 0;
    if !args.plain {
        print!("\x1b[2J");
    }
    loop {
        let elapsed = started.elapsed().as_secs_f64();
        if elapsed >= total {
            break;
        }
        while elapsed >= bounds[phase].1 && phase + 1 < PHASES.len() {
            phase += 1;
        }
        let kind = PHASES[phase].kind;
        let (from, to) = bounds[phase];
        traffic.normal(tick).await;
        attack(&traffic, &app, kind, tick, (elapsed - from) / (to - from)).await;
        if last_view.elapsed() >= Duration::from_millis(if args.plain { 1000 } else { 250 }) {
            last_view = Instant::now();
            if args.plain {
                let s = watch.snapshot();
                let names: Vec<&str> = s.alerts().iter().map(|a| a.name.as_str()).collect();
                println!(
                    "t={elapsed:5.1}s phase={:<24} requests={:<7} firing=[{}]",
                    PHASES[phase].name,
                    traffic.sent.load(Ordering::Relaxed),
                    names.join(", ")
                );
            } else {
                print!(
                    "\x1b[H\x1b[J{}",
                    view(&watches, &urls, phase, elapsed - from, to - from, elapsed)
                );
                let _ = std::io::stdout().flush();
            }
        }
        tick += 1;
        // 20 ticks a second.
        let next = started + Duration::from_millis(50 * tick);
        tokio::time::sleep_until(next.into()).await;
    }
    app.db_down.store(false, Ordering::Relaxed);
    app.extra_latency_ms.store(0, Ordering::Relaxed);
    if !args.plain {
        let (from, to) = bounds[PHASES.len() - 1];
        print!(
            "\x1b[H\x1b[J{}",
            view(
                &watches,
                &urls,
                PHASES.len() - 1,
                to - from,
                to - from,
                total
            )
        );
    }
    // The summary: which alert fired in which phase, and when.
    let history = watch
        .alert_engine()
        .map(|e| e.history())
        .unwrap_or_default();
    println!(
        "\nsummary ({} requests in {total:.0} s, alert windows scaled ×{scale}):\n",
        traffic.sent.load(Ordering::Relaxed)
    );
    println!(
        "{:<26} {:<13} {:<40} fired (seconds from start)",
        "phase", "time", "expected"
    );
    let mut missing = Vec::new();
    for (i, p) in PHASES.iter().enumerate() {
        let (from, to) = bounds[i];
        let mut fired: Vec<String> = history
            .iter()
            .filter(|e| e.alert.state == AlertState::Firing)
            .filter(|e| {
                let t = e.at.as_secs_f64();
                t >= from && (t < to || i + 1 == PHASES.len())
            })
            .map(|e| {
                let who = e
                    .alert
                    .label("client_ip")
                    .map(|ip| format!(" {ip}"))
                    .unwrap_or_default();
                let name = e.alert.name.as_str();
                // A side effect this phase does not explain.
                let mark = if p.expect == Some(name) || p.explains.contains(&name) {
                    ""
                } else {
                    " [unexplained]"
                };
                format!("{name}{who} ({:.1}){mark}", e.at.as_secs_f64())
            })
            .collect();
        fired.dedup();
        let expect = match p.expect {
            Some(name) => {
                let ok = fired.iter().any(|f| f.starts_with(name));
                if !ok {
                    missing.push(name);
                }
                format!("{name} {}", if ok { "✓" } else { "✗ MISSING" })
            }
            None => "—".to_owned(),
        };
        println!(
            "PHASE {:<20} {:>5.1}–{:<5.1}s {:<40} {}",
            p.name,
            from,
            to,
            expect,
            if fired.is_empty() {
                "—".to_owned()
            } else {
                fired.join(", ")
            }
        );
    }
    println!(
        "\n[unexplained]: fired in a phase whose traffic does not explain it (a side effect to look at)."
    );
    let still: Vec<String> = watch
        .snapshot()
        .alerts()
        .iter()
        .map(|a| a.name.clone())
        .collect();
    println!(
        "\nstill firing at the end: {}",
        if still.is_empty() {
            "none".into()
        } else {
            still.join(", ")
        }
    );
    if let Some(hook) = &hook {
        fleet_summary(&watches, &traffic, &hook.lock().unwrap());
    }
    if args.block {
        block_summary(&watches);
    }
    if missing.is_empty() {
        println!("RESULT every phase fired its alert");
    } else {
        println!("RESULT missing: {}", missing.join(", "));
    }
    for w in &watches {
        w.shutdown().await?;
    }
    Ok(())
}

/// With replicas: per alert that fired, how many replicas fired it, its largest value, and
/// how many webhook messages the fleet sent for it (one per incident).
fn fleet_summary(watches: &[AuthWatch], traffic: &Traffic, messages: &[String]) {
    let sent: Vec<String> = traffic
        .brute
        .iter()
        .map(|c| c.load(Ordering::Relaxed).to_string())
        .collect();
    println!(
        "\nfleet of {}: the brute-force phase sent {} failures to the replicas (the rule fires above 50)",
        watches.len(),
        sent.join(", ")
    );
    let n = watches.len() as u64;
    let per: Vec<String> = (0..n)
        .map(|r| (SPRAYED / n + u64::from(r < SPRAYED % n)).to_string())
        .collect();
    println!(
        "the spraying phase tried {SPRAYED} accounts from one address, round-robin: {} to the replicas (the rule fires from 20)",
        per.join(", ")
    );
    let histories: Vec<Vec<AlertEvent>> = watches
        .iter()
        .map(|w| w.alert_engine().map(|e| e.history()).unwrap_or_default())
        .collect();
    // Every alert (name and labels) that fired on some replica, in order of first firing.
    let mut seen: Vec<(String, String)> = Vec::new();
    for e in histories.iter().flatten() {
        let key = (e.alert.name.clone(), e.alert.own_labels());
        if e.alert.state == AlertState::Firing && !seen.contains(&key) {
            seen.push(key);
        }
    }
    for (name, labels) in seen {
        let firing = |e: &&AlertEvent| {
            e.alert.state == AlertState::Firing
                && e.alert.name == name
                && e.alert.own_labels() == labels
        };
        let on = histories
            .iter()
            .filter(|h| h.iter().any(|e| firing(&e)))
            .count();
        // How many times it fired (resolving in between), on the replica that saw it most.
        let incidents = histories
            .iter()
            .map(|h| h.iter().filter(|e| firing(e)).count())
            .max()
            .unwrap_or(0);
        let value = histories
            .iter()
            .flatten()
            .filter(firing)
            .map(|e| e.alert.value)
            .fold(f64::NAN, f64::max);
        let head = format!("[FIRING] {name} (");
        let messages = messages
            .iter()
            .filter(|m| m.starts_with(&head) && (labels.is_empty() || m.contains(&labels)))
            .count();
        let value = if (value - value.round()).abs() < 1e-9 {
            format!("{value:.0}")
        } else {
            format!("{value:.3}")
        };
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        println!(
            "FLEET {name}{}{labels}: fired on {on} of {} replicas (value at firing {value}), \
             {incidents} incident{}, {messages} webhook message{}",
            if labels.is_empty() { "" } else { " " },
            watches.len(),
            plural(incidents),
            plural(messages)
        );
    }
}
