//! The weekly review against a real Prometheus: a week of generated history is backfilled with
//! `promtool tsdb create-blocks-from openmetrics`, Prometheus serves it, `authwatch review`
//! reads it through `query_range`, and its figures are checked against the generated data;
//! `review.html` renders in headless Chromium with nothing on the console, and
//! `suggested.toml` is a valid `authwatch.toml`.

mod real;

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, SystemTime};

use real::*;

/// One sample every 30 s, over 7 whole days (UTC), ending at the last midnight before
/// yesterday's (well out of the head block's range).
const STEP_S: u64 = 30;
const DAYS: u64 = 7;
/// Per 30 s: login successes and failures (5.66 % fail), registrations, token validations,
/// rate-limited requests, invalid tokens.
const LOGIN: (u64, u64) = (50, 3);
const REG: (u64, u64) = (5, 1);
const TV: (u64, u64) = (100, 1);
/// Day 3, 10:00 to 11:00: 30 login failures per 30 s (37.5 %), and the engine's
/// AuthLoginFailureRateHigh firing 10:05 to 11:05.
const ATTACK_DAY: u64 = 3;

fn openmetrics(t0: u64) -> String {
    let names = [
        ("auth_login_success_count", "counter"),
        ("auth_login_failure_count", "counter"),
        ("auth_registration_success_count", "counter"),
        ("auth_registration_failure_count", "counter"),
        ("auth_token_validation_success_count", "counter"),
        ("auth_token_validation_failure_count", "counter"),
        ("auth_rate_limit_exceeded_count", "counter"),
        ("auth_invalid_token_attempts_count", "counter"),
        ("auth_response_time_p95_ms", "gauge"),
        ("auth_alerts_firing", "gauge"),
        ("auth_attack_top_ip_failures", "gauge"),
    ];
    let n = DAYS * 86_400 / STEP_S;
    let mut out = String::new();
    for (name, kind) in names {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let mut total = 0u64;
        for i in 0..n {
            let t = t0 + i * STEP_S;
            let (day, sec) = ((t - t0) / 86_400, (t - t0) % 86_400);
            let attack = day == ATTACK_DAY && (36_000..39_600).contains(&sec);
            let firing = day == ATTACK_DAY && (36_300..39_900).contains(&sec);
            let (series, value) = match name {
                "auth_login_success_count" => ("_total", LOGIN.0),
                "auth_login_failure_count" => ("_total", if attack { 30 } else { LOGIN.1 }),
                "auth_registration_success_count" => ("_total", REG.0),
                "auth_registration_failure_count" => ("_total", REG.1),
                "auth_token_validation_success_count" => ("_total", TV.0),
                "auth_token_validation_failure_count" => ("_total", TV.1),
                "auth_rate_limit_exceeded_count" => ("_total", 1),
                "auth_invalid_token_attempts_count" => ("_total", 2),
                _ => ("", 0),
            };
            let v = if series == "_total" {
                total += value;
                total
            } else {
                match name {
                    // 200 ms, and 800 for 5 minutes on day 5 at noon.
                    "auth_response_time_p95_ms" => {
                        if day == 5 && (43_200..43_500).contains(&sec) {
                            800
                        } else {
                            200
                        }
                    }
                    "auth_alerts_firing" => u64::from(firing),
                    _ => {
                        if attack {
                            40
                        } else {
                            3
                        }
                    }
                }
            };
            let labels = match name {
                "auth_response_time_p95_ms" => "{job=\"auth\",auth_operation=\"login\"}",
                "auth_alerts_firing" => "{job=\"auth\",alert_name=\"AuthLoginFailureRateHigh\"}",
                _ => "{job=\"auth\"}",
            };
            let _ = writeln!(out, "{name}{series}{labels} {v} {t}");
        }
    }
    out.push_str("# EOF\n");
    out
}

fn chromium(args: &[&str]) -> (String, String) {
    let out = Command::new(dep("chromium"))
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .args(args)
        .output()
        .expect("run chromium");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_weekly_review_reads_a_week_from_prometheus_and_suggests_thresholds() {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let t0 = (now / 86_400 - 1 - DAYS) * 86_400;
    let dir = tempdir::Dir::new("review");
    let om = dir.path().join("history.om");
    std::fs::write(&om, openmetrics(t0)).unwrap();
    let data = dir.path().join("tsdb");
    let out = Command::new(dep("promtool"))
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let prom = Prometheus::start_on_data(&data);
    let url = format!("http://{}", prom.addr);
    // Prometheus answers once it has loaded the blocks.
    let http = Http::new();
    eventually(60, "the backfilled history", || {
        let q = format!(
            "{url}/api/v1/query?query=count(auth_login_success_count_total)&time={}",
            t0 + 86_400
        );
        let (_, text) = http.get(&q);
        text.contains("\"value\"").then_some(()).ok_or(text)
    });

    let out_dir = dir.path().join("out");
    let run = Command::new(env!("CARGO_BIN_EXE_authwatch"))
        .args(["review", "--prometheus", &url, "--since", "9d", "--out"])
        .arg(&out_dir)
        .env_remove("AUTHWATCH_CONFIG")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let md = std::fs::read_to_string(out_dir.join("review.md")).unwrap();

    // Per day: the generated volumes and ratios (Prometheus' increase() extrapolates at the
    // edges of each 5-minute window, so within 1 %).
    let row = |day: u64| -> Vec<String> {
        let date = humantime::format_rfc3339_seconds(
            SystemTime::UNIX_EPOCH + Duration::from_secs(t0 + day * 86_400 + 3_600),
        )
        .to_string()[..10]
            .to_owned();
        let line = md
            .lines()
            .find(|l| l.starts_with(&format!("| {date} |")))
            .unwrap_or_else(|| panic!("no row for {date}:\n{md}"));
        line.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let per_day = 86_400 / STEP_S;
    let close = |got: &str, want: f64| {
        let g: f64 = got.trim_end_matches(" %").parse().unwrap();
        assert!(
            (g - want).abs() <= want.abs() * 0.01 + 0.01,
            "{got} against {want}\n{md}"
        );
    };
    let normal = row(1);
    close(&normal[1], (per_day * (LOGIN.0 + LOGIN.1)) as f64);
    close(
        &normal[2],
        100.0 * LOGIN.1 as f64 / (LOGIN.0 + LOGIN.1) as f64,
    );
    close(&normal[3], (per_day * (REG.0 + REG.1)) as f64);
    close(&normal[5], (per_day * (TV.0 + TV.1)) as f64);
    close(&normal[7], per_day as f64);
    close(&normal[8], 2.0 * per_day as f64);
    assert!(normal[9].starts_with("200 /"), "{normal:?}");
    let attack = row(ATTACK_DAY);
    close(
        &attack[1],
        (per_day * (LOGIN.0 + LOGIN.1) + 120 * 27) as f64,
    );
    assert!(row(5)[9].starts_with("800 /"), "{md}");

    // Per rule: the firing, how close traffic came, and the suggestions.
    let rule = |name: &str| -> Vec<String> {
        md.lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no {name}:\n{md}"))
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let high = rule("AuthLoginFailureRateHigh");
    assert_eq!(high[3], "1", "fired once: {high:?}");
    assert!(
        high[4].starts_with("1h") || high[4].starts_with("1h 5m"),
        "{high:?}"
    );
    let peak: f64 = high[5].parse().unwrap();
    assert!((peak - 0.375).abs() < 0.02, "{high:?}");
    assert!(high[8].contains("the spec's threshold is kept"), "{high:?}");
    // The p95 peaked at 800 (1.6× the warning's 500); the week's normal 200 suggests 250.
    let p95 = rule("AuthResponseTimeP95High");
    assert_eq!(
        (p95[5].as_str(), p95[6].as_str(), p95[7].as_str()),
        ("800", "1.60×", "250"),
        "{p95:?}"
    );
    // Account-level rules are judged by their firings.
    assert!(rule("AuthPasswordSpraying")[8].contains("in process only"));

    // suggested.toml is a valid configuration, with the suggestions in it.
    let suggested = std::fs::read_to_string(out_dir.join("suggested.toml")).unwrap();
    let l = authwatch::config::Loaded::parse("suggested.toml", suggested.clone())
        .unwrap_or_else(|e| panic!("{e}\n{suggested}"));
    assert_eq!(
        l.file.alerts.rules["AuthResponseTimeP95High"].threshold,
        Some(250.0),
        "{suggested}"
    );
    assert!(
        !suggested.contains("AuthLoginFailureRateHigh"),
        "kept at the spec's value"
    );
    // The critical p95 stays twice the warning's, as in the spec.
    assert_eq!(
        l.file.alerts.rules["AuthResponseTimeP95Critical"].threshold,
        Some(500.0),
        "{suggested}"
    );
    let rl = l.file.alerts.rules["AuthRateLimitEvents"]
        .threshold
        .unwrap();
    assert!((3.0..10.0).contains(&rl), "{suggested}");

    // --allow-looser goes over the spec where the traffic does.
    let looser = dir.path().join("looser");
    let run = Command::new(env!("CARGO_BIN_EXE_authwatch"))
        .args([
            "review",
            "--prometheus",
            &url,
            "--since",
            "9d",
            "--allow-looser",
            "--out",
        ])
        .arg(&looser)
        .output()
        .unwrap();
    assert!(run.status.success());
    let s = std::fs::read_to_string(looser.join("suggested.toml")).unwrap();
    assert!(s.contains("[alerts.rules.AuthLoginFailureRateHigh]"), "{s}");

    // The page, in a real browser: it renders its charts and tables, nothing on the console.
    let page = out_dir.join("review.html");
    let (dom, log) = chromium(&[
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        &format!("file://{}", page.display()),
    ]);
    for i in 0..10 {
        assert!(
            dom.contains(&format!("<svg id=\"chart-{i}\"")),
            "chart {i}: {dom}"
        );
    }
    assert!(dom.contains("<td>AuthLoginFailureRateHigh</td>"), "{dom}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console output: {console:#?}");
}
