//! One evaluation of the rules, and the engine's thread that runs one every tick.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::conditions::Condition;
use super::counts::{add_into, KINDS, OPS};
use super::history::HISTORY_ENTRIES;
use super::{Alert, AlertEvent, AlertState, Inner, Wake};

const HISTORY_EVENTS: usize = 512;

/// The engine's thread: evaluates the rules every `tick`, and in between counts the batches
/// of failures the recording threads hand it ([`Inner::count_ready`]), woken by them.
pub(super) fn ticker(weak: &Weak<Inner>, stop: &(Mutex<Wake>, Condvar), tick: Duration) {
    let mut next = Instant::now() + tick;
    loop {
        {
            // Wait without holding the engine, so that dropping it ends the thread.
            let (m, cv) = stop;
            let mut wake = m.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if wake.stopped {
                    return;
                }
                if wake.work {
                    // A recording thread handed a batch of failures over.
                    wake.work = false;
                    break;
                }
                let left = next.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                wake = cv
                    .wait_timeout(wake, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        let Some(inner) = weak.upgrade() else { return };
        inner.count_ready();
        let now = Instant::now();
        if now < next {
            continue;
        }
        next = (next + tick).max(now);
        // A panicking rule source must not end the thread.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.evaluate()));
        if r.is_err() {
            tracing::error!("authwatch: an alert evaluation panicked; the next tick retries");
        }
    }
}

impl Inner {
    pub(super) fn evaluate(&self) -> Vec<AlertEvent> {
        let _one = self.evaluating.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = &self.cfg.on_tick {
            f();
        }
        let mut now = self.cfg.clock.now();
        let (suspects, routes) = {
            let mut d = self.lock_detector();
            d.advance(now);
            (d.suspects(), d.routes())
        };
        // In a fleet, the fleet's detections too.
        let (suspects, routes) = match self.shared() {
            Some(d) => (
                self.with_shared_suspects(suspects),
                super::shared::merge_routes(routes, &d.routes),
            ),
            None => (suspects, routes),
        };
        let accounts = {
            let mut a = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
            a.advance(now);
            a.detections()
        };
        let accounts = self.with_shared_accounts(accounts);
        let seen = super::conditions::Detected {
            suspects: &suspects,
            routes: &routes,
            accounts: &accounts,
        };
        let mut st = self.lock_state();
        // Time never goes back within the engine, whatever the clock does.
        if let Some((last, _)) = st.history.back() {
            now = now.max(*last);
        }
        let cum = self.cumulative();
        let mut delta = [[0; KINDS]; OPS];
        for op in 0..OPS {
            for k in 0..KINDS {
                delta[op][k] = cum[op][k].saturating_sub(st.last[op][k]);
            }
        }
        st.last = cum;
        match st.history.back_mut() {
            Some((t, c)) if *t >= now => add_into(c, &delta),
            _ => st.history.push_back((now, delta)),
        }
        let keep_from = now.saturating_sub(self.max_span());
        while st.history.len() > 1 && st.history.front().is_some_and(|(t, _)| *t < keep_from) {
            st.history.pop_front();
        }
        // Bound the entries (3 MiB) whatever the tick: merge the two oldest.
        while st.history.len() > HISTORY_ENTRIES {
            if let (Some((_, a)), Some((_, b))) = (st.history.pop_front(), st.history.front_mut()) {
                add_into(b, &a);
            }
        }
        let mut conditions: Vec<(usize, Condition)> = Vec::new();
        // The warning and the critical p95 rules read the same quantiles: one HDR snapshot
        // per operation and quantile per evaluation.
        let mut quantiles = Vec::new();
        let rules = self.rules();
        for (i, rule) in rules.iter().enumerate() {
            if !rule.enabled {
                continue;
            }
            for c in self.conditions(&st, rule, now, &seen, &mut quantiles) {
                conditions.push((i, c));
            }
        }
        let events = self.transition(&mut st, now, &rules, conditions);
        let mut firing: Vec<Alert> = st
            .instances
            .values()
            .filter(|i| i.state == AlertState::Firing)
            .map(|i| i.alert.clone())
            .collect();
        firing.sort_by(|a, b| {
            a.severity
                .cmp(&b.severity)
                .then(a.name.cmp(&b.name))
                .then(a.labels.cmp(&b.labels))
        });
        for e in &events {
            if st.events.len() == HISTORY_EVENTS {
                st.events.pop_front();
            }
            st.events.push_back(e.clone());
        }
        drop(st);
        *self.firing.write().unwrap_or_else(|e| e.into_inner()) = Arc::from(firing.clone());
        if let Some(f) = &self.cfg.on_event {
            for e in &events {
                f(e);
            }
        }
        if let Some(f) = &self.cfg.on_firing {
            f(&firing);
        }
        self.notifiers()
            .deliver(&events, &firing, now, self.wall(now));
        events
    }
}
