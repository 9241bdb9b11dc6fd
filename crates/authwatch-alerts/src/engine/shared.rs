//! What an engine shares with the other instances of a fleet: the failures it counted, in an
//! outbox that the fleet's flush empties, and the fleet's detections, which it reads back and
//! merges with its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::accounts::{AccountDetections, AccountUnderAttack, SprayingClient};
use crate::detector::{RouteFailures, Suspect};

/// Most (client, route) entries an outbox holds between two flushes; beyond, failures are
/// counted in [`FailureOutbox::dropped`] (they still count locally).
const MAX_OUTBOX: usize = 200_000;

/// Most (account, client) entries an outbox holds between two flushes (labels are longer
/// than addresses: about 10 MiB at most).
const MAX_ACCOUNT_OUTBOX: usize = 50_000;

/// Failures from one client on one route, counted since the last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailureRun {
    /// The client key ([`BruteForceConfig::client_key`](crate::BruteForceConfig::client_key)).
    pub client: IpAddr,
    /// The route template; empty for token failures, which count for their client but not
    /// for the route's distributed-attack signal.
    pub route: String,
    /// How many failures.
    pub n: u32,
}

/// Failed logins of one account from one client, counted since the last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AccountRun {
    /// The account as the engine was given it (the application's id, or its keyed hash).
    pub account: String,
    /// The client key, when the application said where the attempt came from.
    pub client: Option<IpAddr>,
    /// How many failures.
    pub n: u32,
}

/// The failures an engine counted into its detectors, waiting for a fleet's flush
/// ([`AlertConfig::failure_outbox`](crate::AlertConfig::failure_outbox)): per client and
/// route for brute force, per account and client for the account-level rules. Bounded: at
/// most 200,000 (client, route) and 50,000 (account, client) pairs wait; beyond, new ones are
/// dropped and counted.
#[derive(Debug, Default)]
pub struct FailureOutbox {
    runs: Mutex<HashMap<(IpAddr, Box<str>), u32>>,
    accounts: Mutex<HashMap<(Box<str>, Option<IpAddr>), u32>>,
    dropped: AtomicU64,
}

impl FailureOutbox {
    /// An empty outbox.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn add(&self, client: IpAddr, route: &str, n: u32) {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = runs.get_mut(&(client, Box::from(route))) {
            *v = v.saturating_add(n);
        } else if runs.len() < MAX_OUTBOX {
            runs.insert((client, route.into()), n);
        } else {
            self.dropped.fetch_add(u64::from(n), Ordering::Relaxed);
        }
    }

    /// Everything counted since the last call.
    #[must_use]
    pub fn take(&self) -> Vec<FailureRun> {
        let runs = std::mem::take(&mut *self.runs.lock().unwrap_or_else(|e| e.into_inner()));
        runs.into_iter()
            .map(|((client, route), n)| FailureRun {
                client,
                route: route.into(),
                n,
            })
            .collect()
    }

    pub(crate) fn add_account(&self, account: &str, client: Option<IpAddr>) {
        let mut runs = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = runs.get_mut(&(Box::from(account), client)) {
            *v = v.saturating_add(1);
        } else if runs.len() < MAX_ACCOUNT_OUTBOX {
            runs.insert((account.into(), client), 1);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every failed login of an account counted since the last call.
    #[must_use]
    pub fn take_accounts(&self) -> Vec<AccountRun> {
        let runs = std::mem::take(&mut *self.accounts.lock().unwrap_or_else(|e| e.into_inner()));
        runs.into_iter()
            .map(|((account, client), n)| AccountRun {
                account: account.into(),
                client,
                n,
            })
            .collect()
    }

    /// Failures that found the outbox full (counted locally, not shared).
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A fleet's detections over the window, as shared storage computed them.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Detections {
    /// Clients over the threshold, with the fleet's estimate.
    pub suspects: Vec<Suspect>,
    /// Per route: the fleet's failures and distinct failing clients.
    pub routes: Vec<RouteFailures>,
    /// The most failures from one client.
    pub top_failures: u64,
    /// The account-level detections over the fleet's failed logins, when shared.
    pub accounts: Option<AccountDetections>,
}

impl Detections {
    /// Detections of `suspects`, `routes` and `top_failures`.
    #[must_use]
    pub fn new(suspects: Vec<Suspect>, routes: Vec<RouteFailures>, top_failures: u64) -> Self {
        Self {
            suspects,
            routes,
            top_failures,
            accounts: None,
        }
    }

    /// The same, with the fleet's account-level detections.
    #[must_use]
    pub fn with_accounts(mut self, accounts: AccountDetections) -> Self {
        self.accounts = Some(accounts);
        self
    }
}

/// Where an engine reads a fleet's detections: `None` when there are none to read (the
/// shared storage is unreachable), and the engine goes on with its own.
pub type SharedDetections = Arc<dyn Fn() -> Option<Detections> + Send + Sync>;

/// `local` and `shared` suspects, each client once with the larger of its two estimates (both
/// are never below their truth, and the fleet's truth includes this instance's), most failures
/// first, at most `max`.
pub(crate) fn merge_suspects(local: Vec<Suspect>, shared: &[Suspect], max: usize) -> Vec<Suspect> {
    let mut by_ip: HashMap<IpAddr, u64> = local.into_iter().map(|s| (s.ip, s.failures)).collect();
    for s in shared {
        let e = by_ip.entry(s.ip).or_insert(0);
        *e = (*e).max(s.failures);
    }
    let mut v: Vec<Suspect> = by_ip
        .into_iter()
        .map(|(ip, failures)| Suspect { ip, failures })
        .collect();
    v.sort_by(|a, b| b.failures.cmp(&a.failures).then(a.ip.cmp(&b.ip)));
    v.truncate(max);
    v
}

/// `local` and `shared` routes, each once with the larger of each figure.
pub(crate) fn merge_routes(
    local: Vec<RouteFailures>,
    shared: &[RouteFailures],
) -> Vec<RouteFailures> {
    let mut by_route: HashMap<String, (u64, u64)> = local
        .into_iter()
        .map(|r| (r.route, (r.failures, r.ips)))
        .collect();
    for r in shared {
        let e = by_route.entry(r.route.clone()).or_insert((0, 0));
        e.0 = e.0.max(r.failures);
        e.1 = e.1.max(r.ips);
    }
    let mut v: Vec<RouteFailures> = by_route
        .into_iter()
        .map(|(route, (failures, ips))| RouteFailures {
            route,
            failures,
            ips,
        })
        .collect();
    v.sort_by(|a, b| b.failures.cmp(&a.failures).then(a.route.cmp(&b.route)));
    v
}

/// `local` and `shared` account detections: each account and address once with the larger
/// of each figure (both never below their truth, and the fleet's truth includes this
/// instance's); the distinct failing accounts and their baseline are the fleet's, or this
/// instance's (both) while the flush lags behind it.
pub(crate) fn merge_accounts(
    local: AccountDetections,
    shared: &AccountDetections,
) -> AccountDetections {
    let mut accounts: HashMap<String, (u64, u64)> = local
        .accounts
        .into_iter()
        .map(|a| (a.account, (a.failures, a.addresses)))
        .collect();
    for a in &shared.accounts {
        let e = accounts.entry(a.account.clone()).or_insert((0, 0));
        *e = (e.0.max(a.failures), e.1.max(a.addresses));
    }
    let mut clients: HashMap<IpAddr, (u64, u64)> = local
        .clients
        .into_iter()
        .map(|c| (c.ip, (c.accounts, c.failures)))
        .collect();
    for c in &shared.clients {
        let e = clients.entry(c.ip).or_insert((0, 0));
        *e = (e.0.max(c.accounts), e.1.max(c.failures));
    }
    let mut accounts: Vec<AccountUnderAttack> = accounts
        .into_iter()
        .map(|(account, (failures, addresses))| {
            AccountUnderAttack::new(account, failures, addresses)
        })
        .collect();
    accounts.sort_by(|a, b| b.failures.cmp(&a.failures).then(a.account.cmp(&b.account)));
    let mut clients: Vec<SprayingClient> = clients
        .into_iter()
        .map(|(ip, (n, failures))| SprayingClient::new(ip, n, failures))
        .collect();
    clients.sort_by(|a, b| b.accounts.cmp(&a.accounts).then(a.ip.cmp(&b.ip)));
    // A count and the baseline it is compared with come from one source.
    let (failing_accounts, baseline_accounts) =
        if local.failing_accounts > shared.failing_accounts && local.baseline_accounts.is_some() {
            (local.failing_accounts, local.baseline_accounts)
        } else {
            (shared.failing_accounts, shared.baseline_accounts)
        };
    AccountDetections {
        accounts,
        clients,
        failing_accounts,
        baseline_accounts,
        top_account_failures: local.top_account_failures.max(shared.top_account_failures),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, n))
    }

    #[test]
    fn account_merges_keep_each_name_once_and_the_baseline_with_its_count() {
        let mut local = AccountDetections {
            accounts: vec![
                AccountUnderAttack::new("alice", 30, 2),
                AccountUnderAttack::new("bob", 21, 1),
            ],
            clients: vec![SprayingClient::new(ip(1), 25, 25)],
            failing_accounts: 40,
            baseline_accounts: None,
            top_account_failures: 30,
        };
        let shared = AccountDetections {
            accounts: vec![
                AccountUnderAttack::new("alice", 25, 12),
                AccountUnderAttack::new("carol", 50, 1),
            ],
            clients: vec![SprayingClient::new(ip(1), 20, 40)],
            failing_accounts: 90,
            baseline_accounts: Some(10.0),
            top_account_failures: 50,
        };
        let m = merge_accounts(local.clone(), &shared);
        let got: Vec<(&str, u64, u64)> = m
            .accounts
            .iter()
            .map(|a| (a.account.as_str(), a.failures, a.addresses))
            .collect();
        assert_eq!(got, [("carol", 50, 1), ("alice", 30, 12), ("bob", 21, 1)]);
        assert_eq!(m.clients, [SprayingClient::new(ip(1), 25, 40)]);
        assert_eq!((m.failing_accounts, m.baseline_accounts), (90, Some(10.0)));
        assert_eq!(m.top_account_failures, 50);
        // The flush lagging behind this instance: its own count, with its own baseline.
        local.failing_accounts = 120;
        local.baseline_accounts = Some(30.0);
        let m = merge_accounts(local.clone(), &shared);
        assert_eq!((m.failing_accounts, m.baseline_accounts), (120, Some(30.0)));
        // ... but never this instance's count against the fleet's baseline.
        local.baseline_accounts = None;
        let m = merge_accounts(local, &shared);
        assert_eq!((m.failing_accounts, m.baseline_accounts), (90, Some(10.0)));
    }

    #[test]
    fn merges_keep_each_key_once_with_the_larger_figures() {
        let s = merge_suspects(
            vec![
                Suspect {
                    ip: ip(1),
                    failures: 70,
                },
                Suspect {
                    ip: ip(2),
                    failures: 55,
                },
            ],
            &[
                Suspect {
                    ip: ip(1),
                    failures: 65,
                },
                Suspect {
                    ip: ip(3),
                    failures: 90,
                },
            ],
            2,
        );
        assert_eq!(
            s,
            [
                Suspect {
                    ip: ip(3),
                    failures: 90
                },
                Suspect {
                    ip: ip(1),
                    failures: 70
                },
            ]
        );
        let r = merge_routes(
            vec![RouteFailures {
                route: "/login".into(),
                failures: 40,
                ips: 30,
            }],
            &[RouteFailures {
                route: "/login".into(),
                failures: 120,
                ips: 20,
            }],
        );
        assert_eq!(
            r,
            [RouteFailures {
                route: "/login".into(),
                failures: 120,
                ips: 30
            }]
        );
    }

    #[test]
    fn the_outbox_adds_up_runs_and_is_bounded() {
        let o = FailureOutbox::new();
        o.add(ip(1), "/login", 2);
        o.add(ip(1), "/login", 3);
        o.add(ip(1), "/token", 1);
        let mut runs = o.take();
        runs.sort_by(|a, b| a.route.cmp(&b.route));
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].route.as_str(), runs[0].n), ("/login", 5));
        assert!(o.take().is_empty(), "taken once");
        for i in 0..MAX_OUTBOX {
            o.add(IpAddr::V6((i as u128).into()), "/r", 1);
        }
        o.add(ip(9), "/r", 4);
        assert_eq!(o.dropped(), 4);
        assert_eq!(o.take().len(), MAX_OUTBOX);
    }
}
