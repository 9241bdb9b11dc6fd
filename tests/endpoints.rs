//! `/metrics` and `/auth/health` over real sockets.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use authwatch::health::{Details, HealthCheck};
use authwatch::AuthWatch;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::*;

fn metric<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[tokio::test]
async fn metrics_page_counts_what_the_layer_saw() {
    let watch = AuthWatch::builder()
        .service_name("accounts")
        .otlp(false)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/login", post(|| async { StatusCode::UNAUTHORIZED }))
        .route("/register", post(|| async { StatusCode::CREATED }))
        .layer(watch.layer())
        .merge(watch.endpoints());
    let addr = serve(app).await;
    let c = http1();
    for _ in 0..7 {
        send(
            &c,
            request("POST", addr, "/login").header("x-forwarded-for", "198.51.100.9"),
        )
        .await;
    }
    for _ in 0..3 {
        send(&c, request("POST", addr, "/register")).await;
    }
    let (status, body) = send(&c, request("GET", addr, "/metrics")).await;
    assert_eq!(status, 200);
    let text = std::str::from_utf8(&body).unwrap();
    let ko = metric(text, "auth_login_failure_count_total{");
    assert_eq!(ko.len(), 1, "{text}");
    assert!(ko[0].ends_with(" 7"), "{}", ko[0]);
    assert!(ko[0].contains("auth_failure_reason=\"invalid_credentials\""));
    assert!(ko[0].contains("http_route=\"/login\""));
    let ok = metric(text, "auth_registration_success_count_total{");
    assert!(ok[0].ends_with(" 3"), "{}", ok[0]);
    // The quantile gauges, from the HDR windows.
    let p95 = metric(text, "auth_response_time_p95_ms{");
    assert_eq!(p95.len(), 2, "{text}");
    assert!(text.contains("target_info{"), "resource attributes");
    assert!(text.contains("service_name=\"accounts\""));
    assert!(
        !text.contains("198.51.100.9") && !text.contains("127.0.0.1"),
        "address leaked"
    );
    // /metrics itself is not an auth route.
    assert_eq!(metric(text, "auth_response_time_ms_count{").len(), 2);

    // HEAD: headers only; POST: refused.
    let (status, body) = send(&c, request("HEAD", addr, "/metrics")).await;
    assert_eq!((status, body.len()), (200, 0));
    let (status, _) = send(&c, request("POST", addr, "/metrics")).await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn metrics_page_can_require_a_bearer_token() {
    let watch = AuthWatch::builder()
        .otlp(false)
        .metrics_bearer_token("s3cret")
        .build()
        .unwrap();
    let addr = serve(watch.endpoints()).await;
    let c = http1();
    assert_eq!(send(&c, request("GET", addr, "/metrics")).await.0, 401);
    let wrong = request("GET", addr, "/metrics").header("authorization", "Bearer s3creT");
    assert_eq!(send(&c, wrong).await.0, 401);
    let right = request("GET", addr, "/metrics").header("authorization", "Bearer s3cret");
    let (status, body) = send(&c, right).await;
    assert_eq!(status, 200);
    assert!(std::str::from_utf8(&body)
        .unwrap()
        .contains("auth_uptime_seconds"));
    // The health endpoint stays open for probes.
    assert_eq!(send(&c, request("GET", addr, "/auth/health")).await.0, 200);
}

#[tokio::test]
async fn health_without_checks_is_healthy() {
    let watch = AuthWatch::builder()
        .service_name("accounts")
        .otlp(false)
        .build()
        .unwrap();
    let addr = serve(watch.endpoints()).await;
    let (status, body) = send(&http1(), request("GET", addr, "/auth/health")).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["service"], "accounts");
    assert!(v["uptime_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(v["checks"].as_array().unwrap().len(), 0);
}

fn counting(
    name: &'static str,
    runs: Arc<AtomicUsize>,
    fail: bool,
    delay: Duration,
) -> HealthCheck {
    HealthCheck::new(name, move || {
        let runs = runs.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            if fail {
                Err("connection refused".to_owned())
            } else {
                let mut d = Details::new();
                d.insert("ok".into(), true.into());
                Ok(d)
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_runs_checks_concurrently_with_timeouts_and_caches_them() {
    let (a, b, c) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let watch = AuthWatch::builder()
        .otlp(false)
        .health_check(counting("db", a.clone(), false, Duration::from_millis(300)))
        .health_check(counting("cache", b.clone(), true, Duration::ZERO).critical(false))
        .health_check(
            counting("jwks", c.clone(), false, Duration::from_secs(30))
                .critical(false)
                .timeout(Duration::from_millis(300)),
        )
        .health_cache(Duration::from_secs(60))
        .build()
        .unwrap();
    let addr = serve(watch.endpoints()).await;
    let client = http1();
    let start = std::time::Instant::now();
    // A flood of probes: one run of the checks.
    let probes = (0..20).map(|_| send(&client, request("GET", addr, "/auth/health")));
    let results = futures_util::future::join_all(probes).await;
    let took = start.elapsed();
    assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 1));
    // Concurrent: two 300 ms checks take about 300 ms, not 600.
    assert!(took < Duration::from_millis(590), "{took:?}");
    for (status, body) in &results {
        assert_eq!(*status, 200, "degraded is still 200");
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["status"], "degraded");
        let checks = v["checks"].as_array().unwrap();
        assert_eq!(checks[0]["name"], "db");
        assert_eq!(checks[0]["status"], "healthy");
        assert_eq!(checks[0]["details"]["ok"], true);
        assert!(checks[0]["latency_ms"].as_f64().unwrap() >= 290.0);
        assert_eq!(checks[1]["status"], "unhealthy");
        assert_eq!(checks[1]["message"], "connection refused");
        assert_eq!(checks[2]["message"], "timed out after 300 ms");
    }
    // The results are metrics too.
    let text = watch.metrics_text().unwrap();
    let status = metric(&text, "auth_health_status{");
    assert!(status
        .iter()
        .any(|l| l.contains("auth_health_check=\"db\"") && l.ends_with(" 1")));
    assert!(status
        .iter()
        .any(|l| l.contains("auth_health_check=\"cache\"") && l.ends_with(" 0")));
    assert!(status
        .iter()
        .any(|l| l.contains("auth_health_check=\"overall\"") && l.ends_with(" 1")));
    assert_eq!(
        metric(&text, "auth_health_check_time_ms{").len(),
        3,
        "{text}"
    );
}

#[tokio::test]
async fn a_failing_critical_check_is_503() {
    let runs = Arc::new(AtomicUsize::new(0));
    let watch = AuthWatch::builder()
        .otlp(false)
        .health_check(counting("db", runs.clone(), true, Duration::ZERO))
        .health_cache(Duration::ZERO)
        .build()
        .unwrap();
    let addr = serve(watch.endpoints()).await;
    for i in 1..=3 {
        let (status, body) = send(&http1(), request("GET", addr, "/auth/health")).await;
        assert_eq!(status, 503);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], "unhealthy");
        // No cache: every probe runs the check.
        assert_eq!(runs.load(Ordering::SeqCst), i);
    }
}

#[tokio::test]
async fn sqlx_pool_check_reports_query_time_and_pool_status() {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let watch = AuthWatch::builder()
        .otlp(false)
        .health_check(authwatch::health::sqlx_pool("database", pool.clone()))
        .health_cache(Duration::ZERO)
        .build()
        .unwrap();
    let r = watch.health().await;
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["status"], "healthy", "{v}");
    let d = &v["checks"][0]["details"];
    assert!(d["query_ms"].as_f64().unwrap() >= 0.0, "{v}");
    assert_eq!(d["pool_max"], 4);
    assert!(d["pool_size"].as_u64().unwrap() >= 1);
    assert!(d["pool_idle"].as_u64().is_some());
    // A closed pool fails the check, and the service is unhealthy.
    pool.close().await;
    let r = watch.health().await;
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["status"], "unhealthy", "{v}");
    assert!(
        v["checks"][0]["message"]
            .as_str()
            .unwrap()
            .contains("closed"),
        "{v}"
    );
}

#[tokio::test]
async fn shutdown_without_a_collector_is_quick_and_clean() {
    let watch = AuthWatch::builder().otlp(false).build().unwrap();
    watch.shutdown().await.unwrap();
    // Recording after shutdown is harmless.
    let app = Router::new()
        .route("/login", post(|| async { StatusCode::OK }))
        .layer(watch.layer());
    let addr = serve(app).await;
    assert_eq!(send(&http1(), request("POST", addr, "/login")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_into_a_meter_provider_of_yours() {
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let watch = AuthWatch::builder()
        .otlp(false)
        .meter_provider(&provider)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/login", post(|| async { StatusCode::OK }))
        .layer(watch.layer());
    let addr = serve(app).await;
    for _ in 0..3 {
        send(&http1(), request("POST", addr, "/login")).await;
    }
    let p = provider.clone();
    tokio::task::spawn_blocking(move || p.force_flush())
        .await
        .unwrap()
        .unwrap();
    let mut seen = None;
    for rm in exporter.get_finished_metrics().unwrap() {
        for m in rm.scope_metrics().flat_map(|s| s.metrics()) {
            if m.name() == "auth.login.success.count" {
                if let AggregatedMetrics::U64(MetricData::Sum(s)) = m.data() {
                    seen = s.data_points().map(|p| p.value()).last();
                }
            }
        }
    }
    assert_eq!(seen, Some(3));
    // /metrics is still authwatch's own.
    let text = watch.metrics_text().unwrap();
    assert!(metric(&text, "auth_login_success_count_total{")[0].ends_with(" 3"));
}

#[tokio::test]
async fn a_panicking_check_is_a_failed_check_and_details_can_be_hidden() {
    let watch = AuthWatch::builder()
        .otlp(false)
        .health_check(HealthCheck::new("boom", || async {
            if true {
                panic!("the check's own bug");
            }
            Ok::<_, String>(Details::new())
        }))
        .health_check(
            HealthCheck::new("db", || async {
                Err::<Details, _>("db.internal:5432 refused user app")
            })
            .critical(false),
        )
        .health_details(false)
        .build()
        .unwrap();
    let addr = serve(watch.endpoints()).await;
    let (status, body) = send(&http1(), request("GET", addr, "/auth/health")).await;
    assert_eq!(status, 503);
    let text = std::str::from_utf8(&body).unwrap();
    assert!(!text.contains("db.internal"), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["checks"][0]["status"], "unhealthy");
    assert_eq!(v["checks"][1]["status"], "unhealthy");
    // In-process, the messages are there.
    let r = watch.health().await;
    assert_eq!(r.checks[0].message.as_deref(), Some("the check panicked"));
    assert!(r.checks[1]
        .message
        .as_deref()
        .unwrap()
        .contains("db.internal"));
    // The service behind keeps serving.
    assert_eq!(
        send(&http1(), request("GET", addr, "/metrics")).await.0,
        200
    );
}

/// `watch.wrap(app)` under `axum::serve`: the layer sees every request before routing (so a
/// nested router's full paths), the peer address from `ConnectInfo`, and the endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrapped_app_under_axum_serve() {
    let rec = Recorder::default();
    let watch = AuthWatch::builder()
        .otlp(false)
        .sink(rec.sink())
        .build()
        .unwrap();
    let auth = Router::new().route(
        "/sign-in/email",
        post(|| async { StatusCode::UNAUTHORIZED }),
    );
    let app = Router::new()
        .nest("/api/auth", auth)
        .route("/api/users/{id}", axum::routing::get(|| async { "a user" }))
        .merge(watch.endpoints());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = watch.wrap(app);
    tokio::spawn(async move {
        axum::serve(
            listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
                std::net::SocketAddr,
            >(service),
        )
        .await
        .unwrap();
    });
    let c = http1();
    assert_eq!(
        send(&c, request("POST", addr, "/api/auth/sign-in/email"))
            .await
            .0,
        401
    );
    assert_eq!(send(&c, request("GET", addr, "/api/users/7")).await.0, 200);
    let ev = rec.wait_for(1).await;
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].route, "/api/auth/sign-in/email");
    assert_eq!(ev[0].client_ip, Some("127.0.0.1".parse().unwrap()));
    let (status, body) = send(&c, request("GET", addr, "/metrics")).await;
    assert_eq!(status, 200);
    let text = std::str::from_utf8(&body).unwrap();
    assert!(metric(text, "auth_login_failure_count_total{")[0].ends_with(" 1"));
}

/// Lockouts from a 423, from a handler's `Outcome` override, and from the audit logger all
/// count: in `auth.lockout.count` and in the snapshot.
#[tokio::test]
async fn lockouts_count_from_every_source() {
    use authwatch::{AuthOp, FailureReason, Outcome};
    use axum::response::IntoResponse;
    let watch = AuthWatch::builder().otlp(false).build().unwrap();
    let app = Router::new()
        .route("/login", post(|| async { StatusCode::LOCKED }))
        .route(
            "/signin",
            post(|| async {
                // A lockout middleware that answers 401 but knows better.
                let mut r = StatusCode::UNAUTHORIZED.into_response();
                r.extensions_mut()
                    .insert(Outcome::Failure(FailureReason::LockedOut));
                r
            }),
        )
        .layer(watch.layer());
    let addr = serve(app).await;
    for _ in 0..2 {
        assert_eq!(send(&http1(), request("POST", addr, "/login")).await.0, 423);
    }
    assert_eq!(
        send(&http1(), request("POST", addr, "/signin")).await.0,
        401
    );
    watch
        .audit_logger()
        .log_lockout("u-1", None, None, "5 failures in 10 min");
    let s = watch.snapshot();
    assert_eq!(s.op(AuthOp::Login).locked_out, 4);
    let text = watch.metrics_text().unwrap();
    let lines = metric(&text, "auth_lockout_count_total{");
    let value = |pred: &dyn Fn(&str) -> bool| -> f64 {
        lines
            .iter()
            .filter(|l| pred(l))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(
        value(&|l| l.contains("http_route=\"/login\"")),
        2.0,
        "{lines:?}"
    );
    assert_eq!(value(&|l| l.contains("http_route=\"/signin\"")), 1.0);
    assert_eq!(
        value(&|l| !l.contains("http_route")),
        1.0,
        "the application's"
    );
}

#[tokio::test]
async fn active_users_and_sessions() {
    let watch = AuthWatch::builder()
        .otlp(false)
        .active_sessions(|| 42)
        .build()
        .unwrap();
    let a = watch.audit_logger();
    for round in 0..2 {
        for u in 0..2_000 {
            if round == 0 {
                a.log_login_success(&format!("user-{u}"), None, None);
            } else {
                a.log_token_issued(&format!("user-{u}"), "refresh", None, None);
            }
        }
    }
    // A failure is not activity.
    a.log_login_failure("someone-else", None, None, "Invalid credentials");
    let e = watch.active_users();
    assert!((e - 2_000.0).abs() / 2_000.0 < 0.05, "{e}");
    let text = watch.metrics_text().unwrap();
    let users: f64 = metric(&text, "auth_users_active{")[0]
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((users - 2_000.0).abs() / 2_000.0 < 0.05, "{users}");
    assert!(metric(&text, "auth_sessions_active{")[0].ends_with(" 42"));
}

/// By default `/auth/health` shows the checks' messages to clients on the host only: a
/// request from a loopback address gets them, one from elsewhere (here named by the trusted
/// proxy's `X-Forwarded-For`) gets names, statuses and latencies.
#[tokio::test]
async fn health_details_go_to_loopback_clients_only_by_default() {
    let watch = AuthWatch::builder()
        .otlp(false)
        .client_ip(authwatch::ClientIp::x_forwarded_for(1))
        .health_check(
            HealthCheck::new("db", || async {
                Err::<Details, _>("db.internal:5432 refused user app")
            })
            .critical(false),
        )
        .build()
        .unwrap();
    let addr = serve(watch.endpoints()).await;
    let get =
        |from: &'static str| request("GET", addr, "/auth/health").header("x-forwarded-for", from);
    let (status, body) = send(&http1(), get("127.0.0.1")).await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("db.internal"), "loopback: {text}");
    let (status, body) = send(&http1(), get("203.0.113.5")).await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains("db.internal"), "elsewhere: {text}");
    assert!(
        text.contains("\"name\": \"db\"") && text.contains("unhealthy"),
        "{text}"
    );
    // Always, by choice.
    let open = AuthWatch::builder()
        .otlp(false)
        .client_ip(authwatch::ClientIp::x_forwarded_for(1))
        .health_check(HealthCheck::new("db", || async {
            Err::<Details, _>("db.internal:5432 refused user app")
        }))
        .health_details(true)
        .build()
        .unwrap();
    let addr = serve(open.endpoints()).await;
    let req = request("GET", addr, "/auth/health").header("x-forwarded-for", "203.0.113.5");
    let (_, body) = send(&http1(), req).await;
    assert!(String::from_utf8_lossy(&body).contains("db.internal"));
}

/// The bearer token read from a file (a Kubernetes secret), whitespace trimmed; a missing
/// file fails the build.
#[tokio::test]
async fn the_metrics_token_comes_from_a_file() {
    let dir = tempdir("token");
    let file = dir.join("token");
    std::fs::write(&file, "s3cret-token\n").unwrap();
    let watch = AuthWatch::builder()
        .otlp(false)
        .metrics_bearer_token_file(&file)
        .build()
        .unwrap();
    let addr = serve(watch.endpoints()).await;
    assert_eq!(
        send(&http1(), request("GET", addr, "/metrics")).await.0,
        401
    );
    let req = request("GET", addr, "/metrics").header("authorization", "Bearer s3cret-token");
    assert_eq!(send(&http1(), req).await.0, 200);
    let err = AuthWatch::builder()
        .otlp(false)
        .metrics_bearer_token_file(dir.join("missing"))
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("metrics_bearer_token_file"),
        "{err}"
    );
}

/// Every request to a monitoring endpoint is counted for the access audit: one security
/// record per endpoint, client, token fingerprint (never the token) and decision per hour,
/// not one per request; `authwatch audit access` summarises them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_to_the_endpoints_is_audited_per_client_and_hour() {
    let audit = tempdir("access");
    let watch = AuthWatch::builder()
        .otlp(false)
        .client_ip(authwatch::ClientIp::x_forwarded_for(1))
        .metrics_bearer_token("s3cret-token")
        .admin_token("admin-token")
        .audit_dir(&audit)
        .build()
        .unwrap();
    let addr = serve(watch.endpoints()).await;
    let c = http1();
    let get = |path: &'static str, from: &'static str, token: Option<&'static str>| {
        let r = request("GET", addr, path).header("x-forwarded-for", from);
        match token {
            Some(t) => r.header("authorization", format!("Bearer {t}")),
            None => r,
        }
    };
    // A scraper, every "15 s" of an hour: 20 requests, one record.
    for _ in 0..20 {
        assert_eq!(
            send(&c, get("/metrics", "10.0.0.5", Some("s3cret-token")))
                .await
                .0,
            200
        );
    }
    assert_eq!(
        send(&c, get("/metrics", "203.0.113.9", Some("guess")))
            .await
            .0,
        401
    );
    assert_eq!(send(&c, get("/metrics", "203.0.113.9", None)).await.0, 401);
    assert_eq!(
        send(&c, get("/auth/stats", "10.0.0.7", Some("s3cret-token")))
            .await
            .0,
        200
    );
    let dash = request("GET", addr, "/auth/dashboard?token=s3cret-token")
        .header("x-forwarded-for", "10.0.0.7");
    assert_eq!(send(&c, dash).await.0, 200);
    assert_eq!(send(&c, get("/auth/health", "10.0.0.8", None)).await.0, 200);
    assert_eq!(
        send(&c, get("/auth/blocks", "10.0.0.9", Some("admin-token")))
            .await
            .0,
        200
    );
    assert_eq!(
        send(&c, get("/auth/blocks", "203.0.113.9", Some("nope")))
            .await
            .0,
        401
    );
    watch.shutdown().await.unwrap();

    let mut records = Vec::new();
    for f in std::fs::read_dir(&audit).unwrap() {
        let f = f.unwrap().path();
        for l in std::fs::read_to_string(&f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            if v["event.name"] == "auth.endpoint.access" {
                assert_eq!(v["audit.class"], "security");
                records.push(v);
            }
        }
    }
    let text = serde_json::to_string(&records).unwrap();
    assert!(
        !text.contains("s3cret-token") && !text.contains("admin-token"),
        "{text}"
    );
    assert_eq!(records.len(), 8, "{text}");
    let scraper = records
        .iter()
        .find(|v| v["client.address"] == "10.0.0.5")
        .unwrap();
    let a = &scraper["auth.access"];
    assert_eq!(
        (&a["endpoint"], &a["allowed"], &a["requests"]),
        (&"/metrics".into(), &true.into(), &20.into())
    );
    let fp = a["token_fingerprint"].as_str().unwrap();
    assert!(fp.starts_with("sha256:"), "{fp}");
    let refused: Vec<_> = records
        .iter()
        .filter(|v| v["auth.access"]["allowed"] == false)
        .collect();
    assert_eq!(refused.len(), 3, "{text}");
    let dash = records
        .iter()
        .find(|v| v["auth.access"]["endpoint"] == "/auth/dashboard")
        .unwrap();
    assert_eq!(
        dash["auth.access"]["token_fingerprint"], fp,
        "?token= counts as the token"
    );

    // The monthly summary.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authwatch"))
        .args([
            "audit",
            "access",
            "--audit-dir",
            audit.to_str().unwrap(),
            "--since",
            "30d",
        ])
        .output()
        .unwrap();
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{md}");
    assert!(
        md.lines()
            .any(|l| l.starts_with("| /metrics | 10.0.0.5 | sha256:")
                && l.contains("| yes | 20 | 1 |")),
        "{md}"
    );
    assert!(
        md.contains("| /auth/blocks | 203.0.113.9 |") && md.contains("**refused**"),
        "{md}"
    );
    assert!(md.contains("27 requests, 3 refused"), "{md}");
}
