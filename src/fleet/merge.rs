//! The fleet's request counts as one instance sees them: its own, plus what every other
//! instance counted since this one joined. Pure bookkeeping, no I/O: the flush hands it what
//! Redis holds, the alert engine reads the sum.
//!
//! The sum never goes down. The engine turns cumulative counts into per-tick deltas, so a sum
//! that fell (an instance gone, Redis away) would read as no traffic, and one that jumped (an
//! instance seen for the first time with an hour of counts) as a spike. So:
//! - an instance that joined before this one counts from the moment this one first saw it (its
//!   baseline is what it reported then); one that joined later counts in full;
//! - an instance that leaves (its entry expired) keeps what it contributed. Its entry may
//!   expire only because its flushes were late (a busy host): when it reports again under the
//!   same id, it resumes where it left off, and nothing it counted is counted twice. The map
//!   keeps the last [`GONE_KEPT`] instances gone for that; older ones are folded into
//!   [`Peers::departed`], and one of those that comes back counts from its return;
//! - while Redis is away nothing changes: the others' contributions stay as last read, and
//!   the engine goes on with this instance's own counts on top.

use std::collections::HashMap;

use authwatch_alerts::RequestCounts;
use authwatch_layer::AuthOp;

/// Counters per operation, in the order of [`fields`].
pub(crate) type Counts = [[u64; FIELDS]; AuthOp::COUNT];

/// Counters per operation.
pub(crate) const FIELDS: usize = 9;

/// The fields of a [`RequestCounts`], in a fixed order.
pub(crate) fn fields(c: &RequestCounts) -> [u64; FIELDS] {
    [
        c.success,
        c.failure,
        c.rate_limited,
        c.invalid_token,
        c.locked_out,
        c.cancelled,
        c.timed,
        c.latency_us,
        c.errors,
    ]
}

fn counts_of(f: &[u64; FIELDS]) -> RequestCounts {
    let mut c = RequestCounts::default();
    c.success = f[0];
    c.failure = f[1];
    c.rate_limited = f[2];
    c.invalid_token = f[3];
    c.locked_out = f[4];
    c.cancelled = f[5];
    c.timed = f[6];
    c.latency_us = f[7];
    c.errors = f[8];
    c
}

/// `counts` as the flush stores it: per operation, its fields, comma-separated.
pub(crate) fn encode(counts: &[RequestCounts; AuthOp::COUNT]) -> String {
    let mut out = String::with_capacity(AuthOp::COUNT * FIELDS * 4);
    for (i, c) in counts.iter().enumerate() {
        for (j, v) in fields(c).iter().enumerate() {
            if i + j > 0 {
                out.push(',');
            }
            out.push_str(&v.to_string());
        }
    }
    out
}

/// The counts of [`encode`], or `None` when the text is not that (another version's, or
/// garbage): such an entry is ignored rather than trusted.
pub(crate) fn decode(s: &str) -> Option<Counts> {
    let mut out = [[0; FIELDS]; AuthOp::COUNT];
    let mut it = s.split(',');
    for row in &mut out {
        for v in row.iter_mut() {
            *v = it.next()?.parse().ok()?;
        }
    }
    it.next().is_none().then_some(out)
}

/// What another instance reported at one flush.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// Its unique id (name and a per-start nonce).
    pub(crate) id: String,
    /// When it joined the fleet, on Redis' clock (milliseconds).
    pub(crate) joined_ms: u64,
    /// Its cumulative counts.
    pub(crate) counts: Counts,
}

/// Instances gone from Redis whose state is kept, in case they report again (a late flush
/// rather than a departure); beyond it, the longest gone are folded into the departed sum.
pub(crate) const GONE_KEPT: usize = 256;

struct Peer {
    /// When it joined, on Redis' clock.
    joined_ms: u64,
    baseline: Counts,
    contribution: Counts,
    /// When this instance last found it missing from Redis (`None`: present).
    gone_ms: Option<u64>,
}

/// The other instances' contributions to the fleet's counts.
pub(crate) struct Peers {
    me: String,
    /// When this instance joined, on Redis' clock; `None` until its first flush.
    joined_ms: Option<u64>,
    /// The instances seen, present or gone (at most [`GONE_KEPT`] of those).
    peers: HashMap<String, Peer>,
    /// What the instances folded out of the map contributed.
    departed: Counts,
    /// The latest join time of an instance folded out of the map: an unknown instance that
    /// joined no later than it may be one of those back, so it counts from now on only.
    folded_joined_ms: Option<u64>,
}

impl Peers {
    pub(crate) fn new(me: String) -> Self {
        Self {
            me,
            joined_ms: None,
            peers: HashMap::new(),
            departed: [[0; FIELDS]; AuthOp::COUNT],
            folded_joined_ms: None,
        }
    }

    /// When this instance joined (set by its first flush), on Redis' clock.
    pub(crate) fn joined_ms(&self) -> Option<u64> {
        self.joined_ms
    }

    /// Takes one flush's view of the fleet: `now_ms` on Redis' clock, and every instance's
    /// report (this one's included, and skipped).
    pub(crate) fn update(&mut self, now_ms: u64, reports: &[Report]) {
        let joined = *self.joined_ms.get_or_insert(now_ms);
        let folded = self.folded_joined_ms;
        for r in reports.iter().filter(|r| r.id != self.me) {
            let p = self.peers.entry(r.id.clone()).or_insert_with(|| Peer {
                joined_ms: r.joined_ms,
                // Joined after this one: everything it counted is news. Before (or perhaps
                // folded away earlier): only what it counts from now on.
                baseline: if r.joined_ms >= joined && folded.is_none_or(|f| r.joined_ms > f) {
                    [[0; FIELDS]; AuthOp::COUNT]
                } else {
                    r.counts
                },
                contribution: [[0; FIELDS]; AuthOp::COUNT],
                gone_ms: None,
            });
            p.gone_ms = None;
            for op in 0..AuthOp::COUNT {
                for k in 0..FIELDS {
                    let now = r.counts[op][k].saturating_sub(p.baseline[op][k]);
                    // Never down, whatever the report says (a restarted counter).
                    p.contribution[op][k] = p.contribution[op][k].max(now);
                }
            }
        }
        let alive: std::collections::HashSet<&str> =
            reports.iter().map(|r| r.id.as_str()).collect();
        for (id, p) in &mut self.peers {
            if p.gone_ms.is_none() && !alive.contains(id.as_str()) {
                p.gone_ms = Some(now_ms);
            }
        }
        // Bounded: fold the longest gone beyond the ones kept.
        let mut gone: Vec<(u64, String)> = self
            .peers
            .iter()
            .filter_map(|(id, p)| p.gone_ms.map(|t| (t, id.clone())))
            .collect();
        if gone.len() > GONE_KEPT {
            gone.sort_unstable();
            for (_, id) in &gone[..gone.len() - GONE_KEPT] {
                if let Some(p) = self.peers.remove(id) {
                    add(&mut self.departed, &p.contribution);
                    self.folded_joined_ms = Some(
                        self.folded_joined_ms
                            .map_or(p.joined_ms, |f| f.max(p.joined_ms)),
                    );
                }
            }
        }
    }

    /// The instances present in Redis at the last flush (this one left out).
    #[cfg(test)]
    fn present(&self) -> usize {
        self.peers.values().filter(|p| p.gone_ms.is_none()).count()
    }

    /// `local` plus every other instance's contribution.
    pub(crate) fn total(
        &self,
        local: &[RequestCounts; AuthOp::COUNT],
    ) -> [RequestCounts; AuthOp::COUNT] {
        let mut sum = self.departed;
        for p in self.peers.values() {
            add(&mut sum, &p.contribution);
        }
        std::array::from_fn(|op| {
            let mut f = fields(&local[op]);
            for (v, o) in f.iter_mut().zip(sum[op]) {
                *v = v.saturating_add(o);
            }
            counts_of(&f)
        })
    }
}

fn add(a: &mut Counts, b: &Counts) {
    for (ra, rb) in a.iter_mut().zip(b) {
        for (x, y) in ra.iter_mut().zip(rb) {
            *x = x.saturating_add(*y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(success: u64, failure: u64) -> Counts {
        let mut c = [[0; FIELDS]; AuthOp::COUNT];
        c[AuthOp::Login.index()][0] = success;
        c[AuthOp::Login.index()][1] = failure;
        c
    }

    fn report(id: &str, joined_ms: u64, counts: Counts) -> Report {
        Report {
            id: id.into(),
            joined_ms,
            counts,
        }
    }

    fn total_login(p: &Peers, local_failures: u64) -> (u64, u64) {
        let mut local = [RequestCounts::default(); AuthOp::COUNT];
        local[AuthOp::Login.index()].failure = local_failures;
        let t = p.total(&local)[AuthOp::Login.index()];
        (t.success, t.failure)
    }

    #[test]
    fn counts_round_trip_and_garbage_is_refused() {
        let mut c = [RequestCounts::default(); AuthOp::COUNT];
        c[AuthOp::Login.index()].failure = 7;
        c[AuthOp::COUNT - 1].latency_us = u64::MAX;
        let d = decode(&encode(&c)).unwrap();
        assert_eq!(d[AuthOp::Login.index()][1], 7);
        assert_eq!(d[AuthOp::COUNT - 1][7], u64::MAX);
        assert!(decode("").is_none());
        assert!(decode("1,2,3").is_none());
        assert!(
            decode(&format!("{},9", encode(&c))).is_none(),
            "one too many"
        );
        assert!(decode(&encode(&c).replace('7', "x")).is_none());
    }

    #[test]
    fn a_later_instance_counts_in_full_an_earlier_one_from_first_sight() {
        let mut p = Peers::new("me#1".into());
        // An instance that was there before this one joined (at 1,000), with old counts.
        p.update(
            1_000,
            &[
                report("me#1", 1_000, login(0, 0)),
                report("old#1", 500, login(40, 9)),
            ],
        );
        assert_eq!(total_login(&p, 2), (0, 2), "its history is not news");
        // One that joins later counts everything it reports.
        p.update(
            2_000,
            &[
                report("me#1", 1_000, login(0, 0)),
                report("old#1", 500, login(41, 12)),
                report("new#1", 1_900, login(0, 5)),
            ],
        );
        assert_eq!(total_login(&p, 2), (1, 2 + 3 + 5));
        assert_eq!(p.present(), 2);
        assert_eq!(p.joined_ms(), Some(1_000));
    }

    #[test]
    fn the_sum_never_goes_down() {
        let mut p = Peers::new("me#1".into());
        p.update(1_000, &[report("b#1", 1_000, login(0, 10))]);
        assert_eq!(total_login(&p, 0), (0, 10));
        // A report lower than the last (a counter reset under the same id): kept at 10.
        p.update(2_000, &[report("b#1", 1_000, login(0, 4))]);
        assert_eq!(total_login(&p, 0), (0, 10));
        // The instance leaves: what it counted stays in the sum.
        p.update(3_000, &[]);
        assert_eq!(p.present(), 0);
        assert_eq!(total_login(&p, 0), (0, 10));
        // It comes back as a new start (new nonce): counted again from zero, on top.
        p.update(4_000, &[report("b#2", 3_500, login(0, 3))]);
        assert_eq!(total_login(&p, 1), (0, 14));
    }

    /// An instance whose entry expired only because its flushes were late (a busy host), and
    /// that then reports again under the same id, resumes where it left off: what it counted
    /// before is not counted a second time. (It was, when the joiner was later than this one:
    /// the demo's fleet under load saw its login counts jump by what a peer had counted.)
    #[test]
    fn an_instance_back_from_a_late_flush_is_not_counted_twice() {
        let mut p = Peers::new("me#1".into());
        p.update(1_000, &[report("me#1", 1_000, login(0, 0))]);
        p.update(1_100, &[report("late#1", 1_050, login(30, 7))]);
        assert_eq!(total_login(&p, 0), (30, 7));
        // Missing from one flush's view, then back with a little more.
        p.update(1_200, &[report("me#1", 1_000, login(0, 0))]);
        assert_eq!(total_login(&p, 0), (30, 7));
        assert_eq!(p.present(), 0);
        p.update(1_300, &[report("late#1", 1_050, login(32, 8))]);
        assert_eq!(total_login(&p, 0), (32, 8), "counted once");
        assert_eq!(p.present(), 1);
    }

    /// The gone are kept up to a bound; beyond it the longest gone are folded into the sum,
    /// and one of those that comes back counts from its return, never twice.
    #[test]
    fn the_gone_are_bounded_and_a_folded_one_back_is_not_counted_twice() {
        let mut p = Peers::new("me#1".into());
        p.update(1_000, &[]);
        let n = GONE_KEPT as u64 + 10;
        for i in 0..n {
            p.update(
                2_000 + 2 * i,
                &[report(&format!("x#{i}"), 1_500 + i, login(0, 1))],
            );
            p.update(2_001 + 2 * i, &[]);
        }
        assert_eq!(p.peers.len(), GONE_KEPT);
        assert_eq!(total_login(&p, 0), (0, n));
        // The first one, folded long ago, reports again: only what it counts from now on.
        p.update(9_000, &[report("x#0", 1_500, login(0, 4))]);
        assert_eq!(total_login(&p, 0), (0, n));
        p.update(9_100, &[report("x#0", 1_500, login(0, 6))]);
        assert_eq!(total_login(&p, 0), (0, n + 2));
        // A new instance, joined after every folded one, counts in full.
        p.update(9_200, &[report("y#1", 9_150, login(0, 5))]);
        assert_eq!(total_login(&p, 0), (0, n + 2 + 5));
    }
}
