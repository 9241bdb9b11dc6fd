//! Sliding-window HDR histograms of durations, for services that record from many threads.
//!
//! This crate is for code that needs exact latency percentiles (p50, p95, p99, any quantile)
//! over a recent window, for example "p95 login time over the last 5 minutes", while request
//! handlers on every worker thread record into it. authwatch uses it for its in-process stats and
//! the percentiles of its snapshots; it has no dependency on the rest of authwatch.
//!
//! # How it works
//!
//! A [`WindowedHistogram`] keeps its window as a ring of `slots` time slots (default: 5 minutes in
//! 10 slots of 30 s). Recording takes no lock shared by all threads (but in the fallback below):
//! each thread is given a
//! *shard* (a cache-padded mutex that, with no more recording threads than shards, only its own
//! thread takes) and records into the shard's histogram of the current slot. Each shard also
//! keeps a spare histogram: when a shard sees that its slot has ended, it swaps the finished
//! histogram with the spare (which is empty) and goes on recording, without the ring's lock. A
//! [`snapshot`](WindowedHistogram::snapshot_at) (the reader) folds the finished histograms it
//! finds into the ring, empties them for the next swap, and merges the ring and the shards.
//!
//! A recorder takes the ring's lock only when its spare still holds an unfolded slot: no snapshot
//! ran between two slot changes of its shard (no reader for longer than a slot, or a shard that
//! recorded nothing for most of a slot). It then folds that slot into the ring itself: a rare
//! fallback that keeps memory at two histograms per shard whatever the reader does, where
//! queueing finished slots for the reader would grow with the time it has not run.
//!
//! Values are nanoseconds with 3 significant digits (relative error ≤ 0.1 %), from 1 ns up to
//! [`MAX_TRACKABLE`]; longer durations are clamped to it, never rejected.
//!
//! # Memory
//!
//! Each histogram (two per shard and one per slot) starts at 8 KiB and grows with the largest
//! value it has seen: 84 KiB once it has held a 1 s value, 132 KiB at the one-hour clamp, never
//! more. A window therefore takes at most `(2 × shards + slots) × 132 KiB` (2.3 MiB with the
//! default 10 slots and 4 shards), whatever the traffic.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//! use authwatch_hdr::{WindowConfig, WindowedHistogram};
//!
//! let window = WindowedHistogram::new(WindowConfig::default());
//! let now = Instant::now();
//! for ms in 1..=100 {
//!     window.record(Duration::from_millis(ms), now);
//! }
//! let snap = window.snapshot_at(now);
//! assert_eq!(snap.count(), 100);
//! let p95 = snap.p95().unwrap();
//! assert!(p95 >= Duration::from_millis(95) && p95 <= Duration::from_micros(95_100));
//! ```
//!
//! # Panics and errors
//!
//! Recording never panics and never fails: out-of-range values are clamped.
//! [`WindowConfig::new`] returns an error for a zero window or slot count.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Significant digits kept by every histogram: 3, so any quantile is within 0.1 % of the truth.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// The longest duration a histogram tracks (one hour); longer values are recorded as this.
pub const MAX_TRACKABLE: Duration = Duration::from_secs(3600);

const MAX_TRACKABLE_NANOS: u64 = 3_600_000_000_000;

/// Shape of a window: how long it is and how many slots it is cut into.
///
/// A snapshot covers the slot that holds "now" and the `slots - 1` slots before it, so it spans
/// between `window - window / slots` and `window` of history. More slots make the window slide
/// more smoothly and cost one histogram per slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    window: Duration,
    slots: u32,
}

impl WindowConfig {
    /// A window of `window` cut into `slots` slots.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroSlots`] when `slots` is 0, [`ConfigError::WindowTooShort`] when a slot
    /// would be shorter than one millisecond.
    pub fn new(window: Duration, slots: u32) -> Result<Self, ConfigError> {
        if slots == 0 {
            return Err(ConfigError::ZeroSlots);
        }
        if window / slots < Duration::from_millis(1) {
            return Err(ConfigError::WindowTooShort { window, slots });
        }
        Ok(Self { window, slots })
    }

    /// The length of the whole window.
    #[must_use]
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The number of slots.
    #[must_use]
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// The length of one slot.
    #[must_use]
    pub fn slot_len(&self) -> Duration {
        self.window / self.slots
    }
}

impl Default for WindowConfig {
    /// 5 minutes in 10 slots of 30 seconds.
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            slots: 10,
        }
    }
}

/// Why a [`WindowConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The slot count was 0. Use at least 1 (10 is a good default).
    ZeroSlots,
    /// `window / slots` is under one millisecond. Use a longer window or fewer slots.
    WindowTooShort {
        /// The window asked for.
        window: Duration,
        /// The slot count asked for.
        slots: u32,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroSlots => f.write_str("a histogram window needs at least one slot"),
            Self::WindowTooShort { window, slots } => write!(
                f,
                "a window of {window:?} in {slots} slots gives slots under 1 ms; use a longer window or fewer slots"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The shard the calling thread records into, for `shards` shards.
///
/// Each thread is numbered once, in the order threads first ask, so `n` threads on `n` or more
/// shards never share one. Other sharded structures (authwatch's counters) use the same number so
/// that one thread keeps to one set of cache lines.
#[must_use]
#[inline]
pub fn thread_shard(shards: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static ID: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    let id = ID.with(|id| {
        let v = id.get();
        if v != usize::MAX {
            v
        } else {
            let v = NEXT.fetch_add(1, Ordering::Relaxed);
            id.set(v);
            v
        }
    });
    id % shards.max(1)
}

/// A sensible shard count for this machine: twice the available parallelism, at least 2, at most 64.
#[must_use]
pub fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() * 2)
        .unwrap_or(4)
        .clamp(2, 64)
}

/// Keeps the value on its own cache lines so that two shards never share one.
#[repr(align(128))]
#[derive(Debug)]
struct CachePadded<T>(T);

#[derive(Debug)]
struct Slot {
    epoch: u64,
    hist: Histogram<u32>,
}

impl Slot {
    fn new() -> Self {
        Self {
            epoch: 0,
            hist: new_histogram(),
        }
    }
}

/// What one shard holds: the slot its threads record into and the finished one before it.
#[derive(Debug)]
struct Shard {
    /// The slot being recorded into.
    current: Slot,
    /// When `current` ends (`None` before the first record): until then a record needs only a
    /// comparison of two instants to know its slot, not a subtraction and a division.
    ends_at: Option<Instant>,
    /// The shard's finished slot until a snapshot folds it into the ring, empty after that: a
    /// recorder starting a new slot swaps it with `current` instead of taking the ring's lock to
    /// fold the finished slot itself.
    spare: Slot,
}

impl Shard {
    fn new() -> Self {
        Self {
            current: Slot::new(),
            ends_at: None,
            spare: Slot::new(),
        }
    }

    /// Whether starting a new slot needs the ring's lock: the finished slot has values and the
    /// spare still holds an earlier one that no snapshot has folded.
    fn needs_fold(&self) -> bool {
        !self.current.hist.is_empty() && !self.spare.hist.is_empty()
    }

    /// Starts slot `epoch`, the finished one going to the spare. Only when `!needs_fold()`.
    fn start_slot(&mut self, epoch: u64) {
        if !self.current.hist.is_empty() {
            // Swapping whole histograms keeps both allocations: no allocation on the way.
            std::mem::swap(&mut self.current, &mut self.spare);
        }
        self.current.epoch = epoch;
    }
}

/// A duration as the histograms record it: in nanoseconds, at least 1 and at most an hour.
#[inline]
fn clamped_nanos(value: Duration) -> u64 {
    // Whole seconds and nanoseconds apart: no u128 arithmetic.
    value
        .as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(value.subsec_nanos()))
        .clamp(1, MAX_TRACKABLE_NANOS)
}

fn new_histogram<T: hdrhistogram::Counter>() -> Histogram<T> {
    // Auto-resizing from the smallest range: memory follows the largest value seen.
    let mut h = Histogram::new(SIGNIFICANT_DIGITS).expect("3 significant digits is valid");
    h.auto(true);
    h
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves a histogram that is still consistent (every
    // operation on it is a single counter update or a whole merge), so keep using it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A sliding-window histogram of durations that many threads record into at once.
///
/// See the [crate docs](crate) for how the window and the shards work.
pub struct WindowedHistogram {
    config: WindowConfig,
    slot_nanos: u64,
    base: Instant,
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    /// Lock order: the ring, then a shard. A thread that holds a shard and needs the ring lets
    /// the shard go first (see `fold_spare`).
    ring: Mutex<Box<[Slot]>>,
}

impl fmt::Debug for WindowedHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowedHistogram")
            .field("config", &self.config)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl WindowedHistogram {
    /// A window with [`default_shards`] shards, starting now.
    #[must_use]
    pub fn new(config: WindowConfig) -> Self {
        Self::with_shards(config, default_shards(), Instant::now())
    }

    /// A window with `shards` shards (at least 1) whose first slot starts at `base`.
    ///
    /// Times passed to [`record`](Self::record) and [`snapshot_at`](Self::snapshot_at) before
    /// `base` count as being in the first slot.
    #[must_use]
    pub fn with_shards(config: WindowConfig, shards: usize, base: Instant) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| CachePadded(Mutex::new(Shard::new())))
            .collect();
        let ring = (0..config.slots).map(|_| Slot::new()).collect();
        let slot_nanos = u64::try_from(config.slot_len().as_nanos()).unwrap_or(u64::MAX);
        Self {
            config,
            slot_nanos,
            base,
            shards,
            ring: Mutex::new(ring),
        }
    }

    /// The window's shape.
    #[must_use]
    pub fn config(&self) -> WindowConfig {
        self.config
    }

    fn since_base(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.base);
        // Whole seconds and nanoseconds separately: no u128 arithmetic on the hot path.
        since
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(since.subsec_nanos()))
    }

    fn epoch(&self, at: Instant) -> u64 {
        self.since_base(at) / self.slot_nanos
    }

    /// When slot `epoch` ends; `None` past what an `Instant` holds (centuries away: each record
    /// then finds its slot the long way).
    fn slot_end(&self, epoch: u64) -> Option<Instant> {
        let nanos = (epoch + 1).saturating_mul(self.slot_nanos);
        self.base.checked_add(Duration::from_nanos(nanos))
    }

    /// Records one duration that ended at `at`.
    ///
    /// Takes only the calling thread's shard lock, which no other thread holds unless there are
    /// more recording threads than shards or a snapshot is reading the shard (and, when no
    /// snapshot ran since the shard's previous slot change, the ring's lock: see the
    /// [crate docs](crate)). Values above [`MAX_TRACKABLE`] are clamped to it.
    pub fn record(&self, value: Duration, at: Instant) {
        self.record_in(thread_shard(self.shards.len()), value, at);
    }

    /// Records into shard `shard` (taken modulo the shard count).
    fn record_in(&self, shard: usize, value: Duration, at: Instant) {
        let nanos = clamped_nanos(value);
        let shard = &self.shards[shard % self.shards.len()].0;
        let mut s = lock(shard);
        if s.ends_at.is_none_or(|end| at >= end) {
            // Once per slot. A record from before the shard's slot (a request that ended a
            // moment earlier on another thread) stays in the current slot.
            s = self.advance(shard, s, at);
        }
        // `record` (not `saturating_record`, which clamps to the *current* range instead of
        // growing it). It cannot fail: auto-resize is on and the value is clamped to an hour.
        let _ = s.current.hist.record(nanos);
    }

    /// Records durations that ended at the paired instants, visiting the calling thread's shard
    /// once: for a recorder that keeps values a while before it hands them over, late and in
    /// any order.
    ///
    /// Unlike [`record`](Self::record), which keeps a value from before the shard's current
    /// slot in that slot, each value goes to the slot of its own instant: the shard's, its
    /// finished one, or the ring's (under the ring's lock). A value older than any window to
    /// come is dropped.
    pub fn record_batch(&self, values: impl IntoIterator<Item = (Duration, Instant)>) {
        let shard = &self.shards[thread_shard(self.shards.len()) % self.shards.len()].0;
        let mut s = lock(shard);
        let mut starts_at = self.slot_start(s.current.epoch);
        for (value, at) in values {
            let nanos = clamped_nanos(value);
            if s.ends_at.is_none_or(|end| at >= end) {
                s = self.advance(shard, s, at);
                starts_at = self.slot_start(s.current.epoch);
            }
            if starts_at.is_none_or(|start| at >= start) {
                let _ = s.current.hist.record(nanos);
                continue;
            }
            let epoch = self.epoch(at).min(s.current.epoch.saturating_sub(1));
            if epoch + u64::from(self.config.slots) <= s.current.epoch {
                continue;
            }
            if s.spare.hist.is_empty() || s.spare.epoch == epoch {
                s.spare.epoch = epoch;
                let _ = s.spare.hist.record(nanos);
            } else {
                s = self.record_late(shard, s, epoch, nanos);
            }
        }
    }

    /// Once per slot change of a shard: starts the slot of `at` when it is later than the
    /// shard's, and notes when the shard's slot ends.
    #[cold]
    #[inline(never)]
    fn advance<'a>(
        &'a self,
        shard: &'a Mutex<Shard>,
        mut s: MutexGuard<'a, Shard>,
        at: Instant,
    ) -> MutexGuard<'a, Shard> {
        let epoch = self.epoch(at);
        if epoch > s.current.epoch {
            if s.needs_fold() {
                s = self.fold_spare(shard, s);
            }
            // Another thread of this shard may have started the slot while `fold_spare` let the
            // shard go.
            if epoch > s.current.epoch {
                s.start_slot(epoch);
            }
        }
        s.ends_at = self.slot_end(s.current.epoch);
        s
    }

    /// A late value for an earlier slot than the shard's two: into the ring's slot `epoch`,
    /// unless the ring has moved past it (then the value is older than the window). Takes the
    /// ring's lock, letting the shard go first (the lock order).
    #[cold]
    #[inline(never)]
    fn record_late<'a>(
        &'a self,
        shard: &'a Mutex<Shard>,
        s: MutexGuard<'a, Shard>,
        epoch: u64,
        nanos: u64,
    ) -> MutexGuard<'a, Shard> {
        drop(s);
        {
            let mut ring = lock(&self.ring);
            let len = ring.len() as u64;
            let target = &mut ring[(epoch % len) as usize];
            if target.epoch < epoch {
                target.hist.reset();
                target.epoch = epoch;
            }
            if target.epoch == epoch {
                let _ = target.hist.record(nanos);
            }
        }
        lock(shard)
    }

    /// When slot `epoch` starts; `None` for the first slot (which also holds what came before
    /// `base`) and past what an `Instant` holds.
    fn slot_start(&self, epoch: u64) -> Option<Instant> {
        if epoch == 0 {
            return None;
        }
        let nanos = epoch.saturating_mul(self.slot_nanos);
        self.base.checked_add(Duration::from_nanos(nanos))
    }

    /// The fallback when a shard starts a new slot while its spare still holds a slot no
    /// snapshot has folded: the recorder folds it into the ring itself, and returns with the
    /// spare empty.
    #[cold]
    fn fold_spare<'a>(
        &'a self,
        shard: &'a Mutex<Shard>,
        s: MutexGuard<'a, Shard>,
    ) -> MutexGuard<'a, Shard> {
        // Snapshots hold the ring while they take each shard: take the locks in that order too,
        // or a snapshot waiting for this shard and this thread waiting for the ring would
        // deadlock.
        drop(s);
        let mut ring = lock(&self.ring);
        let mut s = lock(shard);
        // A snapshot may have folded the spare meanwhile (then this does nothing).
        fold(&mut ring, &mut s.spare);
        s
    }

    /// A snapshot of the window that ends at `now`.
    ///
    /// Folds the shards' finished slots into the ring on the way, so that recorders do not have
    /// to (see the [crate docs](crate)).
    #[must_use]
    pub fn snapshot_at(&self, now: Instant) -> Snapshot {
        let current = self.epoch(now);
        let oldest = current.saturating_sub(u64::from(self.config.slots) - 1);
        let in_window = |epoch: u64| epoch >= oldest && epoch <= current;
        // The ring's lock is held throughout: values move into the ring only under it, so none
        // can move between reading the ring and reading its shard, and each value is counted
        // once, from the ring or from the shard that holds it when that shard is read.
        // Recorders wait for it only in the `fold_spare` fallback.
        let mut ring = lock(&self.ring);
        let shard_max = self
            .shards
            .iter()
            .map(|s| {
                let mut s = lock(&s.0);
                fold(&mut ring, &mut s.spare);
                if in_window(s.current.epoch) {
                    s.current.hist.max()
                } else {
                    0
                }
            })
            .max()
            .unwrap_or(0);
        // Sized once for the largest value in the window, instead of growing bucket by bucket
        // as values are added: one allocation per snapshot, of the same size from one snapshot
        // to the next, so the allocator reuses it (a chain of growing reallocations on the
        // exporting threads made resident memory creep).
        let max = ring
            .iter()
            .filter(|s| in_window(s.epoch))
            .map(|s| s.hist.max())
            .fold(shard_max, u64::max);
        let mut out = Snapshot::sized_for(max);
        for slot in ring.iter().filter(|s| in_window(s.epoch)) {
            widen(&mut out.hist, &slot.hist);
        }
        for shard in self.shards.iter() {
            let s = lock(&shard.0);
            // A recorder may have started a new slot since the fold above: its finished slot
            // waits in the spare, not yet in the ring.
            for slot in [&s.current, &s.spare] {
                if in_window(slot.epoch) {
                    widen(&mut out.hist, &slot.hist);
                }
            }
        }
        out
    }

    /// A snapshot of the window that ends now.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_at(Instant::now())
    }
}

/// Moves a shard's finished slot into the ring and empties it (keeping its allocation for the
/// next swap). A slot the ring has already moved past is older than the window: dropped.
fn fold(ring: &mut [Slot], done: &mut Slot) {
    if done.hist.is_empty() {
        return;
    }
    let target = &mut ring[(done.epoch % ring.len() as u64) as usize];
    if target.epoch < done.epoch {
        target.hist.reset();
        target.epoch = done.epoch;
    }
    if target.epoch == done.epoch {
        // Both histograms auto-resize and share the precision, so `add` cannot fail; if it
        // ever did, losing one merge is better than panicking in a request thread.
        let _ = target.hist.add(&done.hist);
    }
    done.hist.reset();
}

/// Adds a recording histogram (`u32` counts, half the memory) into a snapshot (`u64` counts).
fn widen(into: &mut Histogram<u64>, from: &Histogram<u32>) {
    if from.is_empty() {
        return;
    }
    for v in from.iter_recorded() {
        let _ = into.record_n(v.value_iterated_to(), u64::from(v.count_at_value()));
    }
}

/// Percentiles of a window at one moment: count, min, max, mean and any quantile.
///
/// Snapshots [`merge`](Snapshot::merge), for example across operations or instances.
#[derive(Clone)]
pub struct Snapshot {
    hist: Histogram<u64>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("count", &self.count())
            .field("p50", &self.p50())
            .field("p95", &self.p95())
            .field("p99", &self.p99())
            .field("max", &self.max())
            .finish()
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Self::empty()
    }
}

fn nanos(v: u64) -> Duration {
    Duration::from_nanos(v)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(rest: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, tail) = rest.split_first()?;
        *rest = tail;
        v |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl Snapshot {
    /// A snapshot with no values.
    #[must_use]
    pub fn empty() -> Self {
        Self {
            hist: new_histogram(),
        }
    }

    /// An empty snapshot whose buckets already reach `max` nanoseconds.
    fn sized_for(max: u64) -> Self {
        let hist = Histogram::new_with_max(max.clamp(2, MAX_TRACKABLE_NANOS), SIGNIFICANT_DIGITS)
            .map(|mut h| {
                h.auto(true);
                h
            })
            .unwrap_or_else(|_| new_histogram());
        Self { hist }
    }

    /// The snapshot as bytes, for another process to read back with
    /// [`from_bytes`](Self::from_bytes) and [`merge`](Self::merge) (the replicas of a fleet
    /// share their windows so): for each recorded bucket, its highest equivalent value (as the
    /// difference from the previous bucket's) and its count, as LEB128 varints. A window's
    /// values cluster, so this is small, a few hundred bytes for a typical latency window. Read
    /// back, every bucket holds the same count, so every quantile, the count, minimum, maximum
    /// and mean are exactly the original's.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut last = 0u64;
        for v in self.hist.iter_recorded() {
            let value = v.value_iterated_to();
            put_varint(&mut out, value - last);
            put_varint(&mut out, v.count_at_value());
            last = value;
        }
        out
    }

    /// A snapshot read from [`to_bytes`](Self::to_bytes); `None` when `bytes` are not that
    /// (truncated, or values out of range).
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut s = Self::empty();
        let mut rest = bytes;
        let mut value = 0u64;
        while !rest.is_empty() {
            value = value.checked_add(take_varint(&mut rest)?)?;
            let count = take_varint(&mut rest)?;
            if value > MAX_TRACKABLE_NANOS {
                return None;
            }
            s.hist.record_n(value, count).ok()?;
        }
        Some(s)
    }

    /// Appends [`to_bytes`](Self::to_bytes) to `out`, preceded by its length as a LEB128
    /// varint, so that several snapshots can follow each other in one value.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        let b = self.to_bytes();
        put_varint(out, b.len() as u64);
        out.extend_from_slice(&b);
    }

    /// Reads one snapshot written by [`append_to`](Self::append_to) from the front of `rest`,
    /// and moves `rest` past it; `None` when the bytes are not that.
    #[must_use]
    pub fn read_from(rest: &mut &[u8]) -> Option<Self> {
        let n = usize::try_from(take_varint(rest)?).ok()?;
        if n > rest.len() {
            return None;
        }
        let (w, tail) = rest.split_at(n);
        *rest = tail;
        Self::from_bytes(w)
    }

    /// Adds every value of `other` into this snapshot.
    pub fn merge(&mut self, other: &Self) {
        // Same precision, both auto-resizing: cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// How many values the window holds.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// True when the window holds no value.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The smallest value, `None` when empty.
    #[must_use]
    pub fn min(&self) -> Option<Duration> {
        (!self.is_empty()).then(|| nanos(self.hist.min()))
    }

    /// The largest value (to 3 significant digits), `None` when empty.
    #[must_use]
    pub fn max(&self) -> Option<Duration> {
        (!self.is_empty()).then(|| nanos(self.hist.max()))
    }

    /// The mean, `None` when empty.
    #[must_use]
    pub fn mean(&self) -> Option<Duration> {
        (!self.is_empty()).then(|| Duration::from_secs_f64(self.hist.mean() / 1e9))
    }

    /// The value at quantile `q` (0.0 to 1.0, clamped), `None` when empty.
    ///
    /// It is the smallest recorded value `v` such that at least `q` of all values are `≤ v`
    /// (the "nearest rank" definition), reported as the highest value equivalent to it at 3
    /// significant digits, so it is never below the true quantile and at most 0.1 % above it.
    #[must_use]
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.is_empty() {
            return None;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        Some(nanos(self.hist.value_at_quantile(q)))
    }

    /// The median.
    #[must_use]
    pub fn p50(&self) -> Option<Duration> {
        self.quantile(0.50)
    }

    /// The 90th percentile.
    #[must_use]
    pub fn p90(&self) -> Option<Duration> {
        self.quantile(0.90)
    }

    /// The 95th percentile.
    #[must_use]
    pub fn p95(&self) -> Option<Duration> {
        self.quantile(0.95)
    }

    /// The 99th percentile.
    #[must_use]
    pub fn p99(&self) -> Option<Duration> {
        self.quantile(0.99)
    }
}

#[cfg(test)]
mod tests;
