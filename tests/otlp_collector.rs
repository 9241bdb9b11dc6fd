//! The axum example exporting over OTLP (HTTP/protobuf and gRPC) to a real collector, rotel,
//! and a collector outage in the middle of traffic. Needs `scripts/test-deps.sh`.

mod real;

use std::collections::BTreeSet;
use std::time::Duration;

use authwatch::{metrics::attr, CATALOG};
use real::*;

fn allowed_keys() -> BTreeSet<&'static str> {
    attr::ALL.into()
}

fn mismatches(dump: &Dump, want: &Expected) -> Vec<String> {
    want.iter()
        .filter_map(|(m, attrs, v)| {
            let got = dump.last_total(m, attrs);
            (got != *v).then(|| format!("{m} {attrs:?}: want {v}, got {got}"))
        })
        .collect()
}

/// Every catalog instrument arrived with the right values and only bounded attributes.
fn check_dump(dump: &Dump, want: &Expected) {
    let names = dump.metric_names();
    for d in CATALOG.iter() {
        assert!(
            names.contains(d.name),
            "{} never arrived; got {names:?}",
            d.name
        );
    }
    let bad = mismatches(dump, want);
    assert!(bad.is_empty(), "{bad:#?}");
    for p in &dump.points {
        assert_eq!(p.service, "accounts");
        for (k, v) in &p.attrs {
            assert!(
                allowed_keys().contains(k.as_str()),
                "{} has attribute {k}",
                p.metric
            );
            for s in SECRETS {
                assert!(!v.contains(s), "{} carries {s:?} in {k}={v}", p.metric);
            }
        }
    }
    // The HDR-window gauges carry real values.
    let p95 = dump
        .points
        .iter()
        .rev()
        .find(|p| {
            p.metric == "auth.response.time.p95.ms"
                && p.attrs.get(attr::OPERATION).map(String::as_str) == Some("login")
        })
        .expect("login p95");
    assert!(p95.value.unwrap() > 0.5, "{p95:?}");
    let health = dump
        .points
        .iter()
        .rev()
        .find(|p| {
            p.metric == "auth.health.status"
                && p.attrs.get(attr::HEALTH_CHECK).map(String::as_str) == Some("user-store")
        })
        .expect("health status of user-store");
    assert_eq!(health.value, Some(1.0));
    // No unit word in the way of the Prometheus names.
    let h = dump
        .points
        .iter()
        .find(|p| p.metric == "auth.response.time.ms")
        .unwrap();
    assert_eq!((h.data_type.as_str(), h.unit.as_str()), ("Histogram", ""));
}

fn run(protocol: &str) {
    let rotel = Rotel::start();
    // Fleet mode on a Redis of its own, for its two instruments.
    let redis = Redis::start();
    let endpoint = match protocol {
        "grpc" => format!("http://{}", rotel.grpc),
        _ => format!("http://{}", rotel.http),
    };
    let ex = Example::start(
        "axum",
        &["--port", "0"],
        &[
            ("AUTHWATCH_REDIS_URL", redis.url()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.into()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300".into()),
        ],
    );
    let http = Http::new();
    let want = drive_axum(&http, ex.addr);
    eventually(30, "metrics at rotel", || {
        let bad = mismatches(&rotel.parse(), &want);
        if bad.is_empty() {
            Ok(())
        } else {
            Err(format!("{bad:#?}"))
        }
    });
    // A clean stop flushes the last export and the logs.
    ex.stop();
    let dump = rotel.parse();
    check_dump(&dump, &want);
    eventually(10, "the example's log record at rotel", || {
        let d = rotel.parse();
        d.logs
            .iter()
            .find(|l| l.body == "authwatch axum example started")
            .map(|l| {
                assert_eq!(
                    (l.service.as_str(), l.severity.as_str()),
                    ("accounts", "INFO")
                )
            })
            .ok_or_else(|| format!("{:?}", d.logs))
    });
    check_audit(&rotel.parse().logs);
}

/// The audit trail, as OpenTelemetry log records with their retention class: the layer's
/// record of every auth request and token-guard check, and the handler's (with the user id).
fn check_audit(logs: &[LogRecord]) {
    let audit: Vec<_> = logs
        .iter()
        .filter(|l| l.attrs.contains_key("audit.class"))
        .collect();
    let attr = |l: &LogRecord, k: &str| l.attrs.get(k).cloned().unwrap_or_default();
    let layer_login_failures = audit
        .iter()
        .filter(|l| {
            l.body == "auth.request"
                && attr(l, "audit.class") == "security"
                && attr(l, "audit.retention_days") == "365"
                && attr(l, "auth.operation") == "login"
                && attr(l, "error.type") == "invalid_credentials"
        })
        .count();
    assert_eq!(layer_login_failures, 8, "{audit:#?}");
    let success = audit
        .iter()
        .find(|l| l.body == "auth.login.success")
        .expect("the handler's login record");
    assert_eq!(attr(success, "audit.class"), "authentication");
    assert_eq!(attr(success, "audit.retention_days"), "90");
    assert_eq!(attr(success, "user.id"), "ada@example.com");
    assert_eq!(attr(success, "client.address"), "127.0.0.1");
    assert_eq!(success.severity, "INFO");
    // Each audit record once (never again through the tracing bridge).
    let by_source = |s: &str| {
        audit
            .iter()
            .filter(|l| l.body == "auth.request" && attr(l, "audit.source") == s)
            .count()
    };
    // The layer records the security events only (by default): 10 failed or refused sign-ins,
    // 2 failed sign-ups, 3 refused tokens, 1 failed password reset; and the one refused
    // token at the guard. The 9 successful requests and 2 successful guard checks leave none.
    assert_eq!((by_source("layer"), by_source("token_guard")), (16, 1));
    let lockout = audit
        .iter()
        .find(|l| l.body == "auth.lockout")
        .expect("the handler's lockout record");
    assert_eq!(attr(lockout, "audit.class"), "security");
    for l in &audit {
        for v in l.attrs.values() {
            assert!(!v.contains("tok-") && !v.contains("correct horse"), "{l:?}");
        }
    }
}

#[test]
fn axum_example_exports_every_catalog_metric_over_http() {
    run("http/protobuf");
}

#[test]
fn axum_example_exports_every_catalog_metric_over_grpc() {
    run("grpc");
}

/// The collector goes away while traffic flows and comes back: no request fails or slows
/// down, the cumulative totals after the restart are the full totals, and the audit trail
/// (one record per failed sign-up, over OTLP/HTTP) reaches the collector whole: the batches
/// the stopped collector refused are tried again once it is back.
#[test]
fn a_collector_outage_loses_no_count() {
    let mut rotel = Rotel::start();
    let ex = Example::start(
        "axum",
        &["--port", "0"],
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{}", rotel.http),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200".into()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "500".into()),
        ],
    );
    let http = Http::new();
    let url = format!("http://{}/api/auth/sign-up/email", ex.addr);
    let mut sent = 0u32;
    let mut slowest = Duration::ZERO;
    let mut burst = |n: u32, sent: &mut u32| {
        for _ in 0..n {
            let t = std::time::Instant::now();
            let s = http.post_json(&url, r#"{"email":"x","password":"short"}"#, &[]);
            slowest = slowest.max(t.elapsed());
            assert_eq!(s, 400, "a request failed during the outage");
            *sent += 1;
        }
    };
    burst(50, &mut sent);
    eventually(20, "first export", || {
        let got = rotel
            .parse()
            .last_total("auth.registration.failure.count", &[]);
        if got == 50.0 {
            Ok(())
        } else {
            Err(format!("{got}"))
        }
    });
    rotel.stop();
    let errors_before = ex
        .stderr_text()
        .matches("PeriodicReader.ExportError")
        .count();
    let outage = std::time::Instant::now();
    // Several export intervals with no collector.
    for _ in 0..10 {
        burst(20, &mut sent);
        std::thread::sleep(Duration::from_millis(100));
    }
    rotel.restart();
    // Export failures are logged, at most once per export interval (200 ms).
    let errors = ex
        .stderr_text()
        .matches("PeriodicReader.ExportError")
        .count()
        - errors_before;
    let intervals = outage.elapsed().as_millis() / 200 + 1;
    assert!(errors >= 1, "the outage went unlogged");
    assert!(
        errors as u128 <= intervals,
        "{errors} export errors in {intervals} intervals"
    );
    burst(30, &mut sent);
    eventually(30, "totals after the restart", || {
        let got = rotel
            .parse()
            .last_total("auth.registration.failure.count", &[]);
        if got == f64::from(sent) {
            Ok(())
        } else {
            Err(format!("{got} of {sent}"))
        }
    });
    assert!(
        slowest < Duration::from_secs(1),
        "a request took {slowest:?} during the outage"
    );
    let registration_failures = |logs: &[LogRecord]| {
        logs.iter()
            .filter(|l| {
                l.body == "auth.request"
                    && l.attrs.get("auth.operation").map(String::as_str) == Some("registration")
            })
            .count()
    };
    eventually(40, "every audit record at the collector", || {
        let got = registration_failures(&rotel.parse().logs);
        if got == sent as usize {
            Ok(())
        } else {
            Err(format!("{got} of {sent}"))
        }
    });
    let metrics = http.get(&format!("http://{}/metrics", ex.addr)).1;
    assert_eq!(
        metric_value(&metrics, "auth_audit_export_lost_count_total"),
        Some(0.0),
        "audit records counted lost"
    );
    ex.stop();
    // Nothing arrived twice.
    assert_eq!(registration_failures(&rotel.parse().logs), sent as usize);
}
