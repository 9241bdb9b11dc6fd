//! The account-level rules through the engine: each fires on its shape and a near miss does
//! not; credential stuffing against its baseline; and 1,000,000 accounts × 1,000,000
//! addresses within 32 MiB for the whole engine, with every planted attack reported and the
//! false reports counted.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use authwatch_alerts::{Alert, AlertConfig, AlertEngine, ManualClock};
use authwatch_layer::{AuthEvent, AuthOp, EventSink, FailureReason, Outcome};

fn v4(n: u32) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::from(n)))
}

fn engine() -> (AlertEngine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let e = AlertEngine::new(AlertConfig::new().tick(Duration::ZERO).clock(clock.clone()));
    (e, clock)
}

fn firing(e: &AlertEngine, name: &str) -> Vec<Alert> {
    e.evaluate();
    e.firing().into_iter().filter(|a| a.name == name).collect()
}

fn label(alerts: &[Alert], key: &str) -> Vec<String> {
    let mut v: Vec<String> = alerts.iter().map(|a| a.labels[key].clone()).collect();
    v.sort();
    v
}

#[test]
fn spraying_fires_at_twenty_accounts_and_not_at_nineteen() {
    let (e, _) = engine();
    for a in 0..20 {
        e.record_account_failure(&format!("user{a}"), v4(0xcb00_7101));
        e.record_account_failure(&format!("user{a}"), v4(0xcb00_7102));
    }
    // The near miss: 19 accounts.
    for a in 0..19 {
        e.record_account_failure(&format!("other{a}"), v4(0xcb00_7103));
    }
    let got = firing(&e, "AuthPasswordSpraying");
    assert_eq!(label(&got, "client_ip"), ["203.0.113.1", "203.0.113.2"]);
    assert_eq!(got[0].value, 20.0);
    assert!(got[0].annotations["description"].contains("20 distinct accounts"));
    assert!(
        firing(&e, "AuthAccountBruteForce").is_empty()
            && firing(&e, "AuthAccountDistributedAttack").is_empty()
    );
}

#[test]
fn an_account_fires_on_its_failures_or_its_addresses_and_near_misses_do_not() {
    let (e, _) = engine();
    for i in 0..21 {
        // 21 failures over 3 addresses.
        e.record_account_failure("alice", v4(100 + i % 3));
    }
    for i in 0..20 {
        e.record_account_failure("bob", v4(200 + i % 3));
    }
    for i in 0..10 {
        e.record_account_failure("carol", v4(300 + i));
    }
    for i in 0..9 {
        e.record_account_failure("dave", v4(400 + i));
    }
    let brute = firing(&e, "AuthAccountBruteForce");
    assert_eq!(label(&brute, "user_id"), ["alice"]);
    assert_eq!(brute[0].value, 21.0);
    let spread = firing(&e, "AuthAccountDistributedAttack");
    assert_eq!(label(&spread, "user_id"), ["carol"]);
    assert_eq!(spread[0].value, 10.0);
    assert!(firing(&e, "AuthPasswordSpraying").is_empty());
    // The gauges read the same: alice and carol are under attack, alice the top account.
    assert_eq!(
        (e.accounts_under_attack(), e.top_account_failures()),
        (2, 21)
    );
    assert_eq!(e.account_detections().accounts.len(), 2);
}

#[test]
fn three_typos_and_an_office_nat_fire_nothing() {
    let (e, _) = engine();
    for _ in 0..3 {
        e.record_account_failure("erin", v4(9));
    }
    // 19 colleagues behind one address, failing once or twice each.
    for u in 0..19 {
        for _ in 0..=(u % 2) {
            e.record_account_failure(&format!("colleague{u}"), v4(10));
        }
    }
    e.evaluate();
    assert!(e.firing().is_empty(), "{:?}", e.firing());
}

/// A login failure or success through the engine's own counts (the login ratio).
fn login(e: &AlertEngine, ok: bool, at: Instant) {
    let outcome = if ok {
        Outcome::Success
    } else {
        Outcome::Failure(FailureReason::InvalidCredentials)
    };
    e.record(
        &AuthEvent::new(AuthOp::Login, outcome, Duration::from_millis(3), at).with_route("/login"),
    );
}

/// An engine after an hour of ordinary traffic: per 10 minutes, 8 accounts failing once
/// among 100 successful logins.
fn after_an_ordinary_hour(at: Instant) -> AlertEngine {
    let (e, clock) = engine();
    for m in 0..60u32 {
        for s in 0..10 {
            login(&e, true, at);
            if s == 0 && m % 10 < 8 {
                e.record_account_failure(&format!("typo{m}"), v4(1_000 + m));
                login(&e, false, at);
            }
        }
        clock.advance(Duration::from_secs(60));
        e.evaluate();
    }
    assert!(firing(&e, "AuthCredentialStuffing").is_empty());
    e
}

/// `accounts` leaked accounts tried `tries` times each (each a failed login).
fn stuff(e: &AlertEngine, accounts: u32, tries: u32, at: Instant) {
    for a in 0..accounts {
        for _ in 0..tries {
            e.record_account_failure(&format!("leaked{a}"), v4(5_000 + a));
            login(e, false, at);
        }
    }
}

#[test]
fn credential_stuffing_is_many_more_failing_accounts_than_the_baseline_with_most_logins_failing() {
    let at = Instant::now();
    // 60 accounts (with the ordinary ones, about 66 failing in the window against a baseline
    // of 8), most logins failing.
    let e = after_an_ordinary_hour(at);
    stuff(&e, 60, 2, at);
    let got = firing(&e, "AuthCredentialStuffing");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].value >= 5.0, "{}", got[0]);
    let d = &got[0].annotations["description"];
    assert!(d.contains("accounts with failed logins"), "{d}");
    // Near miss: the same accounts, but most logins still succeed.
    let e = after_an_ordinary_hour(at);
    stuff(&e, 60, 2, at);
    for _ in 0..200 {
        login(&e, true, at);
    }
    assert!(firing(&e, "AuthCredentialStuffing").is_empty());
    // Near miss: most logins fail, but 48 accounts in the window, under 50.
    let e = after_an_ordinary_hour(at);
    stuff(&e, 40, 3, at);
    assert!(firing(&e, "AuthCredentialStuffing").is_empty());
}

#[test]
fn keyed_labels_are_what_the_caller_passed() {
    let (e, _) = engine();
    for i in 0..10 {
        e.record_account_failure("hmac-sha256:1f2e3d", v4(700 + i));
    }
    let got = firing(&e, "AuthAccountDistributedAttack");
    assert_eq!(label(&got, "user_id"), ["hmac-sha256:1f2e3d"]);
}

/// Near misses of each shape planted in the million test.
const NEAR: u32 = 100;

/// 1,000,000 accounts failing once each, from 1,000,000 addresses (each pair distinct), with
/// the per-address detector fed the same failures as requests; planted among them, one of
/// each shape and 100 near misses of each (19 accounts from one address, 20 failures of one
/// account, 9 addresses on one account). The whole engine stays under 32 MiB; every planted
/// attack is reported; the near misses reported (false reports) are counted and printed:
/// `cargo test --release -p authwatch-alerts --test accounts million -- --nocapture`.
#[test]
fn a_million_accounts_and_addresses() {
    const N: u32 = 1_000_000;
    let clock = Arc::new(ManualClock::new());
    let at = Instant::now();
    let mut result = None;
    let info = allocation_counter::measure(|| {
        let e = AlertEngine::new(AlertConfig::new().tick(Duration::ZERO).clock(clock.clone()));
        let every = N / 100;
        for i in 0..N {
            let ip = v4(0x0a00_0000 + i);
            e.record_account_failure(&format!("u{i}@example.com"), ip);
            e.record(
                &AuthEvent::new(
                    AuthOp::Login,
                    Outcome::Failure(FailureReason::InvalidCredentials),
                    Duration::from_millis(2),
                    at,
                )
                .with_route("/login")
                .with_client_ip(ip),
            );
            // The planted shapes, spread through the spray (100 steps).
            if i % every != 0 {
                continue;
            }
            let k = i / every;
            if k < 20 {
                e.record_account_failure(&format!("sprayed{k}"), v4(0xcb00_7150));
            }
            if k < 21 {
                e.record_account_failure("victim", v4(0xc633_6400 + k % 3));
            }
            if k < 10 {
                e.record_account_failure("botnet-target", v4(0xc633_6500 + k));
            }
            for j in 0..NEAR {
                if k < 19 {
                    e.record_account_failure(&format!("nearly{j}-{k}"), v4(0xac10_0000 + j));
                }
                if k < 20 {
                    e.record_account_failure(
                        &format!("almost{j}"),
                        v4(0xac11_0000 + j * 4 + k % 3),
                    );
                }
                if k < 9 {
                    e.record_account_failure(&format!("spread{j}"), v4(0xac12_0000 + j * 16 + k));
                }
            }
        }
        clock.advance(Duration::from_secs(5));
        e.evaluate();
        result = Some(e.firing());
    });
    let firing = result.unwrap();
    let mib = info.bytes_max as f64 / (1024.0 * 1024.0);
    let names = |name: &str, key: &str| -> Vec<String> {
        let mut v: Vec<String> = firing
            .iter()
            .filter(|a| a.name == name)
            .map(|a| a.labels[key].clone())
            .collect();
        v.sort();
        v
    };
    let spraying = names("AuthPasswordSpraying", "client_ip");
    let brute = names("AuthAccountBruteForce", "user_id");
    let spread = names("AuthAccountDistributedAttack", "user_id");
    for (who, list) in [
        ("203.0.113.80", &spraying),
        ("victim", &brute),
        ("botnet-target", &spread),
    ] {
        assert!(list.iter().any(|x| x == who), "{who} missed: {list:?}");
    }
    let false_reports = [spraying.len() - 1, brute.len() - 1, spread.len() - 1];
    println!(
        "accounts: 10^6 accounts x 10^6 addresses: engine peak {mib:.2} MiB ({} bytes); near misses reported, of {NEAR} each: spraying {}, account brute force {}, distributed {}",
        info.bytes_max, false_reports[0], false_reports[1], false_reports[2]
    );
    assert!(info.bytes_max <= 32 << 20, "peak {mib:.2} MiB");
    // Measured over 24 runs: 2 of 7,200 near misses reported (0.03 %), each by an
    // over-estimate of one (a collision in every row of a count-min). More than 5 of 100 would
    // mean the sketch is no longer doing its job.
    assert!(
        false_reports.iter().all(|&n| n <= 5),
        "near misses reported: {false_reports:?}"
    );
}
