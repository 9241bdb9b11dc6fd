//! CrowdSec, both ways: authwatch's blocks become decisions in a CrowdSec Local API (LAPI), so
//! that the operator's own firewall bouncers enforce them; and, optionally, the LAPI's bans are
//! enforced in the layer.
//!
//! - **As a watcher** (machine credentials, `cscli machines add`): each block an alert or a
//!   person makes is pushed as a CrowdSec alert with one `ban` decision for the block's time,
//!   origin `authwatch`, scenario `authwatch/<alert>` (`authwatch/manual` by hand). An unblock
//!   deletes the decisions of origin `authwatch` for that address. A dry run pushes nothing.
//!   In a fleet, the instance that makes a block first pushes it, once.
//! - **As a bouncer** (an API key, `cscli bouncers add`): every
//!   [`stream_interval`](CrowdSec::stream_interval) the LAPI's decision stream is read, and its
//!   `ban` decisions on an address (`Ip`) or on a range the block list keys by (an IPv4 `/32`,
//!   an IPv6 range of the detectors' prefix or longer) are enforced like authwatch's own blocks,
//!   with source `crowdsec`. Allow-listed networks are never blocked, a block of authwatch's
//!   own is never replaced, and the decisions of origin `authwatch` (its own, back) are
//!   skipped. Other decision types (`captcha`) and wider ranges are left to the firewall
//!   bouncers, and counted.
//!
//! The LAPI tracks each bouncer's last read: give each instance of a fleet its own bouncer
//! key, or the instances would take each other's changes.
//!
//! Requests never wait for CrowdSec: pushes queue (bounded like the block list) for
//! authwatch's own thread, which retries them while the LAPI is away.
//!
//! ```no_run
//! use std::time::Duration;
//! use authwatch::{AuthWatch, BlockPolicy, CrowdSec};
//!
//! # fn main() -> Result<(), authwatch::BuildError> {
//! let watch = AuthWatch::builder()
//!     .blocking(BlockPolicy::default())
//!     .crowdsec(
//!         CrowdSec::new("http://127.0.0.1:8080")
//!             .watcher("authwatch-api-1", std::env::var("CROWDSEC_PASSWORD").unwrap_or_default())
//!             .bouncer(std::env::var("CROWDSEC_BOUNCER_KEY").unwrap_or_default())
//!             .stream_interval(Duration::from_secs(10)),
//!     )
//!     .build()?;
//! # drop(watch);
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use authwatch_layer::{BlockSource, BlockedIp};

use crate::blocks::Blocker;
use crate::BuildError;

/// The origin of the decisions authwatch pushes.
pub const CROWDSEC_ORIGIN: &str = "authwatch";

/// How authwatch talks to a CrowdSec Local API. See the [module](crate::crowdsec) for what
/// each side does.
#[derive(Clone)]
pub struct CrowdSec {
    url: String,
    machine: Option<(String, String)>,
    bouncer_key: Option<String>,
    every: Duration,
    timeout: Duration,
}

impl std::fmt::Debug for CrowdSec {
    // The password and the key stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrowdSec")
            .field("url", &self.url)
            .field("machine", &self.machine.as_ref().map(|(m, _)| m))
            .field("bouncer", &self.bouncer_key.is_some())
            .field("stream_interval", &self.every)
            .finish_non_exhaustive()
    }
}

impl CrowdSec {
    /// The Local API at `url` (`http://127.0.0.1:8080`; `https://` needs the `alerts-https`
    /// feature). Give it [`watcher`](Self::watcher) credentials, a
    /// [`bouncer`](Self::bouncer) key, or both.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into().trim_end_matches('/').to_owned(),
            machine: None,
            bouncer_key: None,
            every: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }
    }

    /// Pushes authwatch's blocks as decisions, logged in as the machine `machine_id` (as
    /// `cscli machines add machine_id --password password` registered it).
    pub fn watcher(mut self, machine_id: impl Into<String>, password: impl Into<String>) -> Self {
        self.machine = Some((machine_id.into(), password.into()));
        self
    }

    /// Enforces the LAPI's bans, reading its decision stream with the bouncer key `api_key`
    /// (`cscli bouncers add NAME`).
    pub fn bouncer(mut self, api_key: impl Into<String>) -> Self {
        self.bouncer_key = Some(api_key.into());
        self
    }

    /// How often the decision stream is read (default 10 s, CrowdSec's bouncers' own); a new
    /// ban is enforced within it.
    pub fn stream_interval(mut self, every: Duration) -> Self {
        self.every = every.max(Duration::from_millis(100));
        self
    }

    /// How long one call to the LAPI may take (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(100));
        self
    }

    pub(crate) fn check(&self) -> Result<(), BuildError> {
        let bad = |why: &str| Err(BuildError::Config(format!("crowdsec: {why}")));
        if self.machine.is_none() && self.bouncer_key.is_none() {
            return bad("give watcher credentials, a bouncer key, or both");
        }
        if self
            .machine
            .as_ref()
            .is_some_and(|(m, p)| m.is_empty() || p.is_empty())
        {
            return bad("the watcher's machine id and password must not be empty");
        }
        if self.bouncer_key.as_ref().is_some_and(String::is_empty) {
            return bad("the bouncer key must not be empty");
        }
        let url = match reqwest::Url::parse(&self.url) {
            Ok(u) => u,
            Err(e) => return bad(&format!("{:?} is not a URL: {e}", self.url)),
        };
        if url.host_str().is_none_or(str::is_empty) {
            return bad(&format!("{:?} has no host", self.url));
        }
        match url.scheme() {
            "http" => Ok(()),
            "https" if cfg!(feature = "alerts-https") => Ok(()),
            "https" => bad("https:// needs the alerts-https feature"),
            _ => bad(&format!("{:?} is not an http:// or https:// URL", self.url)),
        }
    }
}

/// What the link to CrowdSec has done, for `/auth/stats` and the health check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CrowdSecStatus {
    /// Whether the last call to the LAPI worked.
    pub connected: bool,
    /// Decisions pushed (bans), and deletions.
    pub pushed: u64,
    /// Pushes waiting (the LAPI away, or not yet sent).
    pub pending: usize,
    /// The LAPI's bans enforced here now.
    pub enforced: usize,
    /// Decisions read from the stream that the layer leaves to the firewall (another type, a
    /// wider range, an allow-listed address).
    pub skipped: u64,
    /// The last error, if the last call failed.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone)]
enum Push {
    Ban { block: BlockedIp, ttl: Duration },
    Unban { ip: IpAddr, prefix: u8 },
}

struct State {
    queue: VecDeque<Push>,
    stop: bool,
}

struct Shared {
    cfg: CrowdSec,
    max: usize,
    state: Mutex<State>,
    wake: Condvar,
    status: Mutex<CrowdSecStatus>,
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

/// The running link: the push queue and its thread.
#[derive(Clone)]
pub(crate) struct Link {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("cfg", &self.shared.cfg)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// The link, not started yet (see [`start`](Self::start)).
    pub(crate) fn new(cfg: CrowdSec, max: usize) -> Result<Self, BuildError> {
        cfg.check()?;
        Ok(Self {
            shared: Arc::new(Shared {
                cfg,
                max,
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    stop: false,
                }),
                wake: Condvar::new(),
                status: Mutex::new(CrowdSecStatus::default()),
                done: Mutex::new(None),
            }),
        })
    }

    /// Starts the thread; it reads the bouncer's bans into `blocker`'s list (held weakly: the
    /// blocker holds this link).
    pub(crate) fn start(&self, blocker: &Arc<Blocker>) -> Result<(), BuildError> {
        let (tx, rx) = std::sync::mpsc::channel();
        *lock(&self.shared.done) = Some(rx);
        let (s, b) = (self.shared.clone(), Arc::downgrade(blocker));
        std::thread::Builder::new()
            .name("authwatch-crowdsec".into())
            .spawn(move || {
                run(&s, &b);
                let _ = tx.send(());
            })
            .map_err(BuildError::Audit)?;
        Ok(())
    }

    /// Whether blocks are pushed (watcher credentials were given).
    pub(crate) fn pushes(&self) -> bool {
        self.shared.cfg.machine.is_some()
    }

    /// Queues `block` as a ban for `ttl`.
    pub(crate) fn ban(&self, block: &BlockedIp, ttl: Duration) {
        self.queue(Push::Ban {
            block: block.clone(),
            ttl,
        });
    }

    /// Queues the deletion of authwatch's decisions for `ip` (`prefix` bits).
    pub(crate) fn unban(&self, ip: IpAddr, prefix: u8) {
        self.queue(Push::Unban { ip, prefix });
    }

    fn queue(&self, p: Push) {
        if !self.pushes() {
            return;
        }
        let mut st = lock(&self.shared.state);
        // Bounded like the block list: a flood while the LAPI is away keeps the latest.
        if st.queue.len() >= self.shared.max {
            st.queue.pop_front();
        }
        st.queue.push_back(p);
        drop(st);
        self.shared.wake.notify_all();
    }

    /// What the link has done.
    pub(crate) fn status(&self) -> CrowdSecStatus {
        let mut s = lock(&self.shared.status).clone();
        s.pending = lock(&self.shared.state).queue.len();
        s
    }

    /// Sends what is queued (up to `wait`) and stops the thread.
    pub(crate) fn stop(&self, wait: Duration) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_all();
        if let Some(rx) = lock(&self.shared.done).take() {
            let _ = rx.recv_timeout(wait);
        }
    }
}

/// The thread: push what is queued, read the stream when it is time, sleep until either.
fn run(s: &Shared, blocker: &Weak<Blocker>) {
    // The LAPI refuses a watcher's login without a user agent.
    let http = match reqwest::blocking::Client::builder()
        .user_agent(concat!("authwatch/", env!("CARGO_PKG_VERSION")))
        .timeout(s.cfg.timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            note(s, Err(format!("no HTTP client: {e}")));
            return;
        }
    };
    let mut api = Api {
        http,
        cfg: &s.cfg,
        token: None,
    };
    let mut next_read = Instant::now();
    // The first read takes the whole list (`startup`), and so does the first after an error:
    // what changed meanwhile may have been read by nobody.
    let mut full = true;
    let mut retry_at: Option<Instant> = None;
    // Doubles with each failed push in a row (a wrong password must not hammer the LAPI).
    let mut backoff = Duration::from_secs(1).min(s.cfg.every);
    let mut reported_down = false;
    loop {
        let (batch, stop) = {
            let mut st = lock(&s.state);
            loop {
                let now = Instant::now();
                let push_due = !st.queue.is_empty() && retry_at.is_none_or(|t| now >= t);
                let read_due = s.cfg.bouncer_key.is_some() && now >= next_read;
                if st.stop || push_due || read_due {
                    break;
                }
                let mut until = if s.cfg.bouncer_key.is_some() {
                    next_read
                } else {
                    now + Duration::from_secs(3600)
                };
                if let (false, Some(t)) = (st.queue.is_empty(), retry_at) {
                    until = until.min(t);
                }
                st = s
                    .wake
                    .wait_timeout(st, until.saturating_duration_since(now))
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
            (std::mem::take(&mut st.queue), st.stop)
        };
        let mut batch = batch;
        while let Some(p) = batch.pop_front() {
            match api.push(&p) {
                Ok(()) => {
                    retry_at = None;
                    backoff = Duration::from_secs(1).min(s.cfg.every);
                    lock(&s.status).pushed += 1;
                    note(s, Ok(()));
                    if let (Push::Ban { block, .. }, Some(b)) = (&p, blocker.upgrade()) {
                        b.audit_crowdsec_push(block);
                    }
                }
                Err(e) => {
                    // Back in front, in order, before what was queued meanwhile.
                    batch.push_front(p);
                    let mut st = lock(&s.state);
                    while let Some(q) = batch.pop_back() {
                        st.queue.push_front(q);
                    }
                    while st.queue.len() > s.max {
                        st.queue.pop_front();
                    }
                    drop(st);
                    report_down(s, &e, &mut reported_down);
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    break;
                }
            }
        }
        if stop {
            return;
        }
        if let Some(key) = &s.cfg.bouncer_key {
            if Instant::now() >= next_read {
                next_read = Instant::now() + s.cfg.every;
                let Some(b) = blocker.upgrade() else { return };
                match api.stream(key, full) {
                    Ok(stream) => {
                        let (enforced, skipped) = b.apply_crowdsec(&stream, full);
                        full = false;
                        let mut st = lock(&s.status);
                        st.enforced = enforced;
                        st.skipped += skipped;
                        drop(st);
                        note(s, Ok(()));
                        if reported_down {
                            tracing::info!(
                                target: "authwatch::crowdsec",
                                "authwatch: CrowdSec's Local API answers again"
                            );
                            reported_down = false;
                        }
                    }
                    Err(e) => {
                        full = true;
                        report_down(s, &e, &mut reported_down);
                    }
                }
            }
        }
    }
}

fn report_down(s: &Shared, e: &str, reported: &mut bool) {
    note(s, Err(e.to_owned()));
    if !*reported {
        tracing::warn!(
            target: "authwatch::crowdsec",
            url = %s.cfg.url,
            error = %e,
            "authwatch: CrowdSec's Local API is unreachable; blocks are queued for it and enforced here meanwhile"
        );
        *reported = true;
    }
}

fn note(s: &Shared, r: Result<(), String>) {
    let mut st = lock(&s.status);
    match r {
        Ok(()) => {
            st.connected = true;
            st.last_error = None;
        }
        Err(e) => {
            st.connected = false;
            st.last_error = Some(e);
        }
    }
}

/// One decision of the stream.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Decision {
    #[serde(default)]
    pub(crate) duration: String,
    #[serde(default)]
    pub(crate) origin: String,
    #[serde(default)]
    pub(crate) scenario: String,
    #[serde(default)]
    pub(crate) scope: String,
    #[serde(default, rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) value: String,
}

/// One read of the stream: the decisions new since the last read (all of them on a full
/// read), and those deleted or expired.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Stream {
    #[serde(default, deserialize_with = "null_is_empty")]
    pub(crate) new: Vec<Decision>,
    #[serde(default, deserialize_with = "null_is_empty")]
    pub(crate) deleted: Vec<Decision>,
}

fn null_is_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Decision>, D::Error> {
    Ok(<Option<Vec<Decision>> as serde::Deserialize>::deserialize(d)?.unwrap_or_default())
}

struct Api<'a> {
    http: reqwest::blocking::Client,
    cfg: &'a CrowdSec,
    token: Option<String>,
}

impl Api<'_> {
    fn login(&mut self) -> Result<String, String> {
        let Some((machine, password)) = &self.cfg.machine else {
            return Err("no watcher credentials".into());
        };
        let body = serde_json::json!({
            "machine_id": machine,
            "password": password,
            "scenarios": crate::BLOCKING_ALERTS
                .iter()
                .map(|a| format!("authwatch/{a}"))
                .chain(["authwatch/manual".to_owned()])
                .collect::<Vec<_>>(),
        });
        let r = self
            .http
            .post(format!("{}/v1/watchers/login", self.cfg.url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let text = r.text().map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("login as {machine:?}: {status} {}", text.trim()));
        }
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let token = v["token"]
            .as_str()
            .ok_or_else(|| format!("login as {machine:?}: no token in the answer"))?
            .to_owned();
        self.token = Some(token.clone());
        Ok(token)
    }

    /// Sends `req` with the machine's token, logging in first or again when it is refused.
    fn as_machine(
        &mut self,
        req: impl Fn(&reqwest::blocking::Client, &str) -> reqwest::blocking::RequestBuilder,
    ) -> Result<String, String> {
        for attempt in 0..2 {
            let token = match &self.token {
                Some(t) => t.clone(),
                None => self.login()?,
            };
            let r = req(&self.http, &token).send().map_err(|e| e.to_string())?;
            let status = r.status();
            let text = r.text().map_err(|e| e.to_string())?;
            if status == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                self.token = None;
                continue;
            }
            if !status.is_success() {
                return Err(format!("{status} {}", text.trim()));
            }
            return Ok(text);
        }
        Err("the LAPI refused the machine's token".into())
    }

    fn push(&mut self, p: &Push) -> Result<(), String> {
        let url = self.cfg.url.clone();
        match p {
            Push::Ban { block, ttl } => {
                let alert = alert_of(block, *ttl, SystemTime::now());
                self.as_machine(|c, t| {
                    c.post(format!("{url}/v1/alerts"))
                        .bearer_auth(t)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(alert.to_string())
                })
                .map(drop)
            }
            Push::Unban { ip, prefix } => {
                let (scope, value) = scope_of(*ip, *prefix);
                let filter = if scope == "Ip" { "ip" } else { "range" };
                // An address or a range: no character that needs escaping but the range's `/`.
                let value = value.replace('/', "%2F");
                self.as_machine(|c, t| {
                    c.delete(format!(
                        "{url}/v1/decisions?{filter}={value}&origin={CROWDSEC_ORIGIN}"
                    ))
                    .bearer_auth(t)
                })
                .map(drop)
            }
        }
    }

    fn stream(&self, key: &str, full: bool) -> Result<Stream, String> {
        let r = self
            .http
            .get(format!(
                "{}/v1/decisions/stream?startup={full}",
                self.cfg.url
            ))
            .header("X-Api-Key", key)
            .send()
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let text = r.text().map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("decision stream: {status} {}", text.trim()));
        }
        serde_json::from_str(&text).map_err(|e| format!("decision stream: {e}"))
    }
}

/// The CrowdSec scope and value of a block: `Ip` for an address, `Range` for an IPv6 prefix.
fn scope_of(ip: IpAddr, prefix: u8) -> (&'static str, String) {
    if ip.is_ipv4() || prefix >= 128 {
        ("Ip", ip.to_string())
    } else {
        ("Range", format!("{ip}/{prefix}"))
    }
}

/// The scenario of a block: `authwatch/<alert>` or `authwatch/manual`.
fn scenario_of(b: &BlockedIp) -> String {
    let alert = b.reason.split(':').next().unwrap_or_default();
    match b.source {
        BlockSource::Alert if crate::BLOCKING_ALERTS.contains(&alert) => {
            format!("authwatch/{alert}")
        }
        BlockSource::Alert => "authwatch/alert".into(),
        _ => "authwatch/manual".into(),
    }
}

/// The CrowdSec alert (one ban decision) a block is pushed as.
fn alert_of(b: &BlockedIp, ttl: Duration, now: SystemTime) -> serde_json::Value {
    let (scope, value) = scope_of(b.ip, b.prefix);
    let scenario = scenario_of(b);
    let at = humantime::format_rfc3339_seconds(now).to_string();
    let mut source = serde_json::json!({ "scope": scope, "value": value });
    if scope == "Ip" {
        source["ip"] = value.clone().into();
    } else {
        source["range"] = value.clone().into();
    }
    serde_json::json!([{
        "scenario": scenario,
        "scenario_hash": "",
        "scenario_version": "",
        "message": crate::audit::sanitize(&b.reason, 256),
        "events_count": 1,
        "start_at": at,
        "stop_at": at,
        "capacity": 0,
        "leakspeed": "0",
        "simulated": false,
        "events": [],
        "source": source,
        "decisions": [{
            "type": "ban",
            "duration": format!("{}s", ttl.as_secs().max(1)),
            "value": value,
            "scope": scope,
            "origin": CROWDSEC_ORIGIN,
            "scenario": scenario,
        }],
    }])
}

/// Why a decision of the stream is not enforced in the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    /// authwatch's own, back from the LAPI.
    Own,
    /// Not a ban, or a scope or range the block list cannot key.
    Unsupported,
}

/// The address (the block list's key) and time of a decision, or why the layer skips it.
pub(crate) fn target(d: &Decision, ipv6_prefix: u8) -> Result<(IpAddr, Duration), Skip> {
    if d.origin == CROWDSEC_ORIGIN {
        return Err(Skip::Own);
    }
    if !d.kind.eq_ignore_ascii_case("ban") {
        return Err(Skip::Unsupported);
    }
    let ip = if d.scope.eq_ignore_ascii_case("ip") {
        d.value.parse::<IpAddr>().map_err(|_| Skip::Unsupported)?
    } else if d.scope.eq_ignore_ascii_case("range") {
        let net: ipnet::IpNet = d.value.parse().map_err(|_| Skip::Unsupported)?;
        // Only a range the list keys exactly (or within one key): wider ones are the
        // firewall's.
        let enough = match net {
            ipnet::IpNet::V4(n) => n.prefix_len() == 32,
            ipnet::IpNet::V6(n) => n.prefix_len() >= ipv6_prefix,
        };
        if !enough {
            return Err(Skip::Unsupported);
        }
        net.addr()
    } else {
        return Err(Skip::Unsupported);
    };
    Ok((ip, go_duration(&d.duration).unwrap_or_default()))
}

/// A Go duration as the LAPI writes it (`3h59m58.123s`, `14m59.2s`, `-1.5s`); a negative
/// one (already over) is zero.
pub(crate) fn go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('-') {
        return go_duration(rest).map(|_| Duration::ZERO);
    }
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit..];
    }
    Duration::try_from_secs_f64(total).ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(kind: &str, scope: &str, value: &str, origin: &str) -> Decision {
        Decision {
            duration: "3h59m58.5s".into(),
            origin: origin.into(),
            scenario: "crowdsecurity/ssh-bf".into(),
            scope: scope.into(),
            kind: kind.into(),
            value: value.into(),
        }
    }

    #[test]
    fn go_durations_read_as_the_lapi_writes_them() {
        assert_eq!(
            go_duration("14m59.215196301s"),
            Some(Duration::from_secs_f64(899.215_196_301))
        );
        assert_eq!(go_duration("4h0m0s"), Some(Duration::from_secs(14_400)));
        assert_eq!(go_duration("1h2m3s"), Some(Duration::from_secs(3_723)));
        assert_eq!(go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(go_duration("-1.5s"), Some(Duration::ZERO));
        assert_eq!(go_duration("0"), Some(Duration::ZERO));
        assert_eq!(go_duration("5 days"), None);
        assert_eq!(go_duration("h"), None);
    }

    #[test]
    fn only_bans_the_list_can_key_are_enforced() {
        let t = |d: Decision| target(&d, 64);
        let (ip, left) = t(decision("ban", "Ip", "198.51.100.9", "cscli")).unwrap();
        assert_eq!(ip, "198.51.100.9".parse::<IpAddr>().unwrap());
        assert_eq!(left, Duration::from_secs_f64(14_398.5));
        assert!(t(decision("ban", "Range", "2001:db8:1:2::/64", "crowdsec")).is_ok());
        assert!(t(decision("ban", "Range", "2001:db8:1:2::/80", "crowdsec")).is_ok());
        assert!(t(decision("ban", "Range", "198.51.100.9/32", "crowdsec")).is_ok());
        assert_eq!(
            t(decision("ban", "Range", "198.51.100.0/24", "crowdsec")),
            Err(Skip::Unsupported),
            "a wider range is the firewall's"
        );
        assert_eq!(
            t(decision("captcha", "Ip", "198.51.100.9", "cscli")),
            Err(Skip::Unsupported)
        );
        assert_eq!(
            t(decision("ban", "Country", "XX", "cscli")),
            Err(Skip::Unsupported)
        );
        assert_eq!(
            t(decision("ban", "Ip", "203.0.113.66", CROWDSEC_ORIGIN)),
            Err(Skip::Own)
        );
        assert_eq!(
            t(decision("ban", "Ip", "not an address", "cscli")),
            Err(Skip::Unsupported)
        );
    }

    #[test]
    fn a_block_is_pushed_as_one_alert_with_one_ban() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let b = BlockedIp::new(
            "203.0.113.66".parse().unwrap(),
            32,
            now,
            now + Duration::from_secs(900),
            "AuthBruteForceSuspected: 60 failed logins from 203.0.113.66",
            BlockSource::Alert,
            0,
        );
        let a = alert_of(&b, Duration::from_secs(900), now);
        let d = &a[0]["decisions"][0];
        assert_eq!(a[0]["scenario"], "authwatch/AuthBruteForceSuspected");
        assert_eq!(a[0]["source"]["ip"], "203.0.113.66");
        assert_eq!(a[0]["start_at"], "2027-01-15T08:00:00Z");
        assert_eq!(
            (&d["type"], &d["duration"], &d["scope"], &d["origin"]),
            (
                &"ban".into(),
                &"900s".into(),
                &"Ip".into(),
                &CROWDSEC_ORIGIN.into()
            )
        );
        let v6 = BlockedIp::new(
            "2001:db8:1:2::".parse().unwrap(),
            64,
            now,
            now,
            "by hand",
            BlockSource::Manual,
            0,
        );
        let a = alert_of(&v6, Duration::from_secs(60), now);
        assert_eq!(a[0]["scenario"], "authwatch/manual");
        assert_eq!(a[0]["source"]["range"], "2001:db8:1:2::/64");
        assert_eq!(a[0]["decisions"][0]["scope"], "Range");
    }

    #[test]
    fn a_bad_setting_is_a_build_error() {
        let err = |c: CrowdSec| c.check().unwrap_err().to_string();
        assert!(err(CrowdSec::new("http://127.0.0.1:8080")).contains("watcher credentials"));
        assert!(err(CrowdSec::new("127.0.0.1:8080").bouncer("k")).contains("127.0.0.1:8080"));
        assert!(err(CrowdSec::new("redis://x").bouncer("k")).contains("not an http"));
        assert!(err(CrowdSec::new("http://").bouncer("k")).contains("not a URL"));
        assert!(err(CrowdSec::new("http://x").watcher("m", "")).contains("must not be empty"));
        assert!(CrowdSec::new("http://127.0.0.1:8080/")
            .bouncer("k")
            .check()
            .is_ok());
        let shown = format!("{:?}", CrowdSec::new("http://x").watcher("m", "hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
