//! Geography of auth attempts: the client address looked up in a MaxMind-format database the
//! user supplies (GeoLite2/GeoIP2 Country or City), counted per country code. Off without a
//! database. Only the two-letter code leaves this module: at most 26 × 26 values plus
//! `unknown`, so the attribute stays bounded whatever the traffic.

use std::sync::atomic::{AtomicU64, Ordering};

use authwatch_layer::{AuthEvent, AuthOp, EventSink, Interest, Outcome};
use maxminddb::PathElement;

const CODES: usize = 26 * 26 + 1;
const UNKNOWN: usize = 26 * 26;
const OUTCOMES: [&str; 3] = ["success", "failure", "rate_limited"];
/// Counters of one shard: `[op][outcome][country]`.
const COUNTERS: usize = AuthOp::COUNT * OUTCOMES.len() * CODES;
/// Counters on one [`Line`].
const PER_LINE: usize = 16;
/// Lines of one shard.
const LINES: usize = COUNTERS.div_ceil(PER_LINE);

/// The database and the counters.
pub(crate) struct Geo {
    reader: maxminddb::Reader<Vec<u8>>,
    counts: Counts,
}

/// Sixteen counters on 128 bytes of their own (two cache lines, which adjacent-line prefetching
/// pulls in together): no line holds counters of two shards.
#[repr(align(128))]
#[derive(Default)]
struct Line([AtomicU64; PER_LINE]);

/// One set of counters per thread shard ([`authwatch_hdr::thread_shard`], as for the
/// histograms the same threads record into): every request thread bumps them, and in one shared
/// set a popular country's counter would bounce between cores. A read sums the shards.
/// 95 KiB per shard: 381 KiB with 4 shards (2 cores), 6 MiB at the cap of 64 shards (32 cores
/// and more), next to the database read whole into memory (several MiB for a Country edition).
struct Counts {
    shards: usize,
    /// `shards × LINES` lines, shard after shard.
    lines: Box<[Line]>,
}

impl Counts {
    fn new(shards: usize) -> Self {
        let shards = shards.max(1);
        Self {
            shards,
            lines: (0..shards * LINES).map(|_| Line::default()).collect(),
        }
    }

    /// Counts one more for counter `i` in the calling thread's shard.
    fn add(&self, i: usize) {
        let shard = authwatch_hdr::thread_shard(self.shards);
        let line = &self.lines[shard * LINES + i / PER_LINE];
        line.0[i % PER_LINE].fetch_add(1, Ordering::Relaxed);
    }

    /// Every counter summed over the shards, `[op][outcome][country]`. Shard by shard: a
    /// sequential read, where summing one counter at a time would stride across every shard.
    fn sums(&self) -> Vec<u64> {
        let mut out = vec![0; COUNTERS];
        for shard in self.lines.chunks_exact(LINES) {
            // `zip` stops at `COUNTERS`: the last line's spare counters are never bumped.
            let counters = shard.iter().flat_map(|line| &line.0);
            for (sum, c) in out.iter_mut().zip(counters) {
                *sum += c.load(Ordering::Relaxed);
            }
        }
        out
    }
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
            counts: Counts::new(authwatch_hdr::default_shards()),
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
        for (i, n) in self.counts.sums().into_iter().enumerate() {
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
    fn interest(&self) -> Interest {
        Interest::SUCCESS
            .or(Interest::FAILURE)
            .or(Interest::ERROR)
            .or(Interest::RATE_LIMITED)
    }

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
        self.counts.add(i);
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

    /// Threads bump their own shard's counters; the totals add every shard up.
    #[test]
    fn counts_from_many_threads_add_up_across_shards() {
        let counts = Counts::new(4);
        std::thread::scope(|scope| {
            for t in 0..6 {
                let counts = &counts;
                scope.spawn(move || {
                    for n in 0..1_000 {
                        counts.add(0);
                        counts.add(COUNTERS - 1);
                        counts.add((t * 1_000 + n) % COUNTERS);
                    }
                });
            }
        });
        let sums = counts.sums();
        assert_eq!(sums.len(), COUNTERS);
        assert_eq!(sums[0], 6_000 + 1);
        assert_eq!(sums[COUNTERS - 1], 6_000);
        assert_eq!(sums.iter().sum::<u64>(), 18_000);
    }

    #[test]
    fn shards_share_no_cache_line() {
        let counts = Counts::new(3);
        for shard in 0..3 {
            let first = &counts.lines[shard * LINES] as *const Line as usize;
            assert_eq!(
                first % 128,
                0,
                "shard {shard} starts on a 128-byte boundary"
            );
        }
        assert_eq!(std::mem::size_of::<Line>(), 128);
    }
}
