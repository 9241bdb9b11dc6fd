//! Fleet mode against a real Redis (Debian's `redis-server`, started per test on a loopback
//! port without persistence): the instances of one service share their request counts, so a
//! rule no single instance crosses fires on every one of them; Redis dying and coming back
//! costs no request and no count; a server that stalls or answers garbage is survived.

mod real;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authwatch::alerts::ManualClock;
use authwatch::{
    AlertConfig, AuthEvent, AuthOp, AuthWatch, FailureReason, Fleet, FleetStatus, Outcome,
};
use real::*;

/// The heaviest tests of this file (the demo's three replicas under their timed story, and the
/// two sprays of a million) take turns rather than share the machine's two cores: under each
/// other's load the demo's phases run late and its latency alerts fire in the wrong phase.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A monitor of `service` with a manual alert clock (rules evaluated on demand), in fleet
/// mode on `redis` (flushing every 100 ms) when given.
fn monitor(service: &str, redis: Option<&str>, name: &str) -> (AuthWatch, Arc<ManualClock>) {
    monitor_with(service, redis, name, |c| c)
}

/// [`monitor`], with its alert settings changed by `alerts`.
fn monitor_with(
    service: &str,
    redis: Option<&str>,
    name: &str,
    alerts: impl FnOnce(AlertConfig) -> AlertConfig,
) -> (AuthWatch, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let mut b = AuthWatch::builder()
        .service_name(service)
        .health_cache(Duration::ZERO)
        .alerts(alerts(
            AlertConfig::new().tick(Duration::ZERO).clock(clock.clone()),
        ));
    if let Some(url) = redis {
        b = b.fleet(
            Fleet::redis(url)
                .flush_interval(Duration::from_millis(100))
                .instance_name(name),
        );
    }
    (b.build().unwrap(), clock)
}

/// Three monitors of `service` in fleet mode on `url` (named a, b, c), once each sees the
/// three.
fn three(service: &str, url: &str) -> Vec<(AuthWatch, Arc<ManualClock>)> {
    three_with(service, url, |c| c)
}

/// [`three`], with their alert settings changed by `alerts`.
fn three_with(
    service: &str,
    url: &str,
    alerts: impl Fn(AlertConfig) -> AlertConfig,
) -> Vec<(AuthWatch, Arc<ManualClock>)> {
    let fleet: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| monitor_with(service, Some(url), n, &alerts))
        .collect();
    for (w, _) in &fleet {
        wait_fleet(w, 3);
    }
    fleet
}

/// `n` failed sign-ins, each from another address (so no per-address rule is involved).
fn fail_logins(w: &AuthWatch, n: u8) {
    for i in 0..n {
        fail_from(w, IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)), 1);
    }
}

/// Evaluates `w`'s rules 1 s later on its clock; the firing alert named `name`, if any.
fn firing(w: &AuthWatch, clock: &ManualClock, name: &str) -> Option<authwatch::Alert> {
    clock.advance(Duration::from_secs(1));
    w.evaluate_alerts();
    w.snapshot()
        .alerts()
        .iter()
        .find(|a| a.name == name)
        .cloned()
}

fn status(w: &AuthWatch) -> FleetStatus {
    w.fleet_status().expect("fleet mode is on")
}

/// Waits until `w` is connected and sees `n` instances.
fn wait_fleet(w: &AuthWatch, n: usize) {
    eventually(20, "the fleet forms", || {
        let s = status(w);
        (s.connected && s.instances.len() == n)
            .then_some(())
            .ok_or(format!("{s:?}"))
    });
}

const RATE: &str = "AuthLoginFailureRateHigh";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_rule_no_instance_crosses_alone_fires_on_every_instance() {
    let redis = Redis::start();
    let url = redis.url();
    let (a, clock_a) = monitor("accounts", Some(&url), "a");
    let (b, clock_b) = monitor("accounts", Some(&url), "b");
    // The control: the same traffic on an instance of its own.
    let (alone, clock_alone) = monitor("accounts", None, "alone");
    wait_fleet(&a, 2);
    wait_fleet(&b, 2);
    let s = status(&a);
    let names: Vec<(&str, bool)> = s.instances.iter().map(|i| (&*i.name, i.this)).collect();
    assert_eq!(names, [("a", true), ("b", false)]);
    assert!(
        s.instances
            .iter()
            .all(|i| i.last_flush < Duration::from_secs(5)),
        "{s:?}"
    );
    assert!(a.fleet_status().is_some() && alone.fleet_status().is_none());

    // 12 failed sign-ins on each: under the rule's minimum of 20 attempts on either, 24 in all.
    fail_logins(&a, 12);
    fail_logins(&b, 12);
    fail_logins(&alone, 12);
    for (w, clock) in [(&a, &clock_a), (&b, &clock_b)] {
        let alert = eventually(20, "the fleet's rate fires", || {
            firing(w, clock, RATE).ok_or_else(|| "not firing".to_owned())
        });
        assert!(
            alert.annotations["description"].contains("(24 of 24 attempts)"),
            "{alert}"
        );
    }
    assert!(
        firing(&alone, &clock_alone, RATE).is_none(),
        "12 attempts alone fire nothing"
    );
    // The instance's own figures stay its own; the fleet's are in its status.
    assert_eq!(a.snapshot().op(AuthOp::Login).failure, 12);
    let s = status(&a);
    assert_eq!((s.requests, s.failures), (24, 24), "{s:?}");

    // The gauges and the health check say so.
    let text = a.metrics_text().unwrap();
    assert_eq!(
        metric_value(&text, "auth_fleet_connected"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "auth_fleet_errors_count_total"),
        Some(0.0)
    );
    let h = a.health().await;
    let check = h.checks.iter().find(|c| c.name == "fleet").unwrap();
    assert_eq!(check.status, authwatch::health::Status::Healthy);
    assert!(!check.critical);
    assert_eq!(check.details["instances"], 2);

    // What Redis holds for the fleet: the counts and who is alive (expiring a minute after
    // the last flush), the brute-force detection's slot keys and seed (expiring with the
    // 10-minute window), the account-level detection's seed and clock (no login failed);
    // every key expires.
    let keys = redis.cli(&["--scan", "--pattern", "authwatch:*"]);
    let mut kinds: Vec<String> = keys
        .lines()
        .map(|k| {
            let rest = k.strip_prefix("authwatch:{accounts}:").unwrap_or(k);
            let kind: Vec<&str> = rest.split(':').take(2).collect();
            kind.join(":")
                .trim_end_matches(|c: char| c.is_ascii_digit())
                .to_owned()
        })
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "ac:adv", "ac:born", "ac:seed", "bf:cms", "bf:hll", "bf:rf", "bf:seed", "bf:top",
            "counts", "seen", "windows"
        ],
        "{keys}"
    );
    for k in keys.lines() {
        let ttl: i64 = redis.cli(&["pttl", k]).parse().unwrap();
        let most = if k.contains(":bf:") {
            1_200_000
        } else if k.contains(":ac:") {
            // The account-level detection's: its window, the baseline's hour (the seed twice).
            8_400_000
        } else {
            60_000
        };
        assert!(ttl > 0 && ttl <= most, "{k} expires in {ttl} ms");
    }

    // An instance that stops leaves the fleet; what it counted stays counted.
    a.shutdown().await.unwrap();
    eventually(20, "a leaves", || {
        let s = status(&b);
        (s.instances.len() == 1)
            .then_some(())
            .ok_or(format!("{s:?}"))
    });
    assert!(
        firing(&b, &clock_b, RATE).is_some(),
        "a's failures still count"
    );
    b.shutdown().await.unwrap();
    alone.shutdown().await.unwrap();
}

/// Three instances see the same fleet-wide incident: the webhook gets one message when it
/// fires and one when it resolves, per alert, not one per instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_incident_sends_one_webhook_message_per_change() {
    use axum::routing::post;
    let got: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let g = got.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: String| {
            let g = g.clone();
            async move {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                g.lock()
                    .unwrap()
                    .push(v["text"].as_str().unwrap().to_owned());
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let redis = Redis::start();
    let url = redis.url();
    let fleet = three_with("billing", &url, |c| {
        c.webhook(format!("http://{hook}/hook"))
    });
    // 8 failed sign-ins on each: 24 in the fleet, over both login failure-rate rules.
    for (w, _) in &fleet {
        fail_logins(w, 8);
    }
    for (w, clock) in &fleet {
        eventually(20, "the rate fires on every instance", || {
            firing(w, clock, RATE)
                .map(|_| ())
                .ok_or_else(|| "not firing".to_owned())
        });
    }
    let sent = |word: &str| {
        let mut v: Vec<String> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|t| t.starts_with(&format!("[{word}]")))
            .map(|t| t.split(' ').nth(1).unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    let both = ["AuthLoginFailureRateElevated", "AuthLoginFailureRateHigh"];
    eventually(20, "the firing messages", || {
        (sent("FIRING") == both)
            .then_some(())
            .ok_or(format!("{:?}", got.lock().unwrap()))
    });
    // Five minutes on, the failures are out of every instance's window.
    for (w, clock) in &fleet {
        clock.advance(Duration::from_secs(301));
        w.evaluate_alerts();
        assert!(w.snapshot().alerts().is_empty());
    }
    eventually(20, "the resolved messages", || {
        (sent("RESOLVED") == both)
            .then_some(())
            .ok_or(format!("{:?}", got.lock().unwrap()))
    });
    // Nothing more comes: one message per alert and change, not one per instance.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(got.lock().unwrap().len(), 4, "{:?}", got.lock().unwrap());
    for (w, _) in &fleet {
        w.shutdown().await.unwrap();
    }
}

/// `n` failed sign-ins from `ip` on `/login`.
fn fail_from(w: &AuthWatch, ip: IpAddr, n: usize) {
    for _ in 0..n {
        w.record(
            &AuthEvent::new(
                AuthOp::Login,
                Outcome::Failure(FailureReason::InvalidCredentials),
                Duration::from_millis(2),
                authwatch::layer::now(),
            )
            .with_route("/login")
            .with_client_ip(Some(ip)),
        );
    }
}

/// 60 failures from one address, round-robin over three instances: no instance sees more
/// than 20, every instance names the address with the fleet's count; three instances on
/// their own, with the same 20 each, name nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brute_force_spread_over_the_fleet_is_named_by_every_instance() {
    let redis = Redis::start();
    let url = redis.url();
    let fleet = three("gateway", &url);
    let alone: Vec<_> = ["x", "y", "z"]
        .iter()
        .map(|n| monitor("gateway", None, n))
        .collect();
    let attacker: IpAddr = "203.0.113.9".parse().unwrap();
    for _ in 0..20 {
        for (w, _) in fleet.iter().chain(&alone) {
            fail_from(w, attacker, 1);
        }
    }
    for (w, clock) in &fleet {
        let alert = eventually(20, "every instance names the attacker", || {
            firing(w, clock, "AuthBruteForceSuspected").ok_or_else(|| "not firing".to_owned())
        });
        assert_eq!(alert.labels["client_ip"], "203.0.113.9");
        assert!(alert.value >= 60.0, "{alert}");
        let engine = w.alert_engine().unwrap();
        assert_eq!(engine.suspects()[0].ip, attacker);
        assert!(engine.top_ip_failures() >= 60);
        let text = w.metrics_text().unwrap();
        assert_eq!(metric_value(&text, "auth_attack_suspected_ips"), Some(1.0));
    }
    for (w, clock) in &alone {
        assert!(firing(w, clock, "AuthBruteForceSuspected").is_none());
        assert_eq!(w.alert_engine().unwrap().top_ip_failures(), 20);
    }
    for (w, _) in fleet.iter().chain(&alone) {
        w.shutdown().await.unwrap();
    }
}

/// Alertmanager and a fleet: every instance posts the fleet's alert, with the same labels (no
/// instance among them), and a real Alertmanager lists one alert and sends one notification
/// for it, however often the three post it.
#[test]
fn alertmanager_gets_the_alert_from_every_instance_and_notifies_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let redis = Redis::start();
    let url = redis.url();
    // What Alertmanager notifies: its webhook's bodies.
    let got = Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let g = got.clone();
    let receiver = axum::Router::new().route(
        "/am",
        axum::routing::post(move |body: axum::body::Bytes| {
            let g = g.clone();
            async move {
                g.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let hook = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, receiver).await });
    let am = Alertmanager::start_with(
        free_port(),
        &format!(
            "route:\n  receiver: hook\n  group_by: [alertname, client_ip]\n  group_wait: 1s\n  \
             group_interval: 1m\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    \
             webhook_configs:\n      - url: http://{hook}/am\n        send_resolved: false\n"
        ),
    );
    let fleet = three_with("vault", &url, |c| {
        c.alertmanager(am.url.clone())
            .resend_interval(Duration::from_secs(1))
    });
    let attacker: IpAddr = "203.0.113.77".parse().unwrap();
    for (w, _) in &fleet {
        fail_from(w, attacker, 20);
    }
    for (w, clock) in &fleet {
        eventually(20, "every instance fires", || {
            firing(w, clock, "AuthBruteForceSuspected").ok_or_else(|| "not firing".to_owned())
        });
    }
    let brute = |n: &serde_json::Value| {
        n["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == "AuthBruteForceSuspected")
            .count()
    };
    eventually(20, "Alertmanager notifies", || {
        let n = got.lock().unwrap().iter().map(brute).sum::<usize>();
        (n > 0)
            .then_some(())
            .ok_or("no notification yet".to_owned())
    });
    // Every instance posts again (a re-send each evaluation here), for longer than the group
    // wait: still one alert, one notification.
    for _ in 0..4 {
        for (w, clock) in &fleet {
            assert!(firing(w, clock, "AuthBruteForceSuspected").is_some());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let http = Http::new();
    let listed: Vec<serde_json::Value> = am
        .alerts(&http)
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == "AuthBruteForceSuspected")
        .collect();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["labels"]["client_ip"], "203.0.113.77");
    let notified = got.lock().unwrap().clone();
    assert_eq!(
        notified.iter().map(brute).sum::<usize>(),
        1,
        "{notified:#?}"
    );
    let posted: u64 = fleet
        .iter()
        .map(|(w, _)| {
            w.alert_engine()
                .unwrap()
                .notifier_stats()
                .iter()
                .map(|s| s.sent)
                .sum::<u64>()
        })
        .sum();
    assert!(posted >= 6, "every instance posted, repeatedly: {posted}");
    for (w, _) in &fleet {
        rt.block_on(w.shutdown()).unwrap();
    }
}

/// 60 addresses with 2 failures each on one route, round-robin over three instances (40
/// failures from 40 addresses on each): the fleet sees 60 addresses and 120 failures, over
/// the rule's 50 and 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_attack_over_the_fleet_fires() {
    let redis = Redis::start();
    let url = redis.url();
    let fleet = three("portal", &url);
    let (alone, alone_clock) = monitor("portal", None, "alone");
    let mut turn = 0;
    for i in 0..60u8 {
        let ip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, i));
        for _ in 0..2 {
            fail_from(&fleet[turn % 3].0, ip, 1);
            if turn % 3 == 0 {
                fail_from(&alone, ip, 1);
            }
            turn += 1;
        }
    }
    for (w, clock) in &fleet {
        let alert = eventually(20, "the distributed attack", || {
            firing(w, clock, "AuthDistributedBruteForce").ok_or_else(|| "not firing".to_owned())
        });
        assert_eq!(alert.labels["http_route"], "/login");
        // Distinct addresses from Redis' HyperLogLog: 0.81 % standard error.
        assert!((57.0..=63.0).contains(&alert.value), "{alert}");
        let routes = w.alert_engine().unwrap().route_failures();
        assert_eq!(routes[0].failures, 120, "{routes:?}");
    }
    assert!(firing(&alone, &alone_clock, "AuthDistributedBruteForce").is_none());
    for (w, _) in &fleet {
        w.shutdown().await.unwrap();
    }
    alone.shutdown().await.unwrap();
}

/// Three instances with different latencies: the fleet's p95, which every instance's
/// percentile rules read, is the p95 of the union of their samples (here: what one lone
/// instance that recorded all of them reports), to HDR's 3 significant digits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_p95_is_the_p95_of_the_union() {
    let redis = Redis::start();
    let url = redis.url();
    let fleet = three("search", &url);
    let (union, _) = monitor("search", None, "union");
    let sign_in = |w: &AuthWatch, us: u64| {
        w.record(
            &AuthEvent::new(
                AuthOp::Login,
                Outcome::Success,
                Duration::from_micros(us),
                authwatch::layer::now(),
            )
            .with_route("/login"),
        );
    };
    // a: fast (1-2 ms), b: medium (5-15 ms), c: a slow tail (40-240 ms), 100 each.
    for i in 0..100u64 {
        for (k, (w, _)) in fleet.iter().enumerate() {
            let us = match k {
                0 => 1_000 + i * 10,
                1 => 5_000 + i * 100,
                _ => 40_000 + i * 2_000,
            };
            sign_in(w, us);
            sign_in(&union, us);
        }
    }
    let want = union.snapshot().op(AuthOp::Login).p95.unwrap();
    let own = fleet[0].0.snapshot().op(AuthOp::Login).p95.unwrap();
    assert!(
        own < Duration::from_millis(3),
        "a's own p95 is a's: {own:?}"
    );
    for (w, _) in &fleet {
        eventually(20, "the fleet's p95", || {
            let got = status(w).p95(AuthOp::Login);
            (got == Some(want))
                .then_some(())
                .ok_or(format!("{got:?}, want {want:?}"))
        });
    }
    let stats = fleet[1].0.stats_json();
    let shown = stats["fleet"]["p95_ms"]["login"].as_f64().unwrap();
    assert!((shown - want.as_secs_f64() * 1e3).abs() < 0.001, "{shown}");
    // The fleet's snapshot: the union's counts and percentiles, and it says so; the
    // instance's own stays its own.
    let b = &fleet[1].0;
    eventually(20, "the fleet's snapshot", || {
        let f = b.fleet_snapshot().unwrap().op(AuthOp::Login);
        (f.success == 300 && f.p95 == Some(want))
            .then_some(())
            .ok_or(format!("{} sign-ins, p95 {:?}", f.success, f.p95))
    });
    let f = b.fleet_snapshot().unwrap();
    assert_eq!(f.scope(), authwatch::Scope::Fleet);
    let u = union.snapshot().op(AuthOp::Login);
    assert_eq!(
        (f.op(AuthOp::Login).p50, f.op(AuthOp::Login).p99),
        (u.p50, u.p99)
    );
    assert_eq!(f.response_time().count, 300);
    let own = b.snapshot();
    assert_eq!(own.scope(), authwatch::Scope::Local);
    assert_eq!(own.op(AuthOp::Login).success, 100);
    assert!(
        union.fleet_snapshot().is_none(),
        "no fleet, no fleet snapshot"
    );
    let stats = b.stats_json();
    assert_eq!(stats["scope"], "fleet");
    let login = |ops: &serde_json::Value| {
        ops.as_array()
            .unwrap()
            .iter()
            .find(|o| o["op"] == "login")
            .unwrap()["success"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(login(&stats["ops"]), 300, "the figures are the fleet's");
    assert_eq!(login(&stats["this_instance"]["ops"]), 100);
    let st = status(b);
    assert!(st.flushes > 0 && st.flush_time > Duration::ZERO, "{st:?}");
    assert!(stats["fleet"]["flushes"].as_u64().unwrap() > 0);
    assert!(stats["fleet"]["mean_flush_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(union.stats_json()["scope"], "local");
    assert!(union.stats_json()["this_instance"].is_null());
    for (w, _) in &fleet {
        w.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dying_and_coming_back_costs_no_count() {
    let mut redis = Redis::start();
    let port = redis.port;
    let url = redis.url();
    let (a, clock_a) = monitor("orders", Some(&url), "a");
    let (b, _clock_b) = monitor("orders", Some(&url), "b");
    wait_fleet(&a, 2);
    wait_fleet(&b, 2);
    fail_logins(&b, 8);
    eventually(20, "a reads b's counts", || {
        let s = status(&a);
        (s.failures == 8).then_some(()).ok_or(format!("{s:?}"))
    });
    assert!(
        firing(&a, &clock_a, RATE).is_none(),
        "8 attempts are under the minimum"
    );

    redis.kill();
    eventually(20, "a notices", || {
        let s = status(&a);
        (!s.connected && s.errors > 0 && s.last_error.is_some())
            .then_some(())
            .ok_or(format!("{s:?}"))
    });
    let text = a.metrics_text().unwrap();
    assert_eq!(
        metric_value(&text, "auth_fleet_connected"),
        Some(0.0),
        "{text}"
    );
    assert!(metric_value(&text, "auth_fleet_errors_count_total").unwrap() >= 1.0);
    let h = a.health().await;
    let check = h.checks.iter().find(|c| c.name == "fleet").unwrap();
    assert_eq!(check.status, authwatch::health::Status::Unhealthy);
    assert!(
        check
            .message
            .as_deref()
            .unwrap()
            .contains("Redis unreachable"),
        "{check:?}"
    );
    assert_eq!(
        h.status,
        authwatch::health::Status::Degraded,
        "not critical"
    );

    // During the outage a counts on, with b's 8 as last read.
    fail_logins(&a, 12);
    assert_eq!(a.snapshot().op(AuthOp::Login).failure, 12);
    let alert = eventually(20, "the rate fires from the local view", || {
        firing(&a, &clock_a, RATE).ok_or_else(|| "not firing".to_owned())
    });
    assert!(
        alert.annotations["description"].contains("(20 of 20 attempts)"),
        "{alert}"
    );

    // Redis comes back (empty: no persistence): the fleet forms again.
    let _redis = Redis::start_on(port);
    wait_fleet(&a, 2);
    wait_fleet(&b, 2);
    assert!(status(&a).last_error.is_none());
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A server that accepts connections and then says nothing, or answers garbage: the monitor
/// builds, counts every event, and reports the fleet unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalling_or_garbage_server_is_survived() {
    for garbage in [false, true] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                if garbage {
                    use std::io::Write as _;
                    let _ = conn.write_all(b"%%% not RESP at all\r\n\xff\xfe\r\n");
                }
                held.push(conn);
            }
        });
        let url = format!("redis://127.0.0.1:{port}");
        let started = Instant::now();
        let (w, _clock) = monitor("hostile", Some(&url), "h");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "building never waits for Redis"
        );
        fail_logins(&w, 50);
        assert_eq!(w.snapshot().op(AuthOp::Login).failure, 50);
        eventually(20, "the fleet is reported unreachable", || {
            let s = status(&w);
            (!s.connected && s.errors > 0)
                .then_some(())
                .ok_or(format!("{s:?}"))
        });
        let started = Instant::now();
        w.shutdown().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "shutdown waits at most its bound for Redis"
        );
    }
}

#[test]
fn a_bad_url_is_a_clear_build_error() {
    let err = AuthWatch::builder()
        .fleet(Fleet::redis("postgres://db/1"))
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("fleet: Redis URL postgres://db/1"), "{err}");
}

/// The issue's case, with three replicas as separate processes (the axum example, in fleet
/// mode through `AUTHWATCH_REDIS_URL`) and a webhook: 60 failed sign-ins from one address,
/// round-robin over them, and every replica lists `AuthBruteForceSuspected` for the address
/// with a count of at least 60 within two ticks of its engine (5 s each), while exactly one
/// message per alert reaches the webhook. Three replicas without fleet mode, the same
/// traffic: no replica names the address.
#[test]
fn three_replica_processes_see_one_brute_force_and_notify_once() {
    use axum::routing::post;
    let http = Http::new();
    let got: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let g = got.clone();
    let hook = http.rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/hook",
            post(move |body: String| {
                let g = g.clone();
                async move {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    g.lock()
                        .unwrap()
                        .push(v["text"].as_str().unwrap().to_owned());
                    "ok"
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    });
    let redis = Redis::start();
    let start = |fleet: bool| -> Vec<Example> {
        (0..3)
            .map(|_| {
                let mut env = vec![("ALERT_WEBHOOK", format!("http://{hook}/hook"))];
                if fleet {
                    env.push(("AUTHWATCH_REDIS_URL", redis.url()));
                }
                Example::start("axum", &["--port", "0"], &env)
            })
            .collect()
    };
    let fleet = start(true);
    let alone = start(false);
    let stats = |ex: &Example| -> serde_json::Value {
        serde_json::from_str(&http.get(&format!("http://{}/auth/stats", ex.addr)).1).unwrap()
    };
    eventually(20, "the fleet forms", || {
        let n: Vec<usize> = fleet
            .iter()
            .map(|ex| {
                stats(ex)["fleet"]["instances"]
                    .as_array()
                    .map_or(0, Vec::len)
            })
            .collect();
        (n == [3, 3, 3]).then_some(()).ok_or(format!("{n:?}"))
    });
    assert!(stats(&alone[0])["fleet"].is_null());
    // A credential-stuffing run: another e-mail each time (the example limits attempts per
    // e-mail, not per address).
    for i in 0..60 {
        let wrong = format!(r#"{{"email":"user{i}@example.com","password":"wrong"}}"#);
        for group in [&fleet, &alone] {
            let ex = &group[i % 3];
            let url = format!("http://{}/api/auth/sign-in/email", ex.addr);
            assert_eq!(http.post_json(&url, &wrong, &[]), 401);
        }
    }
    let brute = |ex: &Example| -> Option<f64> {
        stats(ex)["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["name"] == "AuthBruteForceSuspected")
            .and_then(|a| a["value"].as_f64())
    };
    let sent = std::time::Instant::now();
    for ex in &fleet {
        let v = eventually(20, "every replica names the address", || {
            brute(ex).ok_or_else(|| "not yet".to_owned())
        });
        assert!(v >= 60.0, "{v}");
    }
    assert!(
        sent.elapsed() < Duration::from_secs(15),
        "within two ticks of 5 s (and a flush): {:?}",
        sent.elapsed()
    );
    // Wait out a further tick on every replica: still one message per alert.
    std::thread::sleep(Duration::from_secs(6));
    let msgs = got.lock().unwrap().clone();
    let firing: Vec<&String> = msgs
        .iter()
        .filter(|m| m.starts_with("[FIRING] AuthBruteForceSuspected"))
        .collect();
    assert_eq!(firing.len(), 1, "{msgs:#?}");
    assert!(firing[0].contains("127.0.0.1"), "{}", firing[0]);
    for ex in &alone {
        assert!(brute(ex).is_none(), "20 failures per replica name nobody");
    }
}

/// A client's failures in an earlier slot of the window count with a few more in the
/// current one, even when those few alone would not make it worth estimating (fewer than
/// threshold / slots): it was kept near the threshold and is estimated again at each flush.
/// The failures go through two instances and are read on a third that saw none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_spread_over_slots_add_up() {
    use authwatch::alerts::BruteForceConfig;
    let redis = Redis::start();
    let url = redis.url();
    // A 10-s window in two slots of 5 s: near the threshold (50) from 25 in a slot.
    let small = |c: AlertConfig| {
        c.brute_force(
            BruteForceConfig::default()
                .window(Duration::from_secs(10))
                .slots(2),
        )
    };
    let fleet = three_with("slots", &url, small);
    // Redis' clock decides the slot: start right after a slot begins.
    let slot = || -> u64 {
        let t = redis.cli(&["time"]);
        let secs: u64 = t.lines().next().unwrap().parse().unwrap();
        secs / 5
    };
    let first = slot();
    eventually(10, "a new slot", || {
        (slot() > first).then_some(()).ok_or_else(String::new)
    });
    let x: IpAddr = "192.0.2.77".parse().unwrap();
    fail_from(&fleet[0].0, x, 30);
    let (c, c_clock) = &fleet[2];
    eventually(4, "x near the threshold in the fleet", || {
        c.evaluate_alerts();
        let s = c.alert_engine().unwrap().suspects();
        s.is_empty().then_some(()).ok_or(format!("{s:?}"))?;
        let r = c.alert_engine().unwrap().route_failures();
        (r.first().map(|r| r.failures) == Some(30))
            .then_some(())
            .ok_or(format!("{r:?}"))
    });
    // The next slot: 21 more, through b.
    let now = slot();
    eventually(10, "the next slot", || {
        (slot() > now).then_some(()).ok_or_else(String::new)
    });
    fail_from(&fleet[1].0, x, 21);
    let alert = eventually(4, "51 failures in the window", || {
        firing(c, c_clock, "AuthBruteForceSuspected").ok_or_else(|| "not firing".to_owned())
    });
    assert_eq!(alert.labels["client_ip"], "192.0.2.77");
    assert_eq!(alert.value, 51.0);
    for (w, _) in &fleet {
        w.shutdown().await.unwrap();
    }
}

/// `used_memory` of `redis`, in bytes.
fn redis_memory(redis: &Redis) -> u64 {
    let info = redis.cli(&["info", "memory"]);
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO memory")
}

/// CPU seconds `redis` has used (user and system).
fn redis_cpu(redis: &Redis) -> f64 {
    let info = redis.cli(&["info", "cpu"]);
    ["used_cpu_sys:", "used_cpu_user:"]
        .iter()
        .map(|k| {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        })
        .sum()
}

/// A spray of 1,000,000 addresses with one failure each, and one attacker with 51, through
/// three instances: Redis grows by less than 32 MiB, every failure reaches the fleet's counts,
/// exactly the attacker is named, and every key the fleet wrote expires with its window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard only orders test functions (each has its own runtime): nothing in this one waits
// for it while holding the runtime.
#[allow(clippy::await_holding_lock)]
async fn a_million_address_spray_stays_small_in_redis() {
    let _turn = heavy();
    let redis = Redis::start();
    let url = redis.url();
    let fleet: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| monitor("spray", Some(&url), n))
        .collect();
    let (reader, reader_clock) = monitor("spray", Some(&url), "reader");
    wait_fleet(&reader, 4);
    let before = redis_memory(&redis);
    let cpu_before = redis_cpu(&redis);
    let attacker: IpAddr = "203.0.113.50".parse().unwrap();
    let started = Instant::now();
    const N: u32 = 1_000_000;
    const ROUND: u32 = 30_000;
    for round in 0..N.div_ceil(ROUND) {
        for i in round * ROUND..((round + 1) * ROUND).min(N) {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            fail_from(&fleet[(i % 3) as usize].0, ip, 1);
        }
        // The attacker's 51, spread over the rounds and the instances.
        let attacks = 51 * (round + 1) / N.div_ceil(ROUND) - 51 * round / N.div_ceil(ROUND);
        for k in 0..attacks {
            fail_from(&fleet[((round + k) % 3) as usize].0, attacker, 1);
        }
        // Each instance's engine hands its failures over at its tick (here: each round).
        for (w, _) in &fleet {
            w.evaluate_alerts();
        }
        // Let the flushes keep up (each instance holds at most 200,000 between two).
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let total = u64::from(N) + 51;
    eventually(120, "every failure in the fleet's counts", || {
        for (w, _) in &fleet {
            w.evaluate_alerts();
        }
        let r = reader.alert_engine().unwrap().route_failures();
        let n = r.first().map_or(0, |r| r.failures);
        let errors: Vec<(u64, Option<String>)> = fleet
            .iter()
            .map(|(w, _)| {
                let s = status(w);
                (s.errors, s.last_error)
            })
            .collect();
        (n == total)
            .then_some(())
            .ok_or(format!("{n} of {total}; errors {errors:?}"))
    });
    let alert = eventually(20, "the attacker named", || {
        firing(&reader, &reader_clock, "AuthBruteForceSuspected")
            .ok_or_else(|| "not firing".to_owned())
    });
    assert_eq!(alert.labels["client_ip"], "203.0.113.50");
    assert!(alert.value >= 51.0, "{alert}");
    let suspects = reader.alert_engine().unwrap().suspects();
    assert_eq!(suspects.len(), 1, "only the attacker: {suspects:?}");
    let grown = redis_memory(&redis).saturating_sub(before);
    eprintln!(
        "1,000,051 failures from 1,000,001 addresses through 3 instances in {:?}: Redis grew by \
         {:.1} MiB and used {:.2} s of CPU",
        started.elapsed(),
        grown as f64 / 1048576.0,
        redis_cpu(&redis) - cpu_before
    );
    assert!(grown < 32 << 20, "Redis grew by {grown} bytes");
    let keys = redis.cli(&["--scan", "--pattern", "authwatch:*"]);
    for k in keys.lines() {
        let ttl: i64 = redis.cli(&["pttl", k]).parse().unwrap();
        // The account-level keys live as long as the baseline (the seed twice that).
        let most = if k.contains(":ac:") {
            8_400_000
        } else {
            1_200_000
        };
        assert!(ttl > 0 && ttl <= most, "{k} expires in {ttl} ms");
    }
    for (w, _) in &fleet {
        w.shutdown().await.unwrap();
    }
    reader.shutdown().await.unwrap();
}

/// `rediss://` with a password: a replica (the axum example) joins over TLS when it trusts
/// the server's CA (`SSL_CERT_FILE`, read for the system's roots) and knows the password;
/// with a wrong password, or without the CA, it runs on its own and says it is not connected.
#[test]
fn tls_and_a_password() {
    let http = Http::new();
    let dir = real::tempdir::Dir::new("redis-tls");
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (ca, key) = (dir.path().join("ca.pem"), dir.path().join("key.pem"));
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    let port = free_port();
    let (ca_s, key_s) = (ca.to_str().unwrap(), key.to_str().unwrap());
    let tls_port = port.to_string();
    let _redis = Redis::start_with(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            ca_s,
            "--tls-key-file",
            key_s,
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "s3cret",
        ],
    );
    let replica = |password: &str, trust: bool| {
        let mut env = vec![(
            "AUTHWATCH_REDIS_URL",
            format!("rediss://:{password}@localhost:{port}"),
        )];
        if trust {
            env.push(("SSL_CERT_FILE", ca_s.to_owned()));
        }
        Example::start("axum", &["--port", "0"], &env)
    };
    let fleet = |ex: &Example| -> serde_json::Value {
        let stats: serde_json::Value =
            serde_json::from_str(&http.get(&format!("http://{}/auth/stats", ex.addr)).1).unwrap();
        stats["fleet"].clone()
    };
    let good = replica("s3cret", true);
    eventually(20, "connected over TLS", || {
        let f = fleet(&good);
        (f["connected"] == true).then_some(()).ok_or(format!("{f}"))
    });
    for (password, trust) in [("wrong", true), ("s3cret", false)] {
        let bad = replica(password, trust);
        let f = eventually(20, "an error counted", || {
            let f = fleet(&bad);
            (f["errors"].as_u64() > Some(0))
                .then_some(f.clone())
                .ok_or(format!("{f}"))
        });
        assert_eq!(f["connected"], false, "{password} {trust}: {f}");
        let (status, _) = http.get(&format!("http://{}/api/auth/get-session", bad.addr));
        assert_eq!(status, 401, "the replica serves on its own");
    }
}

/// The demo's fleet (`--speed --replicas 3`) on a Redis of the test's: the brute-force phase
/// sends 40 failures to each replica, under the rule's 50, and the fleet fires it on every
/// replica with one webhook message; the spraying phase's 30 accounts, 10 per replica, fire
/// spraying on every replica; every phase still fires its alert.
#[test]
fn the_demo_runs_a_fleet_of_three_replicas() {
    let _turn = heavy();
    let redis = Redis::start();
    let mut ex = Example::start(
        "demo",
        &["--speed", "--port", "0", "--plain", "--replicas", "3"],
        &[("AUTHWATCH_REDIS_URL", redis.url())],
    );
    let out = ex.wait_exit(150);
    let text = out.join("\n");
    assert!(
        out.iter().filter(|l| l.starts_with("replica ")).count() == 2,
        "two more replicas:\n{text}"
    );
    assert!(
        text.contains("the brute-force phase sent 40, 40, 40 failures"),
        "{text}"
    );
    // The account-level counts are the fleet's: 10 accounts per replica fire spraying.
    assert!(
        text.contains("round-robin: 10, 10, 10 to the replicas"),
        "{text}"
    );
    let spraying = out
        .iter()
        .find(|l| l.starts_with("FLEET AuthPasswordSpraying client_ip=198.51.100.77:"))
        .unwrap_or_else(|| panic!("the fleet's spraying:\n{text}"));
    assert!(spraying.contains("fired on 3 of 3 replicas"), "{spraying}");
    let brute = out
        .iter()
        .find(|l| l.starts_with("FLEET AuthBruteForceSuspected client_ip=203.0.113.66:"))
        .unwrap_or_else(|| panic!("the fleet's brute force:\n{text}"));
    assert!(
        brute.contains("fired on 3 of 3 replicas")
            && brute.ends_with("1 incident, 1 webhook message"),
        "{brute}"
    );
    let value: f64 = brute
        .split("value at firing ")
        .nth(1)
        .and_then(|v| v.split(')').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{brute}"));
    assert!(value > 50.0, "more than any replica saw (40): {brute}");
    assert!(
        out.iter()
            .any(|l| l == "RESULT every phase fired its alert"),
        "{text}"
    );
}

/// A failed login of `account` from `ip`, as the application reports it.
fn fail_account(w: &AuthWatch, account: &str, ip: IpAddr) {
    // Through the audit worker, as a handler would.
    w.audit_logger()
        .log_login_failure(account, Some(ip), None, "Invalid credentials");
}

/// Account-level attacks round-robin over three instances, each below every account rule on
/// its own (10 of the sprayer's 30 accounts, 8 of the victim's 24 failures, 4 of the target's
/// 12 addresses): every instance fires all three with the fleet's figures, and lists them in
/// its stats; three instances on their own, with the same traffic, fire none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_attacks_spread_over_the_fleet_fire_on_every_instance() {
    let redis = Redis::start();
    let url = redis.url();
    let fleet = three("accounts-fleet", &url);
    let alone: Vec<_> = ["x", "y", "z"]
        .iter()
        .map(|n| monitor("accounts-alone", None, n))
        .collect();
    let sprayer: IpAddr = "203.0.113.50".parse().unwrap();
    let one: IpAddr = "192.0.2.9".parse().unwrap();
    for group in [&fleet, &alone] {
        for a in 0..30 {
            fail_account(&group[a % 3].0, &format!("user{a}@example.com"), sprayer);
        }
        for n in 0..24 {
            fail_account(&group[n % 3].0, "victim@example.com", one);
        }
        for i in 0..12u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, i));
            fail_account(&group[usize::from(i) % 3].0, "target@example.com", ip);
        }
    }
    for (w, clock) in &fleet {
        let fired = eventually(20, "every instance fires the three", || {
            let got: Vec<authwatch::Alert> = [
                "AuthPasswordSpraying",
                "AuthAccountBruteForce",
                "AuthAccountDistributedAttack",
            ]
            .iter()
            .filter_map(|n| firing(w, clock, n))
            .collect();
            if got.len() == 3 {
                Ok(got)
            } else {
                Err(format!("{got:?}"))
            }
        });
        assert_eq!(fired[0].labels["client_ip"], "203.0.113.50");
        assert_eq!(fired[0].value, 30.0, "{}", fired[0]);
        assert_eq!(fired[1].labels["user_id"], "victim@example.com");
        assert_eq!(fired[1].value, 24.0, "{}", fired[1]);
        assert_eq!(fired[2].labels["user_id"], "target@example.com");
        assert_eq!(fired[2].value, 12.0, "{}", fired[2]);
        let engine = w.alert_engine().unwrap();
        assert_eq!(engine.top_account_failures(), 24);
        assert_eq!(engine.accounts_under_attack(), 2);
        let stats = w.stats_json();
        assert_eq!(
            stats["accounts_under_attack"].as_array().map(Vec::len),
            Some(2),
            "{stats}"
        );
        assert_eq!(
            stats["spraying_ips"][0]["accounts"].as_u64(),
            Some(30),
            "{stats}"
        );
    }
    for (w, clock) in &alone {
        let engine = w.alert_engine().unwrap();
        eventually(10, "the audit worker fed each instance alone", || {
            let top = engine.top_account_failures();
            (top == 8).then_some(()).ok_or(format!("{top}"))
        });
        for name in [
            "AuthPasswordSpraying",
            "AuthAccountBruteForce",
            "AuthAccountDistributedAttack",
        ] {
            assert!(firing(w, clock, name).is_none(), "{name} on its own");
        }
    }
    for (w, _) in fleet.iter().chain(&alone) {
        w.shutdown().await.unwrap();
    }
}

/// Credential stuffing over the fleet, on Redis' clock (a 3-s window in 3 slots, 6 s of
/// baseline): two accounts fail per second for the baseline, then 60 leaked pairs from 60
/// addresses go round-robin over three instances (20 each, under the rule's 50 on its own),
/// with most logins failing: every instance fires `AuthCredentialStuffing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_stuffing_over_the_fleet_fires_against_the_fleets_baseline() {
    use authwatch::alerts::AccountConfig;
    let redis = Redis::start();
    let url = redis.url();
    let small = |c: AlertConfig| {
        c.accounts(
            AccountConfig::default()
                .window(Duration::from_secs(3))
                .slots(3)
                .baseline(Duration::from_secs(6)),
        )
    };
    let fleet = three_with("stuffing", &url, small);
    // The baseline: 2 accounts a second for 10 s (over 9 s, 3 windows of history).
    for s in 0..10u8 {
        for i in 0..2u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, i));
            fail_account(
                &fleet[usize::from(i + s) % 3].0,
                &format!("typo{s}-{i}"),
                ip,
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (w, _) = &fleet[0];
    let base = eventually(5, "a baseline", || {
        let d = w.alert_engine().unwrap().account_detections();
        d.baseline_accounts.ok_or(format!("{d:?}"))
    });
    assert!(
        (4.0..=8.0).contains(&base),
        "two accounts a second, 3-s windows: {base}"
    );
    for n in 0..60u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x6440_0000 + n));
        let i = (n % 3) as usize;
        fail_account(&fleet[i].0, &format!("leaked{n}@example.com"), ip);
        fail_from(&fleet[i].0, ip, 1);
    }
    for (w, _) in &fleet {
        let alert = eventually(3, "stuffing fires on every instance", || {
            // The clock stays: the login counts are those of the rule's window.
            w.evaluate_alerts();
            w.snapshot()
                .alerts()
                .iter()
                .find(|a| a.name == "AuthCredentialStuffing")
                .cloned()
                .ok_or_else(|| format!("{:?}", w.alert_engine().unwrap().account_detections()))
        });
        assert!(alert.value >= 5.0, "{alert}");
        assert!(
            alert.to_string().contains("accounts with failed logins"),
            "{alert}"
        );
    }
    for (w, _) in &fleet {
        w.shutdown().await.unwrap();
    }
}

/// 1,000,000 failed logins, each of another account from another address, and one sprayer on
/// 25 of those accounts, through three instances: Redis grows by less than 32 MiB, exactly the
/// sprayer is named, and the fleet counts the failing accounts (linear counting is past its
/// exact range at this many: within 25 %).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn an_account_spray_stays_small_in_redis() {
    let _turn = heavy();
    let redis = Redis::start();
    let url = redis.url();
    let fleet = three("account-spray", &url);
    let before = redis_memory(&redis);
    let cpu_before = redis_cpu(&redis);
    let started = Instant::now();
    const N: u32 = 1_000_000;
    const ROUND: u32 = 30_000;
    let sprayer: IpAddr = "203.0.113.77".parse().unwrap();
    // Straight into the engines (the audit worker's bounded queue would drop at this pace;
    // the path through it is the test above), each round handed over before the next.
    for round in 0..N.div_ceil(ROUND) {
        for n in round * ROUND..((round + 1) * ROUND).min(N) {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
            let engine = fleet[(n % 3) as usize].0.alert_engine().unwrap();
            engine.record_account_failure(&format!("user{n}"), Some(ip));
            if n % 40_000 == 0 {
                engine.record_account_failure(&format!("user{n}"), Some(sprayer));
            }
        }
        let flushes: Vec<u64> = fleet.iter().map(|(w, _)| status(w).flushes).collect();
        for ((w, _), before) in fleet.iter().zip(flushes) {
            eventually(30, "two more flushes", || {
                let s = status(w);
                (s.flushes >= before + 2)
                    .then_some(())
                    .ok_or(format!("{s:?}"))
            });
        }
    }
    let (w, clock) = &fleet[1];
    let alert = eventually(60, "the sprayer named", || {
        firing(w, clock, "AuthPasswordSpraying").ok_or_else(|| {
            let d = w.alert_engine().unwrap().account_detections();
            format!("failing {} clients {:?}", d.failing_accounts, d.clients)
        })
    });
    assert_eq!(alert.labels["client_ip"], "203.0.113.77");
    let d = eventually(60, "every account counted", || {
        let d = w.alert_engine().unwrap().account_detections();
        let n = d.failing_accounts as f64;
        ((n - f64::from(N)).abs() < f64::from(N) * 0.25)
            .then_some(d.clone())
            .ok_or(format!("{n}"))
    });
    assert_eq!(d.clients.len(), 1, "{:?}", d.clients);
    let grown = redis_memory(&redis).saturating_sub(before);
    eprintln!(
        "1,000,025 failed logins of 1,000,000 accounts from 1,000,001 addresses through 3 \
         instances in {:?}: Redis grew by {:.1} MiB and used {:.2} s of CPU",
        started.elapsed(),
        grown as f64 / 1048576.0,
        redis_cpu(&redis) - cpu_before
    );
    assert!(grown < 32 << 20, "Redis grew by {grown} bytes");
    for (w, _) in &fleet {
        w.shutdown().await.unwrap();
    }
}

/// Blocks in a fleet: a block made by hand on one instance is enforced by the two others
/// within a second (measured over 20 blocks: the figure is printed), and lifted everywhere when
/// it is lifted; the brute force the fleet sees is blocked on every instance, and written to
/// the audit trail once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_reach_every_instance_within_a_second() {
    use authwatch::{BlockPolicy, BlockSource};
    let redis = Redis::start();
    let url = redis.url();
    let dirs: Vec<std::path::PathBuf> = ["a", "b", "c"]
        .iter()
        .map(|n| common_tempdir(&format!("fleet-blocks-{n}")))
        .collect();
    let fleet: Vec<(AuthWatch, Arc<ManualClock>)> = ["a", "b", "c"]
        .iter()
        .zip(&dirs)
        .map(|(n, dir)| {
            let clock = Arc::new(ManualClock::new());
            let w = AuthWatch::builder()
                .service_name("blocks")
                .otlp(false)
                .audit_dir(dir)
                .alerts(AlertConfig::new().tick(Duration::ZERO).clock(clock.clone()))
                .blocking(BlockPolicy::default())
                .fleet(
                    Fleet::redis(&url)
                        .flush_interval(Duration::from_secs(1))
                        .instance_name(*n),
                )
                .build()
                .unwrap();
            (w, clock)
        })
        .collect();
    for (w, _) in &fleet {
        wait_fleet(w, 3);
    }
    let mut took = Vec::new();
    for i in 0..20u8 {
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, i));
        let t = Instant::now();
        fleet[0]
            .0
            .block_ip(ip, Duration::from_secs(600), "test")
            .unwrap();
        eventually(5, "the block everywhere", || {
            for (w, _) in &fleet[1..] {
                let b = w.blocked_ips();
                let Some(b) = b.iter().find(|b| b.ip == ip) else {
                    return Err(format!("{b:?}"));
                };
                assert_eq!(b.source, BlockSource::Fleet);
                assert_eq!(b.reason, "test");
            }
            Ok(())
        });
        took.push(t.elapsed());
    }
    took.sort();
    eprintln!(
        "a block reached the two other instances in {:?} (median) and {:?} (slowest of 20)",
        took[10], took[19]
    );
    assert!(took[19] < Duration::from_secs(1), "{took:?}");
    // Lifted on another instance: lifted everywhere.
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0));
    assert!(fleet[1].0.unblock_ip(ip).is_some());
    eventually(5, "lifted everywhere", || {
        for (w, _) in &fleet {
            if w.blocked_ips().iter().any(|b| b.ip == ip) {
                return Err("still blocked".into());
            }
        }
        Ok(())
    });
    // The fleet's brute force: 60 failures, 20 per instance; every instance blocks.
    let attacker: IpAddr = "203.0.113.99".parse().unwrap();
    for _ in 0..20 {
        for (w, _) in &fleet {
            fail_from(w, attacker, 1);
        }
    }
    for (w, clock) in &fleet {
        eventually(20, "blocked on every instance", || {
            firing(w, clock, "AuthBruteForceSuspected").ok_or("not firing")?;
            w.blocked_ips()
                .iter()
                .find(|b| b.ip == attacker)
                .map(|_| ())
                .ok_or_else(|| "not blocked".to_owned())
        });
    }
    // One audit record of the block in the whole fleet.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut added = 0;
    for ((w, _), dir) in fleet.iter().zip(&dirs) {
        w.audit_logger().sync();
        for f in std::fs::read_dir(dir).unwrap().flatten() {
            let text = std::fs::read_to_string(f.path()).unwrap();
            added += text
                .lines()
                .filter(|l| l.contains("\"auth.block.added\"") && l.contains("203.0.113.99"))
                .count();
        }
    }
    assert_eq!(added, 1, "one record for the fleet's block");
    // The fleet's list, straight from Redis, as a firewall would load it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authwatch"))
        .args(["blocks", "export", "--format", "plain", "--redis", &url])
        .args(["--service", "blocks"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = plain.lines().collect();
    // 19 by hand (one lifted) and the attacker.
    assert_eq!(lines.len(), 20, "{plain}");
    assert!(
        lines.contains(&"203.0.113.99") && lines.contains(&"192.0.2.7"),
        "{plain}"
    );
    for (w, _) in &fleet {
        w.shutdown().await.unwrap();
    }
}

/// A fresh directory under the target folder.
fn common_tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "authwatch-{tag}-{}-{:x}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ 0x5bd1_e995
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
