//! The counts the rules read: each event counted in per-thread atomics on the request path,
//! summed off it.

use std::sync::atomic::{AtomicU64, Ordering};

use authwatch_layer::{AuthEvent, AuthOp, EventSink, FailureReason, Interest, Outcome};

use super::pending::Waiting;
use super::{AlertEngine, Inner};

pub(super) const OPS: usize = AuthOp::COUNT;
pub(super) const S: usize = 0;
pub(super) const F: usize = 1;
pub(super) const RL: usize = 2;
pub(super) const IT: usize = 3;
pub(super) const LO: usize = 4;
const CANCELLED: usize = 5;
pub(super) const LAT_N: usize = 6;
pub(super) const LAT_US: usize = 7;
pub(super) const KINDS: usize = 8;

pub(super) type Counts = [[u64; KINDS]; OPS];

#[repr(align(128))]
pub(super) struct Shard {
    pub(super) cells: [[AtomicU64; KINDS]; OPS],
    /// This thread's failures waiting for the detector.
    pub(super) waiting: Waiting,
}

impl Shard {
    pub(super) fn new() -> Self {
        Self {
            cells: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            waiting: Waiting::default(),
        }
    }
}

fn failure_reason(o: Outcome) -> Option<FailureReason> {
    match o {
        Outcome::Failure(r) => Some(r),
        _ => None,
    }
}

impl EventSink for AlertEngine {
    fn interest(&self) -> Interest {
        if self.inner.cfg.counts.is_none() {
            Interest::ALL
        } else {
            // Only failures feed the detector when something else counts the requests.
            Interest::FAILURE
        }
    }

    fn record(&self, e: &AuthEvent<'_>) {
        let inner = &*self.inner;
        let failing = failure_reason(e.outcome).and(e.client_ip);
        let counting = inner.cfg.counts.is_none();
        if !counting && failing.is_none() {
            // Most requests, when something else counts them: nothing to do.
            return;
        }
        let shard = &inner.shards[authwatch_hdr::thread_shard(inner.shards.len())];
        if counting {
            count(&shard.cells[e.op.index()], e);
        }
        if let Some(ip) = failing {
            inner.failed(&shard.waiting, ip, e);
        }
    }
}

/// Counts `e` into its operation's row.
#[inline]
fn count(row: &[AtomicU64; KINDS], e: &AuthEvent<'_>) {
    let add = |k: usize, v: u64| {
        row[k].fetch_add(v, Ordering::Relaxed);
    };
    match e.outcome {
        Outcome::Success => add(S, 1),
        Outcome::Failure(r) => {
            add(F, 1);
            if r == FailureReason::InvalidToken {
                add(IT, 1);
            } else if r == FailureReason::LockedOut {
                add(LO, 1);
            }
        }
        Outcome::Error => add(F, 1),
        Outcome::RateLimited => add(RL, 1),
        _ => add(CANCELLED, 1),
    }
    if !matches!(e.outcome, Outcome::Cancelled) {
        add(LAT_N, 1);
        add(
            LAT_US,
            u64::try_from(e.latency.as_micros()).unwrap_or(u64::MAX),
        );
    }
}

impl Inner {
    pub(super) fn cumulative(&self) -> Counts {
        let mut c = [[0; KINDS]; OPS];
        for shard in self.shards.iter() {
            for (op, row) in shard.cells.iter().enumerate() {
                for (k, v) in row.iter().enumerate() {
                    c[op][k] += v.load(Ordering::Relaxed);
                }
            }
        }
        if let Some(source) = &self.cfg.counts {
            for (row, n) in c.iter_mut().zip(source()) {
                for (k, v) in [
                    (S, n.success),
                    (F, n.failure),
                    (RL, n.rate_limited),
                    (IT, n.invalid_token),
                    (LO, n.locked_out),
                    (CANCELLED, n.cancelled),
                    (LAT_N, n.timed),
                    (LAT_US, n.latency_us),
                ] {
                    row[k] += v;
                }
            }
        }
        c
    }
}

pub(super) fn add_into(a: &mut Counts, b: &Counts) {
    for op in 0..OPS {
        for k in 0..KINDS {
            a[op][k] += b[op][k];
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{AlertConfig, ManualClock, RequestCounts};

    fn event(outcome: Outcome) -> AuthEvent<'static> {
        AuthEvent::new(
            AuthOp::Login,
            outcome,
            Duration::from_millis(3),
            Instant::now(),
        )
        .with_route("/login")
        .with_client_ip(Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7))))
    }

    /// With a count source the engine reads its counts and counts nothing itself (no event,
    /// no reported lockout, twice), while failing clients still reach the detector.
    #[test]
    fn a_count_source_replaces_the_engines_own_counting() {
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let engine = AlertEngine::new(
            AlertConfig::new()
                .tick(Duration::ZERO)
                .clock(Arc::new(ManualClock::new()))
                .counts(Arc::new(move || {
                    c.fetch_add(1, Ordering::Relaxed);
                    let login = RequestCounts {
                        success: 5,
                        failure: 3,
                        invalid_token: 1,
                        locked_out: 2,
                        rate_limited: 4,
                        cancelled: 6,
                        timed: 12,
                        latency_us: 12_000,
                        errors: 1,
                    };
                    let mut all = [RequestCounts::default(); OPS];
                    all[AuthOp::Login.index()] = login;
                    all
                })),
        );
        for _ in 0..3 {
            engine.record(&event(Outcome::Failure(FailureReason::InvalidCredentials)));
            engine.record(&event(Outcome::Success));
        }
        engine.record_lockout();
        let c = engine.inner.cumulative();
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        let login = c[AuthOp::Login.index()];
        assert_eq!(login[S], 5);
        assert_eq!(login[F], 3);
        assert_eq!(login[IT], 1);
        assert_eq!(login[LO], 2);
        assert_eq!(login[RL], 4);
        assert_eq!(login[CANCELLED], 6);
        assert_eq!(login[LAT_N], 12);
        assert_eq!(login[LAT_US], 12_000);
        let others: u64 = c.iter().flatten().sum::<u64>() - login.iter().sum::<u64>();
        assert_eq!(others, 0);
        assert_eq!(engine.top_ip_failures(), 3);
    }

    /// Without one, the engine counts every event itself.
    #[test]
    fn without_a_count_source_the_engine_counts() {
        let engine = AlertEngine::new(
            AlertConfig::new()
                .tick(Duration::ZERO)
                .clock(Arc::new(ManualClock::new())),
        );
        engine.record(&event(Outcome::Failure(FailureReason::LockedOut)));
        engine.record(&event(Outcome::Success));
        engine.record(&event(Outcome::Cancelled));
        engine.record_lockout();
        let login = engine.inner.cumulative()[AuthOp::Login.index()];
        assert_eq!(
            [
                login[S],
                login[F],
                login[LO],
                login[CANCELLED],
                login[LAT_N]
            ],
            [1, 1, 2, 1, 2]
        );
        assert_eq!(login[LAT_US], 6_000);
    }
}
