//! [`Blocklist`]: the client addresses the layer refuses, checked before a request reaches
//! your service.
//!
//! The check reads an immutable table through an [`ArcSwap`]: no lock, no write, one atomic
//! load while the list is empty and a hash lookup otherwise. Changes (rare: a block, an
//! unblock, an expiry) copy the table under a writers' mutex and swap it in.
//!
//! A blocked request is answered at once, without calling your service: `429 Too Many
//! Requests` with `Retry-After` (the seconds the block has left), or for a gRPC route the
//! gRPC status `RESOURCE_EXHAUSTED` (8), as gRPC clients expect. It is not an auth event (the
//! handler never ran): it is counted per operation in [`Blocklist::refused`] and per block in
//! [`BlockedIp::refused`].

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::op::AuthOp;

/// Where a block came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BlockSource {
    /// An alert that names the address (brute force, password spraying).
    Alert,
    /// A person: `block_ip`, the admin endpoint, the CLI.
    Manual,
    /// Another instance of the fleet.
    Fleet,
    /// A CrowdSec Local API decision.
    CrowdSec,
}

impl BlockSource {
    /// `alert`, `manual`, `fleet` or `crowdsec`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Manual => "manual",
            Self::Fleet => "fleet",
            Self::CrowdSec => "crowdsec",
        }
    }
}

impl fmt::Display for BlockSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One blocked address, as [`Blocklist::list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockedIp {
    /// The client key blocked: an IPv4 address, or the first address of an IPv6 prefix.
    pub ip: IpAddr,
    /// The IPv6 prefix length the block covers (32 for IPv4: the address alone).
    pub prefix: u8,
    /// When the block was made.
    pub since: SystemTime,
    /// When it ends.
    pub until: SystemTime,
    /// Why (the alert, or what the person said).
    pub reason: String,
    /// Who made it.
    pub source: BlockSource,
    /// Requests refused by it so far.
    pub refused: u64,
}

impl BlockedIp {
    /// A block of `ip` (with its IPv6 `prefix`) from `since` to `until`, as read back from
    /// elsewhere (a fleet's shared list).
    #[must_use]
    pub fn new(
        ip: IpAddr,
        prefix: u8,
        since: SystemTime,
        until: SystemTime,
        reason: impl Into<String>,
        source: BlockSource,
        refused: u64,
    ) -> Self {
        Self {
            ip,
            prefix: if ip.is_ipv4() { 32 } else { prefix.min(128) },
            since,
            until,
            reason: reason.into(),
            source,
            refused,
        }
    }

    /// The time the block has left, from now (zero once over).
    #[must_use]
    pub fn remaining(&self) -> Duration {
        self.until
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }
}

struct Entry {
    since: SystemTime,
    until_wall: SystemTime,
    until: Instant,
    reason: Box<str>,
    source: BlockSource,
    refused: AtomicU64,
}

impl Entry {
    fn shown(&self, ip: IpAddr, prefix: u8) -> BlockedIp {
        BlockedIp {
            ip,
            prefix: if ip.is_ipv4() { 32 } else { prefix },
            since: self.since,
            until: self.until_wall,
            reason: self.reason.to_string(),
            source: self.source,
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

type Table = HashMap<IpAddr, Arc<Entry>, foldhash::fast::RandomState>;

/// The addresses the layer refuses. Share one between the layer
/// ([`AuthLayerBuilder::blocklist`](crate::AuthLayerBuilder::blocklist)) and whatever makes
/// the blocks.
pub struct Blocklist {
    table: ArcSwap<Table>,
    /// Entries in the table: the check's first (and, while zero, only) load.
    len: AtomicUsize,
    enforce: AtomicBool,
    writer: Mutex<()>,
    /// Refused requests per operation, and on routes that are not auth routes.
    refused: [AtomicU64; AuthOp::COUNT + 1],
    max: usize,
    ipv6_prefix: u8,
    all_routes: bool,
}

impl fmt::Debug for Blocklist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blocklist")
            .field("blocked", &self.len.load(Ordering::Relaxed))
            .field("max", &self.max)
            .field("all_routes", &self.all_routes)
            .finish_non_exhaustive()
    }
}

impl Blocklist {
    /// An empty list of at most `max` blocks (beyond, the block that ends first goes), keying
    /// IPv6 clients by their first `ipv6_prefix` bits (64: a /64, as brute-force detection
    /// does), checked on auth routes only or, with `all_routes`, on every request.
    #[must_use]
    pub fn new(max: usize, ipv6_prefix: u8, all_routes: bool) -> Self {
        Self {
            table: ArcSwap::from_pointee(Table::default()),
            len: AtomicUsize::new(0),
            enforce: AtomicBool::new(true),
            writer: Mutex::new(()),
            refused: std::array::from_fn(|_| AtomicU64::new(0)),
            max: max.max(1),
            ipv6_prefix: ipv6_prefix.clamp(1, 128),
            all_routes,
        }
    }

    /// Whether blocks refuse requests (the default) or are only recorded (a dry run).
    pub fn set_enforce(&self, on: bool) {
        self.enforce.store(on, Ordering::Relaxed);
    }

    /// The IPv6 prefix length blocks cover.
    #[must_use]
    pub fn ipv6_prefix(&self) -> u8 {
        self.ipv6_prefix
    }

    /// Whether every request is checked, not only those on auth routes.
    #[must_use]
    pub fn all_routes(&self) -> bool {
        self.all_routes
    }

    /// The key `ip` is blocked under: IPv4 as is, IPv6 cut to its prefix.
    #[must_use]
    pub fn key(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return IpAddr::V4(v4);
                }
                let bits = u32::from(self.ipv6_prefix);
                let mask = if bits >= 128 {
                    u128::MAX
                } else {
                    !(u128::MAX >> bits)
                };
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }

    /// Whether a request could be refused at all: blocks exist and are enforced. One relaxed
    /// load each; the layer asks before it looks the client up.
    #[inline]
    #[must_use]
    pub fn armed(&self) -> bool {
        self.len.load(Ordering::Relaxed) != 0 && self.enforce.load(Ordering::Relaxed)
    }

    /// The time `ip`'s block has left, when it is blocked now; the refusal is counted (for
    /// `op`, or as a request on another route when `None`).
    #[inline]
    pub fn check(&self, ip: IpAddr, op: Option<AuthOp>) -> Option<Duration> {
        if !self.armed() {
            return None;
        }
        self.check_armed(ip, op)
    }

    /// [`check`](Self::check) once [`armed`](Self::armed) said yes (the layer asks first).
    pub(crate) fn check_armed(&self, ip: IpAddr, op: Option<AuthOp>) -> Option<Duration> {
        let table = self.table.load();
        let entry = table.get(&self.key(ip))?;
        let left = entry.until.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        entry.refused.fetch_add(1, Ordering::Relaxed);
        let i = op.map_or(AuthOp::COUNT, AuthOp::index);
        self.refused[i].fetch_add(1, Ordering::Relaxed);
        Some(left)
    }

    /// Whether `ip` is blocked now (without counting a refusal).
    #[must_use]
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        let table = self.table.load();
        table
            .get(&self.key(ip))
            .is_some_and(|e| e.until > Instant::now())
    }

    /// `ip`'s block (its key's), when there is one in force.
    #[must_use]
    pub fn get(&self, ip: IpAddr) -> Option<BlockedIp> {
        let key = self.key(ip);
        let table = self.table.load();
        table
            .get(&key)
            .filter(|e| e.until > Instant::now())
            .map(|e| e.shown(key, self.ipv6_prefix))
    }

    /// Refused requests so far: per operation ([`AuthOp::index`]), then those on other routes.
    #[must_use]
    pub fn refused(&self) -> [u64; AuthOp::COUNT + 1] {
        std::array::from_fn(|i| self.refused[i].load(Ordering::Relaxed))
    }

    /// Blocks `ip` (its key) for `ttl` from now. A block already there is replaced (its
    /// refusals kept) and returned. When the list is full, the block that ends first goes,
    /// and is returned as `evicted`.
    pub fn insert(&self, ip: IpAddr, ttl: Duration, reason: &str, source: BlockSource) -> Inserted {
        let key = self.key(ip);
        let now = Instant::now();
        let wall = SystemTime::now();
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut table: Table = (**self.table.load()).clone();
        let mut evicted = None;
        let previous = table.remove(&key);
        if previous.is_none() && table.len() >= self.max {
            // Expired ones first, then the one that ends soonest.
            if let Some((k, _)) = table.iter().min_by_key(|(_, e)| e.until) {
                let k = *k;
                evicted = table.remove(&k).map(|e| e.shown(k, self.ipv6_prefix));
            }
        }
        let refused = previous
            .as_ref()
            .map_or(0, |e| e.refused.load(Ordering::Relaxed));
        table.insert(
            key,
            Arc::new(Entry {
                since: previous.as_ref().map_or(wall, |e| e.since),
                until_wall: wall + ttl,
                until: now + ttl,
                reason: reason.into(),
                source,
                refused: AtomicU64::new(refused),
            }),
        );
        let shown = table[&key].shown(key, self.ipv6_prefix);
        self.len.store(table.len(), Ordering::Relaxed);
        self.table.store(Arc::new(table));
        Inserted {
            block: shown,
            replaced: previous.map(|e| e.shown(key, self.ipv6_prefix)),
            evicted,
        }
    }

    /// Lifts `ip`'s block; what it was, if any.
    pub fn remove(&self, ip: IpAddr) -> Option<BlockedIp> {
        let key = self.key(ip);
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if !self.table.load().contains_key(&key) {
            return None;
        }
        let mut table: Table = (**self.table.load()).clone();
        let gone = table.remove(&key).map(|e| e.shown(key, self.ipv6_prefix));
        self.len.store(table.len(), Ordering::Relaxed);
        self.table.store(Arc::new(table));
        gone
    }

    /// Brings the blocks of one outside `source` (a CrowdSec Local API) in line with it, in
    /// one swap of the table however many there are: `add`s each address for its time (never
    /// replacing a block of another source, which stays as it is), and `remove` lifts the
    /// listed addresses' blocks of that `source` only. With `replace_all`, the `source`'s
    /// blocks not in `add` are lifted too (a full list rather than a change). Beyond the
    /// maximum, the blocks that end first make room.
    pub fn sync(
        &self,
        source: BlockSource,
        add: &[(IpAddr, Duration, String)],
        remove: &[IpAddr],
        replace_all: bool,
    ) -> Synced {
        let now = Instant::now();
        let wall = SystemTime::now();
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut table: Table = (**self.table.load()).clone();
        let mut done = Synced::default();
        let mut new_keys = std::collections::HashSet::new();
        if replace_all {
            let keep: std::collections::HashSet<IpAddr> =
                add.iter().map(|(ip, ..)| self.key(*ip)).collect();
            table.retain(|k, e| {
                let lift = e.source == source && !keep.contains(k);
                if lift {
                    done.removed.push(e.shown(*k, self.ipv6_prefix));
                }
                !lift
            });
        }
        for ip in remove {
            let key = self.key(*ip);
            if table.get(&key).is_some_and(|e| e.source == source) {
                if let Some(e) = table.remove(&key) {
                    done.removed.push(e.shown(key, self.ipv6_prefix));
                }
            }
        }
        for (ip, ttl, reason) in add {
            let key = self.key(*ip);
            let previous = table.get(&key);
            if previous.is_some_and(|e| e.source != source) {
                continue;
            }
            let refused = previous.map_or(0, |e| e.refused.load(Ordering::Relaxed));
            let since = previous.map_or(wall, |e| e.since);
            if previous.is_none() {
                new_keys.insert(key);
            }
            table.insert(
                key,
                Arc::new(Entry {
                    since,
                    until_wall: wall + *ttl,
                    until: now + *ttl,
                    reason: reason.as_str().into(),
                    source,
                    refused: AtomicU64::new(refused),
                }),
            );
        }
        // Over the bound: the blocks that end first go, found in one pass (a list of
        // thousands must not cost a scan of the table per address).
        if table.len() > self.max {
            let mut ends: Vec<(Instant, IpAddr)> =
                table.iter().map(|(k, e)| (e.until, *k)).collect();
            let over = table.len() - self.max;
            ends.select_nth_unstable(over - 1);
            for (_, k) in &ends[..over] {
                if let Some(e) = table.remove(k) {
                    done.evicted.push(e.shown(*k, self.ipv6_prefix));
                }
            }
            for (_, k) in &ends[..over] {
                new_keys.remove(k);
            }
        }
        done.added = new_keys.len();
        self.len.store(table.len(), Ordering::Relaxed);
        self.table.store(Arc::new(table));
        done
    }

    /// Removes the blocks that have ended; what they were.
    pub fn sweep(&self) -> Vec<BlockedIp> {
        let now = Instant::now();
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.table.load();
        if !current.values().any(|e| e.until <= now) {
            return Vec::new();
        }
        let mut table: Table = (**current).clone();
        let mut ended = Vec::new();
        table.retain(|k, e| {
            if e.until <= now {
                ended.push(e.shown(*k, self.ipv6_prefix));
                false
            } else {
                true
            }
        });
        self.len.store(table.len(), Ordering::Relaxed);
        self.table.store(Arc::new(table));
        ended
    }

    /// The blocks in force, the one that ends last first.
    #[must_use]
    pub fn list(&self) -> Vec<BlockedIp> {
        let now = Instant::now();
        let mut v: Vec<BlockedIp> = self
            .table
            .load()
            .iter()
            .filter(|(_, e)| e.until > now)
            .map(|(k, e)| e.shown(*k, self.ipv6_prefix))
            .collect();
        v.sort_by(|a, b| b.until.cmp(&a.until).then(a.ip.cmp(&b.ip)));
        v
    }

    /// Blocks in the table (ended ones until the next sweep included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the table is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most blocks held at once.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.max
    }
}

/// What [`Blocklist::insert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inserted {
    /// The block now in force.
    pub block: BlockedIp,
    /// The block it replaced (a longer or shorter one for the same address).
    pub replaced: Option<BlockedIp>,
    /// A block that made room (the list was full).
    pub evicted: Option<BlockedIp>,
}

/// What [`Blocklist::sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Synced {
    /// Addresses blocked that were not before.
    pub added: usize,
    /// The source's blocks lifted.
    pub removed: Vec<BlockedIp>,
    /// Blocks that made room (the list was full).
    pub evicted: Vec<BlockedIp>,
}

/// A per-address limit the layer applies to auth routes while it is on (authwatch's
/// attack-time limit: on while an attack alert fires). A refused request is answered `429`
/// with `Retry-After` (gRPC: `RESOURCE_EXHAUSTED`) without calling your service, and is an
/// auth event like any other: rate limited.
pub trait Limiter: Send + Sync + 'static {
    /// Whether the limit is on now: the layer asks first, on every request to an auth
    /// route, so keep it to an atomic load.
    fn active(&self) -> bool;

    /// `None` lets a request of `op` from `ip` through (and counts it); `Some(wait)` refuses
    /// it, `wait` being when the next would pass.
    fn check(&self, ip: IpAddr, op: AuthOp) -> Option<Duration>;
}

/// The refusal of a blocked request: `429` with `Retry-After`, or for gRPC a trailers-only
/// `RESOURCE_EXHAUSTED`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal {
    pub(crate) retry_after: u64,
    pub(crate) grpc: bool,
}

impl Refusal {
    /// A refusal telling the client to retry in `left` (rounded up to a whole second).
    pub(crate) fn new(left: Duration, grpc: bool) -> Self {
        Self {
            retry_after: left.as_secs() + u64::from(left.subsec_nanos() > 0),
            grpc,
        }
    }

    /// The response head.
    pub(crate) fn head(self) -> http::response::Parts {
        let mut b = http::Response::builder();
        if self.grpc {
            b = b
                .status(http::StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .header("grpc-status", "8")
                .header(
                    "grpc-message",
                    format!(
                        "address%20blocked%3B%20retry%20after%20{}%20s",
                        self.retry_after
                    ),
                );
        } else {
            b = b
                .status(http::StatusCode::TOO_MANY_REQUESTS)
                .header(http::header::CONTENT_LENGTH, "0");
        }
        let res = b
            .header(http::header::RETRY_AFTER, self.retry_after)
            .body(())
            .unwrap_or_default();
        res.into_parts().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_block_refuses_its_address_and_prefix_until_it_ends() {
        let b = Blocklist::new(10, 64, false);
        assert!(!b.armed());
        assert_eq!(b.check(ip("203.0.113.7"), Some(AuthOp::Login)), None);
        b.insert(
            ip("203.0.113.7"),
            Duration::from_secs(60),
            "test",
            BlockSource::Manual,
        );
        b.insert(
            ip("2001:db8:1:2::99"),
            Duration::from_secs(60),
            "test",
            BlockSource::Manual,
        );
        assert!(b.armed());
        let left = b.check(ip("203.0.113.7"), Some(AuthOp::Login)).unwrap();
        assert!(left > Duration::from_secs(58) && left <= Duration::from_secs(60));
        assert!(b.check(ip("203.0.113.8"), Some(AuthOp::Login)).is_none());
        // Another address of the same /64, and the v4-mapped form of a blocked v4.
        assert!(b.check(ip("2001:db8:1:2::1"), None).is_some());
        assert!(b.check(ip("2001:db8:1:3::1"), None).is_none());
        assert!(b.check(ip("::ffff:203.0.113.7"), None).is_some());
        let r = b.refused();
        assert_eq!((r[AuthOp::Login.index()], r[AuthOp::COUNT]), (1, 2));
        let list = b.list();
        assert_eq!(list.len(), 2);
        let v6 = list.iter().find(|x| x.ip.is_ipv6()).unwrap();
        assert_eq!(
            (v6.ip, v6.prefix, v6.refused),
            (ip("2001:db8:1:2::"), 64, 1)
        );
        // Dry run: recorded, nothing refused.
        b.set_enforce(false);
        assert!(b.check(ip("203.0.113.7"), None).is_none());
        b.set_enforce(true);
        assert_eq!(b.remove(ip("203.0.113.7")).map(|x| x.refused), Some(2));
        assert!(b.check(ip("203.0.113.7"), None).is_none());
        b.insert(
            ip("198.51.100.1"),
            Duration::ZERO,
            "over",
            BlockSource::Alert,
        );
        assert!(b.check(ip("198.51.100.1"), None).is_none());
        let ended = b.sweep();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].ip, ip("198.51.100.1"));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn a_full_list_lets_the_block_that_ends_first_go() {
        let b = Blocklist::new(3, 64, false);
        for (i, secs) in [(1u8, 30u64), (2, 10), (3, 20)] {
            b.insert(
                IpAddr::from([192, 0, 2, i]),
                Duration::from_secs(secs),
                "t",
                BlockSource::Alert,
            );
        }
        let got = b.insert(
            ip("192.0.2.4"),
            Duration::from_secs(40),
            "t",
            BlockSource::Alert,
        );
        assert_eq!(got.evicted.map(|e| e.ip), Some(ip("192.0.2.2")));
        assert_eq!(b.len(), 3);
        // Renewing one in the list evicts nothing and keeps its refusals.
        b.check(ip("192.0.2.1"), None);
        let got = b.insert(
            ip("192.0.2.1"),
            Duration::from_secs(90),
            "t",
            BlockSource::Alert,
        );
        assert!(got.evicted.is_none());
        assert_eq!(got.block.refused, 1);
        assert!(got.replaced.is_some());
    }

    #[test]
    fn a_sync_keeps_other_sources_and_lifts_only_its_own() {
        let b = Blocklist::new(4, 64, false);
        let d = Duration::from_secs(60);
        b.insert(ip("192.0.2.1"), d, "alert", BlockSource::Alert);
        let got = b.sync(
            BlockSource::CrowdSec,
            &[
                (ip("192.0.2.1"), d, "cs".into()),
                (ip("192.0.2.2"), d, "cs".into()),
                (ip("2001:db8::7"), d, "cs".into()),
            ],
            &[],
            false,
        );
        assert_eq!(got.added, 2);
        assert_eq!(b.get(ip("192.0.2.1")).unwrap().source, BlockSource::Alert);
        assert_eq!(
            b.get(ip("192.0.2.2")).unwrap().source,
            BlockSource::CrowdSec
        );
        assert!(b.check(ip("2001:db8::1"), None).is_some(), "keyed by /64");
        // A removal lifts only the source's own block.
        let got = b.sync(
            BlockSource::CrowdSec,
            &[],
            &[ip("192.0.2.1"), ip("192.0.2.2")],
            false,
        );
        assert_eq!(got.removed.len(), 1);
        assert!(b.is_blocked(ip("192.0.2.1")) && !b.is_blocked(ip("192.0.2.2")));
        // A full list lifts the source's blocks missing from it; the bound holds.
        let got = b.sync(
            BlockSource::CrowdSec,
            &[
                (ip("192.0.2.3"), d, "cs".into()),
                (ip("192.0.2.4"), d * 2, "cs".into()),
                (ip("192.0.2.5"), d * 3, "cs".into()),
                (ip("192.0.2.6"), d * 4, "cs".into()),
            ],
            &[],
            true,
        );
        assert_eq!(got.removed.len(), 1, "2001:db8::/64 was not in the list");
        assert_eq!(b.len(), 4);
        assert_eq!(got.evicted.len(), 1);
        assert_eq!(got.added, 4);
    }

    #[test]
    fn the_refusal_says_when_to_retry() {
        let h = Refusal::new(Duration::from_millis(1_500), false).head();
        assert_eq!(h.status, 429);
        assert_eq!(h.headers[http::header::RETRY_AFTER], "2");
        let g = Refusal::new(Duration::from_secs(30), true).head();
        assert_eq!(g.status, 200);
        assert_eq!(g.headers["grpc-status"], "8");
        assert_eq!(g.headers[http::header::RETRY_AFTER], "30");
    }
}
