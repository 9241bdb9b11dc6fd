//! Client address rules over real sockets: forwarded headers are only read when trusted.

mod common;

use std::net::IpAddr;

use authwatch::{AuthWatch, ClientIp};
use axum::routing::post;
use axum::Router;
use common::*;

async fn ip_seen(rules: ClientIp, headers: &[(&str, &str)]) -> Option<IpAddr> {
    let rec = Recorder::default();
    let watch = AuthWatch::builder()
        .client_ip(rules)
        .sink(rec.sink())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/login", post(|| async { "ok" }))
        .layer(watch.layer());
    let addr = serve(app).await;
    let mut req = request("POST", addr, "/login");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(&http1(), req).await;
    rec.wait_for(1).await[0].client_ip
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarding_headers_are_ignored_with_zero_trusted_hops() {
    let spoofed = [
        ("x-forwarded-for", "203.0.113.66"),
        ("x-real-ip", "203.0.113.67"),
        ("forwarded", "for=203.0.113.68"),
    ];
    assert_eq!(
        ip_seen(ClientIp::default(), &spoofed).await,
        ip("127.0.0.1")
    );
    assert_eq!(
        ip_seen(ClientIp::x_forwarded_for(0), &spoofed).await,
        ip("127.0.0.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_are_counted_from_the_right() {
    let chain = [("x-forwarded-for", "198.51.100.1, 203.0.113.5")];
    // One proxy (us at 127.0.0.1 playing it): the client is the last entry; the first entry
    // was written by the client and is not trusted.
    assert_eq!(
        ip_seen(ClientIp::x_forwarded_for(1), &chain).await,
        ip("203.0.113.5")
    );
    assert_eq!(
        ip_seen(ClientIp::x_forwarded_for(2), &chain).await,
        ip("198.51.100.1")
    );
    let fwd = [("forwarded", r#"for="[2001:db8::7]:4711";proto=https"#)];
    assert_eq!(
        ip_seen(ClientIp::forwarded(1), &fwd).await,
        ip("2001:db8::7")
    );
    assert_eq!(
        ip_seen(ClientIp::x_real_ip(), &[("x-real-ip", "192.0.2.9")]).await,
        ip("192.0.2.9")
    );
    // Trusted header, garbage value: no address rather than the proxy's.
    assert_eq!(
        ip_seen(
            ClientIp::x_forwarded_for(1),
            &[("x-forwarded-for", "unknown")]
        )
        .await,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_forwarding_headers_are_harmless() {
    let huge = "9".repeat(60 * 1024);
    let hops = "10.1.1.1,".repeat(5_000) + "192.0.2.44";
    assert_eq!(
        ip_seen(ClientIp::x_forwarded_for(1), &[("x-forwarded-for", &huge)]).await,
        None
    );
    assert_eq!(
        ip_seen(ClientIp::x_forwarded_for(1), &[("x-forwarded-for", &hops)]).await,
        ip("192.0.2.44")
    );
    assert_eq!(
        ip_seen(
            ClientIp::x_forwarded_for(1),
            &[("x-forwarded-for", "fe80::1%eth0")]
        )
        .await,
        ip("fe80::1")
    );
}

/// The user agent reaches the sinks (for audit trails), as sent; a non-ASCII one is left out
/// rather than mangled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_agent_reaches_the_sinks() {
    let rec = Recorder::default();
    let watch = AuthWatch::builder().sink(rec.sink()).build().unwrap();
    let app = Router::new()
        .route("/login", post(|| async { "ok" }))
        .layer(watch.layer());
    let addr = serve(app).await;
    send(
        &http1(),
        request("POST", addr, "/login").header("user-agent", "curl/8.5.0"),
    )
    .await;
    send(
        &http1(),
        request("POST", addr, "/login").header("user-agent", &b"caf\xc3\xa9"[..]),
    )
    .await;
    send(&http1(), request("POST", addr, "/login")).await;
    let seen = rec.wait_for(3).await;
    let mut uas: Vec<_> = seen.iter().map(|s| s.user_agent.clone()).collect();
    uas.sort();
    assert_eq!(uas, vec![None, None, Some("curl/8.5.0".to_owned())]);
}
