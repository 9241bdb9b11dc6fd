//! The attack-time limit: while an attack alert fires, a per-address limit on the login routes
//! (the spec's incident response, step 3: "increase rate limiting temporarily"), off the rest
//! of the time.
//!
//! ```
//! use authwatch::{AttackLimit, AuthWatch};
//!
//! # fn main() -> Result<(), authwatch::BuildError> {
//! let watch = AuthWatch::builder()
//!     .otlp(false)
//!     // While AuthBruteForceSuspected, AuthDistributedBruteForce or AuthRateLimitUnderAttack
//!     // fires: 10 sign-ins a minute per address, the excess answered 429 with Retry-After.
//!     .attack_limit(AttackLimit::per_minute(10))
//!     .build()?;
//! # drop(watch);
//! # Ok(()) }
//! ```

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use authwatch_alerts::{AlertEvent, AlertState};
use authwatch_layer::{AuthOp, Limiter};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::audit::{AuditClass, AuditRecord};

/// The alerts that turn the attack-time limit on while they fire.
pub const ATTACK_LIMIT_TRIGGERS: [&str; 3] = [
    "AuthBruteForceSuspected",
    "AuthDistributedBruteForce",
    "AuthRateLimitUnderAttack",
];

/// A per-address limit on the login routes while an attack alert fires
/// ([`AuthWatchBuilder::attack_limit`](crate::AuthWatchBuilder::attack_limit)).
///
/// Off while no trigger fires (the check is then one atomic load). On, each address may make
/// `per_minute` attempts a minute (a GCRA from the `governor` crate, with a burst of as many);
/// the excess is answered `429 Too Many Requests` with `Retry-After` and never reaches your
/// handler, and counts as rate limited (`auth.rate.limit.exceeded.count`, the snapshot, the
/// audit trail's failed requests). IPv6 addresses share the limit of their /64.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct AttackLimit {
    per_minute: NonZeroU32,
    burst: NonZeroU32,
    ops: Vec<AuthOp>,
    triggers: Vec<String>,
    max_addresses: usize,
}

impl AttackLimit {
    /// `n` attempts a minute per address (at least 1), on the login routes, while one of
    /// [`ATTACK_LIMIT_TRIGGERS`] fires.
    pub fn per_minute(n: u32) -> Self {
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Self {
            per_minute: n,
            burst: n,
            ops: vec![AuthOp::Login],
            triggers: ATTACK_LIMIT_TRIGGERS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            max_addresses: 100_000,
        }
    }

    /// How many attempts an address may make at once before the pace applies (default: the
    /// minute's).
    pub fn burst(mut self, n: u32) -> Self {
        self.burst = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        self
    }

    /// The operations limited (default: logins only).
    pub fn operations(mut self, ops: &[AuthOp]) -> Self {
        self.ops = ops.to_vec();
        self
    }

    /// The alerts that turn it on (default [`ATTACK_LIMIT_TRIGGERS`]).
    pub fn triggers(mut self, names: &[&str]) -> Self {
        self.triggers = names.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// The most addresses counted at once (default 100,000): beyond, the counts start over
    /// at the next tick, so memory stays bounded whatever the number of attackers.
    pub fn max_addresses(mut self, n: usize) -> Self {
        self.max_addresses = n.max(1);
        self
    }

    fn limiter(&self) -> DefaultKeyedRateLimiter<IpAddr> {
        RateLimiter::keyed(Quota::per_minute(self.per_minute).allow_burst(self.burst))
    }
}

/// The limit as the layer applies it, turned on and off by the alerts.
pub(crate) struct AttackLimiter {
    cfg: AttackLimit,
    on: AtomicBool,
    ops: [bool; AuthOp::COUNT],
    /// The triggers firing now: name and labels.
    firing: Mutex<BTreeSet<(String, String)>>,
    limiter: ArcSwap<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
    /// The key an address is limited under (IPv6: its prefix), the block list's.
    blocks: Arc<authwatch_layer::Blocklist>,
    auditor: Arc<crate::audit::Auditor>,
}

impl std::fmt::Debug for AttackLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttackLimiter")
            .field("cfg", &self.cfg)
            .field("on", &self.on.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl AttackLimiter {
    pub(crate) fn new(
        cfg: AttackLimit,
        blocks: Arc<authwatch_layer::Blocklist>,
        auditor: Arc<crate::audit::Auditor>,
    ) -> Self {
        let mut ops = [false; AuthOp::COUNT];
        for op in &cfg.ops {
            ops[op.index()] = true;
        }
        Self {
            limiter: ArcSwap::from_pointee(cfg.limiter()),
            cfg,
            on: AtomicBool::new(false),
            ops,
            firing: Mutex::new(BTreeSet::new()),
            clock: DefaultClock::default(),
            blocks,
            auditor,
        }
    }

    /// Whether the limit is on.
    pub(crate) fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// A trigger fired or resolved: the limit is on while any fires.
    pub(crate) fn on_alert(&self, e: &AlertEvent) {
        if !self.cfg.triggers.contains(&e.alert.name) {
            return;
        }
        let mut firing = self.firing.lock().unwrap_or_else(|e| e.into_inner());
        let key = (e.alert.name.clone(), e.alert.own_labels());
        match e.alert.state {
            AlertState::Firing => {
                firing.insert(key);
            }
            AlertState::Resolved => {
                firing.remove(&key);
            }
            _ => return,
        }
        let on = !firing.is_empty();
        let names: Vec<String> = firing.iter().map(|(n, _)| n.clone()).collect();
        drop(firing);
        if on == self.on.swap(on, Ordering::Relaxed) {
            return;
        }
        let what = if on {
            tracing::warn!(
                target: "authwatch::limit",
                "authwatch: attack-time limit on ({} a minute per address) while {} fires",
                self.cfg.per_minute,
                names.join(", ")
            );
            "auth.attack_limit.on"
        } else {
            // Off: every address starts afresh next time.
            self.limiter.store(Arc::new(self.cfg.limiter()));
            tracing::info!(target: "authwatch::limit", "authwatch: attack-time limit off");
            "auth.attack_limit.off"
        };
        let mut r = AuditRecord::new(what, AuditClass::Security, "authwatch");
        r.block_reason = Some(if on {
            format!(
                "{} fires: {} a minute per address",
                e.alert.name, self.cfg.per_minute
            )
        } else {
            format!("{} resolved", e.alert.name)
        });
        self.auditor.send(r);
    }

    /// Each tick: forget the addresses back to a full quota; past the bound, start over.
    pub(crate) fn tick(&self) {
        let l = self.limiter.load();
        l.retain_recent();
        if l.len() > self.cfg.max_addresses {
            self.limiter.store(Arc::new(self.cfg.limiter()));
        } else {
            l.shrink_to_fit();
        }
    }

    /// Addresses counted now.
    pub(crate) fn addresses(&self) -> usize {
        self.limiter.load().len()
    }
}

impl Limiter for AttackLimiter {
    #[inline]
    fn active(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    fn check(&self, ip: IpAddr, op: AuthOp) -> Option<Duration> {
        if !self.ops[op.index()] {
            return None;
        }
        let key = self.blocks.key(ip);
        match self.limiter.load().check_key(&key) {
            Ok(()) => None,
            Err(not_until) => Some(
                not_until
                    .wait_time_from(self.clock.now())
                    .max(Duration::from_secs(1)),
            ),
        }
    }
}
