//! `/auth/dashboard` and `/auth/stats`: protected like `/metrics`, addresses masked by default,
//! and the page opened in a real headless Chromium against the running demo, where its charts
//! render, its numbers change between polls, and nothing is logged to the console. A screenshot
//! is kept in `target/test-artifacts/dashboard.png`. The demo then runs to its end in fast mode,
//! and its summary shows each phase's alert. Needs `scripts/test-deps.sh`.

mod real;

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use authwatch::{AuthEvent, AuthOp, AuthWatch, FailureReason, Outcome};
use real::*;

fn attack(watch: &AuthWatch) {
    let ip = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
    for _ in 0..51 {
        watch.record(
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
    watch.evaluate_alerts();
}

fn serve(rt: &tokio::runtime::Runtime, watch: &AuthWatch) -> std::net::SocketAddr {
    let router = watch.endpoints();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        let l = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(l, router).await.unwrap();
    });
    addr
}

#[test]
fn stats_are_protected_like_metrics_and_mask_addresses() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = Http::new();
    let watch = {
        let _g = rt.enter();
        AuthWatch::builder()
            .metrics_bearer_token("s3cret")
            .alerts(authwatch::AlertConfig::new().tick(Duration::ZERO))
            .build()
            .unwrap()
    };
    attack(&watch);
    let addr = serve(&rt, &watch);
    let u = |p: &str| format!("http://{addr}{p}");
    assert_eq!(http.get(&u("/auth/stats")).0, 401);
    assert_eq!(http.get(&u("/auth/dashboard")).0, 401);
    assert_eq!(http.get(&u("/auth/dashboard?token=wrong")).0, 401);
    let (s, page) = http.get(&u("/auth/dashboard?token=s3cret"));
    assert_eq!(s, 200);
    assert!(page.starts_with("<!doctype html>") && page.contains("id=\"t-login-fail\""));
    // The page is the product's, with nothing in it for tests.
    assert!(!page.contains("probe"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    let (s, body) = http.send(
        "GET",
        &u("/auth/stats"),
        &[("authorization", "Bearer s3cret")],
        "",
    );
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ops"][0]["op"], "login");
    assert_eq!(v["ops"][0]["failure"], 51);
    assert_eq!(v["top_ips"][0]["ip"], "203.0.x.x");
    assert_eq!(v["top_ips"][0]["failures"], 51);
    assert_eq!(v["ips_masked"], true);
    let brute = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "AuthBruteForceSuspected")
        .unwrap();
    assert_eq!(brute["labels"]["client_ip"], "203.0.x.x");
    assert!(!body.contains("203.0.113.9"), "{body}");
    // /metrics takes the header only: a token in the URL would end up in scrape logs.
    assert_eq!(http.get(&u("/metrics?token=s3cret")).0, 401);

    let unmasked = {
        let _g = rt.enter();
        AuthWatch::builder()
            .dashboard_unmasked_ips(true)
            .alerts(authwatch::AlertConfig::new().tick(Duration::ZERO))
            .build()
            .unwrap()
    };
    attack(&unmasked);
    let v = unmasked.stats_json();
    assert_eq!(v["top_ips"][0]["ip"], "203.0.113.9");
    let off = {
        let _g = rt.enter();
        AuthWatch::builder().dashboard(false).build().unwrap()
    };
    let addr = serve(&rt, &off);
    assert_eq!(http.get(&format!("http://{addr}/auth/dashboard")).0, 404);
}

fn chromium(args: &[&str]) -> (String, String) {
    let out = Command::new(dep("chromium"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(args)
        .output()
        .expect("run chromium");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The text of the element with this id in a dumped DOM.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let from = dom[start..].find('>').unwrap() + start + 1;
    let to = dom[from..].find('<').unwrap() + from;
    &dom[from..to]
}

#[test]
fn the_demo_runs_its_story_and_the_dashboard_renders_live_in_chromium() {
    let ex = Example::start("demo", &["--speed", "--port", "0", "--plain"], &[]);
    let started = Instant::now();
    let url = format!("http://{}/auth/dashboard?interval=300", ex.addr);
    std::thread::sleep(Duration::from_secs(4));

    // The page in a real browser: several polls, numbers that move, nothing on the console.
    // Under a virtual time budget the polls come a few real milliseconds apart, and the demo
    // sends its traffic in ticks of 50 ms: a page whose polls all fall between two ticks sees
    // no request arrive. Such a page is loaded again (at most twice more).
    let mut attempts = 0;
    let (dom, log, total, rate) = loop {
        attempts += 1;
        let (dom, log) = chromium(&[
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            &url,
        ]);
        let polls: u64 = text_of(&dom, "polls").parse().unwrap();
        assert!(polls >= 3, "{polls} polls\n{log}");
        let total: u64 = text_of(&dom, "t-total").parse().unwrap();
        let rate: f64 = text_of(&dom, "t-rate").parse().unwrap();
        if rate > 0.0 || attempts == 3 {
            break (dom, log, total, rate);
        }
    };
    // The count moved across the polls: a rate above zero.
    assert!(
        total > 0 && rate > 0.0,
        "total {total}, rate {rate} ({attempts} page loads)"
    );
    // Every headline figure says what span it covers.
    for id in ["w-rate", "w-login-fail", "w-p95", "w-users"] {
        let w = text_of(&dom, id);
        assert!(w.starts_with("over the last "), "#{id}: {w:?}");
    }
    assert!(
        text_of(&dom, "t-login-fail").ends_with(" %"),
        "the login ratio over its window: {dom}"
    );
    // A script error reaches the console, which must stay empty.
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console output: {console:#?}");
    assert!(
        dom.contains("<td>login</td>"),
        "the per-operation table: {dom}"
    );
    assert!(!dom.contains("id=\"t-total\">–<"), "the totals tile");
    assert!(
        dom.contains("<canvas id=\"c-login\" width="),
        "the charts were drawn"
    );

    // A screenshot, kept as a test artifact, during the brute-force phase (10.2 s to 16.8 s).
    if let Some(wait) = Duration::from_secs(15).checked_sub(started.elapsed()) {
        std::thread::sleep(wait);
    }
    let dir = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&[
        "--window-size=1400,1400",
        "--virtual-time-budget=4000",
        &format!("--screenshot={}", shot.display()),
        &url,
    ]);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );

    // The story runs to its end (60 s in fast mode) and says which phase fired what.
    // stderr is a file here: plain text, no terminal colour codes.
    let raw = std::fs::read_to_string(&ex.stderr).unwrap();
    assert!(
        raw.contains("WARN"),
        "the demo logs its alerts to stderr:\n{raw}"
    );
    assert!(!raw.contains('\u{1b}'), "colour codes in a file:\n{raw}");
    let mut ex = ex;
    // 150 s from the start, as before.
    let out = ex.wait_exit(150u64.saturating_sub(started.elapsed().as_secs()));
    let text = out.join("\n");
    for (phase, alert) in [
        ("brute force from one IP", "AuthBruteForceSuspected"),
        ("password spraying", "AuthPasswordSpraying"),
        ("rate-limit storm", "AuthRateLimitUnderAttack"),
        ("invalid-token spike", "AuthInvalidTokenSpike"),
        ("latency regression", "AuthResponseTimeP95High"),
        ("database outage", "AuthServiceDown"),
        ("credential stuffing", "AuthCredentialStuffing"),
    ] {
        let line = out
            .iter()
            .find(|l| l.starts_with(&format!("PHASE {phase}")))
            .unwrap_or_else(|| panic!("no summary line for {phase}:\n{text}"));
        assert!(line.contains(&format!("{alert} ✓")), "{line}\n\n{text}");
    }
    let normal = out
        .iter()
        .find(|l| l.starts_with("PHASE normal traffic"))
        .unwrap();
    assert!(
        normal.ends_with('—'),
        "nothing fires on normal traffic: {normal}"
    );
    assert!(
        text.contains("RESULT every phase fired its alert"),
        "{text}"
    );
}

/// The demo with `--block`: the brute-forcing and the spraying addresses are blocked when
/// their alerts fire, the attacker's later requests are refused, every phase still fires its
/// alert, and the summary ends with the incident report of the audit trail.
#[test]
fn the_demo_blocks_the_attackers_and_reports_the_incidents() {
    let mut ex = Example::start(
        "demo",
        &["--speed", "--port", "0", "--plain", "--block"],
        &[],
    );
    let out = ex.wait_exit(150);
    let text = out.join("\n");
    assert!(
        text.contains("RESULT every phase fired its alert"),
        "{text}"
    );
    for ip in ["203.0.113.66", "198.51.100.77"] {
        assert!(
            out.iter()
                .any(|l| l.starts_with(&format!("BLOCKED {ip} for 45s: "))),
            "{ip}:\n{text}"
        );
    }
    let refused: u64 = out
        .iter()
        .find_map(|l| {
            l.strip_prefix("blocks (--block): ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert!(refused > 0, "{text}");
    assert!(
        text.contains("## AuthBruteForceSuspected client_ip=203.0.113.66 (critical)"),
        "{text}"
    );
    assert!(text.contains("- **Blocks:** 203.0.113.66 at "), "{text}");
}
