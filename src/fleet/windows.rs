//! An instance's latency windows as one Redis value: per operation, its
//! [`Snapshot::append_to`].

use authwatch_hdr::Snapshot;
use authwatch_layer::AuthOp;

/// `windows` (one per operation) as one value.
pub(crate) fn encode(windows: &[Snapshot; AuthOp::COUNT]) -> Vec<u8> {
    let mut out = Vec::new();
    for w in windows {
        w.append_to(&mut out);
    }
    out
}

/// The windows of [`encode`], or `None` when `bytes` are not that (another version's, or
/// garbage): such a value is ignored.
pub(crate) fn decode(bytes: &[u8]) -> Option<Vec<Snapshot>> {
    let mut rest = bytes;
    let out: Option<Vec<Snapshot>> = (0..AuthOp::COUNT)
        .map(|_| Snapshot::read_from(&mut rest))
        .collect();
    out.filter(|_| rest.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use authwatch_hdr::{WindowConfig, WindowedHistogram};
    use std::time::{Duration, Instant};

    #[test]
    fn windows_round_trip_and_garbage_is_refused() {
        let now = Instant::now();
        let windows: [Snapshot; AuthOp::COUNT] = std::array::from_fn(|i| {
            let h = WindowedHistogram::new(WindowConfig::default());
            for v in 0..(i as u64 * 300) {
                h.record(Duration::from_micros(v * 7 + 1), now);
            }
            h.snapshot_at(now)
        });
        let bytes = encode(&windows);
        let back = decode(&bytes).unwrap();
        for (a, b) in windows.iter().zip(&back) {
            assert_eq!((a.count(), a.p95()), (b.count(), b.p95()));
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode(&[bytes.as_slice(), &[0]].concat()).is_none());
        assert!(decode(b"garbage").is_none());
    }
}
