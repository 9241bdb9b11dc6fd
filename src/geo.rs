//! Geography of auth attempts: the client address looked up in a MaxMind-format database the
//! user supplies (GeoLite2/GeoIP2 Country or City), counted per country code. Off without a
//! database. Only the two-letter code leaves this module: at most 26 × 26 values plus
//! `unknown`, so the attribute stays bounded whatever the traffic.

use std::sync::atomic::{AtomicU64, Ordering};

use authwatch_layer::{AuthEvent, AuthOp, EventSink, Outcome};
use maxminddb::PathElement;

const CODES: usize = 26 * 26 + 1;
const UNKNOWN: usize = 26 * 26;
const OUTCOMES: [&str; 3] = ["success", "failure", "rate_limited"];

/// The database and the counters.
pub(crate) struct Geo {
    reader: maxminddb::Reader<Vec<u8>>,
    /// `[op][outcome][country]`.
    counts: Box<[AtomicU64]>,
}

fn index(code: &str) -> usize {
    match code.as_bytes() {
        [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => {
            usize::from(a - b'A') * 26 + usize::from(b - b'A')
        }
        _ => UNKNOWN,
    }
}

fn code(i: usize) -> String {
    if i == UNKNOWN {
        return "unknown".to_owned();
    }
    let (a, b) = ((i / 26) as u8 + b'A', (i % 26) as u8 + b'A');
    String::from_utf8(vec![a, b]).unwrap_or_default()
}

impl Geo {
    /// Opens the database file.
    pub(crate) fn open(path: &std::path::Path) -> Result<Self, String> {
        let reader = maxminddb::Reader::open_readfile(path)
            .map_err(|e| format!("GeoIP database {}: {e}", path.display()))?;
        Ok(Self {
            reader,
            counts: (0..AuthOp::COUNT * OUTCOMES.len() * CODES)
                .map(|_| AtomicU64::new(0))
                .collect(),
        })
    }

    /// The country code of an address: the country, else the registered country; `unknown`
    /// when the database has neither (private ranges, a malformed record).
    pub(crate) fn country(&self, ip: std::net::IpAddr) -> usize {
        let Ok(r) = self.reader.lookup(ip) else {
            return UNKNOWN;
        };
        for key in ["country", "registered_country"] {
            if let Ok(Some(c)) =
                r.decode_path::<&str>(&[PathElement::Key(key), PathElement::Key("iso_code")])
            {
                return index(c);
            }
        }
        UNKNOWN
    }

    /// Every non-zero counter: operation, outcome, country code, count.
    pub(crate) fn totals(&self) -> Vec<(AuthOp, &'static str, String, u64)> {
        let mut out = Vec::new();
        for (i, c) in self.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            let op = AuthOp::ALL[i / (OUTCOMES.len() * CODES)];
            let outcome = OUTCOMES[(i / CODES) % OUTCOMES.len()];
            out.push((op, outcome, code(i % CODES), n));
        }
        out
    }
}

impl EventSink for Geo {
    fn record(&self, e: &AuthEvent<'_>) {
        let outcome = match e.outcome {
            Outcome::Success => 0,
            Outcome::Failure(_) | Outcome::Error => 1,
            Outcome::RateLimited => 2,
            _ => return,
        };
        let Some(ip) = e.client_ip else { return };
        let country = self.country(ip);
        let i = (e.op.index() * OUTCOMES.len() + outcome) * CODES + country;
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_anything_else_is_unknown() {
        for c in ["AA", "DE", "US", "ZZ"] {
            assert_eq!(code(index(c)), c);
        }
        for c in ["", "de", "USA", "1A", "Ü"] {
            assert_eq!(index(c), UNKNOWN, "{c}");
        }
        assert_eq!(code(UNKNOWN), "unknown");
    }
}
