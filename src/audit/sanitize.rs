//! Sanitising the text a record keeps, and the audit key that turns user ids into keyed
//! hashes.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Longest user agent kept, in bytes; longer ones are cut (at a character boundary) and end
/// in `…`.
pub const MAX_USER_AGENT: usize = 256;
/// Longest free-form text (a reason, a token type, a user id) kept, in bytes.
pub const MAX_TEXT: usize = 128;

/// `s` cut to at most `max` bytes at a character boundary (ending in `…` when cut), with
/// control characters, invisible formatting characters (bidi controls, zero-width characters),
/// backslashes and quotes escaped (`\n`, `\u{1b}`, …), so a hostile value cannot forge a log
/// line or a field, or hide text, in any output.
#[must_use]
pub fn sanitize(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 4);
    for c in s.chars() {
        let before = out.len();
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(
                    c,
                    '\u{2028}'
                        | '\u{2029}'
                        | '\u{200b}'..='\u{200f}'
                        | '\u{202a}'..='\u{202e}'
                        | '\u{2066}'..='\u{2069}'
                        | '\u{061c}'
                        | '\u{feff}'
                ) =>
            {
                out.push_str(&c.escape_unicode().to_string());
            }
            c => out.push(c),
        }
        if out.len() > max {
            // Cut to leave room for the ellipsis: the result never exceeds `max` bytes.
            out.truncate(before);
            while out.len() + '…'.len_utf8() > max {
                out.pop();
            }
            out.push('…');
            break;
        }
    }
    out
}

/// Turns user ids into keyed hashes when a key is set.
#[derive(Clone)]
pub(super) struct UserIdKey(pub(super) Option<Arc<[u8]>>);

impl UserIdKey {
    pub(super) fn apply(&self, user_id: &str) -> String {
        match &self.0 {
            None => sanitize(user_id, MAX_TEXT),
            Some(key) => {
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                    .expect("HMAC takes keys of any length");
                mac.update(user_id.as_bytes());
                format!("hmac-sha256:{}", hex(&mac.finalize().into_bytes()))
            }
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_escapes_and_bounds() {
        assert_eq!(sanitize("curl/8", 256), "curl/8");
        assert_eq!(
            sanitize("evil\nINFO forged line\r\t\u{1b}[31m\"x\"\\", 256),
            "evil\\nINFO forged line\\r\\t\\u{1b}[31m\\\"x\\\"\\\\"
        );
        let long = "é".repeat(300);
        let s = sanitize(&long, 256);
        assert!(s.len() <= 256, "{}", s.len());
        assert!(s.ends_with('…'));
        assert!(s.is_char_boundary(s.len()));
        assert_eq!(sanitize("a\u{2028}b", 64), "a\\u{2028}b");
        assert_eq!(sanitize("x\u{2067}y\u{feff}", 64), "x\\u{2067}y\\u{feff}");
    }

    #[test]
    fn keyed_user_ids() {
        let k = UserIdKey(Some(Arc::from(&b"secret"[..])));
        let a = k.apply("user-42");
        assert!(a.starts_with("hmac-sha256:"), "{a}");
        assert_eq!(a.len(), "hmac-sha256:".len() + 64);
        assert_eq!(a, k.apply("user-42"), "stable");
        assert_ne!(a, k.apply("user-43"));
        let other = UserIdKey(Some(Arc::from(&b"other"[..])));
        assert_ne!(a, other.apply("user-42"), "depends on the key");
        assert_eq!(UserIdKey(None).apply("user-42"), "user-42");
    }
}
