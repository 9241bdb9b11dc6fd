//! The block list's memory at its default bound (100,000 blocks, as `BlockPolicy` sets it),
//! measured by a counting allocator: what a spray of a million addresses can make it hold,
//! and the peak while a change swaps the table. Prints the figures (`-- --nocapture`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use authwatch_layer::{BlockSource, Blocklist};

const MAX: usize = 100_000;

#[test]
fn a_full_list_of_a_hundred_thousand_blocks_stays_small() {
    let reason = "AuthBruteForceSuspected: 51 failed logins from this address in 10m".to_owned();
    let mut list = None;
    let fill = allocation_counter::measure(|| {
        let l = Blocklist::new(MAX, 64, false);
        // A million addresses (half IPv4, half IPv6 /64s) in batches of 10,000: only the
        // 100,000 that end last stay.
        for batch in 0..100u32 {
            let add: Vec<(IpAddr, Duration, String)> = (0..10_000u32)
                .map(|i| {
                    let n = batch * 10_000 + i;
                    let ip = if n % 2 == 0 {
                        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
                    } else {
                        IpAddr::V6(Ipv6Addr::new(
                            0x2001,
                            0xdb8,
                            (n >> 16) as u16,
                            n as u16,
                            0,
                            0,
                            0,
                            1,
                        ))
                    };
                    (ip, Duration::from_secs(900 + u64::from(n)), reason.clone())
                })
                .collect();
            l.sync(BlockSource::CrowdSec, &add, &[], false);
        }
        assert_eq!(l.len(), MAX);
        list = Some(l);
    });
    let l = list.unwrap();
    // One more block by an alert: the table is copied once, the entries are shared.
    let one = allocation_counter::measure(|| {
        l.insert(
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
            Duration::from_secs(3600 * 24),
            &reason,
            BlockSource::Alert,
        );
    });
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "100,000 blocks (from a million offered): {:.1} MiB held, {:.1} MiB at the peak; one more block (one evicted): {:.1} MiB more at its peak (the table copied), {:.2} KiB net",
        mib(fill.bytes_current as u64),
        mib(fill.bytes_max),
        mib(one.bytes_max),
        one.bytes_current as f64 / 1024.0
    );
    assert!(fill.bytes_current as u64 <= 32 << 20, "{fill:?}");
    assert!(fill.bytes_max <= 64 << 20, "{fill:?}");
    assert!(one.bytes_max <= 16 << 20, "{one:?}");
    drop(l);
}
