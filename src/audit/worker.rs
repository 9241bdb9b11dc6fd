//! The worker: [`Auditor`] queues records, and its thread writes them (to `tracing`, the
//! local log and the OTLP export), syncs and shuts down.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::buffers::{LayerRecord, LayerRecords};
use super::file::{self, FileSettings};
use super::otlp::{OtelEncoder, OtelOut};
use super::record::{AuditClass, AuditRecord, RecordView, FROM_APPLICATION, LOGIN_FAILURE};
use super::sanitize::UserIdKey;

/// Records the queue holds before new ones are dropped (and counted).
pub const DEFAULT_QUEUE: usize = 8192;

/// What the worker takes: a record, or a request to answer once everything before it is
/// written.
pub(super) enum Msg {
    Record(Box<AuditRecord>),
    /// A thread's shard of layer records is half full: drain now rather than at the next
    /// 50-ms tick, so that a burst faster than a shard holds per tick is not dropped.
    Drain,
    Sync(SyncSender<()>),
    /// Drain, flush, answer, and end.
    Stop(SyncSender<()>),
}

/// Where records go. Built by `AuthWatch`; shared by its sink and its logger.
pub(crate) struct Auditor {
    pub(super) tx: SyncSender<Msg>,
    pub(super) layer: Arc<LayerRecords>,
    /// After shutdown: records are dropped (and counted).
    pub(super) closed: std::sync::atomic::AtomicBool,
    pub(super) dropped: AtomicU64,
    pub(super) key: UserIdKey,
    /// The alert engine the application's login failures go to, for the account-level rules
    /// (set once the engine exists); the worker tells it, off the handler's thread.
    accounts: Arc<std::sync::OnceLock<authwatch_alerts::AlertEngine>>,
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

/// How long a sync or a stop waits for the OTLP export of what was written.
const EXPORT_WAIT: Duration = Duration::from_secs(5);
/// How often the worker drains the layer's records.
pub(super) const DRAIN_EVERY: Duration = Duration::from_millis(50);

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
        let accounts = Arc::new(std::sync::OnceLock::new());
        let engine = accounts.clone();
        let worker = std::thread::Builder::new()
            .name("authwatch-audit".into())
            .spawn(move || run(rx, &drain, outputs, writer.as_mut(), &engine))?;
        Ok(Arc::new(Self {
            tx,
            layer,
            closed: std::sync::atomic::AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            // Its own key, derived: a user-id hash is never a valid chain hash.
            key: UserIdKey(key.map(|k| file::derive(&k, "user-id").into())),
            accounts,
            worker: Mutex::new(Some(worker)),
        }))
    }

    /// An auditor with no worker: every record is counted as dropped.
    pub(super) fn disconnected() -> Arc<Self> {
        Self::without_worker(sync_channel(1).0, true)
    }

    /// An auditor whose messages go to `tx` and no worker of its own.
    pub(super) fn without_worker(tx: SyncSender<Msg>, closed: bool) -> Arc<Self> {
        Arc::new(Self {
            tx,
            layer: Arc::new(LayerRecords::new()),
            closed: std::sync::atomic::AtomicBool::new(closed),
            dropped: AtomicU64::new(0),
            key: UserIdKey(None),
            accounts: Arc::new(std::sync::OnceLock::new()),
            worker: Mutex::new(None),
        })
    }

    /// Sends the application's login failures to `engine` from now on (its account-level
    /// rules), as the worker takes them.
    pub(crate) fn feed_accounts(&self, engine: authwatch_alerts::AlertEngine) {
        let _ = self.accounts.set(engine);
    }

    pub(crate) fn send(&self, r: AuditRecord) {
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
    encoder: OtelEncoder,
}

impl Sinks<'_> {
    /// Writes `r` (`owned` when the caller has it as an [`AuditRecord`]); `observed` is when
    /// the worker took it, in nanoseconds since the Unix epoch (the drain's one clock reading
    /// for the layer's records; without it the OTLP encoder reads the clock).
    fn write(&mut self, r: &RecordView<'_>, owned: Option<&AuditRecord>, observed: Option<u64>) {
        emit_tracing(r);
        if let Some(w) = self.file.as_deref_mut() {
            match owned {
                Some(o) => w.write(o),
                None => w.write(&r.to_record()),
            }
        }
        if self.otel.is_some() {
            if self.batch.is_empty() {
                self.batch_since = Some(std::time::Instant::now());
            }
            self.encoder.record(&mut self.batch, r, observed);
            if self.batch.is_full() {
                self.send_batch();
            }
        }
    }

    /// Writes every record waiting in the layer's shards, observed at the drain's clock
    /// reading: straight from the layer's compact records, with no `AuditRecord` in between.
    fn drain(&mut self, layer: &LayerRecords, spare: &mut Vec<LayerRecord>) {
        layer.drain_views(spare, &mut |r, seen| self.write(r, None, Some(seen)));
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
        self.send_checkpoints(false);
    }

    /// The local log's checkpoints to the collector, when OTLP logs are on (`all`: every one
    /// waiting, at shutdown); never into the local log itself.
    fn send_checkpoints(&mut self, all: bool) {
        let Some(w) = self.file.as_deref_mut() else {
            return;
        };
        let due = w.take_checkpoints(all);
        if self.otel.is_none() {
            return;
        }
        for c in due {
            let mut r =
                AuditRecord::new("auth.audit.checkpoint", AuditClass::Security, "authwatch");
            r.checkpoint = serde_json::to_value(&c).ok();
            if self.batch.is_empty() {
                self.batch_since = Some(std::time::Instant::now());
            }
            self.encoder.record(&mut self.batch, &r.view(), None);
            if self.batch.is_full() {
                self.send_batch();
            }
        }
    }

    /// The last batch out, the file flushed, the export stopped.
    fn finish(&mut self) {
        self.flush_file();
        self.send_checkpoints(true);
        self.send_batch();
        if let Some(o) = &self.otel {
            o.export.shutdown();
        }
    }
}

fn run(
    rx: Receiver<Msg>,
    layer: &LayerRecords,
    out: Outputs,
    file: Option<&mut file::Writer>,
    accounts: &std::sync::OnceLock<authwatch_alerts::AlertEngine>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    // Writing records is background work: under full load it yields to the requests.
    authwatch_otel::lower_thread_priority();
    let mut spare = Vec::new();
    let mut next_drain = std::time::Instant::now() + DRAIN_EVERY;
    let batch = out
        .otel
        .as_ref()
        .map_or_else(authwatch_otel::LogBatch::default, |o| {
            o.export.empty_batch()
        });
    let mut sinks = Sinks {
        file,
        otel: out.otel,
        batch,
        batch_since: None,
        encoder: OtelEncoder::default(),
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
            Some(Msg::Record(r)) => {
                // A failed login the application reported: who and from where, for the
                // account-level rules (the user id keyed, as the record holds it).
                if r.name == LOGIN_FAILURE.name && r.source == FROM_APPLICATION {
                    if let (Some(e), Some(user)) = (accounts.get(), &r.user_id) {
                        e.record_account_failure(user, r.client_address);
                    }
                }
                sinks.write(&r.view(), Some(&r), None);
            }
            Some(Msg::Drain) => {}
            None => {
                if let Some(w) = sinks.file.as_deref_mut() {
                    if w.flush_due_in() == Some(Duration::ZERO) {
                        w.flush();
                    }
                }
                sinks.send_checkpoints(false);
            }
        }
    }
    sinks.drain(layer, &mut spare);
    sinks.finish();
}

/// Whether the worker drains the layer's shards now: at the tick, when a shard is half full,
/// and before a sync or a stop.
pub(super) fn drains_now(
    msg: Option<&Msg>,
    now: std::time::Instant,
    next_drain: std::time::Instant,
) -> bool {
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
            auth.block.source = $r.block_source,
            auth.block.reason = $r.block_reason.as_deref(),
            auth.block.ttl_s = $r.block_ttl_s,
            auth.block.refused = $r.block_refused,
            auth.incident = $r.incident.as_ref().map(tracing::field::display),
            auth.access = $r.access.as_ref().map(tracing::field::display),
            auth.audit.checkpoint = $r.checkpoint.as_ref().map(tracing::field::display),
            trace_id = $r.trace_id.as_deref(),
            "{}",
            $r.name
        )
    };
}

fn emit_tracing(r: &RecordView<'_>) {
    // The layer's own records (one per failed request) are INFO: a mistyped password is
    // routine, the alerts are the warnings, and a WARN line per failure under an attack is a
    // log flood (measured end to end, formatting and writing those lines was most of the
    // layer's audit cost). The security events your handlers log stay WARN.
    match (r.class, r.source) {
        (AuditClass::Security, FROM_APPLICATION) => audit_event!(tracing::Level::WARN, r),
        _ => audit_event!(tracing::Level::INFO, r),
    }
}
