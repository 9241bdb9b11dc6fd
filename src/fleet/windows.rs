//! An instance's latency windows as one Redis value: per operation, the length of its
//! [`Snapshot::to_bytes`] as a LEB128 varint, then the bytes.

use authwatch_hdr::Snapshot;
use authwatch_layer::AuthOp;

/// `windows` (one per operation) as one value.
pub(crate) fn encode(windows: &[Snapshot; AuthOp::COUNT]) -> Vec<u8> {
    let mut out = Vec::new();
    for w in windows {
        let b = w.to_bytes();
        let mut n = b.len() as u64;
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out.extend_from_slice(&b);
    }
    out
}

/// The windows of [`encode`], or `None` when `bytes` are not that (another version's, or
/// garbage): such a value is ignored.
pub(crate) fn decode(bytes: &[u8]) -> Option<Vec<Snapshot>> {
    let mut rest = bytes;
    let mut out = Vec::with_capacity(AuthOp::COUNT);
    for _ in 0..AuthOp::COUNT {
        let mut n = 0usize;
        let mut shift = 0;
        loop {
            let (&b, tail) = rest.split_first()?;
            rest = tail;
            n |= usize::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 28 {
                return None;
            }
        }
        if n > rest.len() {
            return None;
        }
        let (w, tail) = rest.split_at(n);
        out.push(Snapshot::from_bytes(w)?);
        rest = tail;
    }
    rest.is_empty().then_some(out)
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
