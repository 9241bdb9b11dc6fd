//! The counts the rules read: each event counted in per-thread atomics on the request path,
//! summed off it.

use std::sync::atomic::{AtomicU64, Ordering};

use authwatch_layer::{AuthEvent, AuthOp, EventSink, FailureReason, Outcome};

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
}

impl Shard {
    pub(super) fn new() -> Self {
        Self {
            cells: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
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
    fn record(&self, e: &AuthEvent<'_>) {
        let inner = &*self.inner;
        let shard = &inner.shards[authwatch_hdr::thread_shard(inner.shards.len())];
        let row = &shard.cells[e.op.index()];
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
        if let (Some(_), Some(ip)) = (failure_reason(e.outcome), e.client_ip) {
            inner.lock_detector().record(ip, e.route);
        }
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
