//! Geography of auth attempts: a MaxMind-format database built here (a small writer of the
//! MaxMind DB 2.0 format: an IPv4 search tree with 24-bit records, a data section of
//! `{country: {iso_code}}` maps, the metadata map), read by the `maxminddb` crate inside
//! authwatch, and the `auth.geo.attempts.count` series on `/metrics`.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use authwatch::{AuthOp, AuthWatch, BuildError, ClientIp};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use common::*;

fn ctrl(kind: u8, size: usize, out: &mut Vec<u8>) {
    assert!(size < 29);
    if kind <= 7 {
        out.push((kind << 5) | size as u8);
    } else {
        out.push(size as u8);
        out.push(kind - 7);
    }
}

fn string(s: &str, out: &mut Vec<u8>) {
    ctrl(2, s.len(), out);
    out.extend_from_slice(s.as_bytes());
}

fn uint(kind: u8, v: u64, out: &mut Vec<u8>) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    ctrl(kind, 8 - skip, out);
    out.extend_from_slice(&bytes[skip..]);
}

/// A MaxMind DB with `networks` (CIDR, country code), IPv4.
fn mmdb(networks: &[(&str, &str)]) -> Vec<u8> {
    // The data section: one record per country.
    let mut data = Vec::new();
    let mut offsets = BTreeMap::new();
    for (_, iso) in networks {
        offsets.entry(*iso).or_insert_with(|| {
            let at = data.len();
            ctrl(7, 1, &mut data);
            string("country", &mut data);
            ctrl(7, 1, &mut data);
            string("iso_code", &mut data);
            string(iso, &mut data);
            at
        });
    }
    // The search tree: a binary trie over the address bits.
    #[derive(Clone, Copy)]
    enum Rec {
        Empty,
        Node(usize),
        Data(usize),
    }
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty; 2]];
    for (cidr, iso) in networks {
        let (addr, len) = cidr.split_once('/').unwrap();
        let addr = u32::from(addr.parse::<Ipv4Addr>().unwrap());
        let len: u32 = len.parse().unwrap();
        let mut node = 0;
        for depth in 0..len {
            let bit = ((addr >> (31 - depth)) & 1) as usize;
            if depth + 1 == len {
                nodes[node][bit] = Rec::Data(offsets[iso]);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    _ => {
                        nodes.push([Rec::Empty; 2]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n);
                        n
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for n in &nodes {
        for r in n {
            let v = match *r {
                Rec::Empty => count,
                Rec::Node(i) => i,
                Rec::Data(off) => count + 16 + off,
            };
            out.extend_from_slice(&(v as u32).to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let mut meta = Vec::new();
    ctrl(7, 9, &mut meta);
    string("binary_format_major_version", &mut meta);
    uint(5, 2, &mut meta);
    string("binary_format_minor_version", &mut meta);
    uint(5, 0, &mut meta);
    string("build_epoch", &mut meta);
    uint(9, 1_764_000_000, &mut meta);
    string("database_type", &mut meta);
    string("authwatch-test-Country", &mut meta);
    string("description", &mut meta);
    ctrl(7, 1, &mut meta);
    string("en", &mut meta);
    string("authwatch test database", &mut meta);
    string("ip_version", &mut meta);
    uint(5, 4, &mut meta);
    string("languages", &mut meta);
    ctrl(11, 1, &mut meta);
    string("en", &mut meta);
    string("node_count", &mut meta);
    uint(6, count as u64, &mut meta);
    string("record_size", &mut meta);
    uint(5, 24, &mut meta);
    out.extend_from_slice(&meta);
    out
}

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
        mmdb(&[
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
