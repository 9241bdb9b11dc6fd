//! The audit trail: one structured record per auth event, as `tracing` events, OpenTelemetry
//! log records and (with [`AuthWatchBuilder::audit_dir`](crate::AuthWatchBuilder::audit_dir))
//! a local tamper-evident log.
//!
//! Records come from two places: the layer, for every failed, rate-limited, locked-out or
//! refused auth request (every auth request with
//! [`audit_request_successes`](crate::AuthWatchBuilder::audit_request_successes); no user
//! id: it reads no bodies), and the [`LoginAuditLogger`] your handlers call when they know who
//! it was. Either way the request path only queues the record: a worker thread formats and
//! writes it, and a full queue drops the record and counts it (`auth.audit.dropped.count`)
//! rather than wait.
//!
//! # Fields
//!
//! | field | what |
//! |---|---|
//! | `event.name` | `auth.login.success`, `auth.login.failure`, `auth.token.issued`, `auth.logout`, `auth.registration`, `auth.lockout`, `auth.rate_limited`, `auth.password_reset`, `auth.request` (the layer's), `auth.db.slow_query` |
//! | `audit.class` | `authentication` (kept 90 days) or `security` (1 year: failures, lockouts, rate limiting, invalid tokens) |
//! | `audit.retention_days` | 90 or 365 |
//! | `audit.source` | `layer`, `token_guard` or `application` |
//! | `user.id` | as given, or `hmac-sha256:<hex>` with [`AuthWatchBuilder::audit_key`](crate::AuthWatchBuilder::audit_key) (recommended: the user field of a failed login sometimes holds a password typed in the wrong box) |
//! | `client.address` | the client address under the `ClientIp` rules |
//! | `user_agent.original` | at most 256 bytes, control characters escaped |
//! | `error.type` | the failure reason (`invalid_credentials`, … or the application's words) |
//! | `auth.operation`, `auth.outcome`, `http.route`, `http.request.method`, `auth.duration_ms` | the layer's records |
//! | `auth.token.type` | `log_token_issued` |
//! | `db.query.name` | `auth.db.slow_query` records from [`AuthWatch::time_query`](crate::AuthWatch::time_query) |
//!
//! Never a password, token, cookie or `Authorization` header: the layer reads none of them, and
//! the logger's calls take none.

mod file;

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use authwatch_layer::{AuthEvent, AuthOp, EventSink, EventSource, FailureReason, Outcome};
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;

pub use file::{verify, verify_bytes, AuditFlush, FileSettings, Tamper, VerifyError, VerifyReport};

/// Longest user agent kept, in bytes; longer ones are cut (at a character boundary) and end
/// in `…`.
pub const MAX_USER_AGENT: usize = 256;
/// Longest free-form text (a reason, a token type, a user id) kept, in bytes.
pub const MAX_TEXT: usize = 128;
/// Records the queue holds before new ones are dropped (and counted).
pub const DEFAULT_QUEUE: usize = 8192;

/// How long a record is kept: the spec's two retention classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AuditClass {
    /// Authentication events: 90 days.
    Authentication,
    /// Security events (failures, lockouts, rate limiting, invalid tokens, brute force): 1 year.
    Security,
}

impl AuditClass {
    /// Both classes.
    pub const ALL: [Self; 2] = [Self::Authentication, Self::Security];

    /// `authentication` or `security`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Authentication => "authentication",
            Self::Security => "security",
        }
    }

    /// The spec's retention: 90 days or 1 year.
    #[must_use]
    pub const fn retention_days(self) -> u32 {
        match self {
            Self::Authentication => 90,
            Self::Security => 365,
        }
    }
}

impl fmt::Display for AuditClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit record, as written (field names in [the module docs](self)).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AuditRecord {
    /// `event.name`.
    #[serde(rename = "event.name")]
    pub name: &'static str,
    /// When it happened (RFC 3339 in the JSON).
    #[serde(rename = "time", serialize_with = "rfc3339")]
    pub time: SystemTime,
    /// `audit.class`.
    #[serde(rename = "audit.class")]
    pub class: AuditClass,
    /// `audit.source`: `layer` or `application`.
    #[serde(rename = "audit.source")]
    pub source: &'static str,
    /// `user.id`, keyed when a key is set.
    #[serde(rename = "user.id", skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// `client.address`.
    #[serde(rename = "client.address", skip_serializing_if = "Option::is_none")]
    pub client_address: Option<IpAddr>,
    /// `user_agent.original`, bounded and escaped.
    #[serde(
        rename = "user_agent.original",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_agent: Option<String>,
    /// `error.type`.
    #[serde(rename = "error.type", skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// `auth.operation`.
    #[serde(rename = "auth.operation", skip_serializing_if = "Option::is_none")]
    pub operation: Option<&'static str>,
    /// `auth.outcome`.
    #[serde(rename = "auth.outcome", skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
    /// `http.route` (a template).
    #[serde(rename = "http.route", skip_serializing_if = "Option::is_none")]
    pub route: Option<Box<str>>,
    /// `http.request.method`.
    #[serde(
        rename = "http.request.method",
        skip_serializing_if = "Option::is_none"
    )]
    pub method: Option<&'static str>,
    /// `auth.duration_ms`.
    #[serde(rename = "auth.duration_ms", skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// `auth.token.type`.
    #[serde(rename = "auth.token.type", skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// `db.query.name`, for slow-query records.
    #[serde(rename = "db.query.name", skip_serializing_if = "Option::is_none")]
    pub db_query: Option<String>,
    /// `trace_id`: the trace of the request the record belongs to (32 hex digits), when an
    /// OpenTelemetry tracing layer is installed (`Pipeline::tracing_layer`): jump from the log
    /// line to its trace.
    #[serde(rename = "trace_id", skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// `span_id`: the span (16 hex digits) that was current.
    #[serde(rename = "span_id", skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    #[serde(skip)]
    pub(crate) trace: Option<crate::tracing_ctx::TraceCtx>,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    // A clock outside 1970..=9999 clamps rather than fail the writer.
    let max = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    s.collect_str(&humantime::format_rfc3339_micros(
        (*t).clamp(SystemTime::UNIX_EPOCH, max),
    ))
}

impl AuditRecord {
    fn set_trace(&mut self, t: Option<crate::tracing_ctx::TraceCtx>) {
        if let Some(t) = t {
            self.trace_id = Some(t.trace_id.to_string());
            self.span_id = Some(t.span_id.to_string());
            self.trace = Some(t);
        }
    }

    fn new(name: &'static str, class: AuditClass, source: &'static str) -> Self {
        Self::at(name, class, source, SystemTime::now())
    }

    /// A record of an event at `time` (the layer's records: no clock read per record).
    fn at(name: &'static str, class: AuditClass, source: &'static str, time: SystemTime) -> Self {
        Self {
            name,
            time,
            class,
            source,
            user_id: None,
            client_address: None,
            user_agent: None,
            error_type: None,
            operation: None,
            outcome: None,
            route: None,
            method: None,
            duration_ms: None,
            token_type: None,
            db_query: None,
            trace_id: None,
            span_id: None,
            trace: None,
        }
    }
}

/// `s` cut to at most `max` bytes at a character boundary (ending in `…` when cut), with
/// control characters, invisible formatting characters (bidi controls, zero-width characters),
/// backslashes and quotes escaped (`\n`, `\u{1b}`, …), so a hostile value cannot forge a log
/// line or a field, or hide text, in any output.
#[must_use]
pub fn sanitize(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 4);
    for c in s.chars() {
        let before = out.len();
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(
                    c,
                    '\u{2028}'
                        | '\u{2029}'
                        | '\u{200b}'..='\u{200f}'
                        | '\u{202a}'..='\u{202e}'
                        | '\u{2066}'..='\u{2069}'
                        | '\u{061c}'
                        | '\u{feff}'
                ) =>
            {
                out.push_str(&c.escape_unicode().to_string());
            }
            c => out.push(c),
        }
        if out.len() > max {
            // Cut to leave room for the ellipsis: the result never exceeds `max` bytes.
            out.truncate(before);
            while out.len() + '…'.len_utf8() > max {
                out.pop();
            }
            out.push('…');
            break;
        }
    }
    out
}

/// Turns user ids into keyed hashes when a key is set.
#[derive(Clone)]
struct UserIdKey(Option<Arc<[u8]>>);

impl UserIdKey {
    fn apply(&self, user_id: &str) -> String {
        match &self.0 {
            None => sanitize(user_id, MAX_TEXT),
            Some(key) => {
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                    .expect("HMAC takes keys of any length");
                mac.update(user_id.as_bytes());
                format!("hmac-sha256:{}", hex(&mac.finalize().into_bytes()))
            }
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Where records go. Built by `AuthWatch`; shared by its sink and its logger.
/// What the worker takes: a record, or a request to answer once everything before it is
/// written.
enum Msg {
    Record(Box<AuditRecord>),
    /// A thread's shard of layer records is half full: drain now rather than at the next
    /// 50-ms tick, so that a burst faster than a shard holds per tick is not dropped.
    Drain,
    Sync(SyncSender<()>),
    /// Drain, flush, answer, and end.
    Stop(SyncSender<()>),
}

pub(crate) struct Auditor {
    tx: SyncSender<Msg>,
    layer: Arc<LayerRecords>,
    /// After shutdown: records are dropped (and counted).
    closed: std::sync::atomic::AtomicBool,
    dropped: AtomicU64,
    key: UserIdKey,
    /// The worker, joined at shutdown.
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl fmt::Debug for Auditor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auditor")
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The outputs of the worker.
pub(crate) struct Outputs {
    pub(crate) otel: Option<OtelOut>,
    pub(crate) file: Option<FileSettings>,
}

/// The OTLP copy of the records: the worker encodes them, the export has its own thread and
/// counts what it loses.
pub(crate) struct OtelOut {
    pub(crate) export: Arc<LogExport>,
}

#[cfg(any(feature = "otlp-grpc", feature = "otlp-http"))]
pub(crate) use authwatch_otel::LogExport;

/// Without an OTLP transport there is no log export: this type has no value.
#[cfg(not(any(feature = "otlp-grpc", feature = "otlp-http")))]
pub(crate) enum LogExport {}

#[cfg(not(any(feature = "otlp-grpc", feature = "otlp-http")))]
impl LogExport {
    fn send(&self, _: authwatch_otel::LogBatch) {
        match *self {}
    }
    fn empty_batch(&self) -> authwatch_otel::LogBatch {
        match *self {}
    }
    fn schedule_delay(&self) -> Duration {
        match *self {}
    }
    fn flush(&self, _: Duration) {
        match *self {}
    }
    fn shutdown(&self) -> bool {
        match *self {}
    }
    pub(crate) fn lost(&self) -> u64 {
        match *self {}
    }
}

/// How long a sync or a stop waits for the OTLP export of what was written.
const EXPORT_WAIT: Duration = Duration::from_secs(5);

impl Auditor {
    pub(crate) fn start(
        outputs: Outputs,
        queue: usize,
        key: Option<Vec<u8>>,
    ) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = sync_channel(queue.max(1));
        let mut writer = match &outputs.file {
            Some(f) => Some(file::Writer::open(f.clone(), key.clone())?),
            None => None,
        };
        let layer = Arc::new(LayerRecords::new());
        let drain = layer.clone();
        let worker = std::thread::Builder::new()
            .name("authwatch-audit".into())
            .spawn(move || run(rx, &drain, outputs, writer.as_mut()))?;
        Ok(Arc::new(Self {
            tx,
            layer,
            closed: std::sync::atomic::AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            // Its own key, derived: a user-id hash is never a valid chain hash.
            key: UserIdKey(key.map(|k| file::derive(&k, "user-id").into())),
            worker: Mutex::new(Some(worker)),
        }))
    }

    /// An auditor with no worker: every record is counted as dropped.
    fn disconnected() -> Arc<Self> {
        Self::without_worker(sync_channel(1).0, true)
    }

    /// An auditor whose messages go to `tx` and no worker of its own.
    fn without_worker(tx: SyncSender<Msg>, closed: bool) -> Arc<Self> {
        Arc::new(Self {
            tx,
            layer: Arc::new(LayerRecords::new()),
            closed: std::sync::atomic::AtomicBool::new(closed),
            dropped: AtomicU64::new(0),
            key: UserIdKey(None),
            worker: Mutex::new(None),
        })
    }

    fn send(&self, r: AuditRecord) {
        if self.closed.load(Ordering::Relaxed) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.tx.try_send(Msg::Record(Box::new(r))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records dropped because the queue was full (or the worker gone).
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every record queued so far is written (and the file flushed).
    pub(crate) fn sync(&self) {
        let (tx, rx) = sync_channel(1);
        if self.tx.send(Msg::Sync(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Writes what is queued, flushes, and stops the worker (waiting up to 10 s). Later
    /// records are dropped and counted. Returns false when the worker did not finish in time.
    pub(crate) fn shutdown(&self) -> bool {
        if self.closed.swap(true, Ordering::SeqCst) {
            return true;
        }
        let (tx, rx) = sync_channel(1);
        if self.tx.send(Msg::Stop(tx)).is_err() {
            return true;
        }
        let done = rx.recv_timeout(Duration::from_secs(10)).is_ok();
        if done {
            if let Some(w) = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = w.join();
            }
            // The worker's last drain is done: what a request pushed after it (it passed the
            // `closed` check just before the swap above) is counted, and nothing more is kept.
            let left = self.layer.close();
            self.dropped.fetch_add(left, Ordering::Relaxed);
        }
        done
    }
}

/// Where the worker writes each record.
struct Sinks<'a> {
    file: Option<&'a mut file::Writer>,
    otel: Option<OtelOut>,
    /// OTLP records waiting for the next batch: sent when full, when its first record has
    /// waited the export's schedule delay (checked at each drain), and at each sync and stop.
    batch: authwatch_otel::LogBatch,
    /// When the first record of `batch` was written.
    batch_since: Option<std::time::Instant>,
}

impl Sinks<'_> {
    /// Writes `r`; `observed` is when the worker took it (the drain's one clock reading for
    /// the layer's records; without it the OTLP encoder reads the clock).
    fn write(&mut self, r: AuditRecord, observed: Option<SystemTime>) {
        emit_tracing(&r);
        if let Some(w) = self.file.as_deref_mut() {
            w.write(&r);
        }
        if self.otel.is_some() {
            if self.batch.is_empty() {
                self.batch_since = Some(std::time::Instant::now());
            }
            otel_record(&mut self.batch, &r, observed);
            if self.batch.is_full() {
                self.send_batch();
            }
        }
    }

    /// Writes every record waiting in the layer's shards, observed at the drain's clock
    /// reading.
    fn drain(&mut self, layer: &LayerRecords, spare: &mut Vec<LayerRecord>) {
        layer.drain(spare, &mut |r, seen| self.write(r, Some(seen)));
    }

    /// Hands the waiting OTLP records to the export thread.
    fn send_batch(&mut self) {
        if let Some(o) = &self.otel {
            if !self.batch.is_empty() {
                let next = o.export.empty_batch();
                o.export.send(std::mem::replace(&mut self.batch, next));
            }
        }
        self.batch_since = None;
    }

    /// Sends the waiting OTLP records once the first has waited the schedule delay: a steady
    /// trickle goes out as one request a second (by default) rather than one per drain.
    fn send_due(&mut self, now: std::time::Instant) {
        let due = match (&self.otel, self.batch_since) {
            (Some(o), Some(since)) => {
                now.saturating_duration_since(since) >= o.export.schedule_delay()
            }
            _ => false,
        };
        if due {
            self.send_batch();
        }
    }

    fn flush_file(&mut self) {
        if let Some(w) = self.file.as_deref_mut() {
            w.flush();
        }
    }

    /// The last batch out, the file flushed, the export stopped.
    fn finish(&mut self) {
        self.send_batch();
        self.flush_file();
        if let Some(o) = &self.otel {
            o.export.shutdown();
        }
    }
}

fn run(rx: Receiver<Msg>, layer: &LayerRecords, out: Outputs, file: Option<&mut file::Writer>) {
    use std::sync::mpsc::RecvTimeoutError;
    // Writing records is background work: under full load it yields to the requests.
    authwatch_otel::lower_thread_priority();
    let mut spare = Vec::new();
    let mut next_drain = std::time::Instant::now() + DRAIN_EVERY;
    let mut sinks = Sinks {
        file,
        otel: out.otel,
        batch: authwatch_otel::LogBatch::default(),
        batch_since: None,
    };
    loop {
        // Wake for the next drain of the layer's records, or earlier when a batched flush
        // policy wants its buffer out.
        let now = std::time::Instant::now();
        let mut wait = next_drain.saturating_duration_since(now);
        if let Some(d) = sinks.file.as_deref().and_then(file::Writer::flush_due_in) {
            wait = wait.min(d);
        }
        let msg = match rx.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if drains_now(msg.as_ref(), std::time::Instant::now(), next_drain) {
            sinks.drain(layer, &mut spare);
            // Full batches went out while writing; the rest waits for the schedule delay
            // (a sync or a stop sends it below).
            let now = std::time::Instant::now();
            sinks.send_due(now);
            next_drain = now + DRAIN_EVERY;
        }
        match msg {
            Some(Msg::Sync(done)) => {
                sinks.send_batch();
                sinks.flush_file();
                if let Some(o) = &sinks.otel {
                    o.export.flush(EXPORT_WAIT);
                }
                let _ = done.try_send(());
            }
            Some(Msg::Stop(done)) => {
                sinks.drain(layer, &mut spare);
                sinks.finish();
                let _ = done.try_send(());
                return;
            }
            Some(Msg::Record(r)) => sinks.write(*r, None),
            Some(Msg::Drain) => {}
            None => {
                if let Some(w) = sinks.file.as_deref_mut() {
                    if w.flush_due_in() == Some(Duration::ZERO) {
                        w.flush();
                    }
                }
            }
        }
    }
    sinks.drain(layer, &mut spare);
    sinks.finish();
}

/// Whether the worker drains the layer's shards now: at the tick, when a shard is half full,
/// and before a sync or a stop.
fn drains_now(msg: Option<&Msg>, now: std::time::Instant, next_drain: std::time::Instant) -> bool {
    now >= next_drain || matches!(msg, Some(Msg::Drain | Msg::Sync(_) | Msg::Stop(_)))
}

macro_rules! audit_event {
    ($lvl:expr, $r:expr) => {
        tracing::event!(
            target: "authwatch::audit",
            $lvl,
            event.name = $r.name,
            audit.class = $r.class.as_str(),
            audit.retention_days = $r.class.retention_days(),
            audit.source = $r.source,
            user.id = $r.user_id.as_deref(),
            client.address = $r.client_address.map(tracing::field::display),
            user_agent.original = $r.user_agent.as_deref(),
            error.type = $r.error_type.as_deref(),
            auth.operation = $r.operation,
            auth.outcome = $r.outcome,
            http.route = $r.route.as_deref(),
            http.request.method = $r.method,
            auth.duration_ms = $r.duration_ms,
            auth.token.type = $r.token_type.as_deref(),
            db.query.name = $r.db_query.as_deref(),
            trace_id = $r.trace_id.as_deref(),
            "{}",
            $r.name
        )
    };
}

/// `audit.source` of the records your code writes (the logger, timed queries); the layer's
/// are `layer` and `token_guard`.
pub(crate) const FROM_APPLICATION: &str = "application";

fn emit_tracing(r: &AuditRecord) {
    // The layer's own records (one per failed request) are INFO: a mistyped password is
    // routine, the alerts are the warnings, and a WARN line per failure under an attack is a
    // log flood (measured end to end, formatting and writing those lines was most of the
    // layer's audit cost). The security events your handlers log stay WARN.
    match (r.class, r.source) {
        (AuditClass::Security, FROM_APPLICATION) => audit_event!(tracing::Level::WARN, r),
        _ => audit_event!(tracing::Level::INFO, r),
    }
}

/// Appends the OTLP log record of `r` to `batch`, encoded as it is written (no copy of its
/// strings, no allocation).
fn otel_record(
    batch: &mut authwatch_otel::LogBatch,
    r: &AuditRecord,
    observed: Option<SystemTime>,
) {
    use opentelemetry::logs::Severity;
    batch.push(|w| {
        if let Some(t) = observed {
            w.observed_time(t);
        }
        w.time(r.time)
            .severity(match r.class {
                AuditClass::Security => Severity::Warn,
                _ => Severity::Info,
            })
            .event_name(r.name)
            .body(r.name)
            .attr("event.name", r.name)
            .attr("audit.class", r.class.as_str())
            .attr("audit.retention_days", i64::from(r.class.retention_days()))
            .attr("audit.source", r.source);
        // The address formatted on the stack: at most 45 bytes (IPv6 with an IPv4 tail).
        let mut ip_buf = [0u8; 64];
        let ip = r.client_address.and_then(|ip| {
            let mut cur = std::io::Cursor::new(&mut ip_buf[..]);
            std::io::Write::write_fmt(&mut cur, format_args!("{ip}")).ok()?;
            usize::try_from(cur.position()).ok()
        });
        let ip = ip.and_then(|n| std::str::from_utf8(&ip_buf[..n]).ok());
        let mut opt = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                w.attr(k, v);
            }
        };
        opt("user.id", r.user_id.as_deref());
        opt("client.address", ip);
        opt("user_agent.original", r.user_agent.as_deref());
        opt("error.type", r.error_type.as_deref());
        opt("http.route", r.route.as_deref());
        opt("auth.token.type", r.token_type.as_deref());
        opt("db.query.name", r.db_query.as_deref());
        opt("auth.operation", r.operation);
        opt("auth.outcome", r.outcome);
        opt("http.request.method", r.method);
        if let Some(ms) = r.duration_ms {
            w.attr("auth.duration_ms", ms);
        }
        if let Some(t) = r.trace {
            w.trace_context(t.trace_id, t.span_id, t.flags);
        }
    });
}

/// The class of a layer event: failures, rate limiting and invalid tokens are security events.
fn class_of(o: Outcome) -> AuditClass {
    match o {
        Outcome::Success | Outcome::Cancelled => AuditClass::Authentication,
        _ => AuditClass::Security,
    }
}

/// User-agent bytes a layer record holds inline (it is cut to [`MAX_USER_AGENT`] when written).
const UA_INLINE: usize = MAX_USER_AGENT;
/// Route ids with a slot of their own (as in the metrics sink); others are interned labels.
const ROUTE_SLOTS: usize = 1024;
/// Most token-guard labels kept; beyond, the label is `_OTHER`.
const MAX_LABELS: usize = 512;
/// Layer records a thread shard holds between two drains before new ones are dropped.
const SHARD_CAP: usize = 2048;
/// How often the worker drains the layer's records.
const DRAIN_EVERY: Duration = Duration::from_millis(50);

#[derive(Clone, Copy)]
enum RouteKey {
    Table(u16),
    Label(u16),
}

/// What the layer's sink keeps of one event: no heap, so recording allocates nothing.
#[derive(Clone, Copy)]
struct LayerRecord {
    /// When the request ended, as the layer measured it (authwatch's clock); the worker turns
    /// it into wall-clock time, so the request path reads no second clock.
    finished_at: std::time::Instant,
    op: AuthOp,
    outcome: Outcome,
    route: RouteKey,
    method: &'static str,
    ip: Option<IpAddr>,
    ms: f64,
    guard: bool,
    /// The trace the request belongs to, when one is being recorded.
    trace: Option<crate::tracing_ctx::TraceCtx>,
    ua_len: u16,
    /// The user agent was longer than what is kept.
    ua_cut: bool,
    ua: [u8; UA_INLINE],
}

/// One thread's records, alone on its cache lines.
#[repr(align(128))]
struct LayerShard(Mutex<ShardState>);

#[derive(Default)]
struct ShardState {
    records: Vec<LayerRecord>,
    /// Set under the lock once the worker has stopped: a record that passed the sink's
    /// `closed` check just before shutdown is counted as dropped here instead of being left
    /// in a shard nobody drains.
    closed: bool,
}

/// The layer's records waiting for the worker, per thread shard, and the route names they
/// refer to.
pub(crate) struct LayerRecords {
    shards: Box<[LayerShard]>,
    routes: Box<[OnceLock<Arc<str>>]>,
    labels: std::sync::RwLock<(std::collections::HashMap<Box<str>, u16>, Vec<Arc<str>>)>,
}

impl LayerRecords {
    fn new() -> Self {
        Self {
            shards: (0..authwatch_hdr::default_shards())
                .map(|_| LayerShard(Mutex::new(ShardState::default())))
                .collect(),
            routes: (0..ROUTE_SLOTS).map(|_| OnceLock::new()).collect(),
            labels: std::sync::RwLock::new(Default::default()),
        }
    }

    fn route_key(&self, e: &AuthEvent<'_>) -> RouteKey {
        if let Some(id) = e.route_id.filter(|_| e.source == EventSource::Route) {
            if let Some(slot) = self.routes.get(usize::from(id.0)) {
                slot.get_or_init(|| e.route.into());
                return RouteKey::Table(id.0);
            }
        }
        if let Some(i) = self
            .labels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(e.route)
        {
            return RouteKey::Label(*i);
        }
        let mut l = self.labels.write().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = l.0.get(e.route) {
            return RouteKey::Label(*i);
        }
        let label = if l.1.len() >= MAX_LABELS {
            "_OTHER"
        } else {
            e.route
        };
        if let Some(i) = l.0.get(label) {
            return RouteKey::Label(*i);
        }
        let i = l.1.len() as u16;
        l.1.push(label.into());
        l.0.insert(label.into(), i);
        RouteKey::Label(i)
    }

    fn route_name(&self, k: RouteKey) -> Box<str> {
        match k {
            RouteKey::Table(id) => self.routes[usize::from(id)]
                .get()
                .map_or_else(|| "_OTHER".into(), |r| (**r).into()),
            RouteKey::Label(i) => self
                .labels
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .get(usize::from(i))
                .map_or_else(|| "_OTHER".into(), |r| (**r).into()),
        }
    }

    /// Takes every waiting record (the shard keeps `spare`'s capacity, so nothing is
    /// reallocated in the steady state).
    /// `out` gets each record and the drain's wall-clock time.
    fn drain(&self, spare: &mut Vec<LayerRecord>, out: &mut dyn FnMut(AuditRecord, SystemTime)) {
        // One reading of both clocks per drain: records are at most a drain interval old.
        let anchor = (SystemTime::now(), authwatch_layer::now());
        for shard in self.shards.iter() {
            spare.clear();
            std::mem::swap(
                &mut shard.0.lock().unwrap_or_else(|e| e.into_inner()).records,
                spare,
            );
            for r in spare.iter() {
                out(self.to_record(r, anchor), anchor.0);
            }
        }
    }

    /// Closes every shard (later records are dropped and counted by the sink) and returns
    /// how many records were still waiting in them.
    fn close(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| {
                let mut s = shard.0.lock().unwrap_or_else(|e| e.into_inner());
                s.closed = true;
                let n = s.records.len() as u64;
                s.records = Vec::new();
                n
            })
            .sum()
    }

    fn to_record(
        &self,
        l: &LayerRecord,
        (wall, mono): (SystemTime, std::time::Instant),
    ) -> AuditRecord {
        let mut r = AuditRecord::at(
            "auth.request",
            class_of(l.outcome),
            "layer",
            wall - mono.saturating_duration_since(l.finished_at),
        );
        r.set_trace(l.trace);
        r.client_address = l.ip;
        if l.ua_len > 0 {
            let ua = String::from_utf8_lossy(&l.ua[..usize::from(l.ua_len)]);
            let mut ua = sanitize(&ua, MAX_USER_AGENT);
            if l.ua_cut && !ua.ends_with('…') {
                while ua.len() + '…'.len_utf8() > MAX_USER_AGENT {
                    ua.pop();
                }
                ua.push('…');
            }
            r.user_agent = Some(ua);
        }
        r.error_type = l.outcome.reason().map(|x| x.as_str().to_owned());
        r.operation = Some(l.op.as_str());
        r.outcome = Some(l.outcome.as_str());
        r.route = Some(self.route_name(l.route));
        r.method = Some(l.method);
        r.duration_ms = Some(l.ms);
        if l.guard {
            r.source = "token_guard";
        }
        r
    }
}

/// The [`EventSink`] that turns the auth requests the layer sees (the security events, or
/// all of them) into `auth.request` records. Recording copies the event into the calling
/// thread's shard (no allocation, no shared cache line); the worker drains the shards every
/// 50 ms, or as soon as one is half full.
pub(crate) struct AuditSink {
    pub(crate) auditor: Arc<Auditor>,
    /// Successes and cancellations too (authentication class), not only the security events.
    pub(crate) successes: bool,
}

impl EventSink for AuditSink {
    fn record(&self, e: &AuthEvent<'_>) {
        if !self.successes && class_of(e.outcome) == AuditClass::Authentication {
            return;
        }
        let auditor = &self.auditor;
        if auditor.closed.load(Ordering::Relaxed) {
            auditor.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let layer = &auditor.layer;
        let mut ua = [0u8; UA_INLINE];
        let (mut ua_len, mut ua_cut) = (0, false);
        if let Some(s) = e.user_agent {
            // Cut at a character boundary (the layer hands over visible ASCII; an event built
            // by hand may hold anything).
            let mut n = s.len().min(UA_INLINE);
            while !s.is_char_boundary(n) {
                n -= 1;
            }
            ua[..n].copy_from_slice(&s.as_bytes()[..n]);
            ua_len = n as u16;
            ua_cut = n < s.len();
        }
        let rec = LayerRecord {
            finished_at: e.finished_at,
            op: e.op,
            outcome: e.outcome,
            route: layer.route_key(e),
            method: e.method,
            ip: e.client_ip,
            ms: e.latency.as_secs_f64() * 1000.0,
            guard: e.source == EventSource::TokenGuard,
            trace: crate::tracing_ctx::current(),
            ua_len,
            ua_cut,
            ua,
        };
        let shard = &layer.shards[authwatch_hdr::thread_shard(layer.shards.len())];
        let mut guard = shard.0.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut *guard;
        if s.records.len() < SHARD_CAP && !s.closed {
            s.records.push(rec);
            let half = s.records.len() == SHARD_CAP / 2;
            drop(guard);
            if half {
                // Once per half a shard; when the queue is full the worker is busy anyway.
                let _ = auditor.tx.try_send(Msg::Drain);
            }
        } else {
            drop(guard);
            auditor.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One kind of application record: its name, operation and outcome (which give its class),
/// and whether it shows the user active (`auth.users.active`).
struct AppEvent {
    name: &'static str,
    op: AuthOp,
    outcome: Outcome,
    active: bool,
}

const fn app_event(name: &'static str, op: AuthOp, outcome: Outcome, active: bool) -> AppEvent {
    AppEvent {
        name,
        op,
        outcome,
        active,
    }
}

const LOGIN_SUCCESS: AppEvent =
    app_event("auth.login.success", AuthOp::Login, Outcome::Success, true);
const LOGIN_FAILURE: AppEvent = app_event(
    "auth.login.failure",
    AuthOp::Login,
    Outcome::Failure(FailureReason::InvalidCredentials),
    false,
);
const TOKEN_ISSUED: AppEvent = app_event(
    "auth.token.issued",
    AuthOp::TokenRefresh,
    Outcome::Success,
    true,
);
const LOGOUT: AppEvent = app_event("auth.logout", AuthOp::Logout, Outcome::Success, true);
const REGISTRATION: AppEvent = app_event(
    "auth.registration",
    AuthOp::Registration,
    Outcome::Success,
    true,
);
const LOCKOUT: AppEvent = app_event(
    "auth.lockout",
    AuthOp::Login,
    Outcome::Failure(FailureReason::LockedOut),
    false,
);
const RATE_LIMITED: AppEvent = app_event(
    "auth.rate_limited",
    AuthOp::Login,
    Outcome::RateLimited,
    false,
);
const PASSWORD_RESET: AppEvent = app_event(
    "auth.password_reset",
    AuthOp::PasswordReset,
    Outcome::Success,
    false,
);

/// The spec's `LoginAuditLogger`: what your handlers call when they know who signed in.
///
/// Cheap to clone and to call (the record is queued; a worker writes it), never blocks, never
/// panics. Get it from [`AuthWatch::audit_logger`](crate::AuthWatch::audit_logger) (that
/// monitor's, which it keeps alive) or [`get_login_audit_logger`] (the process's, which
/// follows whichever monitor is running).
///
/// ```
/// # let watch = authwatch::AuthWatch::builder().otlp(false).build().unwrap();
/// let audit = watch.audit_logger();
/// let ip = "203.0.113.7".parse().ok();
/// audit.log_login_success("user-42", ip, Some("Mozilla/5.0"));
/// audit.log_login_failure("user-42", ip, Some("Mozilla/5.0"), "Invalid credentials");
/// audit.log_token_issued("user-42", "access", ip, Some("Mozilla/5.0"));
/// ```
#[derive(Clone)]
pub struct LoginAuditLogger {
    /// A monitor's logger; `None` for the process's ([`get_login_audit_logger`]), which
    /// finds the running monitor's at each call.
    own: Option<Arc<Parts>>,
}

/// What a monitor's logger writes to and counts in.
#[derive(Clone)]
struct Parts {
    auditor: Arc<Auditor>,
    /// Where `log_lockout` counts (the metric and the snapshot), when a monitor is behind it.
    lockouts: Option<(Arc<AtomicU64>, Arc<crate::stats::Stats>)>,
    /// The alert engine, told of the application's lockouts (`AuthLockoutSpike`).
    alerts: Option<authwatch_alerts::AlertEngine>,
    /// Where the users it sees are counted (`auth.users.active`).
    active: Option<Arc<crate::active::ActiveUsers>>,
}

impl fmt::Debug for LoginAuditLogger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("LoginAuditLogger");
        match &self.own {
            Some(p) => d.field("auditor", &p.auditor),
            None => d.field("follows", &"the running monitor"),
        };
        d.finish_non_exhaustive()
    }
}

impl Parts {
    fn new(auditor: Arc<Auditor>) -> Self {
        Self {
            auditor,
            lockouts: None,
            alerts: None,
            active: None,
        }
    }

    /// Builds, fills, counts and queues one record of the application.
    fn log(
        &self,
        e: &AppEvent,
        user_id: Option<&str>,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
        fill: impl FnOnce(&mut AuditRecord),
    ) {
        let mut r = AuditRecord::new(e.name, class_of(e.outcome), FROM_APPLICATION);
        r.set_trace(crate::tracing_ctx::current());
        r.user_id = user_id.map(|u| self.auditor.key.apply(u));
        r.client_address = ip;
        r.user_agent = user_agent.map(|ua| sanitize(ua, MAX_USER_AGENT));
        r.operation = Some(e.op.as_str());
        r.outcome = Some(e.outcome.as_str());
        fill(&mut r);
        if e.active {
            if let (Some(a), Some(u)) = (&self.active, &r.user_id) {
                a.insert(u, authwatch_layer::now());
            }
        }
        if e.outcome == Outcome::Failure(FailureReason::LockedOut) {
            if let Some((metric, stats)) = &self.lockouts {
                metric.fetch_add(1, Ordering::Relaxed);
                stats.add_lockout(e.op);
            }
            if let Some(a) = &self.alerts {
                a.record_lockout();
            }
        }
        self.auditor.send(r);
    }
}

impl LoginAuditLogger {
    pub(crate) fn new(auditor: Arc<Auditor>) -> Self {
        Self {
            own: Some(Arc::new(Parts::new(auditor))),
        }
    }

    /// The monitor's parts while `build` sets them (not shared yet: no copy is made).
    fn parts_mut(&mut self) -> Option<&mut Parts> {
        self.own.as_mut().map(Arc::make_mut)
    }

    pub(crate) fn with_alerts(mut self, e: Option<authwatch_alerts::AlertEngine>) -> Self {
        if let Some(p) = self.parts_mut() {
            p.alerts = e;
        }
        self
    }

    pub(crate) fn with_active_users(mut self, a: Arc<crate::active::ActiveUsers>) -> Self {
        if let Some(p) = self.parts_mut() {
            p.active = Some(a);
        }
        self
    }

    pub(crate) fn with_lockouts(
        mut self,
        metric: Arc<AtomicU64>,
        stats: Arc<crate::stats::Stats>,
    ) -> Self {
        if let Some(p) = self.parts_mut() {
            p.lockouts = Some((metric, stats));
        }
        self
    }

    /// Runs `f` on the parts this logger writes to: its monitor's, or for the process's
    /// logger, the running monitor's at this call.
    fn with<R>(&self, f: impl FnOnce(&Parts) -> R) -> R {
        match &self.own {
            Some(p) => f(p),
            None => f(&current()),
        }
    }

    /// One record of the application, to the parts this logger writes to.
    fn log(
        &self,
        e: &AppEvent,
        user_id: Option<&str>,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
        fill: impl FnOnce(&mut AuditRecord),
    ) {
        self.with(|p| p.log(e, user_id, ip, user_agent, fill));
    }

    /// A successful login.
    pub fn log_login_success(&self, user_id: &str, ip: Option<IpAddr>, user_agent: Option<&str>) {
        self.log(&LOGIN_SUCCESS, Some(user_id), ip, user_agent, |_| {});
    }

    /// A failed login and why (`"Invalid credentials"`, …).
    pub fn log_login_failure(
        &self,
        user_id: &str,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
        reason: &str,
    ) {
        self.log(&LOGIN_FAILURE, Some(user_id), ip, user_agent, |r| {
            r.error_type = Some(sanitize(reason, MAX_TEXT));
        });
    }

    /// A token issued (`token_type`: `"access"`, `"refresh"`, …). The token itself is never
    /// taken.
    pub fn log_token_issued(
        &self,
        user_id: &str,
        token_type: &str,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
    ) {
        self.log(&TOKEN_ISSUED, Some(user_id), ip, user_agent, |r| {
            r.token_type = Some(sanitize(token_type, MAX_TEXT));
        });
    }

    /// A logout.
    pub fn log_logout(&self, user_id: &str, ip: Option<IpAddr>, user_agent: Option<&str>) {
        self.log(&LOGOUT, Some(user_id), ip, user_agent, |_| {});
    }

    /// A new account.
    pub fn log_registration(&self, user_id: &str, ip: Option<IpAddr>, user_agent: Option<&str>) {
        self.log(&REGISTRATION, Some(user_id), ip, user_agent, |_| {});
    }

    /// An account locked, and why. Also counts in `auth.lockout.count` (without a route label)
    /// and in the snapshot's `locked_out` for logins.
    pub fn log_lockout(
        &self,
        user_id: &str,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
        reason: &str,
    ) {
        self.log(&LOCKOUT, Some(user_id), ip, user_agent, |r| {
            r.error_type = Some(sanitize(reason, MAX_TEXT));
        });
    }

    /// A request refused by a rate limit (the user, when known).
    pub fn log_rate_limited(
        &self,
        user_id: Option<&str>,
        ip: Option<IpAddr>,
        user_agent: Option<&str>,
    ) {
        self.log(&RATE_LIMITED, user_id, ip, user_agent, |_| {});
    }

    /// A password reset (requested or completed).
    pub fn log_password_reset(&self, user_id: &str, ip: Option<IpAddr>, user_agent: Option<&str>) {
        self.log(&PASSWORD_RESET, Some(user_id), ip, user_agent, |_| {});
    }

    /// A query that took longer than the slow-query threshold (a security-class record, so
    /// it is kept for a year next to the failures it may explain).
    pub(crate) fn log_slow_query(&self, name: &str, took: Duration) {
        let mut r = AuditRecord::new("auth.db.slow_query", AuditClass::Security, FROM_APPLICATION);
        r.db_query = Some(sanitize(name, MAX_TEXT));
        r.duration_ms = Some(took.as_secs_f64() * 1000.0);
        self.with(|p| p.auditor.send(r));
    }

    /// Waits until every record logged so far is written (and, with a local log, flushed).
    /// For tests and shutdown; the calls above never wait. The process's logger waits for
    /// the running monitor's.
    pub fn sync(&self) {
        self.with(|p| p.auditor.sync());
    }

    /// Records dropped because the queue was full (the process's logger: the running
    /// monitor's count).
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.with(|p| p.auditor.dropped())
    }

    /// Stops the monitor's writer. The process's logger owns none: it has nothing to stop.
    pub(crate) fn shutdown(&self) -> bool {
        self.own.as_ref().is_none_or(|p| p.auditor.shutdown())
    }
}

/// What the process's logger ([`get_login_audit_logger`]) writes to.
struct Global {
    /// The monitors built, oldest first, held weakly: the global keeps none of them (their
    /// writer thread, their detector) alive after it is dropped.
    monitors: Vec<std::sync::Weak<Parts>>,
    /// Where records go while no monitor runs: `tracing` events only. Started at its first
    /// record, dropped (its thread ending) when a monitor is built.
    stand_in: Option<Arc<Parts>>,
}

static GLOBAL: Mutex<Global> = Mutex::new(Global {
    monitors: Vec::new(),
    stand_in: None,
});

/// Each `AuthWatch` built becomes the one the process's logger writes to, until it is shut
/// down or dropped: a monitor restarted (shut down, then built again) takes over at once.
pub(crate) fn set_global(l: &LoginAuditLogger) {
    let Some(p) = &l.own else { return };
    let mut g = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    g.monitors.retain(|m| m.strong_count() > 0);
    g.monitors.push(Arc::downgrade(p));
    g.stand_in = None;
}

/// The parts the process's logger writes to now: the newest monitor still running, else the
/// stand-in.
fn current() -> Arc<Parts> {
    let mut g = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    let running = g
        .monitors
        .iter()
        .rev()
        .filter_map(std::sync::Weak::upgrade)
        .find(|p| !p.auditor.closed.load(Ordering::Relaxed));
    if let Some(p) = running {
        return p;
    }
    g.stand_in
        .get_or_insert_with(|| {
            let a = Auditor::start(
                Outputs {
                    otel: None,
                    file: None,
                },
                DEFAULT_QUEUE,
                None,
            )
            // No thread to be had: records counted as dropped, rather than a panic in a login
            // handler.
            .unwrap_or_else(|_| Auditor::disconnected());
            Arc::new(Parts::new(a))
        })
        .clone()
}

/// The process's audit logger, as the spec calls it. Each call of the logger goes to the
/// newest [`AuthWatch`] still running (built and not shut down), so a logger obtained once and
/// kept (before the monitor was built, or before it was restarted) follows the live monitor,
/// and keeps none alive. While none runs, its records are written as `tracing` events only.
///
/// [`AuthWatch`]: crate::AuthWatch
#[must_use]
pub fn get_login_audit_logger() -> LoginAuditLogger {
    LoginAuditLogger { own: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_escapes_and_bounds() {
        assert_eq!(sanitize("curl/8", 256), "curl/8");
        assert_eq!(
            sanitize("evil\nINFO forged line\r\t\u{1b}[31m\"x\"\\", 256),
            "evil\\nINFO forged line\\r\\t\\u{1b}[31m\\\"x\\\"\\\\"
        );
        let long = "é".repeat(300);
        let s = sanitize(&long, 256);
        assert!(s.len() <= 256, "{}", s.len());
        assert!(s.ends_with('…'));
        assert!(s.is_char_boundary(s.len()));
        assert_eq!(sanitize("a\u{2028}b", 64), "a\\u{2028}b");
        assert_eq!(sanitize("x\u{2067}y\u{feff}", 64), "x\\u{2067}y\\u{feff}");
    }

    #[test]
    fn keyed_user_ids() {
        let k = UserIdKey(Some(Arc::from(&b"secret"[..])));
        let a = k.apply("user-42");
        assert!(a.starts_with("hmac-sha256:"), "{a}");
        assert_eq!(a.len(), "hmac-sha256:".len() + 64);
        assert_eq!(a, k.apply("user-42"), "stable");
        assert_ne!(a, k.apply("user-43"));
        let other = UserIdKey(Some(Arc::from(&b"other"[..])));
        assert_ne!(a, other.apply("user-42"), "depends on the key");
        assert_eq!(UserIdKey(None).apply("user-42"), "user-42");
    }

    #[test]
    fn classes() {
        assert_eq!(AuditClass::Authentication.retention_days(), 90);
        assert_eq!(AuditClass::Security.retention_days(), 365);
        assert_eq!(class_of(Outcome::RateLimited), AuditClass::Security);
        assert_eq!(
            class_of(Outcome::Failure(FailureReason::InvalidToken)),
            AuditClass::Security
        );
        assert_eq!(class_of(Outcome::Success), AuditClass::Authentication);
    }

    /// An auditor whose worker is the test (it sees what the sink sends), its layer sink,
    /// and a failed sign-in to record.
    fn test_auditor() -> (
        Arc<Auditor>,
        std::sync::mpsc::Receiver<Msg>,
        AuditSink,
        AuthEvent<'static>,
    ) {
        let (tx, rx) = sync_channel(4);
        let auditor = Auditor::without_worker(tx, false);
        let sink = AuditSink {
            auditor: auditor.clone(),
            successes: false,
        };
        let e = AuthEvent::new(
            AuthOp::Login,
            Outcome::Failure(FailureReason::InvalidCredentials),
            Duration::from_millis(2),
            authwatch_layer::now(),
        )
        .with_route("/login");
        (auditor, rx, sink, e)
    }

    #[test]
    fn records_after_the_last_drain_are_counted() {
        let (auditor, _rx, sink, e) = test_auditor();
        for _ in 0..3 {
            sink.record(&e);
        }
        // As at shutdown, once the worker's last drain is done.
        assert_eq!(auditor.layer.close(), 3, "left in the shards");
        // A request that passed the sink's `closed` check before shutdown pushes now.
        assert!(!auditor.closed.load(Ordering::Relaxed));
        sink.record(&e);
        assert_eq!(auditor.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(auditor.layer.close(), 0, "nothing kept");
    }

    #[test]
    fn a_half_full_shard_wakes_the_worker() {
        let (auditor, rx, sink, e) = test_auditor();
        // One thread: every record lands in the same shard.
        for _ in 0..SHARD_CAP / 2 - 1 {
            sink.record(&e);
        }
        assert!(rx.try_recv().is_err(), "no wake before half");
        sink.record(&e);
        assert!(matches!(rx.try_recv(), Ok(Msg::Drain)), "a wake at half");
        for _ in 0..SHARD_CAP / 2 {
            sink.record(&e);
        }
        assert!(rx.try_recv().is_err(), "one wake per half shard");
        // Full: the next is dropped and counted, nothing else is sent.
        sink.record(&e);
        assert_eq!(auditor.dropped.load(Ordering::Relaxed), 1);
        assert!(rx.try_recv().is_err());
        // Drained, the shard wakes the worker again at half.
        let mut n = 0;
        auditor.layer.drain(&mut Vec::new(), &mut |_, _| n += 1);
        assert_eq!(n, SHARD_CAP);
        for _ in 0..SHARD_CAP / 2 {
            sink.record(&e);
        }
        let wake = rx.try_recv().unwrap();
        assert!(matches!(wake, Msg::Drain));
        // The worker drains on the wake before its tick, and not on a logger's record.
        let now = std::time::Instant::now();
        let later = now + DRAIN_EVERY;
        assert!(drains_now(Some(&wake), now, later));
        assert!(!drains_now(None, now, later));
        let record = Msg::Record(Box::new(AuditRecord::new(
            "auth.login",
            AuditClass::Authentication,
            "app",
        )));
        assert!(!drains_now(Some(&record), now, later));
        assert!(drains_now(None, later, later));
    }
}
