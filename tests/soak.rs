//! Soak: the axum example (OTLP metrics and audit logs to a real rotel collector every second)
//! under mixed auth traffic for a fixed time: sign-in, session reads, the guarded route, token
//! refresh, sign-out, failed logins that turn into 429s, invalid tokens, lockouts, duplicate
//! sign-ups, and clients that give up on a slow password reset (cancellations). The example's
//! resident memory is sampled every second. After the warm-up, memory may not grow by more
//! than 2 % nor trend upwards (least-squares slope over the rest of the run, projected over
//! it, ≤ 2 %); the audit queue drops nothing; and once the example stops, the collector holds
//! exactly the counts the clients saw (the export kept up, nothing lost or counted twice).
//!
//! The warm-up is 390 s: the HDR windows, the active-user and session sketches are per 30-s
//! slot of a 5-minute window, and each slot's memory grows to its working size the first time
//! the ring reaches it (the brute-force sketch is resident from the start); in a 15-minute run
//! the last such step came at 360 s. After that, nothing may grow. `AUTHWATCH_SOAK_SECS`
//! (default 480: the warm-up and 90 s) and `AUTHWATCH_SOAK_WARMUP_SECS` (default 390) set the
//! length; `scripts/soak.sh` runs the warm-up and 10 minutes in a release build and prints
//! every sample. Needs `scripts/test-deps.sh`.

mod real;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use real::*;

type C = Client<HttpConnector, Full<Bytes>>;

fn env_secs(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What the clients saw, by (request kind, status); `cancelled` counts the give-ups.
#[derive(Default)]
struct Seen {
    by: Mutex<BTreeMap<(&'static str, u16), u64>>,
    cancelled: AtomicU64,
}

impl Seen {
    fn add(&self, kind: &'static str, status: u16) {
        *self.by.lock().unwrap().entry((kind, status)).or_default() += 1;
    }

    fn get(&self, kind: &'static str, status: u16) -> u64 {
        self.by
            .lock()
            .unwrap()
            .get(&(kind, status))
            .copied()
            .unwrap_or(0)
    }
}

async fn send(
    c: &C,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Bytes) {
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let res = c
        .request(b.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .expect("the example answers");
    let status = res.status().as_u16();
    (status, res.into_body().collect().await.unwrap().to_bytes())
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// One virtual user's loop until `stop`.
async fn user(c: C, addr: SocketAddr, n: usize, seen: Arc<Seen>, stop: Arc<AtomicBool>) {
    let email = format!("user{n}@example.com");
    let creds = format!(r#"{{"email":"{email}","password":"long enough"}}"#);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let (s, b) = send(&c, addr, "POST", "/api/auth/sign-in/email", &[JSON], &creds).await;
        seen.add("sign-in", s);
        assert_eq!(s, 200);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        let bearer = format!("Bearer {}", v["token"].as_str().unwrap());
        let auth = ("authorization", bearer.as_str());
        for _ in 0..2 {
            let (s, _) = send(&c, addr, "GET", "/api/auth/get-session", &[auth], "").await;
            seen.add("get-session", s);
        }
        let (s, _) = send(&c, addr, "GET", "/api/me", &[auth], "").await;
        seen.add("me", s);
        let (s, _) = send(&c, addr, "POST", "/api/auth/get-access-token", &[auth], "").await;
        seen.add("access-token", s);
        let (s, _) = send(&c, addr, "POST", "/api/auth/sign-out", &[auth], "").await;
        seen.add("sign-out", s);
        if i.is_multiple_of(3) {
            // An attacker's guesses: 401 five times, then 429 for good.
            let (s, _) = send(
                &c,
                addr,
                "POST",
                "/api/auth/sign-in/email",
                &[JSON, ("x-forwarded-for", "203.0.113.9")],
                r#"{"email":"eve@example.com","password":"guess"}"#,
            )
            .await;
            seen.add("sign-in", s);
            let (s, _) = send(
                &c,
                addr,
                "GET",
                "/api/auth/get-session",
                &[("authorization", "Bearer tok-forged")],
                "",
            )
            .await;
            seen.add("get-session", s);
        }
        if i.is_multiple_of(7) {
            let (s, _) = send(
                &c,
                addr,
                "POST",
                "/api/auth/sign-in/email",
                &[JSON],
                r#"{"email":"mallory@example.com","password":"x"}"#,
            )
            .await;
            seen.add("sign-in", s);
            let (s, _) = send(&c, addr, "POST", "/api/auth/sign-up/email", &[JSON], &creds).await;
            seen.add("sign-up", s);
        }
        if i.is_multiple_of(5) {
            // A client that gives up on the slow password reset (200 ms) after 20 ms.
            let fut = send(
                &c,
                addr,
                "POST",
                "/api/auth/request-password-reset",
                &[JSON],
                r#"{"email":"ada@example.com"}"#,
            );
            match tokio::time::timeout(Duration::from_millis(20), fut).await {
                Ok((s, _)) => seen.add("reset", s),
                Err(_) => {
                    seen.cancelled.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The sum over every series of a counter on a Prometheus page.
fn prom_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
fn memory_stays_flat_and_export_keeps_up_under_mixed_auth_traffic() {
    let secs = env_secs("AUTHWATCH_SOAK_SECS").unwrap_or(480);
    let warmup = env_secs("AUTHWATCH_SOAK_WARMUP_SECS").unwrap_or(390);
    assert!(
        warmup + 20 <= secs,
        "the run must outlast the warm-up by 20 s"
    );
    let rotel = Rotel::start_printing(&["metrics"]);
    let ex = Example::start(
        "axum",
        &["--port", "0"],
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{}", rotel.grpc),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000".into()),
            ("RUST_LOG", "warn".into()),
        ],
    );
    let pid = ex.proc.child.id();
    let addr = ex.addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let c: C = Client::builder(TokioExecutor::new()).build_http();
    let users = 12;
    // Their accounts.
    rt.block_on(async {
        for n in 0..users {
            let body = format!(r#"{{"email":"user{n}@example.com","password":"long enough"}}"#);
            let (s, _) = send(&c, addr, "POST", "/api/auth/sign-up/email", &[JSON], &body).await;
            assert_eq!(s, 200);
        }
    });
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..users)
        .map(|n| rt.spawn(user(c.clone(), addr, n, seen.clone(), stop.clone())))
        .collect();
    // Resident memory every second.
    let start = Instant::now();
    let mut samples: Vec<(u64, u64)> = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        let t = start.elapsed().as_secs();
        samples.push((t, rss_kib(pid).expect("the example runs")));
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    // The example's own view, then its last export on a clean stop.
    std::thread::sleep(Duration::from_millis(300));
    let http = Http::new();
    let (status, page) = http.get(&format!("http://{addr}/metrics"));
    assert_eq!(status, 200);
    let out = ex.stop();
    let dump = rotel.parse();

    // Memory: flat after the warm-up.
    let after: Vec<(u64, u64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t > warmup)
        .collect();
    let k = 10.min(after.len() / 3);
    let first = median(&mut after[..k].iter().map(|s| s.1).collect::<Vec<_>>());
    let last = median(
        &mut after[after.len() - k..]
            .iter()
            .map(|s| s.1)
            .collect::<Vec<_>>(),
    );
    let growth = last as f64 / first as f64 - 1.0;
    let n = after.len() as f64;
    let (mt, mr) = (
        after.iter().map(|s| s.0 as f64).sum::<f64>() / n,
        after.iter().map(|s| s.1 as f64).sum::<f64>() / n,
    );
    let slope = after
        .iter()
        .map(|s| (s.0 as f64 - mt) * (s.1 as f64 - mr))
        .sum::<f64>()
        / after.iter().map(|s| (s.0 as f64 - mt).powi(2)).sum::<f64>();
    let span = (after[after.len() - 1].0 - after[0].0) as f64;
    let trend = slope * span / mr;
    let total: u64 = seen.by.lock().unwrap().values().sum();
    eprintln!(
        "soak: {secs} s, {total} answered requests ({:.0}/s) and {} give-ups; RSS {} → {} KiB \
         after a {warmup} s warm-up: growth {:+.2} %, trend {:+.2} % over {span} s; \
         peak {} KiB\nsamples (s, KiB): {samples:?}",
        total as f64 / secs as f64,
        seen.cancelled.load(Ordering::Relaxed),
        first,
        last,
        growth * 100.0,
        trend * 100.0,
        samples.iter().map(|s| s.1).max().unwrap(),
    );
    assert!(
        growth <= 0.02,
        "RSS grew {:.2} % after the warm-up",
        growth * 100.0
    );
    assert!(
        trend <= 0.02,
        "RSS trends up {:.2} % over the run",
        trend * 100.0
    );

    // The traffic was what it says.
    assert!(seen.get("sign-in", 200) > 0 && seen.get("sign-in", 429) > 0);
    assert_eq!(seen.get("sign-in", 401), 5, "eve: five 401s, then 429s");
    assert!(seen.get("sign-in", 423) > 0 && seen.get("get-session", 401) > 0);
    assert!(seen.cancelled.load(Ordering::Relaxed) > 0);
    // Nothing dropped on the way to the audit trail.
    assert_eq!(prom_sum(&page, "auth_audit_dropped_count_total"), 0.0);
    // The example's /metrics holds what the clients saw, exactly.
    let want = [
        ("auth_login_success_count_total", seen.get("sign-in", 200)),
        (
            "auth_login_failure_count_total",
            seen.get("sign-in", 401) + seen.get("sign-in", 423),
        ),
        (
            "auth_rate_limit_exceeded_count_total",
            seen.get("sign-in", 429),
        ),
        ("auth_logout_success_count_total", seen.get("sign-out", 200)),
        (
            "auth_token_refresh_success_count_total",
            seen.get("access-token", 200),
        ),
        (
            "auth_registration_failure_count_total",
            seen.get("sign-up", 409),
        ),
        (
            "auth_token_validation_success_count_total",
            seen.get("get-session", 200) + seen.get("me", 200),
        ),
    ];
    for (name, n) in want {
        assert_eq!(prom_sum(&page, name), n as f64, "{name} on /metrics");
    }
    // A give-up that reached the handler is one cancellation; one that did not reach it is
    // nothing.
    let cancelled = prom_sum(&page, "auth_request_cancelled_count_total");
    assert!(
        cancelled > 0.0 && cancelled <= seen.cancelled.load(Ordering::Relaxed) as f64,
        "{cancelled}"
    );
    // The collector got the same, after the last export.
    let at = |m: &str| dump.last_total(m, &[]);
    for (name, otlp) in [
        ("auth_login_success_count_total", "auth.login.success.count"),
        ("auth_login_failure_count_total", "auth.login.failure.count"),
        (
            "auth_rate_limit_exceeded_count_total",
            "auth.rate.limit.exceeded.count",
        ),
        (
            "auth_logout_success_count_total",
            "auth.logout.success.count",
        ),
        (
            "auth_token_validation_success_count_total",
            "auth.token.validation.success.count",
        ),
        (
            "auth_request_cancelled_count_total",
            "auth.request.cancelled.count",
        ),
    ] {
        assert_eq!(
            at(otlp),
            prom_sum(&page, name),
            "{otlp} at the collector\n{out}"
        );
    }
}
