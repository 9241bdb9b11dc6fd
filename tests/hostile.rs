//! Hostile traffic in-process, through `watch.wrap(app)` with every sink on: random path scans
//! (auth and non-auth prefixes, odd methods, percent-encoded and very long paths), 64 KiB headers,
//! `X-Forwarded-For` with thousands of hops, and a spray of client addresses (IPv4 and IPv6).
//! Every request is answered exactly as the bare app answers it, the exported series stop
//! growing once every (route, method, outcome) has been seen (a second, different spray adds
//! none), no path fragment or address becomes a label, and resident memory stays bounded.
//! gRPC answers with malformed `grpc-status` values (in the head and in trailers) reach the
//! client byte for byte, each counted once, with no value becoming a label.
//!
//! `AUTHWATCH_HOSTILE_SCALE=N` multiplies the scan and the spray (default 1: 2 × 10,000 paths
//! and 2 × 100,000 addresses); `scripts/hostile.sh` runs the full size (N = 5: 100,000 paths,
//! 1,000,000 addresses) in a release build.

use std::net::SocketAddr;

use authwatch::{AuthWatch, ClientIp};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn word(&mut self) -> String {
        let n = 1 + self.next() % 12;
        (0..n)
            .map(|_| char::from(b'a' + (self.next() % 26) as u8))
            .collect()
    }
}

fn app() -> Router {
    Router::new().route(
        "/api/auth/sign-in/email",
        post(|| async { StatusCode::UNAUTHORIZED }),
    )
}

fn request(method: &str, uri: &str, headers: &[(&str, String)]) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    let mut r = b.body(Body::empty()).expect("a valid request");
    r.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
    r
}

async fn answer<S>(svc: S, req: Request<Body>) -> (u16, Vec<u8>)
where
    S: tower::Service<Request<Body>, Response = axum::response::Response>,
    S::Error: std::fmt::Debug,
{
    let res = svc.oneshot(req).await.expect("answered");
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, body)
}

/// The same request to the watched and the bare app: the same answer.
async fn same(watch: &AuthWatch, method: &str, uri: &str, headers: &[(&str, String)]) {
    let watched = answer(watch.wrap(app()), request(method, uri, headers)).await;
    let bare = answer(app(), request(method, uri, headers)).await;
    assert_eq!(watched, bare, "{method} {}", &uri[..uri.len().min(80)]);
}

fn series(watch: &AuthWatch) -> Vec<String> {
    watch
        .metrics_text()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("auth_") && !l.starts_with("auth_uptime"))
        .map(|l| l.rsplit_once(' ').map_or(l, |(k, _)| k).to_owned())
        .collect()
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

async fn scan(watch: &AuthWatch, rng: &mut Rng, paths: usize, ips: usize) -> Vec<String> {
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "PROPFIND", "HEAD"];
    let mut seen_words = Vec::new();
    for i in 0..paths {
        let w = rng.word();
        if seen_words.len() < 50 {
            seen_words.push(w.clone());
        }
        let path = match i % 4 {
            0 => format!("/api/auth/{w}"),
            1 => format!("/api/auth/sign-in/{w}"),
            2 => format!("/{w}/{}", rng.word()),
            _ => format!("/api/auth/%FF%FE{w}%2F..%2F"),
        };
        let m = methods[(rng.next() % methods.len() as u64) as usize];
        same(watch, m, &path, &[]).await;
    }
    for i in 0..ips {
        let r = rng.next();
        let ip = if i % 2 == 0 {
            format!(
                "{}.{}.{}.{}",
                1 + r % 223,
                (r >> 8) % 256,
                (r >> 16) % 256,
                (r >> 24) % 256
            )
        } else {
            format!(
                "2001:db8:{:x}:{:x}::{:x}",
                r % 65_536,
                (r >> 16) % 65_536,
                (r >> 32) % 65_536
            )
        };
        let req = request(
            "POST",
            "/api/auth/sign-in/email",
            &[
                ("x-forwarded-for", ip),
                ("user-agent", format!("spray/{}", r % 1000)),
            ],
        );
        let (status, _) = answer(watch.wrap(app()), req).await;
        assert_eq!(status, 401);
    }
    seen_words
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_traffic_is_answered_as_by_the_app_and_bounded() {
    let watch = AuthWatch::builder()
        .client_ip(ClientIp::x_forwarded_for(1))
        .build()
        .unwrap();
    // The health series exist from the first report on: have it before counting series.
    watch.health().await;
    // Odd inputs, each answered as the bare app answers.
    let big = "a".repeat(64 * 1024);
    let hops = (0..5_000)
        .map(|i| format!("10.{}.{}.{}", i % 200, (i / 200) % 200, i % 250))
        .collect::<Vec<_>>()
        .join(", ");
    let long_path = format!("/api/auth/{}", "x/".repeat(8 * 1024));
    for (method, uri, headers) in [
        (
            "POST",
            "/api/auth/sign-in/email",
            vec![("x-big", big.clone())],
        ),
        (
            "POST",
            "/api/auth/sign-in/email",
            vec![("x-forwarded-for", hops.clone())],
        ),
        (
            "POST",
            "/api/auth/sign-in/email",
            vec![(
                "x-forwarded-for",
                "not an address, ::::, 999.1.1.1".to_owned(),
            )],
        ),
        (
            "POST",
            "/api/auth/sign-in/email",
            vec![("authorization", format!("Bearer {big}"))],
        ),
        (
            "POST",
            "/api/auth/sign-in/email",
            vec![("cookie", format!("sid={big}; {big}"))],
        ),
        ("GET", long_path.as_str(), vec![]),
        ("POST", "/api/auth/sign-in/email%00", vec![]),
        ("POST", "/api/auth/sign-in/../sign-in/email", vec![]),
        ("POST", "/API/AUTH/SIGN-IN/EMAIL", vec![]),
    ] {
        same(&watch, method, uri, &headers).await;
    }

    // A first scan and spray: every route/method/outcome cell is now known.
    let scale: usize = std::env::var("AUTHWATCH_HOSTILE_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let (paths, ips) = (10_000 * scale, 100_000 * scale);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    scan(&watch, &mut rng, paths, ips).await;
    let first = series(&watch);
    let rss_before = rss_bytes();
    // A second one, all new paths and addresses: no new series at all.
    let words = scan(&watch, &mut rng, paths, ips).await;
    let second = series(&watch);
    let grown = rss_bytes().saturating_sub(rss_before);
    let new: Vec<&String> = second.iter().filter(|s| !first.contains(s)).collect();
    assert!(new.is_empty(), "new series after the second scan: {new:#?}");
    let text = watch.metrics_text().unwrap();
    for w in words.iter().filter(|w| w.len() >= 6) {
        assert!(
            !text.contains(&format!("/{w}")),
            "a scanned path became a label: {w}"
        );
    }
    assert!(!text.contains("2001:db8:") && !text.contains("spray/"));
    // Whatever the traffic, the second spray of 100,000 new addresses adds no state that grows
    // with them (the detector is allocated up front; counters are per route).
    assert!(
        grown < 64 << 20,
        "resident memory grew by {} MiB",
        grown >> 20
    );
    let login = watch.snapshot().op(authwatch::AuthOp::Login).failure;
    assert!(login >= 2 * ips as u64, "{login}");
    eprintln!(
        "hostile: {} paths and {} addresses in two scans; {} series; resident memory +{} KiB \
         across the second scan",
        2 * paths,
        2 * ips,
        second.len(),
        grown >> 10
    );
}

/// A gRPC service that answers with the `grpc-status` bytes it is asked for, in the head
/// (trailers-only) or in trailers after a message.
async fn grpc_reply(headers: axum::http::HeaderMap) -> axum::response::Response {
    use axum::http::HeaderValue;
    let raw = hex(headers.get("x-status").map_or(&b""[..], |v| v.as_bytes()));
    let value = HeaderValue::from_bytes(&raw).unwrap_or(HeaderValue::from_static("garbage"));
    let builder = axum::response::Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    if headers.contains_key("x-in-head") {
        return builder
            .header("grpc-status", value)
            .body(Body::empty())
            .unwrap();
    }
    let mut trailers = axum::http::HeaderMap::new();
    trailers.insert("grpc-status", value);
    let frames = [
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from_static(
            b"\0\0\0\0\x02hi",
        ))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    builder
        .body(Body::new(http_body_util::StreamBody::new(
            futures_util::stream::iter(frames),
        )))
        .unwrap()
}

fn hex(b: &[u8]) -> Vec<u8> {
    (0..b.len() / 2)
        .filter_map(|i| {
            u8::from_str_radix(std::str::from_utf8(&b[2 * i..2 * i + 2]).ok()?, 16).ok()
        })
        .collect()
}

fn grpc_app() -> Router {
    Router::new().route("/acme.auth.v1.AuthService/{method}", post(grpc_reply))
}

/// Status, headers, data and trailers: everything the client gets.
async fn full_answer<S>(svc: S, req: Request<Body>) -> String
where
    S: tower::Service<Request<Body>, Response = axum::response::Response>,
    S::Error: std::fmt::Debug,
{
    let res = svc.oneshot(req).await.expect("answered");
    let head = format!("{} {:?}", res.status(), res.headers());
    let body = res.into_body().collect().await.unwrap();
    let trailers = format!("{:?}", body.trailers());
    format!("{head} {:?} {trailers}", body.to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_status_is_passed_through_counted_once_and_never_a_label() {
    let watch = AuthWatch::builder().build().unwrap();
    // The health series exist from the first report on: have it before counting series.
    watch.health().await;
    let mut values: Vec<Vec<u8>> = [
        &b"abc"[..],
        b"",
        b"-1",
        b"17",
        b"99999999999999999999999",
        b"2147483648",
        b"0 ",
        b" 16",
        b"1\t",
        b"+0",
        b"0x10",
        b"\xff\xfe",
        b"16\x80",
        b"000000000000000000000000000000016",
    ]
    .iter()
    .map(|v| v.to_vec())
    .collect();
    values.push(b"7".repeat(4096));
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for _ in 0..500 {
        let n = rng.next() % 12;
        // Visible ASCII and obs-text bytes (what a header value may hold).
        values.push(
            (0..n)
                .map(|_| match rng.next() % 3 {
                    0 => b'0' + (rng.next() % 10) as u8,
                    1 => 0x21 + (rng.next() % 94) as u8,
                    _ => 0x80 + (rng.next() % 128) as u8,
                })
                .collect(),
        );
    }
    let mut requests = 0u64;
    let mut series_after_first = None;
    for (round, batch) in [&values[..values.len() / 2], &values[values.len() / 2..]]
        .into_iter()
        .enumerate()
    {
        for v in batch {
            let code: String = v.iter().map(|b| format!("{b:02x}")).collect();
            for in_head in [false, true] {
                let req = || {
                    let mut b = Request::post("/acme.auth.v1.AuthService/Login")
                        .header("content-type", "application/grpc")
                        .header("te", "trailers")
                        .header("x-status", code.as_str());
                    if in_head {
                        b = b.header("x-in-head", "1");
                    }
                    b.body(Body::empty()).unwrap()
                };
                let watched = full_answer(
                    tower::ServiceExt::<Request<Body>>::map_response(
                        tower::Layer::layer(&watch.layer(), grpc_app()),
                        axum::response::IntoResponse::into_response,
                    ),
                    req(),
                )
                .await;
                let bare = full_answer(grpc_app(), req()).await;
                assert_eq!(watched, bare, "grpc-status {v:?}");
                requests += 1;
            }
        }
        if round == 0 {
            series_after_first = Some(series(&watch));
        }
    }
    // Exactly one outcome per call, whatever the status said.
    let l = watch.snapshot().op(authwatch::AuthOp::Login);
    assert_eq!(
        (
            l.success + l.failure + l.rate_limited + l.cancelled,
            l.latency.count
        ),
        (requests, requests),
        "{l:?}"
    );
    let second = series(&watch);
    let new: Vec<_> = second
        .iter()
        .filter(|s| !series_after_first.as_ref().unwrap().contains(s))
        .collect();
    assert!(new.is_empty(), "new series from the second batch: {new:#?}");
    // The labels (not the values) of every series.
    let labels = second.join("\n");
    for s in ["99999", "2147483648", "0x10", "abc", "garbage"] {
        assert!(!labels.contains(s), "{s} became a label");
    }
    assert!(labels.contains("rpc_method=\"Login\""), "{labels}");
}
