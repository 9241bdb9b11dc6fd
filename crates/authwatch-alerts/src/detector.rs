//! Brute-force detection keyed by client IP, in bounded memory.
//!
//! Failures are counted per client in a count-min sketch with conservative update, one sketch
//! per time slot; a client's count over the window is the sum over the slots of its smallest
//! cell. A client is an IPv4 address, or an IPv6 /64 (one host usually owns a whole /64 and can
//! pick a new address for every attempt; [`BruteForceConfig::ipv6_prefix`] changes it); IPv4
//! addresses mapped into IPv6 count as IPv4. Properties:
//!
//! - **Never under** (below 65,535 failures per client and slot, where the 16-bit cells
//!   saturate). A cell only grows by the clients that hash to it, so every estimate is at least
//!   the true count: a client that really crossed the threshold is always reported.
//! - **Rarely over, and by little.** With `w` cells per row, `d` rows and `N` failures in the
//!   window, the count-min theorem (Cormode and Muthukrishnan 2005) bounds an estimate's excess
//!   by `e·N/w` with probability at least `1 − e^-d` (98 % with the defaults), for independent
//!   rows; the rows here come from one 64-bit hash (double hashing), and conservative update
//!   keeps the excess well under the bound in practice. Measured with the defaults: 3,000,000
//!   failures from 1,000,000 addresses plus one attacker with 51, and exactly the attacker is
//!   reported, with exactly 51 (`tests/bruteforce.rs`).
//! - **Bounded memory.** `slots × d × w × 2` bytes, whatever the traffic: 10 MiB with the
//!   defaults, plus at most `max_suspects` clients kept by name with their counts. The cells
//!   are made resident when the detector is built, so the footprint is there from the start
//!   rather than growing over the first window as attacks touch its pages.
//!
//! Clients whose estimate crosses the threshold are kept by name (up to `max_suspects`; a
//! newcomer replaces the weakest only when it has more failures) so that alerts can name them;
//! the addresses appear in alert labels and logs only, never in metrics.
//!
//! A second signal catches attacks spread over many addresses: per route, the failures over the
//! window and the number of distinct clients failing on it (the largest per-slot count of
//! clients failing for the first time in that slot; an estimate that collisions can only lower).

use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::Duration;

/// Sizing of the brute-force detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BruteForceConfig {
    window: Duration,
    slots: u32,
    capacity: usize,
    depth: usize,
    max_suspects: usize,
    max_routes: usize,
    ipv6_prefix: u8,
}

impl Default for BruteForceConfig {
    /// A 10-minute window in 5 slots of 2 minutes, 2^18 cells per row, 4 rows, 1,024 suspects:
    /// 10 MiB.
    fn default() -> Self {
        Self {
            window: Duration::from_secs(600),
            slots: 5,
            capacity: 1 << 18,
            depth: 4,
            max_suspects: 1024,
            max_routes: 256,
            ipv6_prefix: 64,
        }
    }
}

impl BruteForceConfig {
    /// The window over which failures per address are counted (default 10 minutes). Counts
    /// cover between `window × (slots − 1) / slots` and `window` of history.
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window.max(Duration::from_millis(1));
        self
    }

    /// How many slots the window is cut into (default 5, at least 2).
    #[must_use]
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = slots.clamp(2, 60);
        self
    }

    /// Cells per sketch row, rounded up to a power of two (default 2^18). Size it to the
    /// failures one window may see: the excess of an estimate is bounded by about
    /// `e × failures per window / capacity` (see the module documentation).
    #[must_use]
    pub fn capacity(mut self, cells: usize) -> Self {
        self.capacity = cells.clamp(64, 1 << 26).next_power_of_two();
        self
    }

    /// Rows per sketch (default 4; the chance of a large excess falls as `e^-depth`).
    #[must_use]
    pub fn depth(mut self, rows: usize) -> Self {
        self.depth = rows.clamp(1, 8);
        self
    }

    /// How many addresses over the threshold are kept by name (default 1,024); beyond it, the
    /// one with the fewest failures is forgotten.
    #[must_use]
    pub fn max_suspects(mut self, n: usize) -> Self {
        self.max_suspects = n.max(1);
        self
    }

    /// How many slots the window is cut into ([`slots`](Self::slots)).
    #[must_use]
    pub fn slot_count(&self) -> u32 {
        self.slots
    }

    /// Cells per sketch row ([`capacity`](Self::capacity)), a power of two.
    #[must_use]
    pub fn row_cells(&self) -> usize {
        self.capacity
    }

    /// Rows per sketch ([`depth`](Self::depth)).
    #[must_use]
    pub fn rows(&self) -> usize {
        self.depth
    }

    /// How many clients over the threshold are kept by name
    /// ([`max_suspects`](Self::max_suspects)).
    #[must_use]
    pub fn suspects_kept(&self) -> usize {
        self.max_suspects
    }

    /// How IPv6 clients are grouped: by their first `bits` bits (default 64, a /64; 128 counts
    /// every address apart).
    #[must_use]
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = bits.clamp(16, 128);
        self
    }

    /// The IPv6 prefix length clients are grouped by ([`ipv6_prefix`](Self::ipv6_prefix)).
    #[must_use]
    pub fn ipv6_prefix_len(&self) -> u8 {
        self.ipv6_prefix
    }

    /// The client key of an address: IPv4 (also when mapped into IPv6), or the IPv6 prefix.
    #[must_use]
    pub fn client_key(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let bits = u32::from(self.ipv6_prefix);
                let mask = if bits >= 128 {
                    u128::MAX
                } else {
                    !(u128::MAX >> bits)
                };
                IpAddr::V6((u128::from(v6) & mask).into())
            }
            v4 => v4,
        }
    }

    /// The client key as alerts show it: `203.0.113.7`, `2001:db8:1:2::/64`.
    #[must_use]
    pub fn client_label(&self, key: IpAddr) -> String {
        match key {
            IpAddr::V6(v6) if self.ipv6_prefix < 128 => format!("{v6}/{}", self.ipv6_prefix),
            other => other.to_string(),
        }
    }

    /// The window.
    #[must_use]
    pub fn window_len(&self) -> Duration {
        self.window
    }

    /// Bytes of the sketches: `slots × depth × capacity × 2`.
    #[must_use]
    pub fn sketch_bytes(&self) -> usize {
        self.slots as usize * self.depth * self.capacity * 2
    }

    fn slot_len(&self) -> Duration {
        self.window / self.slots
    }
}

/// A client over the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suspect {
    /// The client: an IPv4 address, or the first address of an IPv6 prefix (see
    /// [`BruteForceConfig::client_label`]).
    pub ip: IpAddr,
    /// Its failures over the window: an estimate that is never below the truth.
    pub failures: u64,
}

/// A route failing for many addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFailures {
    /// The route template.
    pub route: String,
    /// Failures on it over the window.
    pub failures: u64,
    /// Distinct clients failing on it (an estimate, see the module documentation).
    pub ips: u64,
}

#[derive(Debug, Default, Clone)]
struct RouteSlots {
    failures: Vec<u64>,
    ips: Vec<u64>,
}

impl RouteSlots {
    /// One failure in slot `cur`; `first_in_slot`: the client's first there (a collision can
    /// hide one, never add one).
    fn count(&mut self, cur: usize, n: u64, first_in_slot: bool) {
        self.failures[cur] += n;
        if first_in_slot {
            self.ips[cur] += 1;
        }
    }
}

/// The detector. Not synchronised: the engine keeps it behind a mutex.
#[derive(Debug)]
pub struct Detector {
    cfg: BruteForceConfig,
    /// Places clients in the sketch: foldhash (quality variant) under a seed drawn at random
    /// for each detector. An attacker who wanted its addresses to land on a victim's cells (to
    /// inflate the victim's count; counts can never be lowered) would need the seed, which
    /// nothing exposes: only suspects over the threshold are ever named. It takes a tenth of
    /// SipHash's instructions and code per failure.
    hasher: foldhash::quality::RandomState,
    mask: usize,
    /// `slots × depth × capacity` cells.
    cells: Vec<u16>,
    current: usize,
    slot_started: Duration,
    /// Largest window estimate seen per slot, for the `auth.attack.top_ip.failures` gauge.
    slot_max: Vec<u64>,
    threshold: u64,
    suspects: HashMap<IpAddr, u64>,
    /// The same, ordered by count, to find the weakest in O(log n). Re-ranked lazily: an
    /// entry may hold an older, lower count than `suspects` (counts only grow between two
    /// advances, which rebuild it), and is corrected when it comes up as the weakest; one
    /// entry per suspect.
    ranked: BTreeSet<(u64, IpAddr)>,
    /// Keyed by template with the Fx hash, not SipHash: a template is the app's (or one you
    /// record), and `max_routes` caps the map, so colliding keys could cost a lookup at most
    /// `max_routes` comparisons. (Client addresses, which an attacker picks, go through the
    /// randomly seeded `hasher`.)
    routes: HashMap<Box<str>, RouteSlots, rustc_hash::FxBuildHasher>,
}

/// `n` zeroed cells whose pages are resident now. A zeroed allocation of this size is mapped
/// lazily: each page would become resident the first time an attack's hash lands on it,
/// slot after slot, so resident memory would creep up for a whole window (10 minutes by
/// default) and a container's memory limit would be met during an attack instead of at start.
pub(crate) fn resident_zeroes(n: usize) -> Vec<u16> {
    let mut cells = vec![0u16; n];
    // One store per 4 KiB page; `black_box` keeps the compiler from proving it redundant.
    for page in cells.chunks_mut(2048) {
        page[0] = std::hint::black_box(0);
    }
    cells
}

impl Detector {
    /// An empty detector; addresses with more than `threshold` failures become suspects.
    #[must_use]
    pub fn new(cfg: BruteForceConfig, threshold: u64, now: Duration) -> Self {
        let n = cfg.slots as usize * cfg.depth * cfg.capacity;
        Self {
            cfg,
            hasher: foldhash::quality::RandomState::default(),
            mask: cfg.capacity - 1,
            cells: resident_zeroes(n),
            current: 0,
            slot_started: now,
            slot_max: vec![0; cfg.slots as usize],
            threshold,
            suspects: HashMap::new(),
            ranked: BTreeSet::new(),
            routes: HashMap::default(),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &BruteForceConfig {
        &self.cfg
    }

    fn indexes(&self, ip: &IpAddr) -> [usize; 8] {
        let h = self.hasher.hash_one(ip);
        let (h1, h2) = (h as u32 as usize, ((h >> 32) as usize) | 1);
        let mut out = [0; 8];
        for (i, o) in out.iter_mut().enumerate().take(self.cfg.depth) {
            *o = h1.wrapping_add(i.wrapping_mul(h2)) & self.mask;
        }
        out
    }

    fn row(&self, slot: usize, row: usize) -> usize {
        (slot * self.cfg.depth + row) * self.cfg.capacity
    }

    fn slot_estimate(&self, slot: usize, idx: &[usize; 8]) -> u64 {
        (0..self.cfg.depth)
            .map(|r| self.cells[self.row(slot, r) + idx[r]])
            .min()
            .map_or(0, u64::from)
    }

    fn window_estimate(&self, idx: &[usize; 8]) -> u64 {
        (0..self.cfg.slots as usize)
            .map(|s| self.slot_estimate(s, idx))
            .sum()
    }

    /// Counts one failure from `ip` on `route`; returns the client's estimate over the window.
    pub fn record(&mut self, ip: IpAddr, route: &str) -> u64 {
        self.record_n(ip, route, 1)
    }

    /// Counts `n` failures from `ip` on `route` at once, exactly as `n` calls of
    /// [`record`](Self::record) would (a conservative update by `n` raises the same cells to
    /// the same value as `n` updates by one); returns the client's estimate over the window.
    pub fn record_n(&mut self, ip: IpAddr, route: &str, n: u32) -> u64 {
        self.record_on(ip, Some(route), n)
    }

    /// Counts `n` failures from `ip`, on `route` for the per-route counts, or on no route:
    /// a token failure counts for its client (brute force) but not for the distributed-attack
    /// signal, which counts credential failures only (see `docs/runbooks.md`).
    pub fn record_on(&mut self, ip: IpAddr, route: Option<&str>, n: u32) -> u64 {
        if n == 0 {
            return self.estimate(ip);
        }
        let ip = self.cfg.client_key(ip);
        let idx = self.indexes(&ip);
        let before = self.window_estimate(&idx);
        // Conservative update: raise only the cells below the new minimum.
        let m = self.slot_estimate(self.current, &idx);
        let new = u16::try_from(m + u64::from(n)).unwrap_or(u16::MAX);
        for (r, &col) in idx.iter().enumerate().take(self.cfg.depth) {
            let i = self.row(self.current, r) + col;
            if self.cells[i] < new {
                self.cells[i] = new;
            }
        }
        let after = before + (u64::from(new) - m);
        let slots = self.cfg.slots as usize;
        let cur = self.current;
        if self.slot_max[cur] < after {
            self.slot_max[cur] = after;
        }
        // Routes are bounded: past `max_routes`, new ones count under `_OTHER`. Below the cap
        // a known route is one lookup.
        let Some(route) = route else {
            if after > self.threshold {
                self.note_suspect(ip, after);
            }
            return after;
        };
        let key = if self.routes.len() < self.cfg.max_routes || self.routes.contains_key(route) {
            route
        } else {
            "_OTHER"
        };
        if let Some(e) = self.routes.get_mut(key) {
            e.count(cur, u64::from(n), m == 0);
        } else {
            let mut e = RouteSlots {
                failures: vec![0; slots],
                ips: vec![0; slots],
            };
            e.count(cur, u64::from(n), m == 0);
            self.routes.insert(key.into(), e);
        }
        if after > self.threshold {
            self.note_suspect(ip, after);
        }
        after
    }

    /// Keeps `ip` by name with `count`, within `max_suspects`: a newcomer replaces the weakest
    /// only when it has more failures.
    fn note_suspect(&mut self, ip: IpAddr, count: u64) {
        if let Some(c) = self.suspects.get_mut(&ip) {
            // Its ranked entry keeps the older count until it comes up as the weakest: every
            // further failure of a client under attack costs one map update, not a re-rank.
            *c = count;
            return;
        }
        if self.suspects.len() >= self.cfg.max_suspects {
            // The weakest: the first entry whose ranked count is current (a stale entry's
            // count is below its client's, so it is put back with the current one first).
            while let Some((c, w)) = self.ranked.pop_first() {
                let now = self.suspects.get(&w).copied().unwrap_or(0);
                if now != c {
                    self.ranked.insert((now, w));
                    continue;
                }
                if c < count {
                    self.suspects.remove(&w);
                    break;
                }
                self.ranked.insert((c, w));
                return;
            }
        }
        self.suspects.insert(ip, count);
        self.ranked.insert((count, ip));
    }

    /// Moves the window to `now`: slots older than the window are emptied.
    pub fn advance(&mut self, now: Duration) {
        let len = self.cfg.slot_len().max(Duration::from_nanos(1));
        let slots = self.cfg.slots as usize;
        let mut steps = 0;
        while now >= self.slot_started + len {
            self.slot_started += len;
            steps += 1;
            if steps > slots {
                // A long pause: everything is out of the window.
                let behind = (now - self.slot_started).as_nanos() / len.as_nanos();
                self.slot_started += len * u32::try_from(behind).unwrap_or(u32::MAX);
                continue;
            }
            self.current = (self.current + 1) % slots;
            let start = self.row(self.current, 0);
            let end = start + self.cfg.depth * self.cfg.capacity;
            self.cells[start..end].fill(0);
            self.slot_max[self.current] = 0;
            for r in self.routes.values_mut() {
                r.failures[self.current] = 0;
                r.ips[self.current] = 0;
            }
        }
        if steps > 0 {
            self.routes.retain(|_, r| r.failures.iter().any(|&f| f > 0));
            let ips: Vec<IpAddr> = self.suspects.keys().copied().collect();
            self.ranked.clear();
            for ip in ips {
                let e = self.window_estimate(&self.indexes(&ip));
                if e > self.threshold {
                    self.suspects.insert(ip, e);
                    self.ranked.insert((e, ip));
                } else {
                    self.suspects.remove(&ip);
                }
            }
        }
    }

    /// From now on, addresses with more than `threshold` failures become suspects (one already
    /// over it is named at its next failure).
    pub fn set_threshold(&mut self, threshold: u64) {
        self.threshold = threshold;
    }

    /// The addresses over the threshold now, most failures first.
    #[must_use]
    pub fn suspects(&self) -> Vec<Suspect> {
        let mut v: Vec<Suspect> = self
            .suspects
            .keys()
            .map(|ip| Suspect {
                ip: *ip,
                failures: self.window_estimate(&self.indexes(ip)),
            })
            .filter(|s| s.failures > self.threshold)
            .collect();
        v.sort_by(|a, b| b.failures.cmp(&a.failures).then(a.ip.cmp(&b.ip)));
        v
    }

    /// The failures from the one client with the most, over the window: the largest suspect's
    /// estimate when there is one; otherwise the largest estimate seen in the window's slots,
    /// capped at the threshold (so that it never says "over" after the suspects have gone).
    #[must_use]
    pub fn top_failures(&self) -> u64 {
        match self.suspects.values().max() {
            Some(&c) => c,
            None => self
                .slot_max
                .iter()
                .copied()
                .max()
                .unwrap_or(0)
                .min(self.threshold),
        }
    }

    /// Per route: failures and newly failing addresses over the window.
    #[must_use]
    pub fn routes(&self) -> Vec<RouteFailures> {
        let mut v: Vec<RouteFailures> = self
            .routes
            .iter()
            .map(|(route, r)| RouteFailures {
                route: route.to_string(),
                failures: r.failures.iter().sum(),
                ips: r.ips.iter().copied().max().unwrap_or(0),
            })
            .collect();
        v.sort_by(|a, b| b.failures.cmp(&a.failures).then(a.route.cmp(&b.route)));
        v
    }

    /// The estimate for one address's client.
    #[must_use]
    pub fn estimate(&self, ip: IpAddr) -> u64 {
        let key = self.cfg.client_key(ip);
        self.window_estimate(&self.indexes(&key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn counts_exactly_without_collisions_and_forgets_after_the_window() {
        let cfg = BruteForceConfig::default()
            .window(Duration::from_secs(100))
            .slots(4);
        let mut d = Detector::new(cfg, 50, Duration::ZERO);
        for _ in 0..51 {
            d.record(v4(1), "/login");
        }
        for _ in 0..50 {
            d.record(v4(2), "/login");
        }
        assert_eq!(d.estimate(v4(1)), 51);
        assert_eq!(
            d.suspects(),
            vec![Suspect {
                ip: v4(1),
                failures: 51
            }]
        );
        assert_eq!(d.top_failures(), 51);
        let r = &d.routes()[0];
        assert_eq!((r.failures, r.ips), (101, 2));
        // 3 slots later the failures are still in the window, 4 slots later they are gone.
        d.advance(Duration::from_secs(75));
        assert_eq!(d.suspects().len(), 1);
        d.advance(Duration::from_secs(100));
        assert!(d.suspects().is_empty());
        assert_eq!(d.estimate(v4(1)), 0);
        assert_eq!(d.top_failures(), 0);
        assert!(d.routes().is_empty());
    }

    #[test]
    fn suspects_are_bounded_and_the_weakest_goes() {
        let cfg = BruteForceConfig::default().max_suspects(2);
        let mut d = Detector::new(cfg, 1, Duration::ZERO);
        for (ip, n) in [(1, 5), (2, 3), (3, 4)] {
            for _ in 0..n {
                d.record(v4(ip), "/login");
            }
        }
        let ips: Vec<_> = d.suspects().iter().map(|s| s.ip).collect();
        assert_eq!(ips, vec![v4(1), v4(3)]);
    }

    #[test]
    fn a_continuing_distributed_attack_keeps_its_distinct_count() {
        // 60 addresses failing once every 30 s for 5 minutes, on a 100 s window of 20 s slots.
        let cfg = BruteForceConfig::default()
            .window(Duration::from_secs(100))
            .slots(5);
        let mut d = Detector::new(cfg, 50, Duration::ZERO);
        for step in 0..10u64 {
            d.advance(Duration::from_secs(30 * step));
            for ip in 0..60 {
                d.record(v4(1000 + ip), "/login");
            }
            let r = &d.routes()[0];
            assert_eq!(r.ips, 60, "step {step}");
        }
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let mut d = Detector::new(BruteForceConfig::default(), 50, Duration::ZERO);
        for i in 0..51u16 {
            d.record(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, i)),
                "/login",
            );
        }
        let s = d.suspects();
        assert_eq!(s.len(), 1);
        assert_eq!(d.config().client_label(s[0].ip), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        d.record(mapped, "/login");
        assert_eq!(d.estimate("192.0.2.1".parse().unwrap()), 1);
        let full = BruteForceConfig::default().ipv6_prefix(128);
        let key = full.client_key("2001:db8::7".parse().unwrap());
        assert_eq!(full.client_label(key), "2001:db8::7");
    }

    /// `record_n(ip, route, n)` leaves the detector as `n` calls of `record` do: estimates,
    /// suspects, the top count, and per route the failures and distinct clients, across a
    /// window move.
    #[test]
    fn a_batch_of_n_counts_as_n_failures() {
        let cfg = BruteForceConfig::default()
            .window(Duration::from_secs(100))
            .slots(4);
        let mut one = Detector::new(cfg, 20, Duration::ZERO);
        let mut batched = Detector::new(cfg, 20, Duration::ZERO);
        let mut seed = 7_u64;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let routes = ["/login", "/sign-up", "/token"];
        for step in 0..2_000u64 {
            if step == 1_000 {
                one.advance(Duration::from_secs(30));
                batched.advance(Duration::from_secs(30));
            }
            let ip = v4(next(40) as u32);
            let route = routes[next(3) as usize];
            let n = 1 + next(6) as u32;
            for _ in 0..n {
                one.record(ip, route);
            }
            batched.record_n(ip, route, n);
        }
        for i in 0..40 {
            assert_eq!(one.estimate(v4(i)), batched.estimate(v4(i)), "client {i}");
        }
        assert_eq!(one.top_failures(), batched.top_failures());
        let names = |d: &Detector| {
            let mut v: Vec<(IpAddr, u64)> =
                d.suspects().iter().map(|s| (s.ip, s.failures)).collect();
            v.sort();
            v
        };
        assert_eq!(names(&one), names(&batched));
        assert!(!names(&one).is_empty());
        let by_route = |d: &Detector| {
            let mut v: Vec<(String, u64, u64)> = d
                .routes()
                .into_iter()
                .map(|r| (r.route, r.failures, r.ips))
                .collect();
            v.sort();
            v
        };
        assert_eq!(by_route(&one), by_route(&batched));
        assert_eq!(
            batched.record_n(v4(1), "/login", 0),
            batched.estimate(v4(1))
        );
    }

    #[test]
    fn a_weaker_newcomer_does_not_push_out_a_suspect() {
        let cfg = BruteForceConfig::default().max_suspects(1);
        let mut d = Detector::new(cfg, 1, Duration::ZERO);
        for _ in 0..10 {
            d.record(v4(1), "/login");
        }
        for _ in 0..5 {
            d.record(v4(2), "/login");
        }
        assert_eq!(d.suspects()[0].ip, v4(1));
        assert_eq!(d.top_failures(), 10);
    }

    #[test]
    fn a_long_pause_empties_everything() {
        let mut d = Detector::new(BruteForceConfig::default(), 0, Duration::ZERO);
        d.record(IpAddr::V6(Ipv6Addr::LOCALHOST), "/login");
        d.advance(Duration::from_secs(86_400 * 365));
        assert_eq!(d.estimate(IpAddr::V6(Ipv6Addr::LOCALHOST)), 0);
        d.record(IpAddr::V6(Ipv6Addr::LOCALHOST), "/login");
        assert_eq!(d.estimate(IpAddr::V6(Ipv6Addr::LOCALHOST)), 1);
    }

    /// The lazily re-ranked suspects keep exactly the clients an eager ranking keeps (the
    /// previous implementation, as the model): same names, same counts, same weakest evicted,
    /// ties broken alike.
    #[test]
    fn lazy_ranking_keeps_what_an_eager_ranking_keeps() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        for max in [1, 2, 3, 8] {
            let cfg = BruteForceConfig::default().max_suspects(max);
            let mut d = Detector::new(cfg, 0, Duration::ZERO);
            let mut counts: HashMap<IpAddr, u64> = HashMap::new();
            let (mut model, mut ranked) = (HashMap::new(), BTreeSet::new());
            for _ in 0..20_000 {
                // Few clients, small steps: many ties, many evictions.
                let ip = v4(next(20) as u32);
                let c = counts.entry(ip).or_insert(0);
                *c += 1 + next(3);
                let count = *c;
                d.note_suspect(ip, count);
                // The eager model.
                if let Some(old) = model.insert(ip, count) {
                    ranked.remove(&(old, ip));
                    ranked.insert((count, ip));
                } else if model.len() > max {
                    match ranked.first().copied() {
                        Some((c, w)) if c < count => {
                            ranked.pop_first();
                            model.remove(&w);
                            ranked.insert((count, ip));
                        }
                        _ => {
                            model.remove(&ip);
                        }
                    }
                } else {
                    ranked.insert((count, ip));
                }
                assert_eq!(d.suspects, model, "max {max}");
                assert_eq!(d.ranked.len(), d.suspects.len());
                assert_eq!(
                    d.top_failures(),
                    ranked.last().map_or(0, |&(c, _)| c),
                    "max {max}"
                );
            }
        }
    }
}
