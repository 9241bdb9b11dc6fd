//! The evaluation of each kind of rule against the counts, the quantiles and the brute-force
//! detector: the conditions that hold now.

use std::sync::atomic::Ordering;
use std::time::Duration;

use authwatch_layer::AuthOp;

use super::counts::{Counts, F, IT, LAT_N, LAT_US, LO, RL, S};
use super::{Inner, State};
use crate::accounts::AccountDetections;
use crate::detector::{RouteFailures, Suspect};
use crate::rules::{Rule, RuleKind, Signal};

fn signal(c: &Counts, s: Signal) -> u64 {
    let all = |k: usize| c.iter().map(|r| r[k]).sum::<u64>();
    match s {
        Signal::Success(op) => c[op.index()][S],
        Signal::Failure(op) => c[op.index()][F],
        Signal::Attempts(op) => c[op.index()][S] + c[op.index()][F],
        Signal::RateLimited => all(RL),
        Signal::InvalidToken => all(IT),
        Signal::Lockout => all(LO),
    }
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// What the detectors hold at this evaluation.
pub(super) struct Detected<'a> {
    pub(super) suspects: &'a [Suspect],
    pub(super) routes: &'a [RouteFailures],
    pub(super) accounts: &'a AccountDetections,
}

pub(super) struct Condition {
    pub(super) labels: Vec<(String, String)>,
    pub(super) value: f64,
    pub(super) description: String,
}

impl Inner {
    pub(super) fn conditions(
        &self,
        st: &State,
        rule: &Rule,
        now: Duration,
        seen: &Detected<'_>,
        quantiles: &mut Vec<((AuthOp, u64), (u64, Option<Duration>))>,
    ) -> Vec<Condition> {
        let (suspects, routes, accounts) = (seen.suspects, seen.routes, seen.accounts);
        let account_window = human(self.cfg.accounts.window_len());
        let window_sum = |w: Duration| {
            let from = now.checked_sub(w).filter(|f| *f > st.started);
            Self::sum(st, from, now)
        };
        let plain = |value: f64, description: String| {
            vec![Condition {
                labels: Vec::new(),
                value,
                description,
            }]
        };
        match rule.kind {
            RuleKind::FailureRatio {
                op,
                window,
                above,
                min_requests,
            } => {
                let c = window_sum(window);
                let (s, f) = (c[op.index()][S], c[op.index()][F]);
                let total = s + f;
                if total == 0 || total < min_requests {
                    return Vec::new();
                }
                let ratio = f as f64 / total as f64;
                if ratio > above {
                    return plain(
                        ratio,
                        format!(
                            "{op} failure rate {:.1}% ({f} of {total} attempts) over {}, above {:.0}%",
                            ratio * 100.0,
                            human(window),
                            above * 100.0
                        ),
                    );
                }
                Vec::new()
            }
            RuleKind::Count {
                signal: sig,
                window,
                above,
            } => {
                let v = signal(&window_sum(window), sig);
                if v > above {
                    return plain(
                        v as f64,
                        format!("{v} {} in {}, above {above}", sig.describe(), human(window)),
                    );
                }
                Vec::new()
            }
            RuleKind::Percentile {
                op,
                quantile,
                above,
                min_requests,
            } => {
                let Some(source) = &self.cfg.quantiles else {
                    return Vec::new();
                };
                let ops: Vec<AuthOp> = op.map_or_else(|| AuthOp::ALL.to_vec(), |op| vec![op]);
                let mut out = Vec::new();
                for op in ops {
                    let key = (op, quantile.to_bits());
                    let (n, q) = match quantiles.iter().find(|(k, _)| *k == key) {
                        Some((_, v)) => *v,
                        None => {
                            let v = source(op, quantile);
                            quantiles.push((key, v));
                            v
                        }
                    };
                    let Some(q) = q else { continue };
                    if n >= min_requests && q > above {
                        out.push(Condition {
                            labels: vec![("auth_operation".into(), op.as_str().into())],
                            value: q.as_secs_f64() * 1000.0,
                            description: format!(
                                "p{} response time of {op} is {:.0} ms over {n} requests, above {} ms",
                                (quantile * 100.0).round(),
                                q.as_secs_f64() * 1000.0,
                                above.as_millis()
                            ),
                        });
                    }
                }
                out
            }
            RuleKind::Mean {
                op,
                window,
                above,
                min_requests,
            } => {
                let c = window_sum(window);
                let (n, us) = (c[op.index()][LAT_N], c[op.index()][LAT_US]);
                if n == 0 || n < min_requests {
                    return Vec::new();
                }
                let mean_ms = us as f64 / n as f64 / 1000.0;
                if mean_ms > above.as_secs_f64() * 1000.0 {
                    return plain(
                        mean_ms,
                        format!(
                            "mean {op} time {mean_ms:.1} ms over {n} in {}, above {} ms",
                            human(window),
                            above.as_millis()
                        ),
                    );
                }
                Vec::new()
            }
            RuleKind::Spike {
                signal: sig,
                window,
                baseline,
                factor,
                min_count,
            } => {
                let cur = signal(&window_sum(window), sig);
                let window_start = now.saturating_sub(window);
                let covered = baseline.min(window_start.saturating_sub(st.started));
                if cur < min_count.max(1) || covered < window {
                    return Vec::new();
                }
                let from = window_start - covered;
                let from = (from > st.started).then_some(from);
                let base = signal(&Self::sum(st, from, window_start), sig);
                let per_window = base as f64 * window.as_secs_f64() / covered.as_secs_f64();
                if cur as f64 >= factor * per_window && cur as f64 > per_window {
                    let ratio = if per_window > 0.0 {
                        cur as f64 / per_window
                    } else {
                        f64::INFINITY
                    };
                    return plain(
                        ratio,
                        format!(
                            "{cur} {} in {}, against a baseline of {per_window:.1} per {} over the {} before ({factor}× or more)",
                            sig.describe(),
                            human(window),
                            human(window),
                            human(covered)
                        ),
                    );
                }
                Vec::new()
            }
            RuleKind::PerIpFailures { above } => suspects
                .iter()
                .filter(|s| s.failures > above)
                .map(|s| {
                    let client = self.cfg.brute_force.client_label(s.ip);
                    Condition {
                        description: format!(
                            "{} failed auth attempts from {client} in {}, above {above}",
                            s.failures,
                            human(self.cfg.brute_force.window_len())
                        ),
                        labels: vec![("client_ip".into(), client)],
                        value: s.failures as f64,
                    }
                })
                .collect(),
            RuleKind::Distributed {
                min_ips,
                min_failures,
            } => routes
                .iter()
                .filter(|r| r.ips >= min_ips && r.failures >= min_failures)
                .map(|r| Condition {
                    labels: vec![("http_route".into(), r.route.clone())],
                    value: r.ips as f64,
                    description: format!(
                        "{} failed attempts on {} from {} addresses in {}",
                        r.failures,
                        r.route,
                        r.ips,
                        human(self.cfg.brute_force.window_len())
                    ),
                })
                .collect(),
            RuleKind::PerIpAccounts { accounts: at_least } => accounts
                .clients
                .iter()
                .filter(|c| c.accounts >= at_least)
                .map(|c| {
                    let client = self.cfg.brute_force.client_label(c.ip);
                    Condition {
                        description: format!(
                            "{client} failed logins on {} distinct accounts ({} failures) in {account_window}, {at_least} or more",
                            c.accounts, c.failures
                        ),
                        labels: vec![("client_ip".into(), client)],
                        value: c.accounts as f64,
                    }
                })
                .collect(),
            RuleKind::PerAccountFailures { above } => accounts
                .accounts
                .iter()
                .filter(|a| a.failures > above)
                .map(|a| Condition {
                    description: format!(
                        "{} failed logins for account {} in {account_window} (from {} addresses), above {above}",
                        a.failures, a.account, a.addresses
                    ),
                    labels: vec![("user_id".into(), a.account.clone())],
                    value: a.failures as f64,
                })
                .collect(),
            RuleKind::PerAccountAddresses { addresses } => accounts
                .accounts
                .iter()
                .filter(|a| a.addresses >= addresses)
                .map(|a| Condition {
                    description: format!(
                        "account {} failed logins from {} distinct addresses ({} failures) in {account_window}, {addresses} or more",
                        a.account, a.addresses, a.failures
                    ),
                    labels: vec![("user_id".into(), a.account.clone())],
                    value: a.addresses as f64,
                })
                .collect(),
            RuleKind::CredentialStuffing {
                factor,
                min_accounts,
                failure_ratio,
            } => {
                let (n, Some(base)) = (accounts.failing_accounts, accounts.baseline_accounts)
                else {
                    return Vec::new();
                };
                let c = window_sum(self.cfg.accounts.window_len());
                let (s, f) = (
                    c[AuthOp::Login.index()][S],
                    c[AuthOp::Login.index()][F],
                );
                let ratio = if s + f > 0 {
                    f as f64 / (s + f) as f64
                } else {
                    0.0
                };
                if n >= min_accounts.max(1) && n as f64 >= factor * base && ratio > failure_ratio {
                    return plain(
                        if base > 0.0 { n as f64 / base } else { f64::INFINITY },
                        format!(
                            "{n} accounts with failed logins in {account_window}, against a baseline of {base:.1} per {account_window} ({factor}× or more), with {:.0}% of {} logins failing",
                            ratio * 100.0,
                            s + f
                        ),
                    );
                }
                Vec::new()
            }
            RuleKind::HealthFailures { above } => {
                let n = self.health_failures.load(Ordering::Relaxed);
                if n > above {
                    return plain(
                        f64::from(n),
                        format!("the health checks failed {n} consecutive times"),
                    );
                }
                Vec::new()
            }
        }
    }
}
