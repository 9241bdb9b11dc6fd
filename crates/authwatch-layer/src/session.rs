//! Session keys: a keyed hash of the credential a request presents, for distinct-session
//! estimates. Nothing of the token is kept.

use std::hash::{BuildHasher, Hasher};

use http::{header, HeaderMap};

/// The session cookies recognised by default: Better Auth's, and the usual server-side session
/// id names. Generic names such as `session` are left out on purpose: they are often
/// client-side cookie stores, re-signed on every response, where each request would look like a
/// new session.
pub const DEFAULT_SESSION_COOKIES: &[&str] = &[
    "better-auth.session_token",
    "__Secure-better-auth.session_token",
    "sessionid",
    "session_id",
    "sid",
    "connect.sid",
    "JSESSIONID",
];

/// How the layer finds a request's session: the cookie names, and the per-process key.
///
/// The hash is foldhash's quality variant under a random per-process seed, not SipHash: the key
/// only feeds a distinct-count estimate in memory (it is never exported, and a 64-bit hash of a
/// token cannot give the token back), so it needs spread, not a cryptographic PRF; SipHash cost
/// ~150 instructions and ~30 lines of code on every request that presents a token.
#[derive(Debug, Clone)]
pub(crate) struct SessionKeys {
    pub(crate) cookies: Box<[Box<str>]>,
    pub(crate) key: foldhash::quality::RandomState,
}

impl SessionKeys {
    pub(crate) fn new(cookies: &[&str]) -> Self {
        Self {
            cookies: cookies.iter().map(|c| (*c).into()).collect(),
            key: foldhash::quality::RandomState::default(),
        }
    }

    fn hash(&self, bytes: &[u8]) -> u64 {
        let mut h = self.key.build_hasher();
        h.write(bytes);
        h.finish()
    }

    /// The key of the bearer token, else of the first recognised session cookie.
    pub(crate) fn of(&self, headers: &HeaderMap) -> Option<u64> {
        if let Some(v) = headers.get(header::AUTHORIZATION) {
            let b = v.as_bytes();
            if b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ") {
                let t = b[7..].trim_ascii();
                if !t.is_empty() {
                    return Some(self.hash(t));
                }
            }
        }
        if self.cookies.is_empty() {
            return None;
        }
        for v in headers.get_all(header::COOKIE) {
            for pair in v.as_bytes().split(|&c| c == b';') {
                let pair = pair.trim_ascii();
                let Some(eq) = pair.iter().position(|&c| c == b'=') else {
                    continue;
                };
                let (name, value) = (&pair[..eq], pair[eq + 1..].trim_ascii());
                if !value.is_empty() && self.cookies.iter().any(|c| c.as_bytes() == name) {
                    return Some(self.hash(value));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, http::HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn bearer_tokens_and_session_cookies_have_keys() {
        let k = SessionKeys::new(DEFAULT_SESSION_COOKIES);
        let a = k.of(&h(&[("authorization", "Bearer abc")])).unwrap();
        assert_eq!(k.of(&h(&[("authorization", "bearer abc ")])), Some(a));
        assert_ne!(k.of(&h(&[("authorization", "Bearer abd")])), Some(a));
        let c = k
            .of(&h(&[(
                "cookie",
                "theme=dark; better-auth.session_token=xyz.sig",
            )]))
            .unwrap();
        assert_eq!(
            k.of(&h(&[("cookie", "better-auth.session_token=xyz.sig")])),
            Some(c)
        );
        assert_eq!(k.of(&h(&[("cookie", "theme=dark")])), None);
        assert_eq!(k.of(&h(&[("authorization", "Basic abc")])), None);
        assert_eq!(k.of(&h(&[])), None);
        // Another process (another key) gives another value.
        let other = SessionKeys::new(DEFAULT_SESSION_COOKIES);
        assert_ne!(other.of(&h(&[("authorization", "Bearer abc")])), Some(a));
    }
}
