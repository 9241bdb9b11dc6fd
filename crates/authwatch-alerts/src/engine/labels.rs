//! What an alert carries: its labels and annotations (the runbook link among them), and the
//! masked form of a client's address.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use super::conditions::Condition;
use super::{Alert, AlertState, Inner};
use crate::rules::Rule;

impl Inner {
    pub(super) fn alert(
        &self,
        rule: &Rule,
        c: &Condition,
        state: AlertState,
        since: Duration,
    ) -> Alert {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_owned(), rule.name.to_string());
        labels.insert("severity".to_owned(), rule.severity.as_str().to_owned());
        labels.insert("notify".to_owned(), rule.notify_label());
        labels.insert("alertgroup".to_owned(), rule.group.to_string());
        if let Some(s) = &self.cfg.service {
            labels.insert("service".to_owned(), s.clone());
        }
        for (k, v) in &c.labels {
            labels.insert(k.clone(), v.clone());
        }
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".to_owned(), rule.summary.to_string());
        annotations.insert("description".to_owned(), c.description.clone());
        annotations.insert(
            "runbook_url".to_owned(),
            format!("{}#{}", self.cfg.runbook_base, rule.runbook_anchor()),
        );
        Alert {
            name: rule.name.to_string(),
            severity: rule.severity,
            state,
            labels,
            annotations,
            value: c.value,
            starts_at: self.wall(since),
            ends_at: None,
        }
    }
}

/// An address masked for display (the dashboard's default): the first two octets of an IPv4
/// address, the first two groups of an IPv6 one.
#[must_use]
pub fn mask_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.x.x", o[0], o[1])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:…", s[0], s[1])
        }
    }
}
