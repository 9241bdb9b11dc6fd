//! Account-level detection in bounded memory: password spraying (one address, many accounts),
//! accounts under attack (many failures, or failures from many addresses), and credential
//! stuffing (many accounts failing at once).
//!
//! It is fed the application's failed logins, who and from where
//! (`LoginAuditLogger::log_login_failure` in the facade), off the calling thread. Over a
//! window (10 minutes in 5 slots by default):
//!
//! - **Failures per account and per client address**: one count-min sketch each, per slot,
//!   with conservative update, as the per-address brute-force detector
//!   ([`detector`](crate::detector)). Never under the truth (below 65,535 per slot).
//! - **Distinct addresses per account, distinct accounts per address**: exact sets of hashes,
//!   kept for at most [`AccountConfig::tracked`] accounts and as many addresses (the ones with
//!   the most failures; a newcomer replaces the weakest only with more failures), each set
//!   capped at [`AccountConfig::members`]. An account is tracked from its first failure while
//!   there is room; one that enters later counts the failures it had before as possibly
//!   distinct (its count is then an upper bound, by at most that many). So every account or
//!   address that truly crossed a threshold is reported while fewer than `tracked` of them
//!   fail in the window; past that, those with the most failures are kept.
//! - **Distinct failing accounts**, for the baseline of credential stuffing: one
//!   linear-counting bitmap per slot (2^17 bits, exact to about 1 % up to 100,000 accounts per
//!   window), kept for the window and the baseline before it (an hour).
//!
//! Memory, whatever the traffic: `2 × slots × depth × capacity × 2` bytes of sketches (10 MiB
//! with the defaults), the bitmaps (560 KiB), and at most `2 × tracked` sets of up to `members`
//! 16-byte entries (9 MiB). [`AccountDetector::memory_bytes`] says what it holds now.
//!
//! Account labels are what the application passed (or their keyed hash, with the facade's
//! audit key); they leave the detector only in the detections, for alert labels and logs.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::time::Duration;

/// Sizing of the account-level detector ([`AlertConfig::accounts`](crate::AlertConfig::accounts)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountConfig {
    window: Duration,
    slots: u32,
    capacity: usize,
    depth: usize,
    tracked: usize,
    members: usize,
    baseline: Duration,
}

impl Default for AccountConfig {
    /// A 10-minute window in 5 slots, 2^17 cells per row, 4 rows, 4,096 accounts and 4,096
    /// addresses tracked with up to 64 members each, an hour of baseline: about 20 MiB at most.
    fn default() -> Self {
        Self {
            window: Duration::from_secs(600),
            slots: 5,
            capacity: 1 << 17,
            depth: 4,
            tracked: 4096,
            members: 64,
            baseline: Duration::from_secs(3600),
        }
    }
}

impl AccountConfig {
    /// The window the account rules count over (default 10 minutes).
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window.max(Duration::from_millis(1));
        self
    }

    /// How many slots the window is cut into (default 5, between 2 and 60).
    #[must_use]
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = slots.clamp(2, 60);
        self
    }

    /// Cells per sketch row, rounded up to a power of two (default 2^17).
    #[must_use]
    pub fn capacity(mut self, cells: usize) -> Self {
        self.capacity = cells.clamp(64, 1 << 24).next_power_of_two();
        self
    }

    /// Accounts, and addresses, whose distinct counterparts are tracked (default 4,096 each).
    #[must_use]
    pub fn tracked(mut self, n: usize) -> Self {
        self.tracked = n.max(1);
        self
    }

    /// The most counterparts one tracked account or address keeps (default 64); a count at
    /// the cap means "at least that many". Keep it above the rules' thresholds.
    #[must_use]
    pub fn members(mut self, n: usize) -> Self {
        self.members = n.clamp(2, 4096);
        self
    }

    /// How far back the baseline of credential stuffing reaches before the window (default
    /// an hour).
    #[must_use]
    pub fn baseline(mut self, d: Duration) -> Self {
        self.baseline = d;
        self
    }

    /// The window ([`window`](Self::window)).
    #[must_use]
    pub fn window_len(&self) -> Duration {
        self.window
    }

    /// The baseline ([`baseline`](Self::baseline)).
    #[must_use]
    pub fn baseline_len(&self) -> Duration {
        self.baseline
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

    /// Rows per sketch (4).
    #[must_use]
    pub fn rows(&self) -> usize {
        self.depth
    }

    /// Accounts, and addresses, tracked ([`tracked`](Self::tracked)).
    #[must_use]
    pub fn tracked_len(&self) -> usize {
        self.tracked
    }

    /// Counterparts kept per tracked account or address ([`members`](Self::members)).
    #[must_use]
    pub fn members_len(&self) -> usize {
        self.members
    }

    /// Slots of history kept for the baseline before the window (the baseline in slots, at
    /// most a day's worth).
    #[must_use]
    pub fn baseline_slots(&self) -> usize {
        self.bitmap_slots() - self.slots as usize
    }

    fn slot_len(&self) -> Duration {
        (self.window / self.slots).max(Duration::from_nanos(1))
    }

    /// Slots of bitmap history: the window's and the baseline's.
    fn bitmap_slots(&self) -> usize {
        let per = self.slot_len().as_nanos().max(1);
        let baseline = usize::try_from(self.baseline.as_nanos().div_ceil(per)).unwrap_or(0);
        self.slots as usize + baseline.min(24 * 60)
    }
}

/// Bits of one slot's bitmap of failing accounts (a fleet's shared bitmaps have as many).
pub const BITMAP_BITS: usize = 1 << 17;

/// An account with failures in the window ([`AccountDetections::accounts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccountUnderAttack {
    /// The account as the application named it (or its keyed hash).
    pub account: String,
    /// Its failures over the window (never under the truth).
    pub failures: u64,
    /// Distinct client addresses it failed from (never under the truth while tracked from
    /// its first failure; see the module documentation).
    pub addresses: u64,
}

impl AccountUnderAttack {
    /// `account` with `failures` from `addresses` distinct addresses.
    #[must_use]
    pub fn new(account: impl Into<String>, failures: u64, addresses: u64) -> Self {
        Self {
            account: account.into(),
            failures,
            addresses,
        }
    }
}

/// A client address failing logins on many accounts ([`AccountDetections::clients`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SprayingClient {
    /// The client key (IPv4, or the IPv6 prefix: see
    /// [`BruteForceConfig::client_key`](crate::BruteForceConfig::client_key)).
    pub ip: IpAddr,
    /// Distinct accounts it failed on over the window.
    pub accounts: u64,
    /// Its failed logins over the window.
    pub failures: u64,
}

impl SprayingClient {
    /// `ip` failing on `accounts` distinct accounts, `failures` times.
    #[must_use]
    pub fn new(ip: IpAddr, accounts: u64, failures: u64) -> Self {
        Self {
            ip,
            accounts,
            failures,
        }
    }
}

/// What the account detector holds over the threshold levels it was given.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct AccountDetections {
    /// Accounts at or above a level, most failures first.
    pub accounts: Vec<AccountUnderAttack>,
    /// Addresses at or above the spraying level, most accounts first.
    pub clients: Vec<SprayingClient>,
    /// Distinct accounts with a failure in the window (linear counting: exact to about 1 %).
    pub failing_accounts: u64,
    /// The same per window, averaged over the baseline before the window; `None` until a
    /// whole window of history precedes it.
    pub baseline_accounts: Option<f64>,
    /// The most failures of one account over the window.
    pub top_account_failures: u64,
}

/// The levels from which accounts and addresses are reported (the lowest thresholds of the
/// enabled rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountLevels {
    /// Failures of one account (reported when strictly above).
    pub account_failures_above: u64,
    /// Distinct addresses of one account (reported when reached).
    pub account_addresses: u64,
    /// Distinct accounts of one address (reported when reached).
    pub client_accounts: u64,
}

impl Default for AccountLevels {
    fn default() -> Self {
        Self {
            account_failures_above: 20,
            account_addresses: 10,
            client_accounts: 20,
        }
    }
}

/// A windowed count-min sketch over 64-bit key hashes, one sketch per slot.
struct Sketch {
    depth: usize,
    capacity: usize,
    slots: usize,
    cells: Vec<u16>,
}

impl Sketch {
    fn new(cfg: &AccountConfig) -> Self {
        let slots = cfg.slots as usize;
        Self {
            depth: cfg.depth,
            capacity: cfg.capacity,
            slots,
            cells: crate::detector::resident_zeroes(slots * cfg.depth * cfg.capacity),
        }
    }

    fn cell(&self, slot: usize, row: usize, h: u64) -> usize {
        let (h1, h2) = (h as u32 as usize, ((h >> 32) as usize) | 1);
        let col = h1.wrapping_add(row.wrapping_mul(h2)) & (self.capacity - 1);
        (slot * self.depth + row) * self.capacity + col
    }

    fn slot_estimate(&self, slot: usize, h: u64) -> u64 {
        (0..self.depth)
            .map(|r| self.cells[self.cell(slot, r, h)])
            .min()
            .map_or(0, u64::from)
    }

    fn estimate(&self, h: u64) -> u64 {
        (0..self.slots).map(|s| self.slot_estimate(s, h)).sum()
    }

    /// Adds one to `h` in `slot` (conservative update); the estimate over the window after.
    fn add(&mut self, slot: usize, h: u64) -> u64 {
        let m = self.slot_estimate(slot, h);
        let new = u16::try_from(m + 1).unwrap_or(u16::MAX);
        for r in 0..self.depth {
            let i = self.cell(slot, r, h);
            if self.cells[i] < new {
                self.cells[i] = new;
            }
        }
        self.estimate(h)
    }

    fn clear(&mut self, slot: usize) {
        let n = self.depth * self.capacity;
        self.cells[slot * n..(slot + 1) * n].fill(0);
    }
}

/// One tracked account or address: its failures and the distinct counterparts it failed with.
#[derive(Debug)]
struct Tracked {
    label: String,
    /// The slot number it was first tracked in.
    since: u64,
    /// Its failures counted before it was tracked (each possibly with another counterpart).
    prior: u64,
    failures: u64,
    /// Counterpart hashes and the slot number each was last seen in.
    members: Vec<(u64, u64)>,
}

/// The tracked accounts, or addresses: bounded, the weakest going first.
struct Tracker<K> {
    map: HashMap<K, Tracked, foldhash::quality::RandomState>,
    ranked: BTreeSet<(u64, K)>,
    capacity: usize,
    members: usize,
}

impl<K: Hash + Eq + Ord + Copy> Tracker<K> {
    fn new(capacity: usize, members: usize) -> Self {
        Self {
            map: HashMap::default(),
            ranked: BTreeSet::new(),
            capacity,
            members,
        }
    }

    /// A failure of `key` (its estimate now `failures`), with `member` as counterpart.
    fn note(
        &mut self,
        key: K,
        label: impl FnOnce() -> String,
        failures: u64,
        slot: u64,
        member: Option<u64>,
    ) {
        if !self.map.contains_key(&key) {
            if self.map.len() >= self.capacity {
                match self.ranked.first().copied() {
                    Some((weakest, w)) if weakest < failures => {
                        self.ranked.remove(&(weakest, w));
                        self.map.remove(&w);
                    }
                    _ => return,
                }
            }
            self.map.insert(
                key,
                Tracked {
                    label: label(),
                    since: slot,
                    prior: failures.saturating_sub(1),
                    failures: 0,
                    members: Vec::new(),
                },
            );
        }
        let Some(t) = self.map.get_mut(&key) else {
            return;
        };
        if t.failures != failures {
            self.ranked.remove(&(t.failures, key));
            t.failures = failures;
            self.ranked.insert((failures, key));
        }
        let Some(m) = member else { return };
        if let Some(e) = t.members.iter_mut().find(|(h, _)| *h == m) {
            e.1 = slot;
        } else if t.members.len() < self.members {
            t.members.push((m, slot));
        } else if let Some(oldest) = t.members.iter_mut().min_by_key(|(_, s)| *s) {
            // Full: the counterpart seen longest ago makes room (it leaves the window first).
            *oldest = (m, slot);
        }
    }

    /// Distinct counterparts of `t` over the window ending in slot `slot`.
    fn distinct(t: &Tracked, slot: u64, slots: u64) -> u64 {
        let prior = if t.since + slots > slot { t.prior } else { 0 };
        t.members.len() as u64 + prior
    }

    /// After the window moved to slot `slot`: counterparts and failures out of it forgotten,
    /// `estimate` giving each key's failures now.
    fn advance(&mut self, slot: u64, slots: u64, estimate: impl Fn(&K) -> u64) {
        self.ranked.clear();
        self.map.retain(|k, t| {
            t.failures = estimate(k);
            t.members.retain(|(_, s)| s + slots > slot);
            t.failures > 0
        });
        for (k, t) in &self.map {
            self.ranked.insert((t.failures, *k));
        }
    }

    fn bytes(&self) -> usize {
        self.map
            .values()
            .map(|t| {
                std::mem::size_of::<(K, Tracked)>()
                    + t.label.capacity()
                    + t.members.capacity() * 16
                    + std::mem::size_of::<(u64, K)>() * 2
            })
            .sum()
    }
}

/// The detector. Not synchronised: the engine keeps it behind a mutex.
pub struct AccountDetector {
    cfg: AccountConfig,
    levels: AccountLevels,
    /// Places accounts and addresses in the sketches, seeded at random per detector.
    accounts_hasher: foldhash::quality::RandomState,
    clients_hasher: foldhash::quality::RandomState,
    account_failures: Sketch,
    client_failures: Sketch,
    accounts: Tracker<u64>,
    clients: Tracker<IpAddr>,
    /// Per slot of the window and the baseline, the failing accounts' bits.
    bitmaps: Vec<Vec<u64>>,
    /// The slot number (since the detector started) and when it started.
    slot: u64,
    slot_started: Duration,
    /// Largest account estimate per slot, for the top-account figure.
    slot_max: Vec<u64>,
}

impl std::fmt::Debug for AccountDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountDetector")
            .field("cfg", &self.cfg)
            .field("accounts", &self.accounts.map.len())
            .field("clients", &self.clients.map.len())
            .finish_non_exhaustive()
    }
}

impl AccountDetector {
    /// An empty detector that reports from `levels` on.
    #[must_use]
    pub fn new(cfg: AccountConfig, levels: AccountLevels, now: Duration) -> Self {
        Self {
            levels,
            accounts_hasher: foldhash::quality::RandomState::default(),
            clients_hasher: foldhash::quality::RandomState::default(),
            account_failures: Sketch::new(&cfg),
            client_failures: Sketch::new(&cfg),
            accounts: Tracker::new(cfg.tracked, cfg.members),
            clients: Tracker::new(cfg.tracked, cfg.members),
            bitmaps: vec![vec![0; BITMAP_BITS / 64]; cfg.bitmap_slots()],
            slot: 0,
            slot_started: now,
            slot_max: vec![0; cfg.slots as usize],
            cfg,
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &AccountConfig {
        &self.cfg
    }

    fn current(&self) -> usize {
        (self.slot % u64::from(self.cfg.slots)) as usize
    }

    /// One failed login of `account` from `client` (a client key; `None` when the application
    /// did not say).
    pub fn record_failure(&mut self, account: &str, client: Option<IpAddr>) {
        let cur = self.current();
        let a = self.accounts_hasher.hash_one(account);
        let c = client.map(|ip| (ip, self.clients_hasher.hash_one(ip)));
        let failures = self.account_failures.add(cur, a);
        if self.slot_max[cur] < failures {
            self.slot_max[cur] = failures;
        }
        let slot = self.slot;
        self.accounts
            .note(a, || account.to_owned(), failures, slot, c.map(|(_, h)| h));
        if let Some((ip, h)) = c {
            let failures = self.client_failures.add(cur, h);
            self.clients.note(ip, String::new, failures, slot, Some(a));
        }
        let n = self.bitmaps.len() as u64;
        let bits = &mut self.bitmaps[(slot % n) as usize];
        let bit = (a.rotate_left(23) as usize) & (BITMAP_BITS - 1);
        bits[bit / 64] |= 1 << (bit % 64);
    }

    /// Moves the window to `now`: slots older than the window are emptied.
    pub fn advance(&mut self, now: Duration) {
        let len = self.cfg.slot_len();
        let slots = u64::from(self.cfg.slots);
        let mut steps = 0usize;
        while now >= self.slot_started + len {
            self.slot_started += len;
            self.slot += 1;
            steps += 1;
            let cur = self.current();
            self.account_failures.clear(cur);
            self.client_failures.clear(cur);
            self.slot_max[cur] = 0;
            let n = self.bitmaps.len() as u64;
            self.bitmaps[(self.slot % n) as usize].fill(0);
            if steps >= self.bitmaps.len() {
                // A long pause: every slot is empty now; skip to the present.
                let behind = (now - self.slot_started).as_nanos() / len.as_nanos();
                let behind = u32::try_from(behind).unwrap_or(u32::MAX);
                self.slot_started += len * behind;
                self.slot += u64::from(behind);
            }
        }
        if steps > 0 {
            let af = &self.account_failures;
            self.accounts.advance(self.slot, slots, |h| af.estimate(*h));
            let (cf, ch) = (&self.client_failures, &self.clients_hasher);
            self.clients
                .advance(self.slot, slots, |ip| cf.estimate(ch.hash_one(ip)));
        }
    }

    /// The distinct accounts set in the bitmaps of slots `from..=to` (slot numbers).
    fn distinct_accounts(&self, from: u64, to: u64) -> u64 {
        let n = self.bitmaps.len() as u64;
        let mut zero = 0u64;
        for w in 0..BITMAP_BITS / 64 {
            let mut word = 0u64;
            for s in from..=to {
                word |= self.bitmaps[(s % n) as usize][w];
            }
            zero += u64::from(word.count_zeros());
        }
        let m = BITMAP_BITS as f64;
        if zero == 0 {
            // Saturated: at least this many.
            return (m * m.ln()) as u64;
        }
        (-m * (zero as f64 / m).ln()).round() as u64
    }

    /// Reports from `levels` on (the thresholds of reloaded rules).
    pub fn set_levels(&mut self, levels: AccountLevels) {
        self.levels = levels;
    }

    /// What is at or above the levels now.
    #[must_use]
    pub fn detections(&self) -> AccountDetections {
        let slots = u64::from(self.cfg.slots);
        let l = self.levels;
        let mut accounts: Vec<AccountUnderAttack> = self
            .accounts
            .map
            .values()
            .map(|t| AccountUnderAttack {
                account: t.label.clone(),
                failures: t.failures,
                addresses: Tracker::<u64>::distinct(t, self.slot, slots).min(t.failures),
            })
            .filter(|a| a.failures > l.account_failures_above || a.addresses >= l.account_addresses)
            .collect();
        accounts.sort_by(|a, b| b.failures.cmp(&a.failures).then(a.account.cmp(&b.account)));
        let mut clients: Vec<SprayingClient> = self
            .clients
            .map
            .iter()
            .map(|(ip, t)| SprayingClient {
                ip: *ip,
                accounts: Tracker::<IpAddr>::distinct(t, self.slot, slots).min(t.failures),
                failures: t.failures,
            })
            .filter(|c| c.accounts >= l.client_accounts)
            .collect();
        clients.sort_by(|a, b| b.accounts.cmp(&a.accounts).then(a.ip.cmp(&b.ip)));
        let first = self.slot.saturating_sub(slots - 1);
        let failing_accounts = self.distinct_accounts(first, self.slot);
        // Whole windows of history before this one, within the baseline.
        let history = first.min(self.bitmaps.len() as u64 - slots);
        let windows = history / slots;
        let baseline_accounts = (windows > 0).then(|| {
            (1..=windows)
                .map(|w| self.distinct_accounts(first - w * slots, first - (w - 1) * slots - 1))
                .sum::<u64>() as f64
                / windows as f64
        });
        AccountDetections {
            top_account_failures: self.top_account_failures(),
            accounts,
            clients,
            failing_accounts,
            baseline_accounts,
        }
    }

    /// Accounts at or above a level now (what [`detections`](Self::detections) lists),
    /// counted without building the list.
    #[must_use]
    pub fn accounts_at_levels(&self) -> usize {
        let slots = u64::from(self.cfg.slots);
        let l = self.levels;
        self.accounts
            .map
            .values()
            .filter(|t| {
                t.failures > l.account_failures_above
                    || Tracker::<u64>::distinct(t, self.slot, slots).min(t.failures)
                        >= l.account_addresses
            })
            .count()
    }

    /// The most failures of one account over the window (an upper bound).
    #[must_use]
    pub fn top_account_failures(&self) -> u64 {
        let tracked = self.accounts.ranked.last().map_or(0, |(f, _)| *f);
        tracked.max(
            self.slot_max
                .iter()
                .copied()
                .max()
                .unwrap_or(0)
                .min(self.levels.account_failures_above),
        )
    }

    /// Bytes the detector holds now: sketches, bitmaps, tracked sets.
    #[must_use]
    pub fn memory_bytes(&self) -> usize {
        (self.account_failures.cells.len() + self.client_failures.cells.len()) * 2
            + self.bitmaps.len() * BITMAP_BITS / 8
            + self.accounts.bytes()
            + self.clients.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::from(n)))
    }

    fn detector() -> AccountDetector {
        AccountDetector::new(
            AccountConfig::default(),
            AccountLevels::default(),
            Duration::ZERO,
        )
    }

    #[test]
    fn spraying_is_one_address_on_many_accounts_and_a_near_miss_is_not() {
        let mut d = detector();
        for a in 0..20 {
            d.record_failure(&format!("user{a}@example.com"), ip(1));
        }
        for a in 0..19 {
            d.record_failure(&format!("user{a}@example.com"), ip(2));
        }
        let got = d.detections();
        assert_eq!(got.clients.len(), 1, "{got:?}");
        assert_eq!(got.clients[0].ip, ip(1).unwrap());
        assert_eq!((got.clients[0].accounts, got.clients[0].failures), (20, 20));
        // Each account failed twice (once from each address): none is under attack.
        assert!(got.accounts.is_empty(), "{got:?}");
    }

    #[test]
    fn an_account_under_attack_by_count_or_by_many_addresses() {
        let mut d = detector();
        // 21 failures of one account from one address; 20 of another.
        for _ in 0..21 {
            d.record_failure("alice", ip(7));
        }
        for _ in 0..20 {
            d.record_failure("bob", ip(7));
        }
        // 10 addresses on carol, once each; 9 on dave.
        for i in 0..10 {
            d.record_failure("carol", ip(100 + i));
        }
        for i in 0..9 {
            d.record_failure("dave", ip(200 + i));
        }
        let got = d.detections();
        let by: Vec<(&str, u64, u64)> = got
            .accounts
            .iter()
            .map(|a| (a.account.as_str(), a.failures, a.addresses))
            .collect();
        assert_eq!(by, vec![("alice", 21, 1), ("carol", 10, 10)]);
        assert_eq!(got.top_account_failures, 21);
    }

    #[test]
    fn ordinary_mistakes_and_an_office_behind_one_address_fire_nothing() {
        let mut d = detector();
        // Three typos.
        for _ in 0..3 {
            d.record_failure("erin", ip(9));
        }
        // An office NAT: 19 colleagues failing once or twice each, from one address.
        for u in 0..19 {
            for _ in 0..=(u % 2) {
                d.record_failure(&format!("colleague{u}"), ip(10));
            }
        }
        let got = d.detections();
        assert!(got.accounts.is_empty() && got.clients.is_empty(), "{got:?}");
    }

    #[test]
    fn the_window_forgets_and_the_baseline_follows() {
        let cfg = AccountConfig::default()
            .window(Duration::from_secs(100))
            .slots(5)
            .baseline(Duration::from_secs(300));
        let mut d = AccountDetector::new(cfg, AccountLevels::default(), Duration::ZERO);
        let at = |s: u64| Duration::from_secs(s);
        // 10 accounts failing per window for 3 windows.
        for w in 0..3u64 {
            d.advance(at(w * 100));
            for a in 0..10 {
                d.record_failure(&format!("w{w}-{a}"), ip(1));
            }
        }
        d.advance(at(300));
        let got = d.detections();
        assert_eq!(got.failing_accounts, 0);
        // Two whole windows of history within the baseline, 10 accounts each.
        let base = got.baseline_accounts.unwrap();
        assert!((9.5..=10.0).contains(&base), "{got:?}");
        for a in 0..60 {
            d.record_failure(&format!("stuffed{a}"), ip(1_000 + a));
        }
        let got = d.detections();
        // Linear counting: two of 60 accounts may share a bit (1.4 % of runs).
        assert!((59..=60).contains(&got.failing_accounts), "{got:?}");
        // The address that failed on 10 accounts in each earlier window (30 in all) is not
        // spraying in this one, and is no longer tracked.
        assert!(got.clients.is_empty(), "{got:?}");
        assert!(!d.clients.map.contains_key(&ip(1).unwrap()));
        d.advance(at(400));
        assert_eq!(d.detections().failing_accounts, 0);
        assert!(d.accounts.map.is_empty() && d.clients.map.is_empty());
    }

    #[test]
    fn a_late_tracked_account_never_undercounts_its_addresses() {
        let cfg = AccountConfig::default().tracked(1);
        let mut d = AccountDetector::new(cfg, AccountLevels::default(), Duration::ZERO);
        // Another account fills the one place.
        d.record_failure("filler", ip(1));
        // The victim's first failure cannot enter (1 is not more than the filler's 1).
        d.record_failure("victim", ip(50));
        for i in 1..10 {
            d.record_failure("victim", ip(50 + i));
        }
        let got = d.detections();
        assert_eq!(got.accounts.len(), 1, "{got:?}");
        assert_eq!(got.accounts[0].account, "victim");
        assert!(got.accounts[0].addresses >= 10, "{got:?}");
    }
}
