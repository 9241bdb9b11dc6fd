//! [`visible_text`]: a header value as text, when it is visible ASCII, checked eight bytes at a
//! time.

use http::HeaderValue;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The value as `&str` when every byte is visible ASCII or a tab: what
/// [`HeaderValue::to_str`] accepts, checked a word at a time instead of a byte at a time. A
/// browser's `User-Agent` is 100 to 200 bytes; `to_str` costs about three instructions per
/// byte, and every auth request carries one.
#[inline]
pub(crate) fn visible_text(v: &HeaderValue) -> Option<&str> {
    let b = v.as_bytes();
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_le_bytes(w.try_into().expect("eight bytes"));
        // A byte of 0x7f or more: adding one sets its high bit (or it was set). No carry
        // crosses into the next byte unless this byte was 0xff, which is caught already.
        if (x.wrapping_add(ONES) | x) & HIGHS != 0 {
            return None;
        }
        // Every byte is below 0x80 here: one below 0x20 borrows into its own high bit. A tab
        // is allowed, so such a word is checked byte by byte.
        if x.wrapping_sub(ONES * 0x20) & !x & HIGHS != 0 && !w.iter().copied().all(visible) {
            return None;
        }
    }
    if !words.remainder().iter().copied().all(visible) {
        return None;
    }
    // All ASCII: the UTF-8 check is the standard library's word-at-a-time ASCII path.
    std::str::from_utf8(b).ok()
}

/// A visible ASCII byte or a tab, as `http` defines it for `HeaderValue::to_str`.
#[inline]
fn visible(b: u8) -> bool {
    (32..127).contains(&b) || b == b'\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Agrees with `to_str` on every single byte, in every position of a word and of the tail,
    /// and on real user agents.
    #[test]
    fn agrees_with_to_str() {
        let base = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36";
        for len in [0, 1, 7, 8, 9, 16, 23, base.len()] {
            for pos in 0..len.max(1) {
                for byte in 0..=255u8 {
                    let mut v = base[..len].to_vec();
                    if len > 0 {
                        v[pos] = byte;
                    }
                    let Ok(h) = HeaderValue::from_bytes(&v) else {
                        continue;
                    };
                    assert_eq!(visible_text(&h), h.to_str().ok(), "{v:?}");
                }
            }
        }
        // Valid UTF-8 that is not ASCII, in every position: not text either.
        for pos in 0..base.len() - 1 {
            let mut v = base.to_vec();
            v[pos..pos + 2].copy_from_slice("é".as_bytes());
            let h = HeaderValue::from_bytes(&v).unwrap();
            assert_eq!(visible_text(&h), None, "{pos}");
            assert_eq!(h.to_str().ok(), None);
        }
        let tab = HeaderValue::from_static("curl/8.5\tx");
        assert_eq!(visible_text(&tab), Some("curl/8.5\tx"));
    }
}
