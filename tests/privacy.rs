//! Privacy on the wire, and the series bound at a real collector: an auth service with every
//! sink on (client addresses from a trusted `X-Forwarded-For`, GeoIP, alerts, sessions, the
//! token guard) exporting over OTLP to rotel gets traffic carrying distinctive client
//! addresses, user ids, e-mails, bearer tokens, cookies and API keys in paths, query strings,
//! headers and bodies, and a brute-force attack that fires an alert naming its address. Every
//! exported metric (all of rotel's metric output: names, resource, scope, data points) and the
//! `/metrics` page are then searched for each of them: zero hits. Two hostile scans of random
//! paths and sprayed addresses follow; the second adds no series at the collector. Needs
//! `scripts/test-deps.sh`.

mod real;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use authwatch::{AuthOp, AuthWatch, ClientIp};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use real::*;

/// Values that must never appear in a metric.
const PRIVATE: &[&str] = &[
    "198.51.100.77",
    "2001:db8:abcd:77",
    "192.0.2.201",
    "usr_7f3k9q",
    "zelda.privacy",
    "zelda.privacy%40example.org",
    "example.org",
    "eyJhbGciOiJIUzI1NiJ9",
    "c2VjcmV0LXRva2Vu",
    "sess_zq81x",
    "ak_live_zq",
    "hunter2-zq",
    "Mozilla/5.0 (zq-agent)",
];

async fn sign_in(body: String) -> Response {
    if body.contains("ada@example.com") && body.contains("correct horse") {
        "{\"token\":\"eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.zq9\"}".into_response()
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

fn bearer_ok(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok())
        == Some("Bearer eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.zq9")
}

async fn session(h: HeaderMap) -> StatusCode {
    if bearer_ok(&h) {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

async fn require(req: axum::extract::Request, next: Next) -> Response {
    if bearer_ok(req.headers()) {
        next.run(req).await
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

fn serve(rt: &tokio::runtime::Runtime, watch: &AuthWatch) -> SocketAddr {
    let protected = Router::new()
        .route("/api/me", get(|| async { "you" }))
        .layer(watch.token_guard(middleware::from_fn(require)));
    let app = Router::new()
        .route("/api/auth/sign-in/email", post(sign_in))
        .route("/api/auth/get-session", get(session))
        .route("/api/auth/{*rest}", any(|| async { StatusCode::NOT_FOUND }))
        .route("/users/{*rest}", any(|| async { "a profile" }))
        .merge(protected)
        .layer(watch.layer())
        .merge(watch.endpoints());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        let l = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(l, app.into_make_service_with_connect_info::<SocketAddr>())
            .await
            .unwrap();
    });
    addr
}

/// rotel's metric output only (its log and span records may carry audit fields by design).
fn metric_text(rotel: &Rotel) -> String {
    let mut out = String::new();
    let mut in_metrics = false;
    for line in rotel.text().lines() {
        if let Some(signal) = real::resource_block(line) {
            in_metrics = signal == real::Signal::Metrics;
        }
        if in_metrics {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Every exported series (metric name and attributes).
fn series(rotel: &Rotel) -> BTreeSet<String> {
    rotel
        .parse()
        .points
        .iter()
        .map(|p| format!("{} {:?}", p.metric, p.attrs))
        .collect()
}

fn private_traffic(http: &Http, addr: SocketAddr) {
    let u = |p: &str| format!("http://{addr}{p}");
    let json = ("content-type", "application/json");
    let ua = ("user-agent", "Mozilla/5.0 (zq-agent)");
    let cookie = ("cookie", "better-auth.session_token=sess_zq81x; theme=dark");
    let bearer = (
        "authorization",
        "Bearer eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu.zq9",
    );
    // A brute force from one address: 60 failures name it in an alert, never in a metric.
    for _ in 0..60 {
        let (s, _) = http.send(
            "POST",
            &u("/api/auth/sign-in/email"),
            &[json, ua, ("x-forwarded-for", "198.51.100.77")],
            r#"{"email":"zelda.privacy@example.org","password":"hunter2-zq"}"#,
        );
        assert_eq!(s, 401);
    }
    let (s, _) = http.send(
        "POST",
        &u("/api/auth/sign-in/email"),
        &[json, ("x-forwarded-for", "2001:db8:abcd:77::1977")],
        r#"{"email":"ada@example.com","password":"correct horse"}"#,
    );
    assert_eq!(s, 200);
    let requests: &[(&str, &str, Vec<(&str, &str)>)] = &[
        ("GET", "/api/auth/get-session", vec![bearer, cookie, ua]),
        ("GET", "/api/auth/get-session", vec![cookie]),
        ("GET", "/api/me", vec![bearer, ("x-forwarded-for", "192.0.2.201")]),
        ("GET", "/api/me", vec![("x-api-key", "ak_live_zq")]),
        ("GET", "/api/auth/users/usr_7f3k9q", vec![ua]),
        (
            "GET",
            "/api/auth/verify-email?token=eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu&email=zelda.privacy%40example.org",
            vec![],
        ),
        (
            "POST",
            "/api/auth/reset-password/eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2Vu",
            vec![("forwarded", "for=\"[2001:db8:abcd:77::1977]\"")],
        ),
        (
            "POST",
            "/api/auth/sign-in/email/zelda.privacy@example.org",
            vec![("x-real-ip", "198.51.100.77")],
        ),
        ("GET", "/users/zelda.privacy%40example.org/usr_7f3k9q", vec![ua]),
        (
            "GET",
            "/api/auth/callback/google?code=sess_zq81x&state=usr_7f3k9q",
            vec![cookie],
        ),
    ];
    for (m, p, h) in requests {
        let (s, _) = http.send(m, &u(p), h, "");
        assert!(s < 500, "{m} {p}: {s}");
    }
}

/// Random paths under auth and non-auth prefixes, and sprayed addresses; returns some of the
/// path segments and addresses it sent.
fn scan(http: &Http, addr: SocketAddr, seed: u64, n: u64) -> Vec<String> {
    let mut sent = Vec::new();
    let mut x = seed;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..n {
        let r = next();
        let path = match i % 3 {
            0 => format!("/api/auth/{r:x}"),
            1 => format!("/api/auth/sign-in/{:x}/{r:x}", r >> 7),
            _ => format!("/{r:x}/{:x}", r >> 3),
        };
        let ip = format!("10.{}.{}.{}", r % 256, (r >> 8) % 256, (r >> 16) % 256);
        if i % 20 == 0 {
            sent.push(format!("{r:x}"));
            sent.push(ip.clone());
        }
        let (s, _) = http.send(
            "GET",
            &format!("http://{addr}{path}"),
            &[("x-forwarded-for", &ip)],
            "",
        );
        assert!(s < 500);
        let (s, _) = http.send(
            "POST",
            &format!("http://{addr}/api/auth/sign-in/email"),
            &[
                ("x-forwarded-for", &ip),
                ("content-type", "application/json"),
            ],
            "{}",
        );
        assert_eq!(s, 401);
    }
    sent
}

#[test]
fn no_private_value_reaches_any_metric_and_series_stay_bounded_at_the_collector() {
    let rotel = Rotel::start();
    let dir = tempdir::Dir::new("privacy");
    let db = dir.path().join("country.mmdb");
    std::fs::write(
        &db,
        mmdb(&[
            ("198.51.100.0/24", "NL"),
            ("192.0.2.0/24", "FR"),
            ("10.0.0.0/8", "ZZ"),
        ]),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let watch = {
        let _g = rt.enter();
        AuthWatch::builder()
            .service_name("accounts")
            .route("/api/auth/reset-password/{token}", AuthOp::PasswordReset)
            .client_ip(ClientIp::x_forwarded_for(1))
            .geoip_database(&db)
            .otlp_endpoint(format!("http://{}", rotel.http))
            .export_interval(Duration::from_millis(300))
            .build()
            .unwrap()
    };
    let addr = serve(&rt, &watch);
    let http = Http::new();

    private_traffic(&http, addr);
    watch.evaluate_alerts();
    // The attack is named where it belongs: in the alert.
    let snapshot = watch.snapshot();
    let alerts = snapshot.alerts();
    assert!(
        alerts
            .iter()
            .any(|a| a.labels.get("client_ip").map(String::as_str) == Some("198.51.100.77")),
        "{alerts:?}"
    );
    // Let an export carry all of it (the firing-alert gauge included).
    eventually(30, "the attack's failures at rotel", || {
        let got = rotel.parse().last_total(
            "auth.login.failure.count",
            &[("auth.failure.reason", "invalid_credentials")],
        );
        if got >= 60.0 {
            Ok(())
        } else {
            Err(format!("{got}"))
        }
    });
    std::thread::sleep(Duration::from_millis(700));

    // Two scans: the first makes every (route, method, outcome) cell known, the second (all
    // new paths and addresses) must add no series.
    let mut sent = scan(&http, addr, 0x2545_f491_4f6c_dd1d, 400);
    std::thread::sleep(Duration::from_millis(1_000));
    let first = series(&rotel);
    sent.extend(scan(&http, addr, 0x9e37_79b9_7f4a_7c15, 400));
    std::thread::sleep(Duration::from_millis(1_000));
    let metrics_page = watch.metrics_text().unwrap();
    rt.block_on(watch.shutdown()).unwrap();
    let second = series(&rotel);
    let new: Vec<_> = second.difference(&first).collect();
    assert!(new.is_empty(), "new series after the second scan: {new:#?}");
    assert!(
        second.len() < 2_000,
        "{} series for one service",
        second.len()
    );
    eprintln!(
        "privacy: {} series at the collector ({} before the second scan of 400 new paths \
         and addresses)",
        second.len(),
        first.len()
    );

    let exported = metric_text(&rotel);
    assert!(
        exported.contains("auth.login.failure.count"),
        "no metrics at rotel"
    );
    assert!(
        exported.contains("geo.country.iso_code: Str(NL)"),
        "the attack's country is an attribute (its address is not)"
    );
    for secret in PRIVATE {
        assert!(
            !exported.contains(secret),
            "{secret:?} reached the collector:\n{}",
            exported
                .lines()
                .filter(|l| l.contains(secret))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(!metrics_page.contains(secret), "{secret:?} is on /metrics");
    }
    // The scans' random paths and addresses are nowhere either.
    for leaked in &sent {
        assert!(
            !exported.contains(leaked.as_str()) && !metrics_page.contains(leaked.as_str()),
            "{leaked}"
        );
    }
}
