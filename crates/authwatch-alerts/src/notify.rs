//! Notifiers: the log (always), Alertmanager's v2 API and a Slack-compatible webhook, each
//! delivered from its own thread through a bounded queue, with retries and backoff. Nothing here
//! ever runs on a request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::engine::{Alert, AlertConfig, AlertEvent, AlertState};
use crate::rules::Severity;

/// Deliveries of one notifier.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotifierStats {
    /// `alertmanager`, `webhook`, or a channel's webhook: `webhook:page`, `webhook:slack`,
    /// `webhook:email`, `webhook:security`.
    pub name: &'static str,
    /// Alerts delivered (Alertmanager) or messages delivered (webhook).
    pub sent: u64,
    /// Failed delivery attempts (each retried).
    pub failed: u64,
    /// Notifications dropped: the queue was full, or the receiver refused them for good (a 4xx
    /// other than 408 and 429).
    pub dropped: u64,
    /// Waiting now.
    pub queued: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One JSON array of every queued alert per POST; a newer state of an alert replaces the
    /// queued one.
    Alertmanager,
    /// One message per POST, in order.
    Webhook,
}

struct Queue {
    items: VecDeque<(String, Value)>,
    stop: bool,
    busy: bool,
}

struct Shared {
    kind: Kind,
    url: String,
    cap: usize,
    q: Mutex<Queue>,
    cv: Condvar,
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, key: String, v: Value) {
        let mut q = self.lock();
        if self.kind == Kind::Alertmanager {
            if let Some(slot) = q.items.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = v;
                drop(q);
                self.cv.notify_all();
                return;
            }
        }
        if q.items.len() >= self.cap {
            q.items.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        q.items.push_back((key, v));
        drop(q);
        self.cv.notify_all();
    }
}

struct Worker {
    shared: Arc<Shared>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.cv.notify_all();
    }
}

fn run(shared: &Shared, timeout: Duration) {
    let client = match reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, url = %shared.url, "authwatch: cannot build the HTTP client for alert notifications");
            return;
        }
    };
    let endpoint = match shared.kind {
        Kind::Alertmanager => format!("{}/api/v2/alerts", shared.url.trim_end_matches('/')),
        Kind::Webhook => shared.url.clone(),
    };
    let mut backoff = Duration::from_millis(250);
    loop {
        let batch: Vec<(String, Value)> = {
            let mut q = shared.lock();
            while q.items.is_empty() && !q.stop {
                q = shared.cv.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            if q.items.is_empty() {
                return;
            }
            q.busy = true;
            match shared.kind {
                Kind::Alertmanager => q.items.drain(..).collect(),
                Kind::Webhook => q.items.pop_front().into_iter().collect(),
            }
        };
        let body = match shared.kind {
            Kind::Alertmanager => Value::Array(batch.iter().map(|(_, v)| v.clone()).collect()),
            Kind::Webhook => batch[0].1.clone(),
        };
        let result = client
            .post(&endpoint)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .and_then(reqwest::blocking::Response::error_for_status);
        let mut q = shared.lock();
        q.busy = false;
        match result {
            Ok(_) => {
                shared.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                backoff = Duration::from_millis(250);
                drop(q);
                shared.cv.notify_all();
            }
            Err(e)
                if e.status().is_some_and(|s| {
                    s.is_client_error() && s.as_u16() != 429 && s.as_u16() != 408
                }) =>
            {
                // Refused for good (a malformed alert, a wrong URL): retrying cannot help, and
                // would hold back everything queued behind it.
                shared
                    .dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::error!(url = %endpoint, error = %e, "authwatch: alert delivery refused; dropped");
                drop(q);
                shared.cv.notify_all();
            }
            Err(e) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(url = %endpoint, error = %e, retry_in = ?backoff, "authwatch: alert delivery failed");
                // Put back what no newer state replaced, oldest first, within the bound.
                for (k, v) in batch.into_iter().rev() {
                    if !q.items.iter().any(|(qk, _)| *qk == k) {
                        if q.items.len() >= shared.cap {
                            shared.dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        q.items.push_front((k, v));
                    }
                }
                if q.stop {
                    return;
                }
                let (q, _) = shared
                    .cv
                    .wait_timeout(q, backoff)
                    .unwrap_or_else(|e| e.into_inner());
                if q.stop {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn start(kind: Kind, url: &str, cfg: &AlertConfig) -> Option<Worker> {
    let shared = Arc::new(Shared {
        kind,
        url: url.to_owned(),
        cap: cfg.queue,
        q: Mutex::new(Queue {
            items: VecDeque::new(),
            stop: false,
            busy: false,
        }),
        cv: Condvar::new(),
        sent: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
    });
    let s = shared.clone();
    let timeout = cfg.http_timeout;
    let name = match kind {
        Kind::Alertmanager => "authwatch-alertmanager",
        Kind::Webhook => "authwatch-webhook",
    };
    match std::thread::Builder::new()
        .name(name.into())
        .spawn(move || run(&s, timeout))
    {
        Ok(_) => Some(Worker { shared }),
        Err(e) => {
            tracing::error!(error = %e, "authwatch: could not start the {name} thread");
            None
        }
    }
}

pub(crate) struct Notifiers {
    alertmanager: Option<Worker>,
    webhook: Option<Worker>,
    /// A webhook per channel.
    receivers: Vec<(crate::Channel, Worker)>,
    resend: Duration,
    /// The settings they were started from, to tell a reload that changes them.
    from: (
        Option<String>,
        Option<String>,
        Vec<(crate::Channel, String)>,
        Duration,
    ),
    gate: Option<crate::engine::NotifyGate>,
    /// When the firing alerts were last sent, and how many sends there have been (each one
    /// starts one alert further, see `deliver`).
    last_sent: Mutex<(Option<Duration>, usize)>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn fingerprint(a: &Alert) -> String {
    a.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The body of one alert in Alertmanager's v2 API (`PostableAlert`).
#[must_use]
pub fn alertmanager_alert(a: &Alert, ends_at: SystemTime) -> Value {
    json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "startsAt": rfc3339(a.starts_at),
        "endsAt": rfc3339(ends_at),
    })
}

/// A Slack-compatible message (`text` plus one attachment) for an alert's change of state.
#[must_use]
pub fn slack_message(a: &Alert) -> Value {
    let (word, color) = match (a.state, a.severity) {
        (AlertState::Resolved, _) => ("RESOLVED", "#2eb67d"),
        (_, Severity::Critical) => ("FIRING", "#e01e5a"),
        (_, _) => ("FIRING", "#ecb22e"),
    };
    let extra = a.own_labels();
    let description = a
        .annotations
        .get("description")
        .cloned()
        .unwrap_or_default();
    let fields: Vec<Value> = a
        .labels
        .iter()
        .filter(|(k, _)| k.as_str() != "alertname")
        .map(|(k, v)| json!({"title": k, "value": v, "short": true}))
        .collect();
    json!({
        "text": format!("[{word}] {} ({}) {} {description}", a.name, a.severity, extra),
        "attachments": [{
            "color": color,
            "title": format!("[{word}] {}", a.name),
            "title_link": a.annotations.get("runbook_url"),
            "text": description,
            "fields": fields,
        }],
    })
}

impl Notifiers {
    pub(crate) fn start(cfg: &AlertConfig) -> Self {
        Self {
            alertmanager: cfg
                .alertmanager
                .as_deref()
                .and_then(|u| start(Kind::Alertmanager, u, cfg)),
            webhook: cfg
                .webhook
                .as_deref()
                .and_then(|u| start(Kind::Webhook, u, cfg)),
            receivers: cfg
                .receivers
                .iter()
                .filter_map(|(c, u)| Some((*c, start(Kind::Webhook, u, cfg)?)))
                .collect(),
            resend: cfg.resend.max(cfg.tick),
            from: (
                cfg.alertmanager.clone(),
                cfg.webhook.clone(),
                cfg.receivers.clone(),
                cfg.resend,
            ),
            gate: cfg.notify_gate.clone(),
            last_sent: Mutex::new((None, 0)),
        }
    }

    /// Whether `cfg` names the same notifiers (and resend interval) as these were started with.
    pub(crate) fn same_as(&self, cfg: &AlertConfig) -> bool {
        self.from.0 == cfg.alertmanager
            && self.from.1 == cfg.webhook
            && self.from.2 == cfg.receivers
            && self.from.3 == cfg.resend
    }

    pub(crate) fn deliver(
        &self,
        events: &[AlertEvent],
        firing: &[Alert],
        now: Duration,
        wall: SystemTime,
    ) {
        for e in events {
            log(&e.alert);
        }
        if self.webhook.is_some() || !self.receivers.is_empty() {
            for e in events {
                // Asked once per change: in a fleet, one instance sends it, to every webhook.
                if !self.gate.as_ref().is_none_or(|g| g(&e.alert)) {
                    continue;
                }
                let msg = slack_message(&e.alert);
                let notify = e.alert.label("notify").unwrap_or("");
                for (c, w) in &self.receivers {
                    if notify.split('+').any(|n| n == c.as_str()) {
                        w.shared.push(String::new(), msg.clone());
                    }
                }
                if let Some(w) = &self.webhook {
                    w.shared.push(String::new(), msg);
                }
            }
        }
        if let Some(w) = &self.alertmanager {
            let mut last = self.last_sent.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.0.is_none_or(|t| now.saturating_sub(t) >= self.resend);
            if events.is_empty() && (!due || firing.is_empty()) {
                return;
            }
            last.0 = Some(now);
            last.1 = last.1.wrapping_add(1);
            // Real time (the engine's clock is monotonic), so that a drifted clock never sends
            // an `endsAt` already past.
            let valid_until = SystemTime::now()
                .max(wall)
                .checked_add(self.resend.saturating_mul(4))
                .unwrap_or(wall);
            // Each re-send starts one alert further: when more alerts fire than the queue
            // holds, a full queue keeps the last ones pushed, and a fixed order would starve
            // the same alerts at every re-send while Alertmanager is unreachable.
            let start = last.1 % firing.len().max(1);
            for a in firing[start..].iter().chain(&firing[..start]) {
                w.shared
                    .push(fingerprint(a), alertmanager_alert(a, valid_until));
            }
            for e in events {
                if e.alert.state == AlertState::Resolved {
                    let ends = e.alert.ends_at.unwrap_or(wall);
                    w.shared
                        .push(fingerprint(&e.alert), alertmanager_alert(&e.alert, ends));
                }
            }
        }
    }

    pub(crate) fn stats(&self) -> Vec<NotifierStats> {
        [
            ("alertmanager", self.alertmanager.as_ref()),
            ("webhook", self.webhook.as_ref()),
        ]
        .into_iter()
        .chain(self.receivers.iter().map(|(c, w)| {
            let name = match c {
                crate::Channel::Page => "webhook:page",
                crate::Channel::Slack => "webhook:slack",
                crate::Channel::Email => "webhook:email",
                crate::Channel::Security => "webhook:security",
            };
            (name, Some(w))
        }))
        .filter_map(|(name, w)| {
            w.as_ref().map(|w| NotifierStats {
                name,
                sent: w.shared.sent.load(Ordering::Relaxed),
                failed: w.shared.failed.load(Ordering::Relaxed),
                dropped: w.shared.dropped.load(Ordering::Relaxed),
                queued: w.shared.lock().items.len(),
            })
        })
        .collect()
    }

    /// Waits up to `timeout` for the queues to empty, then stops the threads.
    pub(crate) fn flush(&self, timeout: Duration) {
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        let all = [&self.alertmanager, &self.webhook]
            .into_iter()
            .flatten()
            .chain(self.receivers.iter().map(|(_, w)| w));
        for w in all {
            let mut q = w.shared.lock();
            while (!q.items.is_empty() || q.busy) && Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                q = w
                    .shared
                    .cv
                    .wait_timeout(q, left.min(Duration::from_millis(50)))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            q.stop = true;
            drop(q);
            w.shared.cv.notify_all();
        }
    }
}

fn log(a: &Alert) {
    let labels = a.own_labels();
    let description = a.annotations.get("description").map_or("", String::as_str);
    let runbook = a.annotations.get("runbook_url").map_or("", String::as_str);
    match (a.state, a.severity) {
        (AlertState::Resolved, _) => tracing::info!(
            target: "authwatch::alerts",
            alertname = %a.name, severity = %a.severity, state = "resolved", labels = %labels,
            description, runbook,
            "authwatch alert resolved: {}", a.name
        ),
        (_, Severity::Critical) => tracing::error!(
            target: "authwatch::alerts",
            alertname = %a.name, severity = %a.severity, state = "firing", value = a.value,
            labels = %labels, description, runbook,
            "authwatch alert firing: {}", a.name
        ),
        _ => tracing::warn!(
            target: "authwatch::alerts",
            alertname = %a.name, severity = %a.severity, state = "firing", value = a.value,
            labels = %labels, description, runbook,
            "authwatch alert firing: {}", a.name
        ),
    }
}
