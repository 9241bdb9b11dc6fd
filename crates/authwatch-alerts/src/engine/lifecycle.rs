//! The alert lifecycle: pending → firing → resolved, from the conditions of one evaluation.

use std::time::{Duration, SystemTime};

use super::conditions::Condition;
use super::{AlertEvent, AlertState, Inner, Instance, State};

impl Inner {
    pub(super) fn transition(
        &self,
        st: &mut State,
        now: Duration,
        rules: &[crate::rules::Rule],
        conditions: Vec<(usize, Condition)>,
    ) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (ri, c) in conditions {
            let rule = &rules[ri];
            let key = (ri, c.labels.clone());
            seen.insert(key.clone());
            let inst = st.instances.entry(key).or_insert_with(|| Instance {
                rule: ri,
                state: AlertState::Pending,
                active_since: now,
                alert: self.alert(rule, &c, AlertState::Pending, now),
            });
            let since = inst.active_since;
            let state =
                if inst.state == AlertState::Firing || now.saturating_sub(since) >= rule.for_ {
                    AlertState::Firing
                } else {
                    AlertState::Pending
                };
            let fired = state == AlertState::Firing && inst.state != AlertState::Firing;
            inst.state = state;
            inst.alert = self.alert(rule, &c, state, since);
            if fired {
                events.push(AlertEvent {
                    alert: inst.alert.clone(),
                    at: now,
                });
            }
        }
        let gone: Vec<_> = st
            .instances
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(inst) = st.instances.remove(&k) {
                debug_assert_eq!(inst.rule, k.0);
                if inst.state == AlertState::Firing {
                    let mut alert = inst.alert;
                    alert.state = AlertState::Resolved;
                    // The real time (the monotonic clock may have drifted from it), never before
                    // the start.
                    alert.ends_at = Some(SystemTime::now().max(alert.starts_at));
                    events.push(AlertEvent { alert, at: now });
                }
            }
        }
        events
    }
}
