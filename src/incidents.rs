//! Incident records (the spec's incident response, step 5: "document the incident"): each
//! alert, from firing to resolved, is written to the security audit class with what was done
//! about it, and [`report`] turns an audit directory into a Markdown timeline per incident
//! (`authwatch incident report --audit-dir DIR [--since 24h]`), ready to paste into a
//! post-mortem.
//!
//! Two records per incident: `auth.incident.opened` when the alert fires (its rule, severity,
//! labels, value, description, where it was notified) and `auth.incident.resolved` when it
//! resolves (how long it lasted, its peak value, the addresses blocked for it, the
//! notifications). Their details are in the record's `auth.incident` object.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use authwatch_alerts::{Alert, AlertEvent, AlertState};
use serde_json::{json, Value};

use crate::audit::{AuditClass, AuditRecord};

/// Most incidents followed at once (beyond, the oldest is closed without its peak).
const MAX_OPEN: usize = 10_000;

struct Open {
    id: String,
    opened: SystemTime,
    peak: f64,
    blocks: Vec<String>,
}

/// Follows the open incidents and writes their records.
pub(crate) struct Incidents {
    open: Mutex<HashMap<(String, String), Open>>,
    auditor: Arc<crate::audit::Auditor>,
    /// Where the notifications go (the webhooks and Alertmanager configured).
    notifiers: Vec<String>,
}

impl std::fmt::Debug for Incidents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incidents").finish_non_exhaustive()
    }
}

fn key(a: &Alert) -> (String, String) {
    (a.name.clone(), a.own_labels())
}

fn labels(a: &Alert) -> Value {
    let own: BTreeMap<&str, &str> = a
        .labels
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "alertname" | "severity" | "notify" | "alertgroup" | "service"
            )
        })
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    json!(own)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Incidents {
    pub(crate) fn new(auditor: Arc<crate::audit::Auditor>, notifiers: Vec<String>) -> Self {
        Self {
            open: Mutex::new(HashMap::new()),
            auditor,
            notifiers,
        }
    }

    fn write(&self, name: &'static str, detail: Value) {
        let mut r = AuditRecord::new(name, AuditClass::Security, "authwatch");
        r.incident = Some(detail);
        self.auditor.send(r);
    }

    /// An alert fired or resolved: the incident opens or closes.
    pub(crate) fn on_alert(&self, e: &AlertEvent) {
        let a = &e.alert;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        match a.state {
            AlertState::Firing => {
                let id = format!(
                    "{}-{}",
                    a.name,
                    a.starts_at
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs())
                );
                if open.len() >= MAX_OPEN {
                    if let Some(k) = open
                        .iter()
                        .min_by_key(|(_, o)| o.opened)
                        .map(|(k, _)| k.clone())
                    {
                        open.remove(&k);
                    }
                }
                open.insert(
                    key(a),
                    Open {
                        id: id.clone(),
                        opened: a.starts_at,
                        peak: a.value,
                        blocks: Vec::new(),
                    },
                );
                drop(open);
                self.write(
                    "auth.incident.opened",
                    json!({
                        "id": id,
                        "alert": a.name,
                        "severity": a.severity.as_str(),
                        "labels": labels(a),
                        "value": a.value,
                        "description": a.annotations.get("description"),
                        "runbook_url": a.annotations.get("runbook_url"),
                        "notify": a.label("notify"),
                        "notified": self.notifiers,
                        "opened": rfc3339(a.starts_at),
                    }),
                );
            }
            AlertState::Resolved => {
                let Some(o) = open.remove(&key(a)) else {
                    return;
                };
                drop(open);
                let resolved = a.ends_at.unwrap_or_else(SystemTime::now);
                self.write(
                    "auth.incident.resolved",
                    json!({
                        "id": o.id,
                        "alert": a.name,
                        "severity": a.severity.as_str(),
                        "labels": labels(a),
                        "opened": rfc3339(o.opened),
                        "resolved": rfc3339(resolved),
                        "duration_s": resolved.duration_since(o.opened).unwrap_or_default().as_secs(),
                        "peak": o.peak.max(a.value),
                        "actions": {
                            "blocks": o.blocks,
                            "notified": self.notifiers,
                        },
                    }),
                );
            }
            _ => {}
        }
    }

    /// Each evaluation: the firing alerts' values, for each incident's peak.
    pub(crate) fn observe(&self, firing: &[Alert]) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        for a in firing {
            if let Some(o) = open.get_mut(&key(a)) {
                o.peak = o.peak.max(a.value);
            }
        }
    }

    /// An address was blocked for the alert `alert` names (its incident's action).
    pub(crate) fn blocked(&self, alert: &Alert, ip: &str) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(o) = open.get_mut(&key(alert)) {
            if o.blocks.len() < 1_000 && !o.blocks.iter().any(|b| b == ip) {
                o.blocks.push(ip.to_owned());
            }
        }
    }
}

/// How a report shows addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Addresses {
    /// Masked: `203.0.x.x`, `2001:db8:…` (the default).
    Masked,
    /// As recorded.
    Unmasked,
}

fn show(ip: &str, how: Addresses) -> String {
    if how == Addresses::Unmasked {
        return ip.to_owned();
    }
    let addr = ip.split_once('/').map_or(ip, |(a, _)| a);
    addr.parse()
        .map_or_else(|_| ip.to_owned(), authwatch_alerts::mask_ip)
}

/// One incident as the report shows it.
#[derive(Debug, Default)]
struct Incident {
    alert: String,
    severity: String,
    labels: BTreeMap<String, String>,
    opened: Option<SystemTime>,
    resolved: Option<SystemTime>,
    first_value: Option<f64>,
    peak: Option<f64>,
    description: String,
    runbook: Option<String>,
    notified: Vec<String>,
    notify: Option<String>,
    blocks: Vec<String>,
}

fn time_of(v: &Value) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(v.as_str()?).ok()
}

/// The incidents of the audit log in `dir` (the folder given to
/// [`AuthWatchBuilder::audit_dir`](crate::AuthWatchBuilder::audit_dir)) that were open at some
/// point within `since` before now, as Markdown: per incident, its alert and labels, when it
/// opened and resolved (or that it is still open), its first and peak value, the addresses it
/// names and the failures recorded from them in its time, the blocks made (with their refusals
/// once ended), and where it was notified. Addresses are masked unless `addresses` says
/// otherwise.
///
/// # Errors
///
/// The folder cannot be read.
pub fn report(dir: &Path, since: Duration, addresses: Addresses) -> std::io::Result<String> {
    let from = SystemTime::now()
        .checked_sub(since)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let files = crate::audit::security_files(dir)?;
    let mut incidents: BTreeMap<String, Incident> = BTreeMap::new();
    // Per address: failures recorded (time), and the blocks' ends (refusals).
    let mut failures: HashMap<String, Vec<SystemTime>> = HashMap::new();
    let mut block_ends: HashMap<String, (String, u64)> = HashMap::new();
    let mut block_adds: Vec<(SystemTime, String, String, u64)> = Vec::new();
    // The addresses whose block reached CrowdSec as a decision (when).
    let mut pushed: HashMap<String, Vec<SystemTime>> = HashMap::new();
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let name = v["event.name"].as_str().unwrap_or("");
            let t = time_of(&v["time"]);
            let ip = v["client.address"].as_str().map(str::to_owned);
            match name {
                "auth.incident.opened" | "auth.incident.resolved" => {
                    let d = &v["auth.incident"];
                    let Some(id) = d["id"].as_str() else { continue };
                    let i = incidents.entry(id.to_owned()).or_default();
                    i.alert = d["alert"].as_str().unwrap_or("").to_owned();
                    i.severity = d["severity"].as_str().unwrap_or("").to_owned();
                    if let Some(l) = d["labels"].as_object() {
                        i.labels = l
                            .iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                            .collect();
                    }
                    i.notified = d["notified"]
                        .as_array()
                        .or(d["actions"]["notified"].as_array())
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    if name == "auth.incident.opened" {
                        i.opened = time_of(&d["opened"]).or(t);
                        i.first_value = d["value"].as_f64();
                        i.description = d["description"].as_str().unwrap_or("").to_owned();
                        i.runbook = d["runbook_url"].as_str().map(str::to_owned);
                        i.notify = d["notify"].as_str().map(str::to_owned);
                    } else {
                        i.opened = i.opened.or(time_of(&d["opened"]));
                        i.resolved = time_of(&d["resolved"]).or(t);
                        i.peak = d["peak"].as_f64();
                        if let Some(b) = d["actions"]["blocks"].as_array() {
                            i.blocks = b
                                .iter()
                                .filter_map(|x| x.as_str().map(str::to_owned))
                                .collect();
                        }
                    }
                }
                "auth.block.added" => {
                    if let (Some(t), Some(ip)) = (t, ip) {
                        block_adds.push((
                            t,
                            ip,
                            v["auth.block.reason"].as_str().unwrap_or("").to_owned(),
                            v["auth.block.ttl_s"].as_u64().unwrap_or(0),
                        ));
                    }
                }
                "auth.block.pushed" => {
                    if let (Some(t), Some(ip)) = (t, ip) {
                        pushed.entry(ip).or_default().push(t);
                    }
                }
                "auth.block.expired" | "auth.block.removed" | "auth.block.evicted" => {
                    if let Some(ip) = ip {
                        block_ends.insert(
                            ip,
                            (
                                name.trim_start_matches("auth.block.").to_owned(),
                                v["auth.block.refused"].as_u64().unwrap_or(0),
                            ),
                        );
                    }
                }
                _ if v["auth.outcome"] == "failure" => {
                    if let (Some(t), Some(ip)) = (t, ip) {
                        let list = failures.entry(ip).or_default();
                        if list.len() < 100_000 {
                            list.push(t);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut list: Vec<&Incident> = incidents
        .values()
        .filter(|i| i.resolved.is_none_or(|r| r >= from))
        .collect();
    list.sort_by_key(|i| i.opened);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Incidents since {}\n\n{} incident{} in the audit log of `{}`.",
        rfc3339(from),
        list.len(),
        if list.len() == 1 { "" } else { "s" },
        dir.display()
    );
    for i in list {
        let own: Vec<String> = i
            .labels
            .iter()
            .map(|(k, v)| {
                let v = if k == "client_ip" {
                    show(v, addresses)
                } else {
                    v.clone()
                };
                format!("{k}={v}")
            })
            .collect();
        let _ = writeln!(
            out,
            "\n## {} {}({})\n",
            i.alert,
            if own.is_empty() {
                String::new()
            } else {
                format!("{} ", own.join(" "))
            },
            i.severity
        );
        let opened = i.opened.map_or_else(|| "?".to_owned(), rfc3339);
        let _ = writeln!(out, "- **First seen:** {opened}");
        match (i.opened, i.resolved) {
            (Some(o), Some(r)) => {
                let d = r.duration_since(o).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "- **Resolved:** {} (after {})",
                    rfc3339(r),
                    humantime::format_duration(Duration::from_secs(d.as_secs()))
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "- **Resolved:** not yet (still open at the end of the log)"
                );
            }
        }
        if let Some(v) = i.first_value {
            let _ = write!(out, "- **Value:** {v} when it fired");
            if let Some(p) = i.peak {
                let _ = write!(out, ", peak {p}");
            }
            out.push('\n');
        }
        if !i.description.is_empty() {
            let mut d = i.description.clone();
            if addresses == Addresses::Masked {
                if let Some(ip) = i.labels.get("client_ip") {
                    d = d.replace(ip.as_str(), &show(ip, addresses));
                }
            }
            let _ = writeln!(out, "- **What:** {d}");
        }
        // The addresses it names, with the failures recorded from them while it was open.
        let window = |t: &SystemTime| {
            i.opened
                .is_none_or(|o| *t >= o.checked_sub(Duration::from_secs(600)).unwrap_or(o))
                && i.resolved.is_none_or(|r| *t <= r)
        };
        let mut named: Vec<String> = i.labels.get("client_ip").cloned().into_iter().collect();
        for b in &i.blocks {
            if !named.contains(b) {
                named.push(b.clone());
            }
        }
        if !named.is_empty() {
            let shown: Vec<String> = named
                .iter()
                .map(|ip| {
                    let addr = ip.split_once('/').map_or(ip.as_str(), |(a, _)| a);
                    let n = failures
                        .get(addr)
                        .map_or(0, |l| l.iter().filter(|t| window(t)).count());
                    format!("{} ({n} failures recorded)", show(ip, addresses))
                })
                .collect();
            let _ = writeln!(out, "- **Top addresses:** {}", shown.join(", "));
        }
        // Blocks: those its reason names, made while it was open.
        let blocks: Vec<String> = block_adds
            .iter()
            .filter(|(t, _, reason, _)| reason.starts_with(&format!("{}:", i.alert)) && window(t))
            .filter(|(_, ip, _, _)| {
                i.labels
                    .get("client_ip")
                    .is_none_or(|l| l.split('/').next() == Some(ip.as_str()))
            })
            .map(|(t, ip, _, ttl)| {
                let mut end = block_ends.get(ip).map_or_else(
                    || "in force at the end of the log".to_owned(),
                    |(how, n)| format!("{how}, {n} requests refused"),
                );
                if pushed.get(ip).is_some_and(|p| p.iter().any(|p| p >= t)) {
                    end.push_str("; pushed to CrowdSec");
                }
                format!(
                    "{} at {} for {} ({end})",
                    show(ip, addresses),
                    rfc3339(*t),
                    humantime::format_duration(Duration::from_secs(*ttl))
                )
            })
            .collect();
        if blocks.is_empty() {
            let _ = writeln!(out, "- **Blocks:** none");
        } else {
            let _ = writeln!(out, "- **Blocks:** {}", blocks.join("; "));
        }
        let _ = writeln!(
            out,
            "- **Notified:** {}{}",
            i.notify.as_deref().unwrap_or("?"),
            if i.notified.is_empty() {
                " (the log only: no webhook or Alertmanager configured)".to_owned()
            } else {
                format!(" through {}", i.notified.join(", "))
            }
        );
        if let Some(r) = &i.runbook {
            let _ = writeln!(out, "- **Runbook:** {r}");
        }
    }
    Ok(out)
}
