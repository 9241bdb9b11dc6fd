//! Alerts delivered for real: a real Alertmanager on loopback receives the in-process alert
//! through its v2 API and shows it resolved; an Alertmanager that starts late still gets it
//! (queued, retried); a Slack-compatible webhook gets one message per change; and the engine's
//! own thread fires `AuthServiceDown` from the health checks it runs. Needs
//! `scripts/test-deps.sh`.

mod real;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authwatch::alerts::{AlertConfig, BruteForceConfig, Channel};
use authwatch::health::HealthCheck;
use authwatch::{AuthOp, AuthWatch, ClientIp};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use real::*;

fn app(rt: &tokio::runtime::Runtime, alerts: AlertConfig) -> (AuthWatch, SocketAddr) {
    let _g = rt.enter();
    let watch = AuthWatch::builder()
        .route("/login", AuthOp::Login)
        .client_ip(ClientIp::x_forwarded_for(1))
        .alerts(
            alerts
                .disable("AuthLoginFailureRateHigh")
                .disable("AuthLoginFailureRateElevated"),
        )
        .build()
        .unwrap();
    let router = Router::new()
        .route("/login", post(|| async { StatusCode::UNAUTHORIZED }))
        .layer(watch.layer());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        let l = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(l, router).await.unwrap();
    });
    (watch, addr)
}

fn attack(http: &Http, addr: SocketAddr, ip: &str, n: usize) {
    for _ in 0..n {
        let (s, _) = http.send(
            "POST",
            &format!("http://{addr}/login"),
            &[("x-forwarded-for", ip)],
            "",
        );
        assert_eq!(s, 401);
    }
}

/// Evaluates until exactly `n` brute-force alerts fire, for up to `secs` seconds.
fn wait_brute_force_alerts(watch: &AuthWatch, n: usize, secs: u64, what: &str) {
    eventually(secs, what, || {
        watch.evaluate_alerts();
        match brute_force_alerts(watch) {
            got if got == n => Ok(()),
            got => Err(format!("{got} firing")),
        }
    });
}

fn brute_force_alerts(watch: &AuthWatch) -> usize {
    watch
        .snapshot()
        .alerts()
        .iter()
        .filter(|a| a.name == "AuthBruteForceSuspected")
        .count()
}

#[test]
fn alertmanager_receives_the_alert_and_its_resolution() {
    let am = Alertmanager::start(free_port());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = Http::new();
    // A 3-second brute-force window so that the resolution comes quickly (real clock).
    let (watch, addr) = app(
        &rt,
        AlertConfig::new()
            .tick(Duration::ZERO)
            .alertmanager(&am.url)
            .resend_interval(Duration::from_millis(200))
            .service("accounts")
            .brute_force(
                BruteForceConfig::default()
                    .window(Duration::from_secs(3))
                    .slots(3),
            ),
    );
    attack(&http, addr, "203.0.113.5", 51);
    wait_brute_force_alerts(&watch, 1, 10, "counted");
    let alert = eventually(20, "Alertmanager lists the alert", || {
        am.alerts(&http)
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "AuthBruteForceSuspected")
            .ok_or_else(|| "not yet".to_owned())
    });
    assert_eq!(alert["labels"]["client_ip"], "203.0.113.5");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["service"], "accounts");
    assert_eq!(alert["status"]["state"], "active");
    assert_eq!(
        alert["annotations"]["runbook_url"],
        "docs/runbooks.md#authbruteforcesuspected"
    );
    assert!(alert["annotations"]["description"]
        .as_str()
        .unwrap()
        .starts_with("51 failed auth attempts from 203.0.113.5"));
    // Once the window has passed, the engine resolves it and Alertmanager drops it.
    wait_brute_force_alerts(&watch, 0, 20, "resolved in-process");
    eventually(20, "Alertmanager shows it resolved", || {
        let left: Vec<_> = am
            .alerts(&http)
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == "AuthBruteForceSuspected")
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
    let stats = watch.alert_engine().unwrap().notifier_stats();
    assert_eq!(stats[0].name, "alertmanager");
    assert!(stats[0].sent >= 2 && stats[0].dropped == 0, "{stats:?}");
}

#[test]
fn an_alertmanager_that_starts_late_still_gets_the_alert() {
    let port = free_port();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = Http::new();
    let (watch, addr) = app(
        &rt,
        AlertConfig::new()
            .tick(Duration::ZERO)
            .alertmanager(format!("http://127.0.0.1:{port}"))
            .http_timeout(Duration::from_millis(500)),
    );
    attack(&http, addr, "2001:db8::66", 51);
    wait_brute_force_alerts(&watch, 1, 10, "firing");
    eventually(10, "a failed delivery", || {
        let s = &watch.alert_engine().unwrap().notifier_stats()[0];
        if s.failed >= 1 && s.queued == 1 {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    let am = Alertmanager::start(port);
    let alert = eventually(30, "delivered after the retry", || {
        am.alerts(&http)
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "AuthBruteForceSuspected")
            .ok_or_else(|| "not yet".to_owned())
    });
    // IPv6 clients are counted, and named, per /64.
    assert_eq!(alert["labels"]["client_ip"], "2001:db8::/64");
    let s = &watch.alert_engine().unwrap().notifier_stats()[0];
    assert_eq!((s.queued, s.dropped), (0, 0), "{s:?}");
}

#[test]
fn an_alertmanager_that_is_down_holds_a_bounded_queue_then_gets_every_firing_alert() {
    let port = free_port();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = Http::new();
    // A queue of 2 and five alerts (five attackers): three must be dropped and counted while
    // Alertmanager is down, and the periodic re-send delivers all five once it is up.
    let (watch, addr) = app(
        &rt,
        AlertConfig::new()
            .tick(Duration::ZERO)
            .alertmanager(format!("http://127.0.0.1:{port}"))
            .queue(2)
            .resend_interval(Duration::from_millis(300))
            .http_timeout(Duration::from_millis(300)),
    );
    let attackers = [
        "203.0.113.11",
        "203.0.113.12",
        "203.0.113.13",
        "203.0.113.14",
        "203.0.113.15",
    ];
    for ip in attackers {
        attack(&http, addr, ip, 51);
    }
    wait_brute_force_alerts(&watch, 5, 10, "five firing");
    eventually(
        10,
        "the bound held: at most 2 queued, the rest dropped and counted",
        || {
            watch.evaluate_alerts();
            let s = &watch.alert_engine().unwrap().notifier_stats()[0];
            if s.queued <= 2 && s.dropped >= 3 && s.failed >= 2 {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        },
    );
    for _ in 0..20 {
        watch.evaluate_alerts();
        let s = &watch.alert_engine().unwrap().notifier_stats()[0];
        assert!(s.queued <= 2, "the queue outgrew its bound: {s:?}");
        assert_eq!(s.sent, 0, "{s:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let am = Alertmanager::start(port);
    let mut listed = eventually(30, "all five delivered by the re-sends", || {
        watch.evaluate_alerts();
        let ips: Vec<String> = am
            .alerts(&http)
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == "AuthBruteForceSuspected")
            .map(|a| a["labels"]["client_ip"].as_str().unwrap().to_owned())
            .collect();
        if ips.len() == 5 {
            Ok(ips)
        } else {
            Err(format!("{ips:?}"))
        }
    });
    listed.sort();
    assert_eq!(listed, attackers);
}

/// The webhook for everything, and one per channel: the brute-force alert (`slack+security`)
/// reaches the security team's webhook too, and not the pager's.
#[test]
fn a_webhook_gets_one_slack_message_per_change() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let security: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let paged: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let receiver = |into: Arc<Mutex<Vec<serde_json::Value>>>| {
        post(move |body: String| {
            let into = into.clone();
            async move {
                into.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap());
                "ok"
            }
        })
    };
    let hook = {
        let _e = rt.enter();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let r = Router::new()
            .route("/hook", receiver(got.clone()))
            .route("/security", receiver(security.clone()))
            .route("/page", receiver(paged.clone()));
        rt.spawn(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, r).await.unwrap();
        });
        addr
    };
    let http = Http::new();
    let (watch, addr) = app(
        &rt,
        AlertConfig::new()
            .tick(Duration::ZERO)
            .webhook(format!("http://{hook}/hook"))
            .webhook_for(Channel::Security, format!("http://{hook}/security"))
            .webhook_for(Channel::Page, format!("http://{hook}/page"))
            .brute_force(
                BruteForceConfig::default()
                    .window(Duration::from_secs(2))
                    .slots(2),
            ),
    );
    attack(&http, addr, "198.51.100.77", 51);
    wait_brute_force_alerts(&watch, 1, 10, "firing");
    // Evaluations without a change send nothing more.
    watch.evaluate_alerts();
    wait_brute_force_alerts(&watch, 0, 20, "resolved");
    let msgs = eventually(10, "two messages", || {
        let m = got.lock().unwrap().clone();
        if m.len() >= 2 {
            Ok(m)
        } else {
            Err(format!("{m:?}"))
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(got.lock().unwrap().len(), 2);
    // The same two messages to the security team; none to the pager.
    assert_eq!(*security.lock().unwrap(), msgs);
    assert!(paged.lock().unwrap().is_empty());
    let stats = watch.alert_engine().unwrap().notifier_stats();
    let sec = stats.iter().find(|s| s.name == "webhook:security").unwrap();
    assert_eq!((sec.sent, sec.dropped), (2, 0));
    let text = |i: usize| msgs[i]["text"].as_str().unwrap().to_owned();
    assert!(
        text(0).starts_with("[FIRING] AuthBruteForceSuspected (critical)"),
        "{}",
        text(0)
    );
    assert!(text(0).contains("client_ip=198.51.100.77"));
    assert!(
        text(1).starts_with("[RESOLVED] AuthBruteForceSuspected"),
        "{}",
        text(1)
    );
    assert_eq!(msgs[0]["attachments"][0]["color"], "#e01e5a");
    assert_eq!(
        msgs[0]["attachments"][0]["title_link"],
        "docs/runbooks.md#authbruteforcesuspected"
    );
}

#[test]
fn the_engine_thread_fires_service_down_from_its_own_health_runs() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let healthy = Arc::new(AtomicBool::new(false));
    let h = healthy.clone();
    let watch = {
        let _g = rt.enter();
        AuthWatch::builder()
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
            .alerts(AlertConfig::new().tick(Duration::from_millis(50)))
            .build()
            .unwrap()
    };
    // No probe at all: the engine runs the checks on its ticks.
    eventually(20, "AuthServiceDown", || {
        let s = watch.snapshot();
        if s.alerts().iter().any(|a| a.name == "AuthServiceDown") {
            Ok(())
        } else {
            Err(format!("{:?}", s.alerts()))
        }
    });
    healthy.store(true, Ordering::SeqCst);
    eventually(20, "resolved", || {
        if watch.snapshot().alerts().is_empty() {
            Ok(())
        } else {
            Err(format!("{:?}", watch.snapshot().alerts()))
        }
    });
}
