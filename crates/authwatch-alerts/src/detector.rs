//! Brute-force detection keyed by client IP, in bounded memory.
//!
//! Failures are counted per address in a count-min sketch with conservative update, one sketch
//! per time slot; an address's count over the window is the sum over the slots of its smallest
//! cell. Properties:
//!
//! - **Never under.** A cell only grows by the keys that hash to it, so every estimate is at
//!   least the true count: an address that really crossed the threshold is always reported.
//! - **Rarely over, and by little.** With `w` cells per row, `d` rows and `N` failures in a
//!   slot, an estimate exceeds the truth by more than `e·N/w` with probability at most `e^-d`
//!   (Cormode and Muthukrishnan 2005); conservative update makes the excess much smaller in
//!   practice. With the defaults (`w = 2^18`, `d = 4`) and 3,000,000 failures from 1,000,000
//!   addresses in one slot, the mean cell load is 11, and an address with 5 failures needs all
//!   four of its cells above 45 to look like 51: probability below 10^-40 per address.
//! - **Bounded memory.** `slots × d × w × 2` bytes (16-bit cells, saturating), whatever the
//!   traffic: 10 MiB with the defaults, plus at most `max_suspects` addresses kept with their
//!   counts.
//!
//! Addresses whose estimate crosses the threshold are kept (up to `max_suspects`, the weakest
//! evicted first) so that alerts can name them; the IPs appear in alert labels and logs only,
//! never in metrics.
//!
//! A second signal catches attacks spread over many addresses: per route, the failures and the
//! number of addresses failing for the first time in the window (attributed to the route of that
//! first failure).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
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
    /// failures one slot may see: the expected excess of an estimate is about
    /// `failures per slot / capacity` (see the module documentation).
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

/// An address over the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suspect {
    /// The client address.
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
    /// Addresses whose first failure in the window was on this route (an estimate).
    pub ips: u64,
}

#[derive(Debug, Default, Clone)]
struct RouteSlots {
    failures: Vec<u64>,
    ips: Vec<u64>,
}

/// The detector. Not synchronised: the engine keeps it behind a mutex.
#[derive(Debug)]
pub struct Detector {
    cfg: BruteForceConfig,
    hasher: RandomState,
    mask: usize,
    /// `slots × depth × capacity` cells.
    cells: Vec<u16>,
    current: usize,
    slot_started: Duration,
    /// Largest window estimate seen per slot, for the `auth.attack.top_ip.failures` gauge.
    slot_max: Vec<u64>,
    threshold: u64,
    suspects: HashMap<IpAddr, u64>,
    routes: HashMap<Box<str>, RouteSlots>,
}

impl Detector {
    /// An empty detector; addresses with more than `threshold` failures become suspects.
    #[must_use]
    pub fn new(cfg: BruteForceConfig, threshold: u64, now: Duration) -> Self {
        let n = cfg.slots as usize * cfg.depth * cfg.capacity;
        Self {
            cfg,
            hasher: RandomState::new(),
            mask: cfg.capacity - 1,
            cells: vec![0; n],
            current: 0,
            slot_started: now,
            slot_max: vec![0; cfg.slots as usize],
            threshold,
            suspects: HashMap::new(),
            routes: HashMap::new(),
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

    /// Counts one failure from `ip` on `route`; returns the address's estimate over the window.
    pub fn record(&mut self, ip: IpAddr, route: &str) -> u64 {
        let idx = self.indexes(&ip);
        let before = self.window_estimate(&idx);
        // Conservative update: raise only the cells below the new minimum.
        let m = self.slot_estimate(self.current, &idx);
        let new = u16::try_from(m + 1).unwrap_or(u16::MAX);
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
        // Routes are bounded: past `max_routes`, new ones count under `_OTHER`.
        let key = if self.routes.contains_key(route) || self.routes.len() < self.cfg.max_routes {
            route
        } else {
            "_OTHER"
        };
        if !self.routes.contains_key(key) {
            self.routes.insert(
                key.into(),
                RouteSlots {
                    failures: vec![0; slots],
                    ips: vec![0; slots],
                },
            );
        }
        if let Some(e) = self.routes.get_mut(key) {
            e.failures[cur] += 1;
            if before == 0 {
                e.ips[cur] += 1;
            }
        }
        if after > self.threshold && !self.suspects.contains_key(&ip) {
            if self.suspects.len() >= self.cfg.max_suspects {
                self.evict_weakest();
            }
            self.suspects.insert(ip, after);
        } else if let Some(s) = self.suspects.get_mut(&ip) {
            *s = after;
        }
        after
    }

    fn evict_weakest(&mut self) {
        let weakest = self
            .suspects
            .keys()
            .map(|ip| (self.window_estimate(&self.indexes(ip)), *ip))
            .min();
        if let Some((_, ip)) = weakest {
            self.suspects.remove(&ip);
        }
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
            for ip in ips {
                let e = self.window_estimate(&self.indexes(&ip));
                if e > self.threshold {
                    self.suspects.insert(ip, e);
                } else {
                    self.suspects.remove(&ip);
                }
            }
        }
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

    /// The failures from the one address with the most, over the window (an upper bound).
    #[must_use]
    pub fn top_failures(&self) -> u64 {
        self.slot_max.iter().copied().max().unwrap_or(0)
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
                ips: r.ips.iter().sum(),
            })
            .collect();
        v.sort_by(|a, b| b.failures.cmp(&a.failures).then(a.route.cmp(&b.route)));
        v
    }

    /// The estimate for one address.
    #[must_use]
    pub fn estimate(&self, ip: IpAddr) -> u64 {
        self.window_estimate(&self.indexes(&ip))
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
    fn a_long_pause_empties_everything() {
        let mut d = Detector::new(BruteForceConfig::default(), 0, Duration::ZERO);
        d.record(IpAddr::V6(Ipv6Addr::LOCALHOST), "/login");
        d.advance(Duration::from_secs(86_400 * 365));
        assert_eq!(d.estimate(IpAddr::V6(Ipv6Addr::LOCALHOST)), 0);
        d.record(IpAddr::V6(Ipv6Addr::LOCALHOST), "/login");
        assert_eq!(d.estimate(IpAddr::V6(Ipv6Addr::LOCALHOST)), 1);
    }
}
