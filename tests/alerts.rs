//! Every default alert, fired through the real layer on an axum app over real sockets, next to
//! a near miss that must not fire. The engine runs on a manual clock, so windows of minutes pass
//! in microseconds; latencies are real (handlers sleep).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use authwatch::alerts::{AlertConfig, ManualClock};
use authwatch::health::HealthCheck;
use authwatch::{AlertState, AuthOp, AuthWatch, ClientIp};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use common::*;
use futures_util::StreamExt;

fn status(code: u16) -> Response {
    StatusCode::from_u16(code).unwrap().into_response()
}

struct Rig {
    watch: AuthWatch,
    addr: SocketAddr,
    clock: Arc<ManualClock>,
    client: HttpClient,
    healthy: Arc<AtomicBool>,
    sent: AtomicU64,
}

async fn rig() -> Rig {
    rig_with(|c| c).await
}

async fn rig_with(f: impl FnOnce(AlertConfig) -> AlertConfig) -> Rig {
    let clock = Arc::new(ManualClock::new());
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    let watch = AuthWatch::builder()
        .route("/login/{code}", AuthOp::Login)
        .route("/register/{code}", AuthOp::Registration)
        .route("/validate/{code}", AuthOp::TokenValidation)
        .route("/slow-login/{ms}", AuthOp::Login)
        .route("/slow-validate/{ms}", AuthOp::TokenValidation)
        .client_ip(ClientIp::x_forwarded_for(1))
        .health_check(HealthCheck::new("database", move || {
            let ok = h.load(Ordering::SeqCst);
            async move {
                if ok {
                    Ok(Default::default())
                } else {
                    Err("connection refused")
                }
            }
        }))
        .health_cache(Duration::ZERO)
        .alerts(f(AlertConfig::new()
            .tick(Duration::ZERO)
            .clock(clock.clone())))
        .build()
        .unwrap();
    let code = |Path(c): Path<u16>| async move { status(c) };
    let slow = |Path(ms): Path<u64>| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        status(200)
    };
    let app = Router::new()
        .route("/login/{code}", get(code))
        .route("/register/{code}", get(code))
        .route("/validate/{code}", get(code))
        .route("/slow-login/{ms}", get(slow))
        .route("/slow-validate/{ms}", get(slow))
        .layer(watch.layer())
        .merge(watch.endpoints());
    let addr = serve(app).await;
    Rig {
        watch,
        addr,
        clock,
        client: http1(),
        healthy,
        sent: AtomicU64::new(0),
    }
}

impl Rig {
    /// `n` requests to `path`, 16 at a time, each from `ip` (through trusted
    /// `X-Forwarded-For`); returns once the layer has counted every one.
    async fn hit_from(&self, path: &str, n: usize, ip: &str) {
        futures_util::stream::iter(0..n)
            .map(|_| {
                let req = request("GET", self.addr, path).header("x-forwarded-for", ip);
                send(&self.client, req)
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        self.sent.fetch_add(n as u64, Ordering::SeqCst);
        self.settle().await;
    }

    async fn hit(&self, path: &str, n: usize) {
        self.hit_from(path, n, "198.51.100.1").await;
    }

    /// Waits until the layer has recorded every request sent (the last event is recorded as the
    /// body ends, which can trail the client by a moment).
    async fn settle(&self) {
        let want = self.sent.load(Ordering::SeqCst);
        for _ in 0..500 {
            let s = self.watch.snapshot();
            let seen: u64 = s.ops().iter().map(|o| o.total()).sum();
            if seen >= want {
                assert_eq!(seen, want, "more events than requests");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the layer did not count {want} requests");
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// Evaluates now; the names of the firing alerts, sorted.
    fn firing(&self) -> Vec<String> {
        self.watch.evaluate_alerts();
        let mut v: Vec<String> = self
            .watch
            .snapshot()
            .alerts()
            .iter()
            .map(|a| a.name.clone())
            .collect();
        v.sort();
        v
    }
}

fn names(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_volume_fires_nothing() {
    let r = rig().await;
    r.hit("/login/401", 1).await;
    r.hit("/login/200", 1).await;
    r.advance(5);
    assert_eq!(r.firing(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_failure_rates() {
    // 6 of 25 (24 %): both.
    let r = rig().await;
    r.hit("/login/401", 6).await;
    r.hit("/login/200", 19).await;
    r.advance(5);
    assert_eq!(
        r.firing(),
        names(&["AuthLoginFailureRateElevated", "AuthLoginFailureRateHigh"])
    );
    let s = r.watch.snapshot();
    let high = s
        .alerts()
        .iter()
        .find(|a| a.name == "AuthLoginFailureRateHigh")
        .unwrap();
    assert_eq!(high.state, AlertState::Firing);
    assert_eq!(high.labels["severity"], "critical");
    assert_eq!(high.labels["notify"], "slack+email");
    assert!((high.value - 0.24).abs() < 1e-9, "{}", high.value);
    assert!(
        high.annotations["description"].contains("24.0% (6 of 25 attempts)"),
        "{high}"
    );
    assert_eq!(
        high.annotations["runbook_url"],
        "docs/runbooks.md#authloginfailureratehigh"
    );
    // Five minutes later the failures are out of the window: resolved, once.
    r.advance(300);
    assert_eq!(r.firing(), Vec::<String>::new());
    let resolved: Vec<_> = r
        .watch
        .alert_engine()
        .unwrap()
        .history()
        .into_iter()
        .filter(|e| e.alert.state == AlertState::Resolved)
        .map(|e| e.alert.name)
        .collect();
    assert_eq!(
        names(&resolved.iter().map(String::as_str).collect::<Vec<_>>()),
        names(&["AuthLoginFailureRateElevated", "AuthLoginFailureRateHigh"])
    );

    // Near misses: exactly 20 % fires only the 10 % rule; exactly 10 % fires nothing.
    let r = rig().await;
    r.hit("/login/401", 4).await;
    r.hit("/login/200", 16).await;
    r.advance(5);
    assert_eq!(r.firing(), names(&["AuthLoginFailureRateElevated"]));
    let r = rig().await;
    r.hit("/login/401", 2).await;
    r.hit("/login/200", 18).await;
    r.advance(5);
    assert_eq!(r.firing(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_and_token_failure_rates() {
    let r = rig().await;
    r.hit("/register/409", 3).await;
    r.hit("/register/200", 17).await;
    r.hit("/validate/401", 2).await;
    r.hit("/validate/200", 18).await;
    r.advance(5);
    assert_eq!(
        r.firing(),
        names(&[
            "AuthRegistrationFailureRateHigh",
            "AuthTokenValidationFailureRateHigh"
        ])
    );
    // 10 % and 5 %: at the thresholds, not above.
    let r = rig().await;
    r.hit("/register/409", 2).await;
    r.hit("/register/200", 18).await;
    r.hit("/validate/401", 1).await;
    r.hit("/validate/200", 19).await;
    r.advance(5);
    assert_eq!(r.firing(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p95_response_time() {
    let r = rig().await;
    r.hit("/slow-login/1100", 10).await;
    assert_eq!(
        r.firing(),
        names(&["AuthResponseTimeP95Critical", "AuthResponseTimeP95High"])
    );
    let s = r.watch.snapshot();
    assert!(s
        .alerts()
        .iter()
        .all(|a| a.labels["auth_operation"] == "login" && a.value > 1000.0));
    // Near misses: 600 ms fires only the 500 ms rule, 300 ms nothing.
    let r = rig().await;
    r.hit("/slow-login/600", 10).await;
    assert_eq!(r.firing(), names(&["AuthResponseTimeP95High"]));
    let r = rig().await;
    r.hit("/slow-login/300", 10).await;
    assert_eq!(r.firing(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mean_token_validation_time() {
    let r = rig().await;
    r.hit("/slow-validate/130", 10).await;
    r.advance(5);
    assert_eq!(
        r.firing(),
        names(&["AuthTokenValidationDegraded", "AuthTokenValidationSlow"])
    );
    let r = rig().await;
    r.hit("/slow-validate/65", 10).await;
    r.advance(5);
    assert_eq!(r.firing(), names(&["AuthTokenValidationDegraded"]));
    let r = rig().await;
    r.hit("/slow-validate/20", 10).await;
    r.advance(5);
    assert_eq!(r.firing(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_names_exactly_the_attacker() {
    let r = rig_with(|c| {
        c.disable("AuthLoginFailureRateHigh")
            .disable("AuthLoginFailureRateElevated")
    })
    .await;
    // 300 addresses with 1 to 5 failures each, and one with 51.
    for i in 0..300u32 {
        let ip = format!("10.1.{}.{}", i / 250, i % 250);
        r.hit_from("/login/401", (i % 5 + 1) as usize, &ip).await;
    }
    r.hit_from("/login/401", 51, "203.0.113.66").await;
    r.hit_from("/login/401", 50, "2001:db8::50").await;
    r.advance(5);
    assert_eq!(
        r.firing(),
        names(&["AuthBruteForceSuspected", "AuthDistributedBruteForce"])
    );
    let s = r.watch.snapshot();
    let brute: Vec<_> = s
        .alerts()
        .iter()
        .filter(|a| a.name == "AuthBruteForceSuspected")
        .collect();
    assert_eq!(brute.len(), 1);
    assert_eq!(brute[0].labels["client_ip"], "203.0.113.66");
    assert_eq!(brute[0].value, 51.0);
    let dist = s
        .alerts()
        .iter()
        .find(|a| a.name == "AuthDistributedBruteForce")
        .unwrap();
    assert_eq!(dist.labels["http_route"], "/login/{code}");
    // Never in metrics: the gauge has the count, not the address.
    let text = r.watch.metrics_text().unwrap();
    assert!(text.contains("auth_attack_top_ip_failures"), "{text}");
    assert!(!text.contains("203.0.113.66") && !text.contains("10.1.0.1\""));
    // Ten minutes on, the window has moved past the attack.
    r.advance(600);
    assert_eq!(r.firing(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_near_miss() {
    // 40 addresses × 3 failures: 120 failures but fewer than 50 addresses.
    let r = rig_with(|c| {
        c.disable("AuthLoginFailureRateHigh")
            .disable("AuthLoginFailureRateElevated")
    })
    .await;
    for i in 0..40 {
        r.hit_from("/login/401", 3, &format!("10.2.0.{i}")).await;
    }
    r.advance(5);
    assert_eq!(r.firing(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_events() {
    let r = rig().await;
    r.hit("/login/429", 10).await;
    r.advance(5);
    assert_eq!(r.firing(), Vec::<String>::new(), "10 is not more than 10");
    r.hit("/login/429", 1).await;
    r.advance(5);
    assert_eq!(r.firing(), names(&["AuthRateLimitEvents"]));
    r.hit("/login/429", 89).await;
    r.advance(5);
    assert_eq!(
        r.firing(),
        names(&["AuthRateLimitEvents"]),
        "100 is not more than 100"
    );
    r.hit("/login/429", 1).await;
    r.advance(5);
    assert_eq!(
        r.firing(),
        names(&["AuthRateLimitEvents", "AuthRateLimitUnderAttack"])
    );
    // A minute later, both resolve.
    r.advance(60);
    assert_eq!(r.firing(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_token_spike_against_its_baseline() {
    let quiet = |c: AlertConfig| c.disable("AuthTokenValidationFailureRateHigh");
    // Baseline: 10 invalid tokens in the first 16 minutes (3.1 per 5 minutes); then 31 in 5.
    let r = rig_with(quiet).await;
    r.advance(1);
    r.hit("/validate/401", 10).await;
    r.firing();
    r.advance(60 * 21);
    assert_eq!(r.firing(), Vec::<String>::new());
    r.hit("/validate/401", 31).await;
    r.advance(5);
    assert_eq!(r.firing(), names(&["AuthInvalidTokenSpike"]));
    // Near miss: a baseline of 60 (18.75 per 5 minutes): 31 is not 3×.
    let r = rig_with(quiet).await;
    r.advance(1);
    r.hit("/validate/401", 60).await;
    r.firing();
    r.advance(60 * 21);
    r.hit("/validate/401", 31).await;
    r.advance(5);
    assert_eq!(r.firing(), Vec::<String>::new());
    // Quiet night: from nothing to 15 is under the minimum of 20.
    let r = rig_with(quiet).await;
    r.advance(60 * 21);
    r.firing();
    r.hit("/validate/401", 15).await;
    r.advance(5);
    assert_eq!(r.firing(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_and_lockout_spikes() {
    // 12 registrations in the first 30 minutes = 4 per 10 minutes; then 25 in 10 minutes.
    let r = rig().await;
    r.advance(1);
    r.hit("/register/200", 12).await;
    r.hit("/login/423", 4).await;
    r.firing();
    r.advance(60 * 40);
    r.hit("/register/200", 25).await;
    r.advance(5);
    assert_eq!(r.firing(), names(&["AuthRegistrationSpike"]));
    // 5× of 4 is 20 registrations; 19 is a near miss. Lockouts: 10 against 1.3 per 10 min.
    let r = rig_with(|c| {
        c.disable("AuthLoginFailureRateHigh")
            .disable("AuthLoginFailureRateElevated")
    })
    .await;
    r.advance(1);
    r.hit("/register/200", 12).await;
    r.hit("/login/423", 4).await;
    r.firing();
    r.advance(60 * 40);
    r.hit("/register/200", 19).await;
    r.hit("/login/423", 10).await;
    r.advance(5);
    assert_eq!(r.firing(), names(&["AuthLockoutSpike"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_down_after_three_failed_checks() {
    // Only the probes run the checks here (no run per evaluation), so the count is exact.
    let r = rig_with(|c| c.on_tick(Arc::new(|| {}))).await;
    let probe = || async {
        send(&r.client, request("GET", r.addr, "/auth/health"))
            .await
            .0
    };
    r.healthy.store(false, Ordering::SeqCst);
    assert_eq!(probe().await, 503);
    assert_eq!(probe().await, 503);
    r.healthy.store(true, Ordering::SeqCst);
    assert_eq!(probe().await, 200);
    r.healthy.store(false, Ordering::SeqCst);
    assert_eq!(probe().await, 503);
    assert_eq!(probe().await, 503);
    assert_eq!(
        r.firing(),
        Vec::<String>::new(),
        "2 consecutive failures are not > 2"
    );
    assert_eq!(probe().await, 503);
    assert_eq!(r.firing(), names(&["AuthServiceDown"]));
    let s = r.watch.snapshot();
    assert_eq!(s.alerts()[0].labels["notify"], "page");
    r.healthy.store(true, Ordering::SeqCst);
    assert_eq!(probe().await, 200);
    assert_eq!(r.firing(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_for_duration_keeps_an_alert_pending() {
    let r = rig_with(|c| {
        c.configure("AuthRateLimitEvents", |rule| {
            rule.for_ = Duration::from_secs(30);
        })
    })
    .await;
    r.hit("/login/429", 11).await;
    r.advance(5);
    assert_eq!(r.firing(), Vec::<String>::new());
    let pending = r.watch.alert_engine().unwrap().pending();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].name, "AuthRateLimitEvents");
    r.advance(30);
    r.hit("/login/429", 11).await;
    assert_eq!(r.firing(), names(&["AuthRateLimitEvents"]));
    // Evaluating again changes nothing and notifies nothing.
    assert!(r.watch.evaluate_alerts().is_empty());
}

/// The account-level rules through the audit logger: the handler reports who failed from
/// where, the audit worker feeds the engine off the handler's thread, and with an audit key
/// the `user_id` label is the keyed hash the audit records carry, never the raw id.
#[test]
fn the_audit_loggers_login_failures_fire_the_account_rules_with_keyed_labels() {
    let clock = Arc::new(ManualClock::new());
    let watch = AuthWatch::builder()
        .otlp(false)
        .audit_key(b"an audit key of 32 bytes or more, for the test")
        .alerts(AlertConfig::new().tick(Duration::ZERO).clock(clock.clone()))
        .build()
        .unwrap();
    let audit = watch.audit_logger();
    let sprayer = "203.0.113.44".parse().ok();
    for a in 0..20 {
        audit.log_login_failure(
            &format!("user{a}@example.com"),
            sprayer,
            None,
            "Invalid credentials",
        );
    }
    for i in 0..10u8 {
        let ip = std::net::IpAddr::from([198, 51, 100, i]);
        audit.log_login_failure("victim@example.com", Some(ip), None, "Invalid credentials");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (spray, spread) = loop {
        clock.advance(Duration::from_secs(1));
        watch.evaluate_alerts();
        let firing = watch.snapshot().alerts().to_vec();
        let find = |n: &str| firing.iter().find(|a| a.name == n).cloned();
        if let (Some(s), Some(d)) = (
            find("AuthPasswordSpraying"),
            find("AuthAccountDistributedAttack"),
        ) {
            break (s, d);
        }
        assert!(std::time::Instant::now() < deadline, "{firing:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(spray.labels["client_ip"], "203.0.113.44");
    let user = &spread.labels["user_id"];
    assert!(user.starts_with("hmac-sha256:"), "{user}");
    assert!(
        !format!("{spread}").contains("victim@example.com"),
        "{spread}"
    );
    // The dashboard's lists, masked: the account to the start of its keyed hash, the address
    // to its first two octets.
    let stats = watch.stats_json();
    let shown = stats["accounts_under_attack"][0]["account"]
        .as_str()
        .unwrap();
    assert!(
        shown.starts_with("hmac-sha256:") && shown.ends_with('…') && shown.len() < user.len(),
        "{stats}"
    );
    assert_eq!(stats["accounts_under_attack"][0]["addresses"], 10);
    assert_eq!(stats["spraying_ips"][0]["ip"], "203.0.x.x");
    assert_eq!(stats["spraying_ips"][0]["accounts"], 20);
    // The layer's metrics never carry an account.
    let text = watch.metrics_text().unwrap();
    assert!(
        !text.contains("example.com") && !text.contains("hmac-sha256"),
        "{text}"
    );
}
