//! The history of counts, one entry per evaluation: sized for the longest window up front,
//! and summed over a window.

use std::collections::VecDeque;
use std::time::Duration;

use super::counts::{add_into, Counts, KINDS, OPS};
use super::{AlertConfig, Inner, State};
use crate::rules::{Rule, RuleKind};

/// Most entries of the per-evaluation history (3 MiB); older ones are merged.
pub(super) const HISTORY_ENTRIES: usize = 8192;

/// How far back the rules look (the longest window, a spike's baseline included; credential
/// stuffing reads the login ratio over the account window).
fn max_span(rules: &[Rule], accounts: Duration) -> Duration {
    rules
        .iter()
        .map(|r| match r.kind {
            RuleKind::CredentialStuffing { .. } => accounts,
            RuleKind::FailureRatio { window, .. }
            | RuleKind::Count { window, .. }
            | RuleKind::Mean { window, .. } => window,
            RuleKind::Spike {
                window, baseline, ..
            } => window + baseline,
            _ => Duration::ZERO,
        })
        .max()
        .unwrap_or(Duration::ZERO)
}

/// The history, sized for one entry per tick over the longest span, written through once so
/// that its memory is resident from the start: it fills for the first hour (the spikes'
/// baselines), and memory growing that long would look like a leak.
pub(super) fn history_for(cfg: &AlertConfig) -> VecDeque<(Duration, Counts)> {
    let ticks = if cfg.tick.is_zero() {
        0
    } else {
        (max_span(&cfg.rules, cfg.accounts.window_len()).as_nanos() / cfg.tick.as_nanos()) as usize
    };
    let n = ticks.saturating_add(16).min(HISTORY_ENTRIES);
    let mut h = VecDeque::with_capacity(n);
    h.extend(std::iter::repeat_n((Duration::ZERO, [[0; KINDS]; OPS]), n));
    std::hint::black_box(&mut h).clear();
    h
}

impl Inner {
    pub(super) fn max_span(&self) -> Duration {
        max_span(&self.rules(), self.cfg.accounts.window_len())
    }

    /// The counts recorded in `(from_excl, to_incl]`; `None` reaches back to the start.
    pub(super) fn sum(st: &State, from_excl: Option<Duration>, to_incl: Duration) -> Counts {
        let mut c = [[0; KINDS]; OPS];
        for (t, d) in st.history.iter().rev() {
            if from_excl.is_some_and(|f| *t <= f) {
                break;
            }
            if *t <= to_incl {
                add_into(&mut c, d);
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_is_sized_for_the_longest_span_up_front_and_bounded() {
        // Default rules: the spikes look back 10 minutes plus a 60-minute baseline; one entry
        // per 5-s tick.
        let h = history_for(&AlertConfig::default());
        assert!(h.is_empty());
        assert!(h.capacity() >= 70 * 12 + 16, "{}", h.capacity());
        assert!(h.capacity() < 2 * (70 * 12 + 16), "{}", h.capacity());
        // A tiny tick is capped; evaluating only on demand keeps a small one.
        let fast = history_for(&AlertConfig::default().tick(Duration::from_millis(1)));
        assert!(fast.capacity() >= HISTORY_ENTRIES && fast.capacity() < 2 * HISTORY_ENTRIES);
        let none = history_for(&AlertConfig::default().tick(Duration::ZERO));
        assert!(none.capacity() >= 16 && none.capacity() < 64);
    }
}
