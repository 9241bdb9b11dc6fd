//! Geography of auth attempts: a MaxMind-format database written by the tests' small writer
//! (`real::mmdb`), read by the `maxminddb` crate inside authwatch, and the
//! `auth.geo.attempts.count` series on `/metrics`.

mod common;
mod real;

use std::collections::BTreeMap;

use authwatch::{AuthOp, AuthWatch, BuildError, ClientIp};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::*;

fn series(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with("auth_geo_attempts_count_total{"))
        .map(|l| {
            let (labels, v) = l.rsplit_once(' ').unwrap();
            let mut keep: Vec<&str> = labels
                .trim_start_matches("auth_geo_attempts_count_total{")
                .trim_end_matches('}')
                .split(',')
                .filter(|kv| !kv.starts_with("otel_scope"))
                .collect();
            keep.sort_unstable();
            (keep.join(","), v.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_are_counted_per_country_of_the_client() {
    let dir = std::env::temp_dir().join(format!("authwatch-geoip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("test-country.mmdb");
    std::fs::write(
        &db,
        real::mmdb(&[
            ("203.0.113.0/24", "AU"),
            ("198.51.100.0/24", "US"),
            ("192.0.2.0/25", "DE"),
            ("192.0.2.128/25", "FR"),
        ]),
    )
    .unwrap();
    let watch = AuthWatch::builder()
        .route("/login/{code}", AuthOp::Login)
        .client_ip(ClientIp::x_forwarded_for(1))
        .geoip_database(&db)
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/login/{code}",
            post(|Path(c): Path<u16>| async move { StatusCode::from_u16(c).unwrap() }),
        )
        .layer(watch.layer());
    let addr = serve(app).await;
    let client = http1();
    for (ip, code, n) in [
        ("203.0.113.7", 401, 3),
        ("203.0.113.8", 200, 2),
        ("198.51.100.1", 200, 1),
        ("192.0.2.1", 429, 1),
        ("192.0.2.200", 401, 1),
        ("10.0.0.1", 401, 1),    // not in the database
        ("2001:db8::1", 200, 1), // an IPv4-only database
    ] {
        for _ in 0..n {
            let req =
                request("POST", addr, &format!("/login/{code}")).header("x-forwarded-for", ip);
            send(&client, req).await;
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let got = series(&watch.metrics_text().unwrap());
    let want: BTreeMap<String, f64> = [
        ("AU", "failure", 3.0),
        ("AU", "success", 2.0),
        ("US", "success", 1.0),
        ("DE", "rate_limited", 1.0),
        ("FR", "failure", 1.0),
        ("unknown", "failure", 1.0),
        ("unknown", "success", 1.0),
    ]
    .into_iter()
    .map(|(c, o, n)| {
        (
            format!("auth_operation=\"login\",auth_outcome=\"{o}\",geo_country_iso_code=\"{c}\""),
            n,
        )
    })
    .collect();
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_or_broken_database_is_a_build_error() {
    let e = AuthWatch::builder()
        .geoip_database("/nonexistent/GeoLite2-Country.mmdb")
        .build()
        .unwrap_err();
    assert!(matches!(e, BuildError::GeoIp(_)), "{e}");
    let bad = std::env::temp_dir().join(format!("authwatch-bad-{}.mmdb", std::process::id()));
    std::fs::write(&bad, b"not a database").unwrap();
    let e = AuthWatch::builder()
        .geoip_database(&bad)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("GeoIP database"), "{e}");
    let _ = std::fs::remove_file(&bad);
}
