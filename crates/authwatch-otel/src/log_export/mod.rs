//! A dedicated OTLP log export for records built off the request path (authwatch's audit
//! trail): its own connection and thread, at a lower scheduling priority than the service's
//! threads, fed whole batches already encoded as protobuf ([`LogBatch`]), and counting what it
//! loses.
//!
//! Why not the SDK's batch log processor: measured end to end on one core, its export of 512
//! records at a time ran as one burst that held the request threads off for about a
//! millisecond (p99 +15 % with 200 µs sign-ins), its gRPC connection ran on the service's own
//! Tokio workers (so a busy service slowed its own export until the processor's queue
//! overflowed), and it drops records without a counter we can read. Why not the SDK's
//! exporter on this thread: it converts every record into the generated protobuf types before
//! encoding them (see [`LogBatch`]), about 5 µs of CPU per record.

#[cfg(feature = "grpc")]
mod grpc;
#[cfg(feature = "http")]
mod http_proto;
mod retry;
mod settings;
mod transport;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry::InstrumentationScope;

use retry::RETRY_BUDGET;
use settings::{max_export_batch, schedule_delay};
use transport::Transport;
use worker::{run, Ctx};

use crate::log_encode::{LogBatch, RequestFrame};
use crate::pipeline::{env, OtlpOptions, PipelineError, Protocol};

/// Batches waiting for the export thread; beyond, a new batch is lost and counted.
const QUEUE_BATCHES: usize = 8;
/// Exported batches kept for reuse (see [`LogExport::empty_batch`]).
const SPARE_BATCHES: usize = 2;
/// How long [`LogExport::shutdown`] waits for the export thread.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

enum Msg {
    Batch(LogBatch),
    Flush(SyncSender<()>),
}

/// A dedicated OTLP log export: hand it batches of records with [`send`](Self::send); a thread
/// of its own exports them, one request per batch.
///
/// It honours the builder's [`OtlpOptions`] (endpoint, protocol, headers, timeout) and, where
/// those are not set, the variables the SDK's exporters read:
/// `OTEL_EXPORTER_OTLP_(LOGS_)ENDPOINT`, `_HEADERS`, `_TIMEOUT` and, over gRPC, `_CERTIFICATE`.
///
/// A batch the collector did not take is tried again: a connection refused or timed out,
/// gRPC `UNAVAILABLE`, HTTP 429, 502 or 503, and over HTTP a kept-alive connection closed
/// without an answer (of the failures the OTLP specification says to retry, those that say
/// nothing was taken). The waits start at 0.2 s and double up to
/// 5 s, each shortened by up to half at random, for up to 30 s from the first try
/// ([`OtlpOptions::log_retry`]): a collector's restart loses no record. Meanwhile later
/// batches wait in the queue. A shutdown ends the retries: a batch waiting gets one last try
/// at once.
///
/// A batch that got no answer within the timeout, or a gateway's 504, is not tried again: a
/// slow collector may have taken it, and a second copy would put its records twice in the
/// audit trail downstream. A connection closed without an answer is a collector that went
/// away; only one that crashed between taking a batch and answering it would get that batch
/// twice. Over gRPC a connection that breaks during the call (`CANCELLED`, `INTERNAL`,
/// `UNKNOWN`) is not retried; the next call reconnects. Other failures (a bad request, an
/// authentication error) are not retried.
///
/// - The thread runs at a lower priority than the service's threads
///   ([`lower_thread_priority`](crate::lower_thread_priority)): under full load, export work yields to requests instead of
///   holding them off.
/// - Over gRPC it drives its own connection on its own single-threaded Tokio runtime, never on
///   the service's workers.
/// - At most 8 batches wait; a batch that finds the queue full (a batch being retried holds
///   the queue up), or whose export fails for good (the collector refused it, did not answer
///   within the timeout, or stayed away for the 30 s of retries), is lost and counted in
///   [`lost`](Self::lost), as are the records a collector reports it rejected.
pub struct LogExport {
    tx: Mutex<Option<SyncSender<Msg>>>,
    lost: Arc<AtomicU64>,
    /// When shutdown began: batches still queued 5 s later are counted lost, not exported.
    stopping: Arc<OnceLock<Instant>>,
    done: Mutex<Option<Receiver<()>>>,
    /// Exported batches, emptied, for the caller to fill again.
    empties: Mutex<Receiver<LogBatch>>,
    schedule_delay: Duration,
    max_batch: usize,
}

impl std::fmt::Debug for LogExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogExport")
            .field("lost", &self.lost())
            .finish_non_exhaustive()
    }
}

impl LogExport {
    /// Starts the export thread and builds its connection there.
    pub(crate) fn start(
        o: &OtlpOptions,
        p: Protocol,
        resource: &opentelemetry_sdk::Resource,
        scope: &InstrumentationScope,
    ) -> Result<Self, PipelineError> {
        let (tx, rx) = sync_channel(QUEUE_BATCHES);
        let (built_tx, built_rx) = sync_channel(1);
        let (done_tx, done_rx) = sync_channel(1);
        let (empties_tx, empties_rx) = sync_channel(SPARE_BATCHES);
        let lost = Arc::new(AtomicU64::new(0));
        let o = o.clone();
        let frame = Arc::new(RequestFrame::new(resource, scope));
        let counted = lost.clone();
        let stopping = Arc::new(OnceLock::new());
        let stop = stopping.clone();
        std::thread::Builder::new()
            .name("authwatch-log-export".into())
            .spawn(move || {
                crate::lower_thread_priority();
                let mut transport = match Transport::build(&o, p) {
                    Ok(t) => {
                        let _ = built_tx.send(Ok(()));
                        t
                    }
                    Err(e) => {
                        let _ = built_tx.send(Err(e));
                        return;
                    }
                };
                run(
                    &rx,
                    &mut transport,
                    &Ctx {
                        frame: &frame,
                        lost: &counted,
                        stopping: &stop,
                        empties: &empties_tx,
                        retry_budget: o.log_retry.unwrap_or(RETRY_BUDGET),
                    },
                );
                drop(transport);
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
            schedule_delay: schedule_delay(env("OTEL_BLRP_SCHEDULE_DELAY").as_deref()),
            max_batch: max_export_batch(env("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE").as_deref()),
        })
    }

    /// How long a record should wait for its batch to fill before the batch is sent anyway:
    /// `OTEL_BLRP_SCHEDULE_DELAY` (milliseconds, the SDK batch log processor's variable; as
    /// for the timeout, surrounding spaces are allowed), else 1 s, its default.
    ///
    /// Each request costs the export thread (and the collector) about the same whatever its
    /// size up to the full batch: sending a steady trickle of records once a second instead
    /// of every few milliseconds is most of the export's CPU saved.
    #[must_use]
    pub fn schedule_delay(&self) -> Duration {
        self.schedule_delay
    }

    /// Most records in one batch: `OTEL_BLRP_MAX_EXPORT_BATCH_SIZE` (the SDK batch log
    /// processor's variable; a positive whole number, surrounding spaces allowed), else
    /// [`MAX_EXPORT_BATCH`](crate::MAX_EXPORT_BATCH) (2,048). The batches
    /// [`empty_batch`](Self::empty_batch) hands out are full at this many records, or at 1 MiB.
    #[must_use]
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// An empty batch to fill for the next [`send`](Self::send), full at
    /// [`max_batch`](Self::max_batch) records: one the export thread has exported and emptied
    /// when there is one (its buffer kept), a new one otherwise.
    ///
    /// Reusing batches keeps a steady stream of records from allocating a growing buffer per
    /// batch on the sending thread and freeing it on the export thread, which makes the
    /// allocator's per-thread arenas creep over hours.
    #[must_use]
    pub fn empty_batch(&self) -> LogBatch {
        self.empties
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_recv()
            .map_or_else(
                |_| LogBatch::with_max_records(self.max_batch),
                |mut b| {
                    b.set_max_records(self.max_batch);
                    b
                },
            )
    }

    /// Queues `batch` for export, as one request: send a batch once it
    /// [`is_full`](LogBatch::is_full) (a batch is not split here, and one larger than the
    /// collector takes, 4 MiB by default over gRPC, is refused whole and counted lost). Never
    /// blocks: when the queue is full or the export is shut down, the records are counted in
    /// [`lost`](Self::lost).
    pub fn send(&self, batch: LogBatch) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let sent = tx.as_ref().map(|tx| tx.try_send(Msg::Batch(batch)));
        match sent {
            Some(Ok(())) => {}
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => {
                self.lost.fetch_add(n, Ordering::Relaxed);
            }
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

    /// Records lost: the queue was full, the export failed, the collector reported them
    /// rejected, or they came after shutdown.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Exports what is queued (for up to 5 s; later batches are counted lost), stops the
    /// thread and closes its connection. Returns false when the thread did not finish in
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
