//! The retry policy: which failures are tried again, the waits between tries, and the loop that
//! tries one batch until it goes through, fails for good or runs out of time.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::transport::{Failed, Transport, Tried};
use crate::log_encode::{LogBatch, RequestFrame};

/// The first wait before a batch the collector did not take is tried again; each later wait
/// doubles, up to [`RETRY_MAX_WAIT`].
const RETRY_FIRST_WAIT: Duration = Duration::from_millis(200);
/// The longest wait between two tries of one batch.
const RETRY_MAX_WAIT: Duration = Duration::from_secs(5);
/// How often a wait between two tries looks for a shutdown.
const SLICE: Duration = Duration::from_millis(50);
/// How long one batch is tried for, from its first try, unless
/// [`OtlpOptions::log_retry`](crate::OtlpOptions::log_retry) says otherwise: long enough for a
/// collector's restart.
pub(super) const RETRY_BUDGET: Duration = Duration::from_secs(30);

/// Exports `batch`, trying it again while the failure is retryable (see
/// [`LogExport`](crate::LogExport)), the batch is back from the transport, and `budget` lasts.
/// A shutdown ends the retries: a batch waiting for its next try gets it at once, and no more.
pub(super) fn export_with_retries(
    transport: &mut Transport,
    frame: &Arc<RequestFrame>,
    batch: LogBatch,
    stopping: &OnceLock<Instant>,
    budget: Duration,
) -> Tried {
    let first = Instant::now();
    let mut batch = batch;
    let mut tries = 0;
    loop {
        tries += 1;
        // A panicking transport loses this batch (counted), not the thread.
        let (sent, back) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            transport.export(frame, batch)
        }))
        .unwrap_or_else(|_| (Err(Failed::once("the transport panicked", false)), None));
        let mut failed = match sent {
            Err(f) => f,
            ok => return (ok, back),
        };
        failed.tries = tries;
        // Only a batch the transport gave back can go again.
        let back = match back {
            Some(b) if failed.retry => b,
            other => return (Err(failed), other),
        };
        let wait = retry_wait(tries, jitter());
        // Saturating: a budget of `Duration::MAX` means for as long as it takes.
        if stopping.get().is_some() || first.elapsed().saturating_add(wait) >= budget {
            return (Err(failed), Some(back));
        }
        // A shutdown cuts the wait short: the batch gets one more try at once.
        let wake = Instant::now() + wait;
        while Instant::now() < wake && stopping.get().is_none() {
            std::thread::sleep(wake.saturating_duration_since(Instant::now()).min(SLICE));
        }
        batch = back;
    }
}

/// The wait after the `tries`-th failed try: 0.2 s doubling per try up to 5 s, scaled by
/// `jitter` (in [0.5, 1]) so that services restarted together do not retry in step.
fn retry_wait(tries: u32, jitter: f64) -> Duration {
    let doubled = RETRY_FIRST_WAIT.saturating_mul(1 << tries.saturating_sub(1).min(16));
    doubled.min(RETRY_MAX_WAIT).mul_f64(jitter.clamp(0.5, 1.0))
}

/// A number in [0.5, 1), from the standard library's randomly keyed hasher.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(0);
    #[allow(clippy::cast_precision_loss)]
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    0.5 + unit / 2.0
}

/// The HTTP answers retried: of those the OTLP specification says to retry (429, 502, 503,
/// 504), the ones that say the collector did not take the batch. A 504 is a gateway that
/// timed out waiting for the collector, which may have taken it: not retried, as a timeout
/// of our own is not.
#[cfg(any(feature = "http", test))]
pub(super) fn retryable_status(s: http::StatusCode) -> bool {
    matches!(s.as_u16(), 429 | 502 | 503)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "grpc")]
    use crate::log_export::grpc;

    #[test]
    fn retry_waits_double_to_five_seconds_with_jitter() {
        let ms = |t, j| retry_wait(t, j).as_millis();
        assert_eq!(
            (1..=7).map(|t| ms(t, 1.0)).collect::<Vec<_>>(),
            [200, 400, 800, 1600, 3200, 5000, 5000]
        );
        assert_eq!(ms(1, 0.5), 100);
        assert_eq!(ms(40, 0.75), 3750);
        // Out-of-range jitter is clamped.
        assert_eq!((ms(2, 0.0), ms(2, 9.0)), (200, 400));
        let j: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(j.iter().all(|j| (0.5..1.0).contains(j)), "{j:?}");
        assert!(j.iter().any(|x| *x != j[0]), "the jitter varies");
    }

    #[test]
    fn only_failures_that_cannot_have_delivered_are_retried() {
        for code in [429, 502, 503] {
            assert!(
                retryable_status(http::StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 413, 500, 504] {
            assert!(
                !retryable_status(http::StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
        #[cfg(feature = "grpc")]
        {
            assert!(grpc::status_failed(&tonic::Status::unavailable("down")).retry);
            for s in [
                tonic::Status::deadline_exceeded("slow"),
                tonic::Status::cancelled("timeout"),
                tonic::Status::invalid_argument("bad"),
                tonic::Status::unauthenticated("key"),
                tonic::Status::resource_exhausted("no RetryInfo"),
            ] {
                assert!(!grpc::status_failed(&s).retry, "{s:?}");
            }
        }
    }
}
