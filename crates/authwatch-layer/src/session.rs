//! Session keys: a keyed hash of the credential a request presents, for distinct-session
//! estimates. Nothing of the token is kept.

use std::hash::{BuildHasher, Hasher};

use http::{header, HeaderMap, HeaderValue};

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
    #[cfg(test)]
    pub(crate) fn of(&self, headers: &HeaderMap) -> Option<u64> {
        self.of_picked(&Picked::from(headers), headers)
    }

    /// The same, from the headers [`Picked`] out of `headers`.
    pub(crate) fn of_picked(&self, picked: &Picked<'_>, headers: &HeaderMap) -> Option<u64> {
        if let Some(v) = picked.authorization {
            let b = v.as_bytes();
            if b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ") {
                let t = b[7..].trim_ascii();
                if !t.is_empty() {
                    return Some(self.hash(t));
                }
            }
        }
        if self.cookies.is_empty() || !picked.cookie {
            return None;
        }
        self.of_cookies(headers)
    }

    #[cold]
    fn of_cookies(&self, headers: &HeaderMap) -> Option<u64> {
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

/// Requests with more header lines than this are read with lookups by name instead of
/// [`Picked`]'s pass (each lookup costs about as much as a pass over 12 lines).
const PICK_UP_TO: usize = 24;

/// The request headers the layer reads (the user agent, the credential, whether a cookie is
/// there), found in one pass over the header lines: a lookup by name hashes the name and
/// probes the map, about 100 instructions each, where a pass costs a few per line, and a
/// request carries a handful. The first `Authorization` and `User-Agent` lines, as
/// [`HeaderMap::get`] returns them.
#[derive(Default)]
pub(crate) struct Picked<'a> {
    pub(crate) user_agent: Option<&'a HeaderValue>,
    pub(crate) authorization: Option<&'a HeaderValue>,
    pub(crate) cookie: bool,
}

impl<'a> From<&'a HeaderMap> for Picked<'a> {
    #[inline]
    fn from(headers: &'a HeaderMap) -> Self {
        if headers.len() > PICK_UP_TO {
            return Self::by_name(headers);
        }
        let mut p = Self::default();
        for (name, value) in headers {
            if *name == header::USER_AGENT {
                p.user_agent.get_or_insert(value);
            } else if *name == header::AUTHORIZATION {
                p.authorization.get_or_insert(value);
            } else if *name == header::COOKIE {
                p.cookie = true;
            }
        }
        p
    }
}

impl<'a> Picked<'a> {
    #[cold]
    fn by_name(headers: &'a HeaderMap) -> Self {
        Self {
            user_agent: headers.get(header::USER_AGENT),
            authorization: headers.get(header::AUTHORIZATION),
            cookie: headers.contains_key(header::COOKIE),
        }
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
        // Past the pass's limit, lookups by name give the same answers.
        let mut many = h(&[("authorization", "Bearer abc"), ("cookie", "theme=dark")]);
        for i in 0..PICK_UP_TO {
            many.append(
                http::HeaderName::try_from(format!("x-{i}")).unwrap(),
                http::HeaderValue::from_static("v"),
            );
        }
        assert_eq!(k.of(&many), Some(a));
        // Another process (another key) gives another value.
        let other = SessionKeys::new(DEFAULT_SESSION_COOKIES);
        assert_ne!(other.of(&h(&[("authorization", "Bearer abc")])), Some(a));
    }

    /// The pass picks what lookups by name pick: the first line of a repeated header, any
    /// cookie, whatever the order and the case of the names; and nothing else.
    #[test]
    fn one_pass_picks_what_lookups_pick() {
        let cases: [&[(&str, &str)]; 5] = [
            &[],
            &[("host", "a"), ("content-type", "x")],
            &[
                ("Cookie", "a=1"),
                ("user-agent", "curl/8"),
                ("authorization", "Bearer one"),
                ("authorization", "Bearer two"),
                ("User-Agent", "second"),
            ],
            &[
                ("x-user-agent", "no"),
                ("authorizations", "no"),
                ("cookies", "no"),
            ],
            &[("cookie", "a=1"), ("cookie", "b=2")],
        ];
        for pairs in cases {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    http::HeaderName::try_from(*k).unwrap(),
                    HeaderValue::from_static(v),
                );
            }
            let (fast, slow) = (Picked::from(&m), Picked::by_name(&m));
            assert_eq!(fast.user_agent, slow.user_agent, "{pairs:?}");
            assert_eq!(fast.authorization, slow.authorization, "{pairs:?}");
            assert_eq!(fast.cookie, slow.cookie, "{pairs:?}");
        }
    }
}
