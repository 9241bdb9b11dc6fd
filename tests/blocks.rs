//! Temporary blocks over real sockets: an address the brute-force alert names is refused with
//! `429` and `Retry-After` before the handler runs, and counted; allow-listed networks are
//! never blocked; a dry run refuses nothing; repeat offences double the block; blocks by hand
//! come and go; the list stays bounded under a spray; blocks reach a real CrowdSec Local API
//! as decisions, and its bans are enforced.

mod common;
mod real;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use authwatch::alerts::ManualClock;
use authwatch::{AlertConfig, AuthOp, AuthWatch, BlockPolicy, BlockSource, ClientIp, CrowdSec};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};

struct Rig {
    watch: AuthWatch,
    addr: SocketAddr,
    clock: Arc<ManualClock>,
    client: HttpClient,
    /// Requests that reached the handler.
    handled: Arc<AtomicU64>,
    audit: std::path::PathBuf,
}

async fn rig(policy: Option<BlockPolicy>) -> Rig {
    rig_with(policy, |b| b).await
}

/// [`rig`], with the monitor's settings changed by `more`.
async fn rig_with(
    policy: Option<BlockPolicy>,
    more: impl FnOnce(authwatch::AuthWatchBuilder) -> authwatch::AuthWatchBuilder,
) -> Rig {
    let clock = Arc::new(ManualClock::new());
    let audit = tempdir("blocks");
    let mut b = AuthWatch::builder()
        .otlp(false)
        .client_ip(ClientIp::x_forwarded_for(1))
        .audit_dir(&audit)
        .alerts(AlertConfig::new().tick(Duration::ZERO).clock(clock.clone()));
    if let Some(p) = policy {
        b = b.blocking(p);
    }
    let watch = more(b).build().unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    let h2 = handled.clone();
    let app = Router::new()
        .route(
            "/login",
            post(move || {
                h.fetch_add(1, Ordering::SeqCst);
                async { StatusCode::UNAUTHORIZED }
            }),
        )
        .route(
            "/orders",
            post(move || {
                h2.fetch_add(1, Ordering::SeqCst);
                async { StatusCode::OK }
            }),
        )
        .layer(watch.layer())
        .merge(watch.endpoints());
    Rig {
        watch,
        addr: serve(app).await,
        clock,
        client: http1(),
        handled,
        audit,
    }
}

impl Rig {
    /// One request from `ip`: status and `Retry-After`.
    async fn post(&self, path: &str, ip: &str) -> (u16, Option<u64>) {
        let req = request("POST", self.addr, path)
            .header("x-forwarded-for", ip)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = self.client.request(req).await.expect("request failed");
        let status = res.status().as_u16();
        let retry = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let _ = res.into_body().collect().await;
        (status, retry)
    }

    /// 51 failed sign-ins from `ip` (over the rule's 50), then the rules evaluated until the
    /// engine has counted them.
    async fn brute_force(&self, ip: &str) {
        for _ in 0..51 {
            self.post("/login", ip).await;
        }
        for _ in 0..200 {
            self.clock.advance(Duration::from_secs(1));
            self.watch.evaluate_alerts();
            if self.firing_for(ip) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("AuthBruteForceSuspected never fired for {ip}");
    }

    fn firing_for(&self, ip: &str) -> bool {
        self.watch
            .snapshot()
            .alerts()
            .iter()
            .any(|a| a.name == "AuthBruteForceSuspected" && a.label("client_ip") == Some(ip))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brute_forcing_address_is_refused_before_the_handler_and_counted() {
    let r = rig(Some(BlockPolicy::default().ttl(Duration::from_secs(900)))).await;
    r.brute_force("203.0.113.9").await;
    let before = r.handled.load(Ordering::SeqCst);
    let (status, retry) = r.post("/login", "203.0.113.9").await;
    assert_eq!(status, 429);
    let retry = retry.expect("Retry-After");
    assert!((890..=900).contains(&retry), "{retry}");
    assert_eq!(
        r.handled.load(Ordering::SeqCst),
        before,
        "the handler never ran"
    );
    // Another address, and another route of the blocked one (auth routes only by default).
    assert_eq!(r.post("/login", "203.0.113.10").await.0, 401);
    assert_eq!(r.post("/orders", "203.0.113.9").await.0, 200);
    for _ in 0..4 {
        assert_eq!(r.post("/login", "203.0.113.9").await.0, 429);
    }
    let blocks = r.watch.blocked_ips();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    let b = &blocks[0];
    assert_eq!(b.ip.to_string(), "203.0.113.9");
    assert_eq!((b.source, b.refused), (BlockSource::Alert, 5));
    assert!(
        b.reason.starts_with("AuthBruteForceSuspected: "),
        "{}",
        b.reason
    );
    assert_eq!(r.watch.blocked_requests()[AuthOp::Login.index()], 5);
    let (_, body) = send(&r.client, request("GET", r.addr, "/metrics")).await;
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.lines()
            .any(|l| l.starts_with("auth_blocked_count_total{")
                && l.contains("auth_operation=\"login\"")
                && l.ends_with(" 5")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("auth_blocks_active") && l.ends_with(" 1")),
        "{text}"
    );
    assert!(!text.contains("203.0.113.9"), "no address in the metrics");
    // The audit trail has the decision.
    r.watch.audit_logger().sync();
    let audit = read_audit(&r);
    let added: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|v| v["event.name"] == "auth.block.added")
        .collect();
    assert_eq!(added.len(), 1, "{audit:?}");
    assert_eq!(added[0]["client.address"], "203.0.113.9");
    assert_eq!(added[0]["audit.class"], "security");
    assert_eq!(added[0]["auth.block.ttl_s"], 900);
    assert_eq!(added[0]["auth.block.source"], "alert");
    // Lifted by hand: one record with what it refused, and the address is served again;
    // the alert still firing on the failures counted before does not block it again.
    let gone = r.watch.unblock_ip("203.0.113.9".parse().unwrap()).unwrap();
    assert_eq!(gone.refused, 5);
    assert_eq!(r.post("/login", "203.0.113.9").await.0, 401);
    r.clock.advance(Duration::from_secs(1));
    r.watch.evaluate_alerts();
    assert!(r.firing_for("203.0.113.9"));
    assert!(r.watch.blocked_ips().is_empty());
    r.watch.audit_logger().sync();
    let removed: Vec<serde_json::Value> = read_audit(&r)
        .into_iter()
        .filter(|v| v["event.name"] == "auth.block.removed")
        .collect();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0]["auth.block.refused"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_listed_networks_and_a_dry_run_refuse_nothing() {
    let r = rig(Some(BlockPolicy::default().allow("10.0.0.0/8"))).await;
    r.brute_force("10.1.2.3").await;
    assert!(r.watch.blocked_ips().is_empty());
    assert_eq!(r.post("/login", "10.1.2.3").await.0, 401);
    let e = r
        .watch
        .block_ip("10.9.9.9".parse().unwrap(), Duration::from_secs(60), "test")
        .unwrap_err();
    assert!(e.to_string().contains("10.0.0.0/8"), "{e}");

    let r = rig(Some(BlockPolicy::default().dry_run(true))).await;
    r.brute_force("203.0.113.20").await;
    let would = r.watch.blocked_ips();
    assert_eq!(would.len(), 1, "a dry run lists what it would block");
    assert_eq!(r.post("/login", "203.0.113.20").await.0, 401);
    assert_eq!(r.watch.blocked_requests().iter().sum::<u64>(), 0);
    r.watch.audit_logger().sync();
    assert!(read_audit(&r)
        .iter()
        .any(|v| v["event.name"] == "auth.block.dry_run"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_offence_doubles_the_block() {
    let r = rig(Some(BlockPolicy::default().ttl(Duration::from_secs(2)))).await;
    r.brute_force("203.0.113.30").await;
    let first = r.watch.blocked_ips()[0].remaining();
    assert!(first <= Duration::from_secs(2), "{first:?}");
    // The block ends; the alert resolves once its window (10 min) has passed.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(r.post("/login", "203.0.113.30").await.0, 401);
    r.clock.advance(Duration::from_secs(700));
    r.watch.evaluate_alerts();
    assert!(!r.firing_for("203.0.113.30"));
    r.watch.audit_logger().sync();
    let audit = read_audit(&r);
    let expired: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|v| v["event.name"] == "auth.block.expired")
        .collect();
    assert_eq!(expired.len(), 1, "{audit:?}");
    assert_eq!(expired[0]["auth.block.refused"], 0);
    // Again: 4 s this time.
    r.brute_force("203.0.113.30").await;
    let second = r.watch.blocked_ips()[0].remaining();
    assert!(second > Duration::from_secs(2), "{second:?}");
    assert_eq!(r.post("/login", "203.0.113.30").await, (429, Some(4)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_by_hand_on_every_route_and_ipv6_prefixes() {
    let r = rig(Some(BlockPolicy::default().all_routes(true))).await;
    // Without a policy's alert: a person blocks.
    let b = r
        .watch
        .block_ip(
            "2001:db8:1:2::7".parse().unwrap(),
            Duration::from_secs(60),
            "seen in the WAF",
        )
        .unwrap();
    assert_eq!(
        (b.ip.to_string().as_str(), b.prefix),
        ("2001:db8:1:2::", 64)
    );
    assert_eq!(b.source, BlockSource::Manual);
    // Another address of the same /64, on a route that is not an auth route.
    let (status, retry) = r.post("/orders", "2001:db8:1:2::99").await;
    assert_eq!(status, 429);
    assert!(retry.is_some_and(|s| (59..=60).contains(&s)));
    assert_eq!(r.post("/orders", "2001:db8:1:3::1").await.0, 200);
    assert_eq!(r.watch.blocked_requests()[AuthOp::COUNT], 1);
    assert!(r
        .watch
        .unblock_ip("2001:db8:1:2::1".parse().unwrap())
        .is_some());
    assert_eq!(r.post("/orders", "2001:db8:1:2::99").await.0, 200);
    assert!(r
        .watch
        .unblock_ip("2001:db8:1:2::1".parse().unwrap())
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spray_of_blocks_stays_within_the_bound() {
    let r = rig(Some(BlockPolicy::default().max_blocks(1_000))).await;
    for i in 0..5_000u32 {
        let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        r.watch
            .block_ip(ip, Duration::from_secs(60 + u64::from(i)), "spray")
            .unwrap();
    }
    let blocks = r.watch.blocked_ips();
    assert_eq!(blocks.len(), 1_000);
    // The ones that end last stayed.
    assert_eq!(blocks[0].ip.to_string(), "10.0.19.135");
    assert_eq!(r.post("/login", "10.0.19.135").await.0, 429);
    assert_eq!(r.post("/login", "10.0.0.1").await.0, 401);
    r.watch.audit_logger().sync();
    let evicted = read_audit(&r)
        .iter()
        .filter(|v| v["event.name"] == "auth.block.evicted")
        .count();
    assert_eq!(evicted, 4_000);
}

/// Every record of the rig's audit directory (its local log: one JSON object a line).
fn read_audit(r: &Rig) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for f in std::fs::read_dir(&r.audit).unwrap().flatten() {
        let text = std::fs::read_to_string(f.path()).unwrap_or_default();
        out.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()),
        );
    }
    out
}

/// `/auth/blocks` exists only with an admin token, answers only that token, and adds, lists,
/// exports and lifts blocks; the `authwatch blocks` command does the same through it, and its
/// nftables export passes `nft -c` (check mode: nothing is applied to the host's firewall).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_endpoint_and_the_command_manage_blocks() {
    // Without a token: no endpoint.
    let r = rig(Some(BlockPolicy::default())).await;
    assert_eq!(
        send(&r.client, request("GET", r.addr, "/auth/blocks"))
            .await
            .0,
        404
    );

    let watch = AuthWatch::builder()
        .otlp(false)
        .client_ip(ClientIp::x_forwarded_for(1))
        .admin_token("admin-s3cret")
        .build()
        .unwrap();
    let app = Router::new()
        .route("/login", post(|| async { StatusCode::UNAUTHORIZED }))
        .layer(watch.layer())
        .merge(watch.endpoints());
    let addr = serve(app).await;
    let c = http1();
    let auth = |b: http::request::Builder| b.header("authorization", "Bearer admin-s3cret");
    assert_eq!(send(&c, request("GET", addr, "/auth/blocks")).await.0, 401);
    let wrong = request("GET", addr, "/auth/blocks").header("authorization", "Bearer nope");
    assert_eq!(send(&c, wrong).await.0, 401);
    // Add, by the API.
    let add = |body: &str| {
        let req = auth(request("POST", addr, "/auth/blocks"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let c = c.clone();
        async move {
            let res = c.request(req).await.unwrap();
            let status = res.status().as_u16();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            )
        }
    };
    let (status, b) =
        add(r#"{"ip":"198.51.100.23","ttl_seconds":900,"reason":"seen in the WAF"}"#).await;
    assert_eq!(status, 201, "{b}");
    assert_eq!(
        (b["cidr"].as_str(), b["source"].as_str()),
        (Some("198.51.100.23"), Some("manual"))
    );
    let (status, b) = add(r#"{"ip":"not an address"}"#).await;
    assert_eq!(status, 400, "{b}");
    assert!(b["error"].as_str().unwrap().contains("\"ip\""));
    assert_eq!(add("{").await.0, 400);
    assert_eq!(
        add(r#"{"ip":"2001:db8:1:2::5","ttl_seconds":0}"#).await.0,
        400
    );
    assert_eq!(r_post(&c, addr, "198.51.100.23").await, 429);
    // List, and export.
    let (status, body) = send(&c, auth(request("GET", addr, "/auth/blocks"))).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["blocks"][0]["reason"], "seen in the WAF");
    assert_eq!(v["refused"]["login"], 1);
    let (status, body) = send(&c, auth(request("GET", addr, "/auth/blocks?format=plain"))).await;
    assert_eq!((status, &body[..]), (200, &b"198.51.100.23\n"[..]));
    // The command, through the endpoint.
    let token = tempdir("admin-token").join("token");
    std::fs::write(&token, "admin-s3cret\n").unwrap();
    let url = format!("http://{addr}");
    let cmd = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_authwatch"))
            .args(args)
            .args(["--url", &url, "--token-file", token.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = tokio::task::block_in_place(|| {
        cmd(&[
            "blocks",
            "add",
            "2001:db8:1:2::5",
            "--ttl",
            "2h",
            "--reason",
            "by the command",
        ])
    });
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("blocked 2001:db8:1:2::/64 for 2h"), "{out}");
    let (code, out, _) = tokio::task::block_in_place(|| cmd(&["blocks", "list"]));
    assert_eq!(code, Some(0));
    assert!(
        out.contains("2001:db8:1:2::/64") && out.contains("by the command"),
        "{out}"
    );
    assert!(
        out.contains("198.51.100.23") && out.contains("seen in the WAF"),
        "{out}"
    );
    let (code, nft, err) =
        tokio::task::block_in_place(|| cmd(&["blocks", "export", "--format", "nftables"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        nft.contains("198.51.100.23 timeout") && nft.contains("2001:db8:1:2::/64 timeout"),
        "{nft}"
    );
    let file = tempdir("nft").join("blocks.nft");
    std::fs::write(&file, &nft).unwrap();
    let check = std::process::Command::new(nft_binary())
        .args(["-c", "-f", file.to_str().unwrap()])
        .output()
        .expect("nft (scripts/test-deps.sh installs it)");
    assert!(
        check.status.success(),
        "nft -c: {}\n{nft}",
        String::from_utf8_lossy(&check.stderr)
    );
    let (code, ipset, _) =
        tokio::task::block_in_place(|| cmd(&["blocks", "export", "--format", "ipset"]));
    assert_eq!(code, Some(0));
    assert!(ipset.contains("create authwatch-v4 hash:ip family inet timeout 0 -exist"));
    assert!(
        ipset.contains("add authwatch-v6 2001:db8:1:2::/64 timeout "),
        "{ipset}"
    );
    let (code, out, _) =
        tokio::task::block_in_place(|| cmd(&["blocks", "remove", "198.51.100.23"]));
    assert_eq!(code, Some(0));
    assert!(
        out.contains("unblocked 198.51.100.23 (1 requests refused)"),
        "{out}"
    );
    assert_eq!(r_post(&c, addr, "198.51.100.23").await, 401);
    let (code, _, err) =
        tokio::task::block_in_place(|| cmd(&["blocks", "remove", "198.51.100.23"]));
    assert_eq!(code, Some(1));
    assert!(err.contains("not blocked"), "{err}");
    // A bad token: a clear error, exit 1.
    std::fs::write(&token, "wrong").unwrap();
    let (code, _, err) = tokio::task::block_in_place(|| cmd(&["blocks", "list"]));
    assert_eq!(code, Some(1));
    assert!(err.contains("401"), "{err}");
}

async fn r_post(c: &HttpClient, addr: SocketAddr, ip: &str) -> u16 {
    send(
        c,
        request("POST", addr, "/login").header("x-forwarded-for", ip),
    )
    .await
    .0
}

/// `nft` from `.test-deps/bin` (scripts/test-deps.sh), else the system's.
fn nft_binary() -> std::path::PathBuf {
    let local = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-deps/bin/nft");
    if local.exists() {
        local
    } else {
        "/usr/sbin/nft".into()
    }
}

/// The attack-time limit: off, every sign-in reaches the handler; while the brute-force alert
/// fires, each address gets 10 a minute and the 11th is answered 429 with Retry-After and
/// counted as rate limited; when the alert resolves, it is off again. Both turns are audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attack_time_limit_follows_the_attack_alerts() {
    let r = rig_with(None, |b| {
        b.attack_limit(authwatch::AttackLimit::per_minute(10))
    })
    .await;
    // Off: 20 from one address all reach the handler.
    for _ in 0..20 {
        assert_eq!(r.post("/login", "198.51.100.5").await.0, 401);
    }
    assert!(!r.watch.attack_limit_on());
    // The attacker (51 failures, each counted while the limit is still off).
    r.brute_force("203.0.113.40").await;
    assert!(r.watch.attack_limit_on());
    let before = r.handled.load(Ordering::SeqCst);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(r.post("/login", "198.51.100.6").await);
    }
    assert!(statuses[..10].iter().all(|s| s.0 == 401), "{statuses:?}");
    for s in &statuses[10..] {
        assert_eq!(s.0, 429, "{statuses:?}");
        assert!(s.1.is_some_and(|secs| (1..=60).contains(&secs)), "{s:?}");
    }
    assert_eq!(r.handled.load(Ordering::SeqCst), before + 10);
    // Counted as rate limited, as the application's own 429 would be.
    let limited = eventually_async(|| r.watch.snapshot().op(AuthOp::Login).rate_limited).await;
    assert_eq!(limited, 2);
    // Another address has its own 10.
    assert_eq!(r.post("/login", "198.51.100.7").await.0, 401);
    // The alert resolves once its window has passed: off, everyone through again.
    r.clock.advance(Duration::from_secs(700));
    r.watch.evaluate_alerts();
    assert!(!r.firing_for("203.0.113.40"));
    assert!(!r.watch.attack_limit_on());
    assert_eq!(r.post("/login", "198.51.100.6").await.0, 401);
    r.watch.audit_logger().sync();
    let names: Vec<String> = read_audit(&r)
        .iter()
        .filter_map(|v| v["event.name"].as_str().map(str::to_owned))
        .filter(|n| n.starts_with("auth.attack_limit."))
        .collect();
    assert_eq!(names, ["auth.attack_limit.on", "auth.attack_limit.off"]);
}

/// `f()` once it stops changing (the events of answered requests are counted just after).
async fn eventually_async(f: impl Fn() -> u64) -> u64 {
    let mut last = f();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = f();
        if now == last && now > 0 {
            return now;
        }
        last = now;
    }
    last
}

/// The incident, documented: the brute force fires, its address is blocked and refused, the
/// alert resolves; the audit trail holds the incident's opening and resolution, and
/// `authwatch incident report` prints its timeline (addresses masked unless asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_report_tells_the_story_from_the_audit_trail() {
    let r = rig(Some(BlockPolicy::default())).await;
    r.brute_force("203.0.113.77").await;
    for _ in 0..3 {
        assert_eq!(r.post("/login", "203.0.113.77").await.0, 429);
    }
    // Lifted by hand, then the alert resolves once its window has passed.
    r.watch.unblock_ip("203.0.113.77".parse().unwrap());
    r.clock.advance(Duration::from_secs(700));
    r.watch.evaluate_alerts();
    assert!(!r.firing_for("203.0.113.77"));
    r.watch.audit_logger().sync();
    let audit = read_audit(&r);
    let resolved = audit
        .iter()
        .find(|v| {
            v["event.name"] == "auth.incident.resolved"
                && v["auth.incident"]["alert"] == "AuthBruteForceSuspected"
        })
        .unwrap_or_else(|| {
            let names: Vec<&serde_json::Value> = audit
                .iter()
                .filter(|v| v["audit.source"] == "authwatch")
                .collect();
            panic!("the resolution is audited: {names:?}")
        });
    let d = &resolved["auth.incident"];
    assert_eq!(d["alert"], "AuthBruteForceSuspected");
    assert_eq!(d["labels"]["client_ip"], "203.0.113.77");
    assert_eq!(d["actions"]["blocks"][0], "203.0.113.77");
    assert!(d["peak"].as_f64().unwrap() >= 51.0, "{d}");
    assert!(audit
        .iter()
        .any(|v| v["event.name"] == "auth.incident.opened"
            && v["auth.incident"]["notify"] == "slack+security"));
    let report = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_authwatch"))
            .args([
                "incident",
                "report",
                "--audit-dir",
                r.audit.to_str().unwrap(),
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let md = tokio::task::block_in_place(|| report(&["--since", "1h"]));
    // The brute force, and the failure-rate alerts its failures fired.
    assert!(md.contains("3 incidents in the audit log"), "{md}");
    assert!(
        md.contains("## AuthLoginFailureRateHigh (critical)"),
        "{md}"
    );
    assert!(
        md.contains("## AuthBruteForceSuspected client_ip=203.0.x.x (critical)"),
        "{md}"
    );
    assert!(md.contains("- **First seen:** "), "{md}");
    assert!(md.contains("- **Resolved:** "), "{md}");
    assert!(md.contains("peak 51"), "{md}");
    assert!(md.contains("203.0.x.x (51 failures recorded)"), "{md}");
    assert!(md.contains("for 15m (removed, 3 requests refused)"), "{md}");
    assert!(
        md.contains("- **Notified:** slack+security (the log only"),
        "{md}"
    );
    assert!(!md.contains("203.0.113.77"), "masked: {md}");
    let md = tokio::task::block_in_place(|| report(&["--unmasked"]));
    assert!(md.contains("client_ip=203.0.113.77"), "{md}");
}

/// The monitor's link to `lapi`: a watcher and a bouncer reading the stream every second.
fn crowdsec_of(lapi: &real::Lapi) -> CrowdSec {
    CrowdSec::new(lapi.url())
        .watcher(lapi.machine.clone(), lapi.password.clone())
        .bouncer(lapi.bouncer_key.clone())
        .stream_interval(Duration::from_secs(1))
}

/// Polls `f` (every 50 ms, up to `secs`) until it holds; how long that took.
async fn within(secs: u64, what: &str, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let t0 = std::time::Instant::now();
    while !f().await {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t0.elapsed()
}

/// Against a real CrowdSec Local API (Debian's 1.4.6, its own config and SQLite database,
/// a machine and a bouncer added with `cscli`): a brute force blocked here becomes a ban
/// decision there (`cscli decisions list`), and the unblock deletes it; a ban made with
/// `cscli decisions add` is refused here within the stream interval, and its deletion lifts
/// it; allow-listed addresses and ranges wider than an address are left to the firewall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_become_crowdsec_decisions_and_its_bans_are_enforced() {
    let lapi = real::Lapi::start();
    let r = rig_with(
        Some(
            BlockPolicy::default()
                .ttl(Duration::from_secs(900))
                .allow("10.0.0.0/8"),
        ),
        |b| b.crowdsec(crowdsec_of(&lapi)),
    )
    .await;
    // As a watcher: the block is pushed as an alert with one ban.
    r.brute_force("203.0.113.9").await;
    assert_eq!(r.post("/login", "203.0.113.9").await.0, 429);
    let pushed = within(10, "the ban in cscli decisions list", async || {
        !lapi.decisions("authwatch").is_empty()
    })
    .await;
    let d = lapi.decisions("authwatch");
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (
            &d[0]["value"],
            &d[0]["type"],
            &d[0]["scope"],
            &d[0]["origin"]
        ),
        (
            &"203.0.113.9".into(),
            &"ban".into(),
            &"Ip".into(),
            &"authwatch".into()
        )
    );
    assert_eq!(d[0]["scenario"], "authwatch/AuthBruteForceSuspected");
    let left = d[0]["duration"].as_str().unwrap();
    assert!(left.starts_with("14m") || left.starts_with("15m"), "{left}");
    eprintln!("the block reached cscli decisions list in {pushed:?}");
    r.watch.audit_logger().sync();
    assert!(
        read_audit(&r)
            .iter()
            .any(|v| v["event.name"] == "auth.block.pushed"
                && v["client.address"] == "203.0.113.9"),
        "the push is audited"
    );
    // The incident report says the block went to CrowdSec.
    let report = authwatch::incidents::report(
        &r.audit,
        Duration::from_secs(3600),
        authwatch::incidents::Addresses::Unmasked,
    )
    .unwrap();
    assert!(
        report.contains("203.0.113.9 at ") && report.contains("; pushed to CrowdSec"),
        "{report}"
    );
    // As a bouncer: a ban made in CrowdSec is refused here within the stream interval (1 s).
    assert_eq!(r.post("/login", "198.51.100.44").await.0, 401);
    lapi.cscli_ok(&[
        "decisions",
        "add",
        "-i",
        "198.51.100.44",
        "-d",
        "1h",
        "-R",
        "ssh-bf",
    ]);
    let enforced = within(10, "CrowdSec's ban refused here", async || {
        r.post("/login", "198.51.100.44").await.0 == 429
    })
    .await;
    eprintln!("cscli decisions add was enforced in {enforced:?} (stream interval 1 s)");
    assert!(enforced < Duration::from_secs(5), "{enforced:?}");
    let b = r
        .watch
        .blocked_ips()
        .into_iter()
        .find(|b| b.ip.to_string() == "198.51.100.44")
        .unwrap();
    assert_eq!(b.source, BlockSource::CrowdSec);
    assert_eq!(b.reason, "CrowdSec: ssh-bf (cscli)");
    assert!(b.remaining() > Duration::from_secs(3500), "{b:?}");
    // Not enforced here: an allow-listed address, a /24 (the firewall's), a captcha. An IPv6
    // /64 is.
    for args in [
        ["-i", "10.1.2.3", "-t", "ban"],
        ["-r", "192.0.2.0/24", "-t", "ban"],
        ["-i", "192.0.2.200", "-t", "captcha"],
        ["-r", "2001:db8:5:6::/64", "-t", "ban"],
    ] {
        lapi.cscli_ok(&[&["decisions", "add", "-d", "1h", "-R", "t"][..], &args[..]].concat());
    }
    within(10, "the IPv6 range refused", async || {
        r.post("/login", "2001:db8:5:6::1").await.0 == 429
    })
    .await;
    for ip in ["10.1.2.3", "192.0.2.1", "192.0.2.200"] {
        assert_eq!(r.post("/login", ip).await.0, 401, "{ip}");
    }
    let status = r.watch.crowdsec_status().unwrap();
    assert!(status.connected, "{status:?}");
    assert_eq!((status.enforced, status.skipped), (2, 3), "{status:?}");
    // Lifted in CrowdSec: served here again.
    lapi.cscli_ok(&["decisions", "delete", "-i", "198.51.100.44"]);
    within(10, "CrowdSec's deletion lifts the block", async || {
        r.post("/login", "198.51.100.44").await.0 == 401
    })
    .await;
    // Unblocked here: authwatch's decision is deleted there, the others stay.
    r.watch.unblock_ip("203.0.113.9".parse().unwrap()).unwrap();
    within(10, "the unblock deletes the decision", async || {
        lapi.decisions("authwatch").is_empty()
    })
    .await;
    assert!(!lapi.decisions("cscli").is_empty());
    // A health check says how it goes, without making the service unhealthy.
    let (code, body) = send(&r.client, request("GET", r.addr, "/auth/health")).await;
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 200, "{health}");
    assert_eq!(check(&health, "crowdsec")["status"], "healthy", "{health}");
    r.watch.shutdown().await.unwrap();
    assert!(lapi.log().contains("127.0.0.1"), "the LAPI served us");
}

/// The LAPI away when the block is made: it waits in the queue (the service goes on, the
/// block is enforced here, the health check says so), and reaches CrowdSec once it is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_made_while_crowdsec_is_away_reaches_it_later() {
    let port = real::free_port();
    let url = format!("http://127.0.0.1:{port}");
    // The credentials the LAPI will be started with.
    let r = rig_with(None, |b| {
        b.crowdsec(
            CrowdSec::new(url)
                .watcher(
                    "authwatch-test",
                    format!("pw-{}-{port}", std::process::id()),
                )
                .timeout(Duration::from_millis(500)),
        )
    })
    .await;
    r.watch
        .block_ip(
            "198.51.100.61".parse().unwrap(),
            Duration::from_secs(600),
            "incident 42",
        )
        .unwrap();
    assert_eq!(r.post("/login", "198.51.100.61").await.0, 429);
    within(10, "the failed push noticed", async || {
        r.watch
            .crowdsec_status()
            .is_some_and(|s| s.last_error.is_some() && s.pending == 1)
    })
    .await;
    let (code, body) = send(&r.client, request("GET", r.addr, "/auth/health")).await;
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 200, "non-critical: {health}");
    assert_eq!(health["status"], "degraded", "{health}");
    let c = check(&health, "crowdsec");
    assert_eq!(c["status"], "unhealthy", "{health}");
    assert!(
        c["message"]
            .as_str()
            .is_some_and(|e| e.contains("1 pushes queued")),
        "{health}"
    );
    let lapi = real::Lapi::start_on(port);
    within(15, "the queued ban reaches CrowdSec", async || {
        !lapi.decisions("authwatch").is_empty()
    })
    .await;
    let d = lapi.decisions("authwatch");
    assert_eq!(d[0]["value"], "198.51.100.61");
    assert_eq!(d[0]["scenario"], "authwatch/manual");
    let s = r.watch.crowdsec_status().unwrap();
    assert!(s.connected && s.pending == 0 && s.pushed == 1, "{s:?}");
}

/// The check `name` of a health report.
fn check<'a>(health: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    health["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {name} check: {health}"))
}
