//! One attacker among 1,000,000 sprayed addresses: exactly the attacker is reported, and the
//! whole engine (detector, counters, history) stays under 32 MiB, measured by a counting
//! allocator.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use authwatch_alerts::{AlertConfig, AlertEngine, ManualClock};
use authwatch_layer::{AuthEvent, AuthOp, EventSink, FailureReason, Outcome};

/// A deterministic spray: address `i` (IPv4 for even `i`, IPv6 for odd) fails `1 + i % 5` times.
fn sprayed(i: u32) -> (IpAddr, u32) {
    let ip = if i.is_multiple_of(2) {
        IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i))
    } else {
        // Each in its own /64 (IPv6 clients are counted per /64).
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            (i >> 16) as u16,
            i as u16,
            0,
            0,
            0,
            1,
        ))
    };
    (ip, 1 + i % 5)
}

#[test]
fn one_attacker_among_a_million_addresses() {
    const SPRAY: u32 = 1_000_000;
    let attacker = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 99));
    let at = Instant::now();
    let fail = |ip| {
        AuthEvent::new(
            AuthOp::Login,
            Outcome::Failure(FailureReason::InvalidCredentials),
            Duration::from_millis(2),
            at,
        )
        .with_route("/api/auth/sign-in/email")
        .with_client_ip(Some(ip))
    };
    let clock = Arc::new(ManualClock::new());
    let mut result = None;
    let info = allocation_counter::measure(|| {
        let engine = AlertEngine::new(AlertConfig::new().tick(Duration::ZERO).clock(clock.clone()));
        let mut total = 0u64;
        let every = SPRAY / 51;
        for i in 0..SPRAY {
            let (ip, n) = sprayed(i);
            for _ in 0..n {
                engine.record(&fail(ip));
                total += 1;
            }
            // The attacker's 51 failures are spread through the spray.
            if i.is_multiple_of(every) && i / every < 51 {
                engine.record(&fail(attacker));
            }
        }
        assert_eq!(total, 3_000_000);
        clock.advance(Duration::from_secs(5));
        engine.evaluate();
        result = Some((engine.firing(), engine.suspects(), engine.top_ip_failures()));
    });
    let (firing, suspects, top) = result.unwrap();
    let mib = info.bytes_max as f64 / (1024.0 * 1024.0);
    println!(
        "engine memory at 10^6 distinct IPs: peak {mib:.2} MiB ({} bytes)",
        info.bytes_max
    );
    assert!(info.bytes_max <= 32 << 20, "peak {mib:.2} MiB");
    assert_eq!(suspects.len(), 1, "{suspects:?}");
    assert_eq!(suspects[0].ip, attacker);
    assert_eq!(suspects[0].failures, 51, "an over-estimate by collisions");
    assert_eq!(top, 51);
    let brute: Vec<_> = firing
        .iter()
        .filter(|a| a.name == "AuthBruteForceSuspected")
        .collect();
    assert_eq!(brute.len(), 1);
    assert_eq!(brute[0].labels["client_ip"], "203.0.113.99");
    // A million addresses failing against one route is also a distributed attack.
    assert!(firing.iter().any(|a| a.name == "AuthDistributedBruteForce"));
}

#[test]
fn fifty_failures_is_not_more_than_fifty() {
    let clock = Arc::new(ManualClock::new());
    let engine = AlertEngine::new(AlertConfig::new().tick(Duration::ZERO).clock(clock.clone()));
    let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7));
    for _ in 0..50 {
        engine.record(
            &AuthEvent::new(
                AuthOp::Login,
                Outcome::Failure(FailureReason::InvalidCredentials),
                Duration::from_millis(2),
                Instant::now(),
            )
            .with_route("/login")
            .with_client_ip(Some(ip)),
        );
    }
    clock.advance(Duration::from_secs(5));
    engine.evaluate();
    assert!(engine.suspects().is_empty());
    assert!(!engine
        .firing()
        .iter()
        .any(|a| a.name == "AuthBruteForceSuspected"));
    assert_eq!(engine.top_ip_failures(), 50);
}
