use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal};
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc, Barrier};

const MS: u64 = 1_000_000;

/// Equal to 3 significant digits (what the histogram promises).
fn close(got: Option<Duration>, want: Duration) -> bool {
    let got = got.expect("a value").as_nanos() as f64;
    let want = want.as_nanos() as f64;
    (got - want).abs() / want <= 0.001
}

/// The exact nearest-rank quantile of sorted values.
fn exact(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

fn check_against_reference(name: &str, mut values: Vec<u64>) {
    let cfg = WindowConfig::default();
    let base = Instant::now();
    let w = WindowedHistogram::with_shards(cfg, 4, base);
    for v in &values {
        w.record(Duration::from_nanos(*v), base);
    }
    values.sort_unstable();
    let snap = w.snapshot_at(base);
    assert_eq!(snap.count(), values.len() as u64, "{name}: count");
    for q in [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0] {
        let want = exact(&values, q) as f64;
        let got = snap.quantile(q).unwrap().as_nanos() as f64;
        let rel = (got - want).abs() / want;
        assert!(
            rel <= 0.001,
            "{name}: q={q} got {got} want {want} (relative error {rel})"
        );
    }
    let want_mean = values.iter().map(|v| *v as f64).sum::<f64>() / values.len() as f64;
    let got_mean = snap.mean().unwrap().as_nanos() as f64;
    assert!(
        (got_mean - want_mean).abs() / want_mean <= 0.001,
        "{name}: mean {got_mean} vs {want_mean}"
    );
    let min_rel =
        (snap.min().unwrap().as_nanos() as f64 - values[0] as f64).abs() / values[0] as f64;
    assert!(min_rel <= 0.001, "{name}: min");
    let max = *values.last().unwrap() as f64;
    assert!(
        (snap.max().unwrap().as_nanos() as f64 - max).abs() / max <= 0.001,
        "{name}: max"
    );
}

#[test]
fn lognormal_matches_exact_reference() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0001);
    // Median 20 ms, long tail: typical of password hashing behind a login.
    let d = LogNormal::new((20.0 * MS as f64).ln(), 0.8).unwrap();
    let values = (0..200_000)
        .map(|_| (d.sample(&mut rng) as u64).max(1))
        .collect();
    check_against_reference("lognormal", values);
}

#[test]
fn bimodal_matches_exact_reference() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0002);
    // Cache hits around 300 µs, database round trips around 40 ms.
    let fast = Normal::new(300_000.0, 30_000.0).unwrap();
    let slow = Normal::new(40.0 * MS as f64, 5.0 * MS as f64).unwrap();
    let values = (0..200_000)
        .map(|_| {
            let v = if rng.random_bool(0.8) {
                fast.sample(&mut rng)
            } else {
                slow.sample(&mut rng)
            };
            (v.max(1.0)) as u64
        })
        .collect();
    check_against_reference("bimodal", values);
}

#[test]
fn uniform_matches_exact_reference() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0003);
    let values = (0..200_000)
        .map(|_| rng.random_range(1_000..=2_000 * MS))
        .collect();
    check_against_reference("uniform", values);
}

#[test]
fn sub_microsecond_values_keep_three_digits() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0004);
    let values = (0..50_000).map(|_| rng.random_range(50..5_000)).collect();
    check_against_reference("sub-microsecond", values);
}

#[test]
fn old_slots_leave_the_window() {
    let cfg = WindowConfig::new(Duration::from_secs(10), 10).unwrap();
    let base = Instant::now();
    let w = WindowedHistogram::with_shards(cfg, 2, base);
    // One value per second, each 1 ms longer than the one before.
    for s in 0..30u64 {
        w.record(
            Duration::from_millis(s + 1),
            base + Duration::from_secs(s) + Duration::from_millis(500),
        );
    }
    let now = base + Duration::from_secs(29) + Duration::from_millis(900);
    let snap = w.snapshot_at(now);
    // Slots 20..=29 are in the window: values 21..=30 ms.
    assert_eq!(snap.count(), 10);
    assert!(close(snap.min(), Duration::from_millis(21)), "{snap:?}");
    assert!(snap.max().unwrap() >= Duration::from_millis(30));
    // Much later the window is empty again.
    assert!(w.snapshot_at(now + Duration::from_secs(60)).is_empty());
}

#[test]
fn idle_shard_data_expires_without_new_records() {
    let cfg = WindowConfig::new(Duration::from_secs(1), 4).unwrap();
    let base = Instant::now();
    let w = WindowedHistogram::with_shards(cfg, 1, base);
    w.record(Duration::from_millis(5), base);
    assert_eq!(w.snapshot_at(base + Duration::from_millis(900)).count(), 1);
    assert_eq!(
        w.snapshot_at(base + Duration::from_millis(1_000)).count(),
        0
    );
}

/// Shard `a` still holds a value from slot 0 when shard `b` has already moved the ring index of
/// slot 0 on to slot 4: that old value must be dropped, not merged into slot 4.
#[test]
fn late_flush_of_an_expired_slot_is_dropped() {
    let cfg = WindowConfig::new(Duration::from_secs(4), 4).unwrap();
    let base = Instant::now();
    let at = |s: u64| base + Duration::from_secs(s) + Duration::from_millis(100);
    let w = WindowedHistogram::with_shards(cfg, 2, base);
    let ms = Duration::from_millis;
    w.record_in(0, ms(1), at(0));
    w.record_in(1, ms(2), at(4));
    w.record_in(1, ms(3), at(5)); // slot 4 waits in shard 1's spare
    w.record_in(0, ms(4), at(5)); // slot 0 waits in shard 0's spare
                                  // The snapshot folds both into ring index 0: slot 4 wins, the slot-0 value is dropped.
    let snap = w.snapshot_at(at(5));
    assert_eq!(snap.count(), 3, "{snap:?}");
    assert!(close(snap.min(), ms(2)), "{snap:?}");
}

/// Accuracy holds across shards and slots, where values go through the ring and the merges.
#[test]
fn accuracy_holds_across_shards_and_slots() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0005);
    let d = LogNormal::new((5.0 * MS as f64).ln(), 1.0).unwrap();
    let cfg = WindowConfig::new(Duration::from_secs(10), 10).unwrap();
    let base = Instant::now();
    let w = WindowedHistogram::with_shards(cfg, 3, base);
    let mut values = Vec::new();
    for i in 0..120_000u64 {
        let v = (d.sample(&mut rng) as u64).max(1);
        // Twelve seconds of traffic over three shards; the first two seconds leave the window.
        let t = base + Duration::from_millis(i / 10);
        w.record_in((i % 3) as usize, Duration::from_nanos(v), t);
        if i / 10 >= 2_000 {
            values.push(v);
        }
    }
    let now = base + Duration::from_millis(11_999);
    let snap = w.snapshot_at(now);
    values.sort_unstable();
    assert_eq!(snap.count(), values.len() as u64);
    for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
        let want = exact(&values, q) as f64;
        let got = snap.quantile(q).unwrap().as_nanos() as f64;
        assert!(
            (got - want).abs() / want <= 0.001,
            "q={q} got {got} want {want}"
        );
    }
}

/// A recorder starting a new slot swaps in its spare histogram, which the last snapshot emptied:
/// it does not wait for the ring's lock, whoever holds it (a snapshot, a recorder's fallback).
#[test]
fn a_new_slot_does_not_wait_for_the_ring_when_snapshots_keep_up() {
    let cfg = WindowConfig::new(Duration::from_secs(4), 4).unwrap();
    let base = Instant::now();
    let at = |s: u64| base + Duration::from_secs(s) + Duration::from_millis(100);
    let ms = Duration::from_millis;
    let w = WindowedHistogram::with_shards(cfg, 1, base);
    w.record_in(0, ms(1), at(0));
    for s in 1..8u64 {
        // The reader keeps up: a snapshot in every slot, which folds the slot before.
        assert_eq!(w.snapshot_at(at(s - 1)).count(), s.min(4));
        let ring = lock(&w.ring);
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|scope| {
            let w = &w;
            scope.spawn(move || {
                w.record_in(0, ms(s + 1), at(s));
                let _ = tx.send(());
            });
            let recorded = rx.recv_timeout(Duration::from_secs(5)).is_ok();
            drop(ring);
            assert!(recorded, "slot {s}: the record waited for the ring's lock");
        });
    }
    let snap = w.snapshot_at(at(7));
    // Slots 4..=7: values 5..=8 ms.
    assert_eq!(snap.count(), 4, "{snap:?}");
    assert!(close(snap.min(), ms(5)), "{snap:?}");
}

/// Recorders crossing slot boundaries while a reader snapshots in a loop: every snapshot holds
/// each value recorded before it began, none twice, and none that was not yet being recorded
/// when it ended. Finished slots reach the ring both ways: after every other slot change the
/// recorders wait for a snapshot, which folds the slot they left (the reader keeps up); after
/// the others they race on, and a recorder that finds its spare still full folds it itself
/// (two recorders share a shard, too).
#[test]
fn recorders_and_a_reader_lose_and_double_nothing_across_slots() {
    const RECORDERS: usize = 3;
    const PER: u64 = 100_000;
    // 0.4 µs apart in 1 ms slots: 2,500 values a slot, 40 slots, all in the window.
    const STEP: u64 = 400;
    const SLOT: u64 = 1_000_000;
    let cfg = WindowConfig::new(Duration::from_millis(64), 64).unwrap();
    let base = Instant::now();
    let end = base + Duration::from_millis(63);
    let w = WindowedHistogram::with_shards(cfg, 2, base);
    let started: [AtomicU64; RECORDERS] = Default::default();
    let done: [AtomicU64; RECORDERS] = Default::default();
    let snapshots = AtomicU64::new(0);
    let sum = |c: &[AtomicU64]| c.iter().map(|c| c.load(Ordering::SeqCst)).sum::<u64>();
    // The first wrong snapshot. Not asserted in the loop: recorders wait for snapshots, so the
    // reader goes on until they finish.
    let mut wrong = None;
    std::thread::scope(|scope| {
        let recorders: Vec<_> = (0..RECORDERS)
            .map(|t| {
                let (w, started, done, snapshots) = (&w, &started[t], &done[t], &snapshots);
                scope.spawn(move || {
                    for i in 0..PER {
                        started.fetch_add(1, Ordering::SeqCst);
                        let nanos = STEP * i;
                        w.record_in(
                            t,
                            Duration::from_nanos(1 + i % 64),
                            base + Duration::from_nanos(nanos),
                        );
                        done.fetch_add(1, Ordering::SeqCst);
                        // The first value of an odd slot.
                        if nanos.is_multiple_of(SLOT) && (nanos / SLOT) % 2 == 1 {
                            // Two more snapshots: one that began after this slot change ended.
                            let seen = snapshots.load(Ordering::SeqCst);
                            while snapshots.load(Ordering::SeqCst) < seen + 2 {
                                std::thread::yield_now();
                            }
                        }
                    }
                })
            })
            .collect();
        while !recorders.iter().all(|r| r.is_finished()) {
            let before = sum(&done);
            let count = w.snapshot_at(end).count();
            let after = sum(&started);
            let n = snapshots.fetch_add(1, Ordering::SeqCst);
            if !(before <= count && count <= after) && wrong.is_none() {
                wrong = Some(format!(
                    "snapshot {n}: {count} values, {before} recorded before it, {after} begun by its end"
                ));
            }
        }
    });
    assert_eq!(wrong, None);
    assert_eq!(w.snapshot_at(end).count(), RECORDERS as u64 * PER);
}

#[test]
fn huge_and_zero_values_are_clamped_not_lost() {
    let w = WindowedHistogram::new(WindowConfig::default());
    let now = Instant::now();
    w.record(Duration::ZERO, now);
    w.record(Duration::MAX, now);
    let snap = w.snapshot_at(now);
    assert_eq!(snap.count(), 2);
    let max = snap.max().unwrap();
    assert!(max >= MAX_TRACKABLE && max <= MAX_TRACKABLE.mul_f64(1.001));
}

#[test]
fn many_threads_lose_nothing() {
    let w = Arc::new(WindowedHistogram::new(WindowConfig::default()));
    let threads = 8;
    let per = 50_000u64;
    let barrier = Arc::new(Barrier::new(threads));
    let now = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let w = w.clone();
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                for i in 0..per {
                    w.record(Duration::from_micros(1 + (i + t as u64) % 1000), now);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(w.snapshot_at(now).count(), threads as u64 * per);
}

#[test]
fn snapshots_merge() {
    let now = Instant::now();
    let a = WindowedHistogram::new(WindowConfig::default());
    let b = WindowedHistogram::new(WindowConfig::default());
    for i in 1..=100 {
        a.record(Duration::from_millis(i), now);
        b.record(Duration::from_millis(100 + i), now);
    }
    let mut s = a.snapshot_at(now);
    s.merge(&b.snapshot_at(now));
    assert_eq!(s.count(), 200);
    let p50 = s.p50().unwrap();
    assert!(p50 >= Duration::from_millis(100) && p50 <= Duration::from_micros(100_100));
}

#[test]
fn empty_snapshot_has_no_percentiles() {
    let s = Snapshot::empty();
    assert_eq!(s.count(), 0);
    assert_eq!(s.p95(), None);
    assert_eq!(s.mean(), None);
    assert_eq!(s.min(), None);
}

#[test]
fn config_errors_are_explained() {
    assert_eq!(
        WindowConfig::new(Duration::from_secs(1), 0),
        Err(ConfigError::ZeroSlots)
    );
    let e = WindowConfig::new(Duration::from_micros(10), 100).unwrap_err();
    assert!(e.to_string().contains("longer window"), "{e}");
}

#[test]
fn threads_get_distinct_shards() {
    let shards = 64;
    let ids: Vec<usize> = (0..4)
        .map(|_| {
            std::thread::spawn(move || thread_shard(shards))
                .join()
                .unwrap()
        })
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 4, "{ids:?}");
    // Stable within a thread.
    assert_eq!(thread_shard(shards), thread_shard(shards));
}

fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<WindowedHistogram>();
    is::<Snapshot>();
    is::<WindowConfig>();
}

#[test]
fn a_late_batch_puts_each_value_in_the_slot_of_its_own_instant() {
    let cfg = WindowConfig::new(Duration::from_secs(10), 10).unwrap();
    let base = Instant::now();
    let w = WindowedHistogram::with_shards(cfg, 1, base);
    let at = |s: u64| base + Duration::from_secs(s) + Duration::from_millis(500);
    // The shard is already in slot 25 when a batch from slots 12 to 25 arrives, out of order.
    w.record(Duration::from_millis(100), at(25));
    let late: Vec<(Duration, Instant)> = (12..=25u64)
        .rev()
        .map(|s| (Duration::from_millis(s), at(s)))
        .collect();
    w.record_batch(late);
    // Slots 16..=25 are in the window at 25.9 s: 10 values of the batch (16..=25 ms) and the
    // 100 ms one; 12..=15 are older than the window, wherever they were put.
    let snap = w.snapshot_at(at(25) + Duration::from_millis(400));
    assert_eq!(snap.count(), 11, "{snap:?}");
    assert!(close(snap.min(), Duration::from_millis(16)), "{snap:?}");
    // One slot later, slot 16 has left (slots 17..=26).
    let snap = w.snapshot_at(at(26));
    assert_eq!(snap.count(), 10, "{snap:?}");
    assert!(close(snap.min(), Duration::from_millis(17)), "{snap:?}");
    // A later batch that starts a new slot keeps both: 27 ms in slot 27, 26 ms in slot 26.
    w.record_batch([
        (Duration::from_millis(27), at(27)),
        (Duration::from_millis(26), at(26)),
    ]);
    let snap = w.snapshot_at(at(27));
    assert_eq!(snap.count(), 11, "{snap:?}");
    assert!(close(snap.min(), Duration::from_millis(18)), "{snap:?}");
}

#[test]
fn a_batch_counts_every_value_once_with_snapshots_between() {
    let cfg = WindowConfig::new(Duration::from_secs(4), 4).unwrap();
    let base = Instant::now();
    let w = WindowedHistogram::with_shards(cfg, 2, base);
    let mut want = 0;
    for round in 0..12u64 {
        // Each batch spans the last two slots, the older half first.
        let batch: Vec<(Duration, Instant)> = (0..20u64)
            .map(|i| {
                let at = base + Duration::from_millis(round * 1000 + i * 50);
                (Duration::from_micros(100 + i), at)
            })
            .collect();
        w.record_batch(batch);
        want += 20;
        let now = base + Duration::from_millis(round * 1000 + 999);
        // The window holds the rounds whose slots are among the last four.
        let in_window = (round.min(3) + 1) * 20;
        assert_eq!(
            w.snapshot_at(now).count(),
            in_window.min(want),
            "round {round}"
        );
    }
}

/// A snapshot read back from its bytes is the same snapshot, alone and merged: what a fleet's
/// replicas exchange gives exactly the quantiles of the union of their values.
#[test]
fn a_snapshot_round_trips_through_its_bytes() {
    let w = WindowedHistogram::new(WindowConfig::default());
    let other = WindowedHistogram::new(WindowConfig::default());
    let now = Instant::now();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..20_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // 0 to ~4 s, clustered low, with a long tail.
        let v = (x % 1_000_000) * (1 + i % 4_000);
        w.record(Duration::from_nanos(v), now);
        other.record(Duration::from_nanos(v / 3 + 1), now);
    }
    let (a, b) = (w.snapshot_at(now), other.snapshot_at(now));
    let bytes = a.to_bytes();
    assert!(bytes.len() < 64 * 1024, "{} bytes", bytes.len());
    let back = Snapshot::from_bytes(&bytes).unwrap();
    for q in [0.0, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
        assert_eq!(back.quantile(q), a.quantile(q), "q {q}");
    }
    assert_eq!(
        (back.count(), back.min(), back.max(), back.mean()),
        (a.count(), a.min(), a.max(), a.mean())
    );
    let mut merged = a.clone();
    merged.merge(&b);
    let mut merged_back = Snapshot::from_bytes(&a.to_bytes()).unwrap();
    merged_back.merge(&Snapshot::from_bytes(&b.to_bytes()).unwrap());
    for q in [0.5, 0.95, 0.99] {
        assert_eq!(merged_back.quantile(q), merged.quantile(q), "merged q {q}");
    }
    assert!(Snapshot::from_bytes(&[]).unwrap().is_empty());
    assert!(Snapshot::from_bytes(&[0x80]).is_none(), "truncated");
    assert!(Snapshot::from_bytes(&[0xff; 11]).is_none(), "too long");
    let mut huge = Vec::new();
    put_varint(&mut huge, u64::MAX);
    put_varint(&mut huge, 1);
    assert!(Snapshot::from_bytes(&huge).is_none(), "out of range");
}
