//! Temporary blocks: the addresses the attack alerts name, refused for a while at the layer
//! (the spec's incident response, step 2), and blocks made by hand.
//!
//! ```
//! use std::time::Duration;
//! use authwatch::{AuthWatch, BlockPolicy};
//!
//! # fn main() -> Result<(), authwatch::BuildError> {
//! let watch = AuthWatch::builder()
//!     .otlp(false)
//!     .blocking(BlockPolicy::default().ttl(Duration::from_secs(15 * 60)).allow("10.0.0.0/8"))
//!     .build()?;
//! // By hand, as an operator would:
//! let ip = "203.0.113.7".parse().unwrap();
//! watch.block_ip(ip, Duration::from_secs(3600), "credential stuffing seen in the WAF").unwrap();
//! assert_eq!(watch.blocked_ips()[0].ip, ip);
//! watch.unblock_ip(ip);
//! assert!(watch.blocked_ips().is_empty());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authwatch_alerts::{AlertEvent, AlertState};
use authwatch_layer::{BlockSource, BlockedIp, Blocklist};
use ipnet::IpNet;

use crate::audit::{AuditClass, AuditRecord};
use crate::BuildError;

/// The alerts whose `client_ip` is blocked when they fire.
pub const BLOCKING_ALERTS: [&str; 2] = ["AuthBruteForceSuspected", "AuthPasswordSpraying"];

/// How long a repeat offence is remembered: within it, each block lasts twice the last.
const OFFENCE_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// When and for how long the addresses the attack alerts name are refused
/// ([`AuthWatchBuilder::blocking`](crate::AuthWatchBuilder::blocking)).
///
/// An address named by `AuthBruteForceSuspected` or `AuthPasswordSpraying` is blocked for the
/// TTL when the alert fires; each further offence within 24 hours doubles it, up to the
/// maximum. A blocked request gets `429 Too Many Requests` with `Retry-After` and never
/// reaches your handler. Allow-listed networks are never blocked, by an alert or by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct BlockPolicy {
    ttl: Duration,
    max_ttl: Duration,
    allow: Vec<String>,
    dry_run: bool,
    all_routes: bool,
    max_blocks: usize,
}

impl Default for BlockPolicy {
    /// 15 minutes, doubling up to 24 hours, nothing allow-listed, enforced, auth routes only,
    /// at most 100,000 blocks at once.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(15 * 60),
            max_ttl: Duration::from_secs(24 * 3600),
            allow: Vec::new(),
            dry_run: false,
            all_routes: false,
            max_blocks: 100_000,
        }
    }
}

impl BlockPolicy {
    /// How long a first offence is blocked (default 15 minutes; at least a second).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// The longest an escalated block lasts (default 24 hours).
    pub fn max_ttl(mut self, max: Duration) -> Self {
        self.max_ttl = max.max(Duration::from_secs(1));
        self
    }

    /// A network never blocked: `"10.0.0.0/8"`, `"2001:db8::/32"`, or one address. Checked
    /// when the monitor is built (a typo is a [`BuildError`]).
    pub fn allow(mut self, cidr: impl Into<String>) -> Self {
        self.allow.push(cidr.into());
        self
    }

    /// Records and logs the blocks it would make, and refuses nothing (default off).
    pub fn dry_run(mut self, on: bool) -> Self {
        self.dry_run = on;
        self
    }

    /// Refuses blocked addresses on every route, not only the auth routes (default off).
    pub fn all_routes(mut self, on: bool) -> Self {
        self.all_routes = on;
        self
    }

    /// The most blocks held at once (default 100,000); beyond, the block that ends first
    /// goes. About 150 bytes each.
    pub fn max_blocks(mut self, n: usize) -> Self {
        self.max_blocks = n.max(1);
        self
    }

    /// The TTL of a block after `offences` earlier ones within 24 hours.
    /// A first offence's block ([`ttl`](Self::ttl)).
    pub(crate) fn ttl_len(&self) -> Duration {
        self.ttl
    }

    /// The longest block ([`max_ttl`](Self::max_ttl)).
    pub(crate) fn max_ttl_len(&self) -> Duration {
        self.max_ttl
    }

    /// The most blocks held at once ([`max_blocks`](Self::max_blocks)).
    pub(crate) fn max_blocks_len(&self) -> usize {
        self.max_blocks
    }

    fn ttl_after(&self, offences: u32) -> Duration {
        let factor = 1u32.checked_shl(offences.min(31)).unwrap_or(u32::MAX);
        self.ttl
            .saturating_mul(factor)
            .min(self.max_ttl.max(self.ttl))
    }

    pub(crate) fn networks(&self) -> Result<Vec<IpNet>, BuildError> {
        self.allow
            .iter()
            .map(|s| {
                let s = s.trim();
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|e| {
                        BuildError::Config(format!(
                            "BlockPolicy::allow({s:?}): not a network or an address ({e})"
                        ))
                    })
            })
            .collect()
    }
}

/// Why [`AuthWatch::block_ip`](crate::AuthWatch::block_ip) refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The address is in an allow-listed network.
    #[error("{ip} is in the allow-listed network {network}")]
    AllowListed {
        /// The address.
        ip: IpAddr,
        /// The network that allows it.
        network: String,
    },
}

/// A change of the block list waiting for the fleet's flush.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    Add {
        ip: IpAddr,
        ttl: Duration,
        reason: String,
        source: BlockSource,
        /// Audit it once pushed, if it made a new block in the fleet (an alert fires on every
        /// instance: the first to push it writes the record).
        audit: bool,
    },
    Remove {
        ip: IpAddr,
    },
}

impl Change {
    fn ip(&self) -> IpAddr {
        match self {
            Self::Add { ip, .. } | Self::Remove { ip } => *ip,
        }
    }
}

/// The fleet's side: changes waiting for its flush, and how to wake it.
struct FleetLink {
    changes: Mutex<Vec<Change>>,
    wake: Box<dyn Fn() + Send + Sync>,
}

/// Makes and ends the blocks: the layer's [`Blocklist`], the policy, the offences remembered
/// for escalation, and the audit trail of every decision.
pub(crate) struct Blocker {
    list: Arc<Blocklist>,
    policy: BlockPolicy,
    allow: Vec<IpNet>,
    /// Whether alerts block (a policy was given) or only people do.
    automatic: bool,
    /// Per address: earlier offences within 24 hours, and the last.
    offences: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// Addresses unblocked by hand, not blocked again by an alert until then, or until the
    /// alert that counted their failures resolves: the failures counted before the unblock
    /// must leave the detectors' window first.
    pardons: Mutex<HashMap<IpAddr, Instant>>,
    pardon_for: Duration,
    auditor: Arc<crate::audit::Auditor>,
    /// In fleet mode: the changes to share.
    fleet: std::sync::OnceLock<FleetLink>,
    /// With CrowdSec: the link that pushes the blocks made here and reads its bans.
    crowdsec: std::sync::OnceLock<crate::crowdsec::Link>,
}

impl Drop for Blocker {
    fn drop(&mut self) {
        // The link's thread holds this blocker weakly: tell it to end (without waiting).
        if let Some(l) = self.crowdsec.get() {
            l.stop(Duration::ZERO);
        }
    }
}

impl std::fmt::Debug for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blocker")
            .field("list", &self.list)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Blocker {
    /// A blocker with `policy` (alerts block) or the default one (only people block), keying
    /// IPv6 clients by `ipv6_prefix` bits, pardoning an unblocked address for `pardon_for`.
    pub(crate) fn new(
        policy: Option<BlockPolicy>,
        ipv6_prefix: u8,
        pardon_for: Duration,
        auditor: Arc<crate::audit::Auditor>,
    ) -> Result<Self, BuildError> {
        let automatic = policy.is_some();
        let policy = policy.unwrap_or_default();
        let allow = policy.networks()?;
        let list = Arc::new(Blocklist::new(
            policy.max_blocks,
            ipv6_prefix,
            policy.all_routes,
        ));
        list.set_enforce(!policy.dry_run);
        Ok(Self {
            list,
            policy,
            allow,
            automatic,
            offences: Mutex::new(HashMap::new()),
            pardons: Mutex::new(HashMap::new()),
            pardon_for,
            auditor,
            fleet: std::sync::OnceLock::new(),
            crowdsec: std::sync::OnceLock::new(),
        })
    }

    /// Shares this instance's blocks with the fleet from now on, waking its flush with `wake`
    /// at each change.
    pub(crate) fn attach_fleet(&self, wake: Box<dyn Fn() + Send + Sync>) {
        let _ = self.fleet.set(FleetLink {
            changes: Mutex::new(Vec::new()),
            wake,
        });
    }

    /// Pushes the blocks made here to CrowdSec, and enforces its bans, from now on.
    pub(crate) fn attach_crowdsec(&self, link: crate::crowdsec::Link) {
        let _ = self.crowdsec.set(link);
    }

    /// The link to CrowdSec, if any.
    pub(crate) fn crowdsec(&self) -> Option<&crate::crowdsec::Link> {
        self.crowdsec.get()
    }

    /// The CrowdSec decision stream read (`full`: the whole list, not the changes since the
    /// last read) into the block list: its bans are enforced, except on allow-listed
    /// addresses. The bans enforced now, and the decisions left to the firewall.
    pub(crate) fn apply_crowdsec(
        &self,
        stream: &crate::crowdsec::Stream,
        full: bool,
    ) -> (usize, u64) {
        use crate::crowdsec::{target, Skip};
        let prefix = self.list.ipv6_prefix();
        let mut skipped = 0u64;
        let mut add = Vec::new();
        for d in &stream.new {
            match target(d, prefix) {
                Ok((_, left)) if left.is_zero() => {}
                Ok((ip, left)) => {
                    if self.allowed_by(ip).is_some() {
                        skipped += 1;
                        continue;
                    }
                    let reason = format!(
                        "CrowdSec: {} ({})",
                        crate::audit::sanitize(&d.scenario, 128),
                        crate::audit::sanitize(&d.origin, 32)
                    );
                    add.push((ip, left, reason));
                }
                Err(Skip::Own) => {}
                Err(Skip::Unsupported) => skipped += 1,
            }
        }
        let remove: Vec<IpAddr> = stream
            .deleted
            .iter()
            .filter_map(|d| target(d, prefix).ok().map(|(ip, _)| ip))
            .collect();
        let done = self.list.sync(BlockSource::CrowdSec, &add, &remove, full);
        if done.added > 0 || !done.removed.is_empty() {
            tracing::info!(
                target: "authwatch::blocks",
                added = done.added,
                lifted = done.removed.len(),
                "authwatch: CrowdSec's decisions: {} addresses banned, {} lifted",
                done.added,
                done.removed.len()
            );
        }
        for gone in &done.evicted {
            self.audit("auth.block.evicted", gone, None, Some(gone.refused));
        }
        let enforced = self
            .list
            .list()
            .iter()
            .filter(|b| b.source == BlockSource::CrowdSec)
            .count();
        (enforced, skipped)
    }

    /// A block reached CrowdSec as a decision.
    pub(crate) fn audit_crowdsec_push(&self, b: &BlockedIp) {
        self.audit("auth.block.pushed", b, Some(b.remaining()), None);
    }

    /// The most blocks held at once.
    pub(crate) fn max_blocks(&self) -> usize {
        self.policy.max_blocks
    }

    fn share(&self, change: Change) -> bool {
        let Some(f) = self.fleet.get() else {
            return false;
        };
        let mut changes = lock(&f.changes);
        // Bounded like the list: a flood of changes while Redis is away keeps the latest.
        if changes.len() >= self.policy.max_blocks {
            changes.remove(0);
        }
        changes.push(change);
        drop(changes);
        (f.wake)();
        true
    }

    /// The changes waiting for the fleet.
    pub(crate) fn take_changes(&self) -> Vec<Change> {
        self.fleet
            .get()
            .map(|f| std::mem::take(&mut *lock(&f.changes)))
            .unwrap_or_default()
    }

    /// Changes a failed flush took: back in front of those made since. The blocks an alert
    /// made are audited now (this instance made them, whoever else did).
    pub(crate) fn put_back(&self, mut taken: Vec<Change>) {
        let Some(f) = self.fleet.get() else { return };
        for ch in &mut taken {
            if let Change::Add { audit, ip, .. } = ch {
                if *audit {
                    if let Some(b) = self.list.get(*ip) {
                        self.audit_added(&b, b.remaining());
                    }
                    *audit = false;
                }
            }
        }
        let mut changes = lock(&f.changes);
        taken.append(&mut changes);
        *changes = taken;
    }

    /// A change reached the fleet's list; `new` when it made a block there.
    pub(crate) fn pushed(&self, change: &Change, new: bool) {
        if let Change::Add {
            ip,
            ttl,
            audit: true,
            ..
        } = change
        {
            if new {
                if let Some(b) = self.list.get(*ip) {
                    self.audit_added(&b, *ttl);
                }
            }
        }
    }

    /// The fleet's list, read from Redis (address → time left, source, reason): the blocks
    /// of the other instances are enforced here too, and those lifted or ended elsewhere are
    /// lifted here. Changes not yet pushed stay as they are.
    pub(crate) fn apply_fleet(&self, remote: &HashMap<IpAddr, (Duration, BlockSource, String)>) {
        let pending: Vec<IpAddr> = self
            .fleet
            .get()
            .map(|f| lock(&f.changes).iter().map(Change::ip).collect())
            .unwrap_or_default();
        for (ip, (left, _, reason)) in remote {
            if pending.contains(ip) || left.is_zero() || self.allowed_by(*ip).is_some() {
                continue;
            }
            let same = self.list.get(*ip).is_some_and(|b| {
                let here = b.remaining();
                here.abs_diff(*left) < Duration::from_secs(2)
            });
            if !same {
                self.list.insert(*ip, *left, reason, BlockSource::Fleet);
            }
        }
        // CrowdSec's bans are each instance's own (each reads the stream), not the fleet's.
        for b in self.list.list() {
            if b.source != BlockSource::CrowdSec
                && !remote.contains_key(&b.ip)
                && !pending.contains(&b.ip)
            {
                self.list.remove(b.ip);
            }
        }
    }

    /// The list the layer checks.
    pub(crate) fn list(&self) -> &Arc<Blocklist> {
        &self.list
    }

    /// Whether blocks are recorded only.
    pub(crate) fn dry_run(&self) -> bool {
        self.policy.dry_run
    }

    fn allowed_by(&self, ip: IpAddr) -> Option<&IpNet> {
        let ip = self.list.key(ip);
        self.allow.iter().find(|n| n.contains(&ip))
    }

    /// An alert changed state: when an attack alert fires for an address, block it; when it
    /// resolves, the failures it counted are gone, and so is an unblocked address' pardon.
    pub(crate) fn on_alert(&self, e: &AlertEvent) -> Option<BlockedIp> {
        if !self.automatic || !BLOCKING_ALERTS.contains(&e.alert.name.as_str()) {
            return None;
        }
        let ip = e
            .alert
            .labels
            .get("client_ip")
            .and_then(|l| l.split('/').next())
            .and_then(|l| l.parse::<IpAddr>().ok())?;
        let key = self.list.key(ip);
        if e.alert.state == AlertState::Resolved {
            lock(&self.pardons).remove(&key);
            return None;
        }
        if e.alert.state != AlertState::Firing {
            return None;
        }
        if let Some(net) = self.allowed_by(key) {
            tracing::info!(
                target: "authwatch::blocks",
                ip = %key,
                "authwatch: {} names {key}, allow-listed ({net}): not blocked",
                e.alert.name
            );
            return None;
        }
        let now = Instant::now();
        {
            let mut pardons = lock(&self.pardons);
            pardons.retain(|_, until| *until > now);
            if pardons.contains_key(&key) {
                return None;
            }
        }
        let earlier = {
            let mut o = lock(&self.offences);
            o.retain(|_, (_, last)| now.saturating_duration_since(*last) < OFFENCE_MEMORY);
            let n = o.get(&key).map_or(0, |(n, _)| *n);
            if o.len() < self.policy.max_blocks || o.contains_key(&key) {
                o.insert(key, (n + 1, now));
            }
            n
        };
        let ttl = self.policy.ttl_after(earlier);
        let reason = match e.alert.annotations.get("description") {
            Some(d) => format!("{}: {d}", e.alert.name),
            None => e.alert.name.clone(),
        };
        Some(self.block(key, ttl, &reason, BlockSource::Alert, earlier))
    }

    /// Blocks `ip` for `ttl` (by hand: no escalation).
    pub(crate) fn block_by_hand(
        &self,
        ip: IpAddr,
        ttl: Duration,
        reason: &str,
    ) -> Result<BlockedIp, BlockError> {
        if let Some(net) = self.allowed_by(ip) {
            return Err(BlockError::AllowListed {
                ip,
                network: net.to_string(),
            });
        }
        lock(&self.pardons).remove(&self.list.key(ip));
        Ok(self.block(
            ip,
            ttl.max(Duration::from_secs(1)),
            reason,
            BlockSource::Manual,
            0,
        ))
    }

    fn block(
        &self,
        ip: IpAddr,
        ttl: Duration,
        reason: &str,
        source: BlockSource,
        earlier: u32,
    ) -> BlockedIp {
        let done = self.list.insert(ip, ttl, reason, source);
        let b = &done.block;
        let verb = if self.policy.dry_run {
            "would block (dry run)"
        } else {
            "blocked"
        };
        tracing::warn!(
            target: "authwatch::blocks",
            ip = %b.ip,
            source = source.as_str(),
            ttl_s = ttl.as_secs(),
            "authwatch: {verb} {}{} for {} ({}{})",
            b.ip,
            prefix_suffix(b),
            humantime::format_duration(Duration::from_secs(ttl.as_secs())),
            reason,
            if earlier > 0 {
                format!("; offence {} within 24 h", earlier + 1)
            } else {
                String::new()
            }
        );
        // In a fleet, an alert's block is audited by the instance that makes it first.
        let deferred = self.share(Change::Add {
            ip: b.ip,
            ttl,
            reason: reason.to_owned(),
            source,
            audit: source == BlockSource::Alert,
        }) && source == BlockSource::Alert;
        if !deferred {
            self.audit_added(b, ttl);
        }
        if let Some(gone) = &done.evicted {
            self.audit("auth.block.evicted", gone, None, Some(gone.refused));
        }
        done.block
    }

    /// The block is new (in the fleet, if any): its record, and its decision for CrowdSec.
    fn audit_added(&self, b: &BlockedIp, ttl: Duration) {
        let name = if self.policy.dry_run {
            "auth.block.dry_run"
        } else {
            "auth.block.added"
        };
        self.audit(name, b, Some(ttl), None);
        if let (false, Some(l)) = (self.policy.dry_run, self.crowdsec.get()) {
            l.ban(b, ttl);
        }
    }

    /// Lifts `ip`'s block and forgets its offences; an alert still counting its earlier
    /// failures does not block it again until they leave the window.
    pub(crate) fn unblock(&self, ip: IpAddr) -> Option<BlockedIp> {
        let key = self.list.key(ip);
        lock(&self.offences).remove(&key);
        lock(&self.pardons).insert(key, Instant::now() + self.pardon_for);
        // Lifted here before the fleet hears of it: the flush thread, woken by the change,
        // would otherwise find it gone from Redis and lift it first (this call then saw none).
        let gone = self.list.remove(key);
        self.share(Change::Remove { ip: key });
        let gone = gone?;
        tracing::warn!(
            target: "authwatch::blocks",
            ip = %gone.ip,
            "authwatch: unblocked {}{} ({} requests refused)",
            gone.ip,
            prefix_suffix(&gone),
            gone.refused
        );
        self.audit("auth.block.removed", &gone, None, Some(gone.refused));
        if let Some(l) = self.crowdsec.get() {
            l.unban(gone.ip, gone.prefix);
        }
        Some(gone)
    }

    /// Ends the blocks whose time is up, each with one audit record of what it refused (a
    /// block another instance of the fleet made: only when it refused something here).
    pub(crate) fn sweep(&self) {
        for gone in self.list.sweep() {
            if matches!(gone.source, BlockSource::Fleet | BlockSource::CrowdSec)
                && gone.refused == 0
            {
                continue;
            }
            tracing::info!(
                target: "authwatch::blocks",
                ip = %gone.ip,
                "authwatch: the block of {}{} ended ({} requests refused)",
                gone.ip,
                prefix_suffix(&gone),
                gone.refused
            );
            self.audit("auth.block.expired", &gone, None, Some(gone.refused));
        }
    }

    fn audit(
        &self,
        name: &'static str,
        b: &BlockedIp,
        ttl: Option<Duration>,
        refused: Option<u64>,
    ) {
        let mut r = AuditRecord::new(name, AuditClass::Security, "authwatch");
        r.client_address = Some(b.ip);
        r.block_source = Some(b.source.as_str());
        r.block_reason = Some(crate::audit::sanitize(&b.reason, 256));
        r.block_ttl_s = ttl.map(|t| t.as_secs());
        r.block_refused = refused;
        self.auditor.send(r);
    }
}

/// The formats [`export`] writes a block list in (`authwatch blocks export --format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportFormat {
    /// An nftables ruleset for `nft -f`: a table `inet authwatch` with the sets `blocked_v4`
    /// and `blocked_v6`, each element with its own timeout (the time the block has left).
    /// Your own rule drops what they hold, e.g. `ip saddr @blocked_v4 drop`.
    Nftables,
    /// `ipset restore` input: the sets `authwatch-v4` (`hash:ip`) and `authwatch-v6`
    /// (`hash:net`), each entry with its timeout; `-exist` makes it safe to load again.
    Ipset,
    /// One address (or IPv6 prefix) a line.
    Plain,
    /// A JSON array of the blocks: address, prefix, end, time left, reason, source, refusals.
    Json,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nftables" | "nft" => Ok(Self::Nftables),
            "ipset" => Ok(Self::Ipset),
            "plain" | "text" => Ok(Self::Plain),
            "json" => Ok(Self::Json),
            _ => Err(format!(
                "unknown format {s:?}: nftables, ipset, plain or json"
            )),
        }
    }
}

/// One block as [`ExportFormat::Json`] and the admin endpoint show it.
#[must_use]
pub fn block_json(b: &BlockedIp) -> serde_json::Value {
    serde_json::json!({
        "ip": b.ip.to_string(),
        "prefix": b.prefix,
        "cidr": cidr(b),
        "since": humantime::format_rfc3339_seconds(b.since).to_string(),
        "until": humantime::format_rfc3339_seconds(b.until).to_string(),
        "remaining_seconds": b.remaining().as_millis().div_ceil(1000),
        "reason": b.reason,
        "source": b.source.as_str(),
        "refused": b.refused,
    })
}

/// `blocks` in `format`. Blocks that have ended are left out; every timeout is at least a
/// second.
#[must_use]
pub fn export(blocks: &[BlockedIp], format: ExportFormat) -> String {
    use std::fmt::Write as _;
    let live: Vec<(&BlockedIp, u64)> = blocks
        .iter()
        .map(|b| (b, b.remaining().as_secs()))
        .filter(|(_, s)| *s > 0)
        .collect();
    let (v4, v6): (Vec<_>, Vec<_>) = live.iter().partition(|(b, _)| b.ip.is_ipv4());
    let mut out = String::new();
    match format {
        ExportFormat::Nftables => {
            out.push_str(
                "# authwatch's blocks: load with `nft -f`; drop with your own rule, e.g.\n",
            );
            out.push_str("#   ip saddr @blocked_v4 drop\n#   ip6 saddr @blocked_v6 drop\n");
            out.push_str("table inet authwatch {\n");
            for (name, ty, flags, set) in [
                ("blocked_v4", "ipv4_addr", "timeout", &v4),
                ("blocked_v6", "ipv6_addr", "interval, timeout", &v6),
            ] {
                let _ = write!(out, "\tset {name} {{\n\t\ttype {ty}\n\t\tflags {flags}\n");
                if !set.is_empty() {
                    let items: Vec<String> = set
                        .iter()
                        .map(|(b, s)| format!("{} timeout {s}s", cidr(b)))
                        .collect();
                    let _ = writeln!(out, "\t\telements = {{ {} }}", items.join(", "));
                }
                out.push_str("\t}\n");
            }
            out.push_str("}\n");
        }
        ExportFormat::Ipset => {
            out.push_str("create authwatch-v4 hash:ip family inet timeout 0 -exist\n");
            out.push_str("create authwatch-v6 hash:net family inet6 timeout 0 -exist\n");
            for (b, s) in &live {
                let set = if b.ip.is_ipv4() {
                    "authwatch-v4"
                } else {
                    "authwatch-v6"
                };
                let _ = writeln!(out, "add {set} {} timeout {s} -exist", cidr(b));
            }
        }
        ExportFormat::Plain => {
            for (b, _) in &live {
                let _ = writeln!(out, "{}", cidr(b));
            }
        }
        ExportFormat::Json => {
            let v: Vec<serde_json::Value> = live.iter().map(|(b, _)| block_json(b)).collect();
            out = serde_json::to_string_pretty(&v).unwrap_or_default();
            out.push('\n');
        }
    }
    out
}

/// `198.51.100.7`, or `2001:db8:1:2::/64`.
fn cidr(b: &BlockedIp) -> String {
    format!("{}{}", b.ip, prefix_suffix(b))
}

fn prefix_suffix(b: &BlockedIp) -> String {
    if b.ip.is_ipv6() {
        format!("/{}", b.prefix)
    } else {
        String::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_offence_doubles_the_block_up_to_the_maximum() {
        let p = BlockPolicy::default()
            .ttl(Duration::from_secs(900))
            .max_ttl(Duration::from_secs(3 * 3600));
        let ttls: Vec<u64> = (0..6).map(|n| p.ttl_after(n).as_secs()).collect();
        assert_eq!(ttls, [900, 1800, 3600, 7200, 10800, 10800]);
        assert_eq!(
            BlockPolicy::default().ttl_after(40),
            Duration::from_secs(24 * 3600)
        );
    }

    #[test]
    fn a_bad_network_is_a_build_error_naming_it() {
        let e = BlockPolicy::default()
            .allow("10.0.0.0/8")
            .allow("192.0.2.1")
            .allow("10.0.0/8")
            .networks()
            .unwrap_err();
        assert!(e.to_string().contains("\"10.0.0/8\""), "{e}");
        let ok = BlockPolicy::default()
            .allow("10.0.0.0/8")
            .allow(" 2001:db8::/32 ")
            .allow("192.0.2.1")
            .networks()
            .unwrap();
        assert_eq!(ok.len(), 3);
        assert!(ok[2].contains(&"192.0.2.1".parse::<IpAddr>().unwrap()));
    }
}
