//! Distinct ids over the window: a HyperLogLog estimate per window slot, merged at read time.
//! Active users (the user ids the audit logger saw: sign-ins, issued tokens, registrations) are
//! `Distinct<str>`; active sessions (the layer's keyed token hashes) are `Distinct<u64>`. Only
//! hashes are kept, never an id.

use std::hash::{BuildHasher as _, Hash};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyperloglogplus::{HyperLogLog as _, HyperLogLogPF};

/// 2^12 registers: a relative standard error of 1.04 / √4096 ≈ 1.6 % (so within ±5 % about
/// 99.8 % of the time), 2.7 KiB per sketch (5-bit registers, six to a `u32`).
pub(crate) const PRECISION: u8 = 12;

/// foldhash's quality variant, seeded alike in every sketch (sketches merge only when they hash
/// alike): a well-spread 64-bit hash, which is all the estimate needs, in a few instructions and
/// a few lines of code (SipHash took ~60 instructions and ~30 code lines per insert).
type Sketch<T> = HyperLogLogPF<T, foldhash::quality::FixedState>;

fn sketch<T: Hash + ?Sized>() -> Sketch<T> {
    HyperLogLogPF::new(PRECISION, foldhash::quality::FixedState::default())
        .expect("12 is a valid precision")
}

/// Rings of sketches, one sketch per slot of the window; one ring per thread shard, so that
/// threads inserting at once do not share a lock. The read merges every ring: a sketch merge is
/// a register-wise maximum, so an id seen on several threads still counts once.
pub(crate) struct Distinct<T: Hash + ?Sized> {
    slot: Duration,
    start: Instant,
    rings: Box<[Mutex<Ring<T>>]>,
}

/// How many recent ids a ring remembers, to skip inserting them again (a power of two).
const RECENT: usize = 64;

/// One thread shard's sketches, the slot it inserts into, and the ids it inserted there lately.
struct Ring<T: Hash + ?Sized> {
    slots: Vec<(u64, Sketch<T>)>,
    /// The slot inserts go to, and when it starts and ends: a time inside needs two
    /// comparisons, not a division, to find its slot.
    current: Option<(u64, Instant, Instant)>,
    /// Hashes of ids inserted into the current slot lately, by their low bits. A sketch insert
    /// is idempotent, so an id found here is skipped without changing any estimate: sessions
    /// present the same token request after request, and each insert costs about a hundred
    /// instructions. Emptied when the slot changes.
    recent: [u64; RECENT],
}

/// Distinct user ids.
pub(crate) type ActiveUsers = Distinct<str>;

impl<T: Hash + ?Sized> Distinct<T> {
    /// [`authwatch_hdr::default_shards`] rings, the shards the histograms and counters of the
    /// same threads use: `shards × slots × 2.7 KiB`, 110 KiB with 4 shards (2 cores) and the
    /// default 10 slots, 1.7 MiB at the cap of 64 shards (32 cores and more).
    pub(crate) fn new(window: Duration, slots: usize, start: Instant) -> Self {
        Self::with_shards(window, slots, start, authwatch_hdr::default_shards())
    }

    /// `shards` rings (2.7 KiB per slot each).
    pub(crate) fn with_shards(
        window: Duration,
        slots: usize,
        start: Instant,
        shards: usize,
    ) -> Self {
        let slots = slots.max(1);
        Self {
            slot: (window / slots as u32).max(Duration::from_millis(1)),
            start,
            rings: (0..shards.max(1))
                .map(|_| {
                    Mutex::new(Ring {
                        slots: (0..slots).map(|_| (u64::MAX, sketch())).collect(),
                        current: None,
                        recent: [0; RECENT],
                    })
                })
                .collect(),
        }
    }

    fn index(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_nanos() / self.slot.as_nanos().max(1)) as u64
    }

    /// When slot `i` starts and ends (`None` past what an `Instant` holds).
    fn bounds(&self, i: u64) -> Option<(Instant, Instant)> {
        let from = self
            .start
            .checked_add(self.slot.checked_mul(u32::try_from(i).ok()?)?)?;
        Some((from, from.checked_add(self.slot)?))
    }

    /// One id seen at `now` (a user id as the audit trail writes it, keyed when a key is set;
    /// or a session key).
    pub(crate) fn insert(&self, id: &T, now: Instant) {
        let shard = authwatch_hdr::thread_shard(self.rings.len());
        let mut ring = self.rings[shard].lock().unwrap_or_else(|e| e.into_inner());
        let ring = &mut *ring;
        let i = match ring.current {
            Some((i, from, to)) if now >= from && now < to => i,
            _ => {
                let i = self.index(now);
                if ring.current.is_none_or(|(c, _, _)| c != i) {
                    ring.recent = [0; RECENT];
                }
                ring.current = self.bounds(i).map(|(from, to)| (i, from, to));
                i
            }
        };
        let n = ring.slots.len() as u64;
        let slot = &mut ring.slots[(i % n) as usize];
        if slot.0 != i {
            *slot = (i, sketch());
        }
        // The sketch's own hash of the id (same hasher, same seed): equal hashes are the same
        // insert. 0 marks an empty entry, so a hash of 0 is never skipped.
        let h = foldhash::quality::FixedState::default().hash_one(id);
        let seen = &mut ring.recent[h as usize % RECENT];
        if *seen == h && h != 0 {
            return;
        }
        *seen = h;
        slot.1.insert(id);
    }

    /// The estimated number of distinct ids over the window ending at `now`.
    pub(crate) fn estimate(&self, now: Instant) -> f64 {
        let i = self.index(now);
        let mut all = sketch::<T>();
        for ring in self.rings.iter() {
            let ring = ring.lock().unwrap_or_else(|e| e.into_inner());
            let n = ring.slots.len() as u64;
            for (at, s) in ring.slots.iter() {
                if *at != u64::MAX && *at + n > i && *at <= i {
                    let _ = all.merge(s);
                }
            }
        }
        all.count().round()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{mpsc, Arc};

    #[test]
    fn estimates_distinct_users_within_the_bound() {
        let t0 = Instant::now();
        let a = ActiveUsers::new(Duration::from_secs(300), 10, t0);
        for round in 0..3 {
            for u in 0..100_000 {
                // Every user seen three times, spread over the window.
                let at = t0 + Duration::from_secs((u % 290) as u64) + Duration::from_millis(round);
                a.insert(&format!("user-{u}"), at);
            }
        }
        let e = a.estimate(t0 + Duration::from_secs(299));
        assert!((e - 100_000.0).abs() / 100_000.0 < 0.05, "{e}");
        // Users seen only long ago are out of the window.
        let later = a.estimate(t0 + Duration::from_secs(900));
        assert_eq!(later, 0.0);
        // A small count is near exact.
        let b = ActiveUsers::new(Duration::from_secs(300), 10, t0);
        for u in ["ada", "bob", "ada", "eve"] {
            b.insert(u, t0);
        }
        assert_eq!(b.estimate(t0), 3.0);
        // Session keys: 20,000 distinct tokens, each seen twice, within ±5 %.
        // From two threads into sharded rings: the merge counts each key once.
        let c = Arc::new(Distinct::<u64>::with_shards(
            Duration::from_secs(300),
            10,
            t0,
            4,
        ));
        let threads: Vec<_> = (0..2u64)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for k in 0..20_000u64 {
                        // Both threads see every key.
                        c.insert(&((k + t) % 20_000).wrapping_mul(0x9e37_79b9_7f4a_7c15), t0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let e = c.estimate(t0);
        assert!((e - 20_000.0).abs() / 20_000.0 < 0.05, "{e}");
    }

    /// Skipping ids inserted lately changes no estimate: repeats count once, an id seen again
    /// in a later slot is in that slot (it stays in the window after the earlier slot leaves
    /// it), and times that go back and forth land in their own slots.
    #[test]
    fn repeated_ids_are_skipped_without_losing_a_slot() {
        let t0 = Instant::now();
        let slot = Duration::from_secs(30);
        let d = ActiveUsers::with_shards(Duration::from_secs(300), 10, t0, 1);
        for _ in 0..1_000 {
            d.insert("ada", t0);
        }
        d.insert("ada", t0 + slot);
        // Back to the first slot, then forward again.
        d.insert("eve", t0 + Duration::from_secs(1));
        d.insert("bob", t0 + slot * 2);
        assert_eq!(d.estimate(t0 + slot * 2), 3.0);
        // The first slot has left the window: ada (slot 1, inserted there although it was
        // just inserted into slot 0) and bob (slot 2) remain.
        assert_eq!(d.estimate(t0 + slot * 10 + Duration::from_secs(1)), 2.0);
        // Only slot 2 remains.
        assert_eq!(d.estimate(t0 + slot * 11 + Duration::from_secs(1)), 1.0);
        // Many distinct ids in one slot, each many times, count once each.
        let many = Distinct::<u64>::with_shards(Duration::from_secs(300), 10, t0, 1);
        for round in 0..5 {
            for k in 0..5_000u64 {
                many.insert(&k, t0 + Duration::from_millis(round));
            }
        }
        let e = many.estimate(t0);
        assert!((e - 5_000.0).abs() / 5_000.0 < 0.05, "{e}");
    }

    /// The audit logger inserts active users from every handler thread: a thread does not wait
    /// for another one's insert (here, a lock held on the main thread's ring).
    #[test]
    fn active_users_are_sharded_per_thread() {
        let t0 = Instant::now();
        let users = ActiveUsers::new(Duration::from_secs(300), 10, t0);
        let shards = users.rings.len();
        let mine = authwatch_hdr::thread_shard(shards);
        let held = users.rings[mine].lock().unwrap();
        let inserted = std::thread::scope(|scope| {
            // Threads are numbered in order, so one of the next few has another shard.
            (0..8).any(|_| {
                let (tx, rx) = mpsc::channel();
                let users = &users;
                scope.spawn(move || {
                    if authwatch_hdr::thread_shard(shards) != mine {
                        users.insert("ada", t0);
                        let _ = tx.send(());
                    }
                });
                rx.recv_timeout(Duration::from_secs(5)).is_ok()
            })
        });
        drop(held);
        assert!(
            inserted,
            "every insert waited for one lock ({shards} shard)"
        );
        // Seen on several threads, counted once; distinct users add up across shards.
        let users = Arc::new(users);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let users = users.clone();
                std::thread::spawn(move || {
                    users.insert("ada", t0);
                    for u in 0..5_000 {
                        users.insert(&format!("user-{t}-{u}"), t0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let e = users.estimate(t0);
        assert!((e - 20_001.0).abs() / 20_001.0 < 0.05, "{e}");
        let few = ActiveUsers::new(Duration::from_secs(300), 10, t0);
        std::thread::scope(|scope| {
            for u in ["ada", "bob", "ada", "eve"] {
                let few = &few;
                scope.spawn(move || few.insert(u, t0));
            }
        });
        assert_eq!(few.estimate(t0), 3.0);
    }
}
