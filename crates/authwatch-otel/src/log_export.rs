//! A dedicated OTLP log export for records built off the request path (authwatch's audit
//! trail): its own exporter, connection and thread, at a lower scheduling priority than the
//! service's threads, fed whole batches, and counting what it loses.
//!
//! Why not the SDK's batch log processor: measured end to end on one core, its export of 512
//! records at a time ran as one burst that held the request threads off for about a
//! millisecond (p99 +15 % with 200 µs sign-ins), its gRPC connection ran on the service's own
//! Tokio workers (so a busy service slowed its own export until the processor's queue
//! overflowed), and it drops records without a counter we can read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::logs::{LogBatch, LogExporter as _, SdkLogRecord};

use crate::pipeline::{OtlpOptions, PipelineError, Protocol};

/// Most records in one export request.
pub const MAX_EXPORT_BATCH: usize = 512;
/// Batches waiting for the export thread; beyond, a new batch is lost and counted.
const QUEUE_BATCHES: usize = 8;
/// Exported batches kept for reuse (see [`LogExport::empty_batch`]).
const SPARE_BATCHES: usize = 2;
/// How long [`LogExport::shutdown`] waits for the export thread.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

enum Msg {
    Batch(Vec<SdkLogRecord>),
    Flush(SyncSender<()>),
}

/// A dedicated OTLP log export: hand it batches of records with [`send`](Self::send); a thread
/// of its own exports them, one request per batch.
///
/// - The thread runs at a lower priority than the service's threads
///   ([`lower_thread_priority`](crate::lower_thread_priority)): under full load, export work yields to requests instead of
///   holding them off.
/// - Over gRPC it drives its own connection on its own single-threaded Tokio runtime, never on
///   the service's workers.
/// - At most 8 batches wait; a batch that finds the queue full, or whose export fails (the
///   collector refused it or did not answer within the exporter's timeout), is lost and
///   counted in [`lost`](Self::lost).
pub struct LogExport {
    tx: Mutex<Option<SyncSender<Msg>>>,
    lost: Arc<AtomicU64>,
    /// When shutdown began: batches still queued 5 s later are counted lost, not exported.
    stopping: Arc<OnceLock<Instant>>,
    done: Mutex<Option<Receiver<()>>>,
    /// Exported batches, emptied, for the caller to fill again.
    empties: Mutex<Receiver<Vec<SdkLogRecord>>>,
}

impl std::fmt::Debug for LogExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogExport")
            .field("lost", &self.lost())
            .finish_non_exhaustive()
    }
}

impl LogExport {
    /// Starts the export thread and builds its exporter there.
    pub(crate) fn start(
        o: &OtlpOptions,
        p: Protocol,
        resource: opentelemetry_sdk::Resource,
        scope: InstrumentationScope,
    ) -> Result<Self, PipelineError> {
        let (tx, rx) = sync_channel(QUEUE_BATCHES);
        let (built_tx, built_rx) = sync_channel(1);
        let (done_tx, done_rx) = sync_channel(1);
        let (empties_tx, empties_rx) = sync_channel(SPARE_BATCHES);
        let lost = Arc::new(AtomicU64::new(0));
        let o = o.clone();
        let counted = lost.clone();
        let stopping = Arc::new(OnceLock::new());
        let stop = stopping.clone();
        std::thread::Builder::new()
            .name("authwatch-log-export".into())
            .spawn(move || {
                crate::lower_thread_priority();
                let built = Driver::build(&o, p).map(|(driver, mut exporter)| {
                    exporter.set_resource(&resource);
                    (driver, exporter)
                });
                let (driver, exporter) = match built {
                    Ok(b) => {
                        let _ = built_tx.send(Ok(()));
                        b
                    }
                    Err(e) => {
                        let _ = built_tx.send(Err(e));
                        return;
                    }
                };
                run(
                    &rx,
                    &driver,
                    &exporter,
                    &Ctx {
                        scope: &scope,
                        lost: &counted,
                        stopping: &stop,
                        empties: &empties_tx,
                    },
                );
                let _ = driver.block_on(async { exporter.shutdown() });
                let _ = done_tx.send(());
            })
            .map_err(|e| PipelineError::Config(format!("cannot start the log export: {e}")))?;
        built_rx.recv().map_err(|_| {
            PipelineError::Config("the log export thread ended while building".into())
        })??;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            lost,
            stopping,
            done: Mutex::new(Some(done_rx)),
            empties: Mutex::new(empties_rx),
        })
    }

    /// An empty batch to fill for the next [`send`](Self::send): one the export thread has
    /// exported and emptied when there is one (its capacity kept), a new one otherwise.
    ///
    /// Reusing batches keeps a steady stream of records from allocating a growing vector per
    /// batch on the sending thread and freeing it on the export thread, which makes the
    /// allocator's per-thread arenas creep over hours.
    #[must_use]
    pub fn empty_batch(&self) -> Vec<SdkLogRecord> {
        self.empties
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_recv()
            .unwrap_or_default()
    }

    /// Queues `batch` for export (one request per [`MAX_EXPORT_BATCH`] records). Never
    /// blocks: when the queue is full or the export is shut down, the records are counted in
    /// [`lost`](Self::lost).
    pub fn send(&self, mut batch: Vec<SdkLogRecord>) {
        use opentelemetry::logs::LogRecord as _;
        // As the SDK's logger does on emit (the OTLP encoder needs it).
        let now = std::time::SystemTime::now();
        for r in batch
            .iter_mut()
            .filter(|r| r.observed_timestamp().is_none())
        {
            r.set_observed_timestamp(now);
        }
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        while !batch.is_empty() {
            let rest = if batch.len() > MAX_EXPORT_BATCH {
                batch.split_off(MAX_EXPORT_BATCH)
            } else {
                Vec::new()
            };
            let n = batch.len() as u64;
            let sent = tx.as_ref().map(|tx| tx.try_send(Msg::Batch(batch)));
            match sent {
                Some(Ok(())) => {}
                Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => {
                    self.lost.fetch_add(n, Ordering::Relaxed);
                }
            }
            batch = rest;
        }
    }

    /// Waits (up to `timeout`) until every batch sent so far has been exported or counted
    /// lost.
    pub fn flush(&self, timeout: Duration) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(tx) = tx else { return };
        let (ack_tx, ack_rx) = sync_channel(1);
        // The queue may be full: wait for room within the same deadline.
        let deadline = Instant::now() + timeout;
        let mut msg = Msg::Flush(ack_tx);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return;
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let _ = ack_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }

    /// Records lost: the queue was full, the export failed, or they came after shutdown.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Exports what is queued (for up to 5 s; later batches are counted lost), stops the
    /// thread and shuts the exporter down. Returns false when the thread did not finish in
    /// time (an export still waiting on the collector); it then ends on its own. Later calls
    /// do nothing.
    pub fn shutdown(&self) -> bool {
        let _ = self.stopping.set(Instant::now());
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner()).take();
        done.is_none_or(|d| {
            d.recv_timeout(SHUTDOWN_WAIT + Duration::from_secs(1))
                .is_ok()
        })
    }
}

/// What the export thread's loop shares with the rest.
struct Ctx<'a> {
    scope: &'a InstrumentationScope,
    lost: &'a AtomicU64,
    stopping: &'a OnceLock<Instant>,
    empties: &'a SyncSender<Vec<SdkLogRecord>>,
}

fn run<E: opentelemetry_sdk::logs::LogExporter>(
    rx: &Receiver<Msg>,
    driver: &Driver,
    exporter: &E,
    cx: &Ctx<'_>,
) {
    let Ctx {
        scope,
        lost,
        stopping,
        empties,
    } = *cx;
    // The exporter's own logs (tonic, hyper, reqwest) must not come back as records.
    let _quiet = opentelemetry::Context::enter_telemetry_suppressed_scope();
    let mut failing = false;
    // Once the sender is gone, what is queued still goes out, within a bound.
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Flush(ack) => {
                let _ = ack.try_send(());
            }
            Msg::Batch(mut batch) => {
                let n = batch.len() as u64;
                if stopping.get().is_some_and(|t| t.elapsed() >= SHUTDOWN_WAIT) {
                    lost.fetch_add(n, Ordering::Relaxed);
                    continue;
                }
                let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
                    batch.iter().map(|r| (r, scope)).collect();
                // A panicking encoder loses this batch (counted), not the thread.
                let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    driver.block_on(exporter.export(LogBatch::new(&refs)))
                }))
                .unwrap_or_else(|_| {
                    Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                        "the exporter panicked".into(),
                    ))
                });
                match sent {
                    Ok(()) => {
                        if failing {
                            failing = false;
                            tracing::info!(
                                target: "authwatch::export",
                                "authwatch: audit log export recovered"
                            );
                        }
                    }
                    Err(e) => {
                        lost.fetch_add(n, Ordering::Relaxed);
                        if !failing {
                            failing = true;
                            tracing::warn!(
                                target: "authwatch::export",
                                name = "AuditLogExport.Failed",
                                error = %e,
                                records = n,
                                "authwatch: audit log export failed; records are counted in \
                                 auth.audit.export.lost.count until it recovers"
                            );
                        }
                    }
                }
                // Emptied here, refilled by the sender; an oversized one (a burst split by
                // `send`) is let go.
                batch.clear();
                if batch.capacity() <= MAX_EXPORT_BATCH {
                    let _ = empties.try_send(batch);
                }
            }
        }
    }
}

/// What runs an export future: the thread's own Tokio runtime for gRPC (tonic's connection
/// tasks run inside it, during the export), a plain executor for HTTP (the blocking client
/// has its own thread and must not run inside a runtime).
enum Driver {
    #[cfg(feature = "grpc")]
    Tokio(tokio::runtime::Runtime),
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    Plain,
}

impl Driver {
    fn build(
        o: &OtlpOptions,
        p: Protocol,
    ) -> Result<(Self, opentelemetry_otlp::LogExporter), PipelineError> {
        match p {
            #[cfg(feature = "grpc")]
            Protocol::Grpc => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        PipelineError::Config(format!("cannot build the export runtime: {e}"))
                    })?;
                let exporter = {
                    let _in = rt.enter();
                    crate::pipeline::log_exporter(o, p)?
                };
                Ok((Self::Tokio(rt), exporter))
            }
            _ => Ok((Self::Plain, crate::pipeline::log_exporter(o, p)?)),
        }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match self {
            #[cfg(feature = "grpc")]
            Self::Tokio(rt) => rt.block_on(f),
            Self::Plain => futures_executor::block_on(f),
        }
    }
}
