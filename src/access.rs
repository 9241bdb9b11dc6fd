//! Who read the monitoring endpoints (`/metrics`, `/auth/stats`, `/auth/dashboard`,
//! `/auth/health`, `/auth/blocks`): the spec's "audit access to the monitoring systems".
//!
//! Each request is counted under its endpoint, client address, token fingerprint (a SHA-256
//! prefix: never the token) and whether it was let in; each such key becomes one security
//! audit record per hour (`auth.endpoint.access`, with the requests it counted and the first
//! and last), not one per request: a Prometheus scraping every 15 s makes 24 records a day.
//! At most 4,096 keys are held per hour; beyond, the requests count under their
//! endpoint and decision with no client or token. `authwatch audit access` summarises them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{header, Request};
use sha2::{Digest, Sha256};

use crate::audit::{AuditClass, AuditRecord, Auditor};

/// The most endpoint, client and token combinations held for one hour.
pub(crate) const MAX_KEYS: usize = 4096;

/// The record's name.
pub const ACCESS_RECORD: &str = "auth.endpoint.access";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    endpoint: &'static str,
    client: Option<IpAddr>,
    token: Option<String>,
    allowed: bool,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    requests: u64,
    first: SystemTime,
    last: SystemTime,
}

struct State {
    hour: u64,
    keys: HashMap<Key, Seen>,
}

/// The counts of the current hour, written out when it ends (or at shutdown).
pub(crate) struct AccessLog {
    auditor: Arc<Auditor>,
    state: Mutex<State>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

fn hour_of(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / 3600
}

/// `sha256:` and the first 12 hex digits of the token's SHA-256: enough to tell two tokens
/// apart in a log, nothing to recover one from.
#[must_use]
pub fn fingerprint(token: &[u8]) -> String {
    let d = Sha256::digest(token);
    let mut s = String::from("sha256:");
    for b in &d[..6] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The token a request presents: `Authorization: Bearer …`, else `?token=…`.
fn presented<B>(req: &Request<B>) -> Option<Vec<u8>> {
    if let Some(t) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    {
        return Some(t.to_vec());
    }
    req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.strip_prefix("token="))
            .find_map(crate::endpoints::percent_decode)
    })
}

impl AccessLog {
    pub(crate) fn new(auditor: Arc<Auditor>) -> Self {
        Self {
            auditor,
            state: Mutex::new(State {
                hour: hour_of(SystemTime::now()),
                keys: HashMap::new(),
            }),
        }
    }

    /// A request to `endpoint` from `client`, let in or not.
    pub(crate) fn note<B>(
        &self,
        endpoint: &'static str,
        client: Option<IpAddr>,
        req: &Request<B>,
        allowed: bool,
    ) {
        let token = presented(req).map(|t| fingerprint(&t));
        self.count(endpoint, client, token, allowed, SystemTime::now());
    }

    fn count(
        &self,
        endpoint: &'static str,
        client: Option<IpAddr>,
        token: Option<String>,
        allowed: bool,
        now: SystemTime,
    ) {
        let hour = hour_of(now);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ended = if hour == st.hour {
            None
        } else {
            st.hour = hour;
            Some(std::mem::take(&mut st.keys))
        };
        let mut key = Key {
            endpoint,
            client,
            token,
            allowed,
        };
        if st.keys.len() >= MAX_KEYS && !st.keys.contains_key(&key) {
            key.client = None;
            key.token = None;
        }
        let seen = st.keys.entry(key).or_insert(Seen {
            requests: 0,
            first: now,
            last: now,
        });
        seen.requests += 1;
        seen.last = now;
        drop(st);
        if let Some(keys) = ended {
            self.write(keys);
        }
    }

    /// Writes what the current hour holds (at shutdown).
    pub(crate) fn flush(&self) {
        let keys = std::mem::take(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()).keys);
        self.write(keys);
    }

    fn write(&self, keys: HashMap<Key, Seen>) {
        let mut keys: Vec<(Key, Seen)> = keys.into_iter().collect();
        keys.sort_by_key(|(_, s)| s.first);
        for (k, s) in keys {
            let mut r = AuditRecord::new(ACCESS_RECORD, AuditClass::Security, "authwatch");
            r.time = s.last;
            r.client_address = k.client;
            r.access = Some(serde_json::json!({
                "endpoint": k.endpoint,
                "allowed": k.allowed,
                "token_fingerprint": k.token,
                "requests": s.requests,
                "first": humantime::format_rfc3339_seconds(s.first).to_string(),
                "last": humantime::format_rfc3339_seconds(s.last).to_string(),
            }));
            self.auditor.send(r);
        }
    }
}

/// One line of [`summary`]: who read which endpoint, how often, let in or not.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccessLine {
    /// The endpoint.
    pub endpoint: String,
    /// The client address, as recorded (`None`: past the bound, or unknown).
    pub client: Option<String>,
    /// The token's fingerprint, when one was presented.
    pub token: Option<String>,
    /// Whether it was let in.
    pub allowed: bool,
    /// Requests.
    pub requests: u64,
    /// Hours with at least one.
    pub hours: u64,
    /// The first and the last (RFC 3339).
    pub first: String,
    /// The last.
    pub last: String,
}

/// The access records of the audit folder `dir` since `since` ago, one line per endpoint,
/// client, token and decision: the monthly access audit (`authwatch audit access`).
///
/// # Errors
///
/// The folder cannot be read.
pub fn summary(dir: &std::path::Path, since: Duration) -> std::io::Result<Vec<AccessLine>> {
    let from = SystemTime::now()
        .checked_sub(since)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let files = crate::audit::security_files(dir)?;
    let mut lines: Vec<AccessLine> = Vec::new();
    for f in files {
        for line in std::fs::read_to_string(&f)?.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["event.name"] != ACCESS_RECORD {
                continue;
            }
            let a = &v["auth.access"];
            let last = a["last"].as_str().unwrap_or_default().to_owned();
            if humantime::parse_rfc3339(&last).is_ok_and(|t| t < from) {
                continue;
            }
            let key = (
                a["endpoint"].as_str().unwrap_or_default().to_owned(),
                v["client.address"].as_str().map(str::to_owned),
                a["token_fingerprint"].as_str().map(str::to_owned),
                a["allowed"].as_bool().unwrap_or(false),
            );
            let requests = a["requests"].as_u64().unwrap_or(0);
            let first = a["first"].as_str().unwrap_or_default().to_owned();
            match lines.iter_mut().find(|l| {
                (&l.endpoint, &l.client, &l.token, l.allowed) == (&key.0, &key.1, &key.2, key.3)
            }) {
                Some(l) => {
                    l.requests += requests;
                    l.hours += 1;
                    if first < l.first {
                        l.first = first;
                    }
                    if last > l.last {
                        l.last = last;
                    }
                }
                None => lines.push(AccessLine {
                    endpoint: key.0,
                    client: key.1,
                    token: key.2,
                    allowed: key.3,
                    requests,
                    hours: 1,
                    first,
                    last,
                }),
            }
        }
    }
    lines.sort_by(|a, b| {
        (&a.endpoint, !a.allowed, std::cmp::Reverse(a.requests)).cmp(&(
            &b.endpoint,
            !b.allowed,
            std::cmp::Reverse(b.requests),
        ))
    });
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_tells_tokens_apart_and_hides_them() {
        let a = fingerprint(b"s3cret");
        assert!(a.starts_with("sha256:") && a.len() == 19, "{a}");
        assert_ne!(a, fingerprint(b"s3cres"));
        assert!(!a.contains("s3cret"));
    }
}
