//! authwatch's clock: the CPU's timestamp counter where it is reliable, mapped onto
//! [`std::time::Instant`].
//!
//! Every auth request reads the clock twice. `Instant::now()` is a `clock_gettime` call
//! (23 ns on the development machine); quanta reads the timestamp counter (10 ns) when the CPU
//! has an invariant one and falls back to the OS clock otherwise. Latencies are differences of
//! two such reads; the moments events end are mapped onto `Instant` through one anchor taken at
//! the first use, so that windows and snapshots keep using the standard type.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One reading of the clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tick(quanta::Instant);

fn anchor() -> &'static (Instant, quanta::Instant) {
    static ANCHOR: OnceLock<(Instant, quanta::Instant)> = OnceLock::new();
    ANCHOR.get_or_init(|| (Instant::now(), quanta::Instant::now()))
}

impl Tick {
    #[inline]
    pub(crate) fn now() -> Self {
        Self(quanta::Instant::now())
    }

    /// The time from `earlier` to this tick (zero if `earlier` is later).
    #[inline]
    pub(crate) fn since(self, earlier: Self) -> Duration {
        self.0.saturating_duration_since(earlier.0)
    }

    /// This tick as an `Instant` on the clock [`now`] reads.
    #[inline]
    pub(crate) fn instant(self) -> Instant {
        let (std, tsc) = *anchor();
        std + self.0.saturating_duration_since(tsc)
    }
}

/// Now, on the clock that [`AuthEvent::finished_at`](crate::AuthEvent::finished_at) is
/// measured on. Use it (not `Instant::now()`) to ask windows about "now": the two clocks agree
/// to within the timestamp counter's calibration (parts per million), and this one agrees with
/// the events exactly.
#[must_use]
pub fn now() -> Instant {
    Tick::now().instant()
}

/// Takes the anchor now, so the first request does not pay for it.
pub(crate) fn init() {
    let _ = anchor();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_ordered_and_map_near_std() {
        init();
        let a = Tick::now();
        std::thread::sleep(Duration::from_millis(20));
        let b = Tick::now();
        let d = b.since(a);
        assert!(d >= Duration::from_millis(20), "{d:?}");
        assert_eq!(a.since(b), Duration::ZERO);
        assert!(b.instant() >= a.instant());
        // The mapped clock and the OS clock read the same time, to well within a millisecond
        // over a test's life. The mapped reading is bracketed by two OS readings, so a thread
        // descheduled between two reads (CI once saw 200 ms on the loaded 2-core machine) is
        // not counted as skew: the mapped time must fall between them, give or take 50 ms.
        let before = Instant::now();
        let mapped = now();
        let after = Instant::now();
        let early = before.saturating_duration_since(mapped);
        let late = mapped.saturating_duration_since(after);
        assert!(
            early < Duration::from_millis(50) && late < Duration::from_millis(50),
            "mapped {early:?} before the first OS reading, {late:?} after the second"
        );
    }
}
