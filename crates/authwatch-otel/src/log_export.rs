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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry::InstrumentationScope;

use crate::log_encode::{LogBatch, RequestFrame};
use crate::pipeline::{builder_headers, env, OtlpOptions, PipelineError, Protocol};

/// Batches waiting for the export thread; beyond, a new batch is lost and counted.
const QUEUE_BATCHES: usize = 8;
/// Exported batches kept for reuse (see [`LogExport::empty_batch`]).
const SPARE_BATCHES: usize = 2;
/// Exported batches with more room than this are let go rather than kept for reuse.
const SPARE_MAX_BYTES: usize = 2 << 20;
/// How long [`LogExport::shutdown`] waits for the export thread.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// An export's timeout when neither the builder nor `OTEL_EXPORTER_OTLP_(LOGS_)TIMEOUT` sets
/// one (the OTLP exporter specification's default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a record may wait for a batch to fill when `OTEL_BLRP_SCHEDULE_DELAY` does not say
/// (the SDK's batch log processor's default).
const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_millis(1000);
/// The first wait before a batch the collector did not take is tried again; each later wait
/// doubles, up to [`RETRY_MAX_WAIT`].
const RETRY_FIRST_WAIT: Duration = Duration::from_millis(200);
/// The longest wait between two tries of one batch.
const RETRY_MAX_WAIT: Duration = Duration::from_secs(5);
/// How often a wait between two tries looks for a shutdown.
const SLICE: Duration = Duration::from_millis(50);
/// How long one batch is tried for, from its first try, unless
/// [`OtlpOptions::log_retry`] says otherwise: long enough for a collector's restart.
const RETRY_BUDGET: Duration = Duration::from_secs(30);

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

    /// An empty batch to fill for the next [`send`](Self::send): one the export thread has
    /// exported and emptied when there is one (its buffer kept), a new one otherwise.
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
            .unwrap_or_default()
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

/// What the export thread's loop shares with the rest.
struct Ctx<'a> {
    frame: &'a Arc<RequestFrame>,
    lost: &'a AtomicU64,
    stopping: &'a OnceLock<Instant>,
    empties: &'a SyncSender<LogBatch>,
    retry_budget: Duration,
}

fn run(rx: &Receiver<Msg>, transport: &mut Transport, cx: &Ctx<'_>) {
    let Ctx {
        frame,
        lost,
        stopping,
        empties,
        retry_budget,
    } = *cx;
    // The transport's own logs (tonic, hyper, reqwest) must not come back as records.
    let _quiet = opentelemetry::Context::enter_telemetry_suppressed_scope();
    let mut failing = false;
    let mut rejecting = false;
    // Once the sender is gone, what is queued still goes out, within a bound.
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Flush(ack) => {
                let _ = ack.try_send(());
            }
            Msg::Batch(batch) => {
                let n = batch.len() as u64;
                if stopping.get().is_some_and(|t| t.elapsed() >= SHUTDOWN_WAIT) {
                    lost.fetch_add(n, Ordering::Relaxed);
                    continue;
                }
                let (sent, batch) =
                    export_with_retries(transport, frame, batch, stopping, retry_budget);
                match sent {
                    Ok(rejected) => {
                        // A collector cannot reject more than it was sent.
                        let rejected = rejected.min(n);
                        lost.fetch_add(rejected, Ordering::Relaxed);
                        if failing {
                            failing = false;
                            tracing::info!(
                                target: "authwatch::export",
                                "authwatch: audit log export recovered"
                            );
                        }
                        // Said once until a batch goes through whole again.
                        if rejected > 0 && !std::mem::replace(&mut rejecting, true) {
                            tracing::warn!(
                                target: "authwatch::export",
                                name = "AuditLogExport.Rejected",
                                records = rejected,
                                "authwatch: the collector rejected audit records; they are \
                                 counted in auth.audit.export.lost.count"
                            );
                        }
                        rejecting &= rejected > 0;
                    }
                    Err(e) => {
                        lost.fetch_add(n, Ordering::Relaxed);
                        if !failing {
                            failing = true;
                            tracing::warn!(
                                target: "authwatch::export",
                                name = "AuditLogExport.Failed",
                                error = %e.reason,
                                tries = e.tries,
                                records = n,
                                "authwatch: audit log export failed; records are counted in \
                                 auth.audit.export.lost.count until it recovers"
                            );
                        }
                    }
                }
                // Emptied here, refilled by the sender; an oversized one is let go.
                if let Some(mut batch) = batch {
                    batch.clear();
                    if batch.capacity() <= SPARE_MAX_BYTES {
                        let _ = empties.try_send(batch);
                    }
                }
            }
        }
    }
}

/// Why an export failed, whether trying the same batch again is safe and useful, and how
/// many tries it had.
#[derive(Debug)]
struct Failed {
    reason: String,
    /// The collector cannot have taken the batch, and may take it later.
    retry: bool,
    tries: u32,
}

impl Failed {
    fn once(reason: impl Into<String>, retry: bool) -> Self {
        Self {
            reason: reason.into(),
            retry,
            tries: 1,
        }
    }
}

/// One try's outcome: the records the collector rejected, or why it failed; and the batch
/// back when the transport is done with it.
type Tried = (Result<u64, Failed>, Option<LogBatch>);

/// Exports `batch`, trying it again while the failure is retryable (see [`LogExport`]), the
/// batch is back from the transport, and `budget` lasts. A shutdown ends the retries: a
/// batch waiting for its next try gets it at once, and no more.
fn export_with_retries(
    transport: &mut Transport,
    frame: &Arc<RequestFrame>,
    batch: LogBatch,
    stopping: &OnceLock<Instant>,
    budget: Duration,
) -> Tried {
    let first = Instant::now();
    let mut batch = batch;
    let mut tries = 0;
    loop {
        tries += 1;
        // A panicking transport loses this batch (counted), not the thread.
        let (sent, back) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            transport.export(frame, batch)
        }))
        .unwrap_or_else(|_| (Err(Failed::once("the transport panicked", false)), None));
        let mut failed = match sent {
            Err(f) => f,
            ok => return (ok, back),
        };
        failed.tries = tries;
        // Only a batch the transport gave back can go again.
        let back = match back {
            Some(b) if failed.retry => b,
            other => return (Err(failed), other),
        };
        let wait = retry_wait(tries, jitter());
        // Saturating: a budget of `Duration::MAX` means for as long as it takes.
        if stopping.get().is_some() || first.elapsed().saturating_add(wait) >= budget {
            return (Err(failed), Some(back));
        }
        // A shutdown cuts the wait short: the batch gets one more try at once.
        let wake = Instant::now() + wait;
        while Instant::now() < wake && stopping.get().is_none() {
            std::thread::sleep(wake.saturating_duration_since(Instant::now()).min(SLICE));
        }
        batch = back;
    }
}

/// The wait after the `tries`-th failed try: 0.2 s doubling per try up to 5 s, scaled by
/// `jitter` (in [0.5, 1]) so that services restarted together do not retry in step.
fn retry_wait(tries: u32, jitter: f64) -> Duration {
    let doubled = RETRY_FIRST_WAIT.saturating_mul(1 << tries.saturating_sub(1).min(16));
    doubled.min(RETRY_MAX_WAIT).mul_f64(jitter.clamp(0.5, 1.0))
}

/// A number in [0.5, 1), from the standard library's randomly keyed hasher.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(0);
    #[allow(clippy::cast_precision_loss)]
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    0.5 + unit / 2.0
}

/// The timeout of one export: the builder's, else `OTEL_EXPORTER_OTLP_LOGS_TIMEOUT`, else
/// `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), else 10 s.
fn timeout(o: &OtlpOptions) -> Duration {
    o.timeout
        .or_else(|| {
            [
                "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ]
            .iter()
            .find_map(|v| env(v)?.trim().parse().ok())
            .map(Duration::from_millis)
        })
        .unwrap_or(DEFAULT_TIMEOUT)
}

/// The value of `OTEL_BLRP_SCHEDULE_DELAY` (milliseconds, spaces trimmed), else 1 s. An
/// unreadable value is ignored, as the SDK ignores it.
fn schedule_delay(v: Option<&str>) -> Duration {
    v.and_then(|v| v.trim().parse().ok())
        .map_or(DEFAULT_SCHEDULE_DELAY, Duration::from_millis)
}

/// `key=value` pairs separated by commas, values percent-decoded, as in
/// `OTEL_EXPORTER_OTLP_HEADERS`; pairs without a key or a value are skipped.
fn parse_headers(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let (k, v) = (k.trim(), v.trim());
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .map_or_else(|_| v.to_owned(), std::borrow::Cow::into_owned);
            (!k.is_empty() && !v.is_empty()).then(|| (k.to_owned(), v))
        })
        .collect()
}

/// The builder's headers, then those of `OTEL_EXPORTER_OTLP_LOGS_HEADERS` (else
/// `OTEL_EXPORTER_OTLP_HEADERS`), which replace the builder's of the same name, as the SDK's
/// exporters merge them. A bad name or value is an error from the builder and skipped from the
/// environment, as the SDK does.
fn headers(o: &OtlpOptions) -> Result<http::HeaderMap, PipelineError> {
    let mut out = builder_headers(o)?;
    let from_env = env("OTEL_EXPORTER_OTLP_LOGS_HEADERS")
        .or_else(|| env("OTEL_EXPORTER_OTLP_HEADERS"))
        .map(|s| parse_headers(&s))
        .unwrap_or_default();
    for (k, v) in from_env {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            out.insert(name, value);
        }
    }
    Ok(out)
}

/// The endpoint logs go to: the builder's (plus `/v1/logs` over HTTP), else
/// `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` as it is, else `OTEL_EXPORTER_OTLP_ENDPOINT` (plus
/// `/v1/logs` over HTTP), else the local collector's default port. One without a scheme gets
/// `https://`, or `http://` when `OTEL_EXPORTER_OTLP_(LOGS_)INSECURE` is `true`, as the SDK's
/// exporters do.
fn endpoint(o: &OtlpOptions, p: Protocol) -> String {
    let e = resolve_endpoint(o, p);
    if e.contains("://") {
        return e;
    }
    let insecure = [
        "OTEL_EXPORTER_OTLP_LOGS_INSECURE",
        "OTEL_EXPORTER_OTLP_INSECURE",
    ]
    .iter()
    .find_map(|v| env(v))
    .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    format!("{}://{e}", if insecure { "http" } else { "https" })
}

fn resolve_endpoint(o: &OtlpOptions, p: Protocol) -> String {
    if let Some(e) = o.signal_endpoint(p, "/v1/logs") {
        return e;
    }
    if let Some(e) = env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT") {
        return e.trim().to_owned();
    }
    let base = env("OTEL_EXPORTER_OTLP_ENDPOINT");
    match p {
        Protocol::Grpc => {
            base.map_or_else(|| "http://localhost:4317".into(), |b| b.trim().to_owned())
        }
        Protocol::HttpProtobuf => format!(
            "{}/v1/logs",
            base.as_deref()
                .map_or("http://localhost:4318", |b| b.trim().trim_end_matches('/'))
        ),
    }
}

/// How a batch reaches the collector: gRPC on the thread's own Tokio runtime (the
/// connection's tasks run inside it, during the export), or HTTP/protobuf with a blocking
/// client (which has its own thread and must not run inside a runtime).
enum Transport {
    #[cfg(feature = "grpc")]
    Grpc(Box<grpc::Client>),
    #[cfg(feature = "http")]
    Http(http_proto::Client),
}

impl Transport {
    fn build(o: &OtlpOptions, p: Protocol) -> Result<Self, PipelineError> {
        match p {
            #[cfg(feature = "grpc")]
            Protocol::Grpc => Ok(Self::Grpc(Box::new(grpc::Client::build(o)?))),
            #[cfg(feature = "http")]
            Protocol::HttpProtobuf => Ok(Self::Http(http_proto::Client::build(o)?)),
            #[allow(unreachable_patterns)]
            other => Err(PipelineError::Config(format!(
                "OTLP protocol {other:?} is not built in (enable the authwatch-otel feature)"
            ))),
        }
    }

    /// Exports `batch` once: the records the collector rejected, or why the export failed;
    /// and the batch back for reuse (or a retry) when the transport is done with it.
    fn export(&mut self, frame: &Arc<RequestFrame>, batch: LogBatch) -> Tried {
        match self {
            #[cfg(feature = "grpc")]
            Self::Grpc(c) => c.export(frame, batch),
            #[cfg(feature = "http")]
            Self::Http(c) => c.export(frame, batch),
        }
    }
}

/// The records a collector's `ExportLogsServiceResponse` says it rejected.
fn rejected(
    resp: &opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse,
) -> u64 {
    resp.partial_success
        .as_ref()
        .map_or(0, |p| u64::try_from(p.rejected_log_records).unwrap_or(0))
}

#[cfg(feature = "grpc")]
mod grpc {
    use std::sync::Arc;
    use std::time::Duration;

    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
    use prost::Message as _;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::transport::{Channel, Endpoint};

    use super::{endpoint, headers, rejected, timeout, Failed, Tried};
    use crate::log_encode::{LogBatch, RequestFrame};
    use crate::pipeline::{grpc_tls_config, OtlpOptions, PipelineError, Protocol};

    const PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

    pub(super) struct Client {
        rt: tokio::runtime::Runtime,
        grpc: tonic::client::Grpc<Channel>,
        metadata: tonic::metadata::MetadataMap,
        timeout: Duration,
    }

    impl Client {
        pub(super) fn build(o: &OtlpOptions) -> Result<Self, PipelineError> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    PipelineError::Config(format!("cannot build the export runtime: {e}"))
                })?;
            let url = endpoint(o, Protocol::Grpc);
            let timeout = timeout(o);
            // No per-request timeout in the channel: `answer_within` below is the one, and it
            // reads an answer that arrived while this thread was held off. The connection gets
            // half of it, so that a collector whose address drops connection attempts fails as
            // `UNAVAILABLE` (nothing sent: retried), not as a call without an answer.
            let mut ep = Endpoint::from_shared(url.clone())
                .map_err(|e| PipelineError::Config(format!("OTLP logs endpoint {url:?}: {e}")))?
                .connect_timeout(timeout / 2);
            if url.starts_with("https://") {
                ep = ep
                    .tls_config(grpc_tls_config("LOGS")?)
                    .map_err(|e| PipelineError::Config(format!("OTLP logs TLS: {e}")))?;
            }
            let channel = {
                let _in = rt.enter();
                ep.connect_lazy()
            };
            Ok(Self {
                rt,
                grpc: tonic::client::Grpc::new(channel),
                metadata: tonic::metadata::MetadataMap::from_headers(headers(o)?),
                timeout,
            })
        }

        pub(super) fn export(&mut self, frame: &Arc<RequestFrame>, batch: LogBatch) -> Tried {
            let batch = Arc::new(batch);
            let mut req = tonic::Request::new(batch.clone());
            *req.metadata_mut() = self.metadata.clone();
            let codec = RawCodec {
                frame: frame.clone(),
            };
            let grpc = &mut self.grpc;
            let sent = self.rt.block_on(async {
                let call = async {
                    grpc.ready().await.map_err(|e| {
                        Failed::once(format!("the collector is not reachable: {e}"), true)
                    })?;
                    grpc.unary(req, http::uri::PathAndQuery::from_static(PATH), codec)
                        .await
                        .map_err(|s| status_failed(&s))
                };
                match answer_within(self.timeout, call).await {
                    Some(r) => r.map(|resp| rejected(resp.get_ref())),
                    None => Err(Failed::once(
                        format!("no answer within {:?}", self.timeout),
                        false,
                    )),
                }
            });
            (sent, Arc::try_unwrap(batch).ok())
        }
    }

    /// How many times a call past its deadline is polled again after the runtime's other
    /// tasks (the connection's) have run: an answer goes from the socket through the
    /// connection's task and the channel's buffer to the call, a task or two per hop.
    const GRACE_POLLS: usize = 8;

    /// `call`'s output, or `None` when it is not ready within `limit`.
    ///
    /// A thread held off past the deadline (the process stopped, or this low-priority thread
    /// starved under load) wakes with the timer and the connection both ready, and the
    /// runtime polls this future first: a plain timeout would report a batch the collector
    /// answered long ago as unanswered, and count it lost. So a call past its deadline gets
    /// [`GRACE_POLLS`] more polls, each after the runtime has polled its sockets and run the
    /// connection's tasks; only a call still pending then has timed out.
    pub(super) async fn answer_within<F: std::future::Future>(
        limit: Duration,
        call: F,
    ) -> Option<F::Output> {
        use std::task::Poll;
        let mut call = std::pin::pin!(call);
        if let Ok(out) = tokio::time::timeout(limit, call.as_mut()).await {
            return Some(out);
        }
        for _ in 0..GRACE_POLLS {
            tokio::task::yield_now().await;
            let polled = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
            if let Poll::Ready(out) = polled {
                return Some(out);
            }
        }
        None
    }

    /// A failed call: retried only when `UNAVAILABLE` (no connection, or a collector that
    /// is shutting down or overloaded and took nothing). `DEADLINE_EXCEEDED` and `CANCELLED`,
    /// retryable in the specification, may come after the collector took the batch.
    pub(super) fn status_failed(s: &tonic::Status) -> Failed {
        Failed::once(
            format!("{}: {}", s.code(), s.message()),
            s.code() == tonic::Code::Unavailable,
        )
    }

    /// Writes the request straight from the encoded batch; reads the response with prost.
    struct RawCodec {
        frame: Arc<RequestFrame>,
    }

    struct RawEncoder(Arc<RequestFrame>);
    struct ResponseDecoder;

    impl Codec for RawCodec {
        type Encode = Arc<LogBatch>;
        type Decode = ExportLogsServiceResponse;
        type Encoder = RawEncoder;
        type Decoder = ResponseDecoder;

        fn encoder(&mut self) -> RawEncoder {
            RawEncoder(self.frame.clone())
        }

        fn decoder(&mut self) -> ResponseDecoder {
            ResponseDecoder
        }
    }

    impl Encoder for RawEncoder {
        type Item = Arc<LogBatch>;
        type Error = tonic::Status;

        fn encode(
            &mut self,
            item: Arc<LogBatch>,
            dst: &mut EncodeBuf<'_>,
        ) -> Result<(), tonic::Status> {
            self.0.write(&item, dst);
            Ok(())
        }
    }

    impl Decoder for ResponseDecoder {
        type Item = ExportLogsServiceResponse;
        type Error = tonic::Status;

        fn decode(
            &mut self,
            src: &mut DecodeBuf<'_>,
        ) -> Result<Option<ExportLogsServiceResponse>, tonic::Status> {
            ExportLogsServiceResponse::decode(src)
                .map(Some)
                .map_err(|e| tonic::Status::internal(format!("bad response: {e}")))
        }
    }
}

#[cfg(feature = "http")]
mod http_proto {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
    use prost::Message as _;

    use super::{
        endpoint, headers, rejected, retryable_status, source_chain, timeout, Failed, Tried,
    };
    use crate::log_encode::{LogBatch, RequestFrame};
    use crate::pipeline::{OtlpOptions, PipelineError, Protocol};

    pub(super) struct Client {
        client: reqwest::blocking::Client,
        url: String,
        headers: http::HeaderMap,
    }

    impl Client {
        pub(super) fn build(o: &OtlpOptions) -> Result<Self, PipelineError> {
            // Connecting gets half the timeout, as over gRPC: a connection attempt that times
            // out sent nothing, and is retried.
            let client = reqwest::blocking::Client::builder()
                .timeout(timeout(o))
                .connect_timeout(timeout(o) / 2)
                .build()
                .map_err(|e| PipelineError::Config(format!("cannot build the HTTP client: {e}")))?;
            let mut headers = headers(o)?;
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-protobuf"),
            );
            Ok(Self {
                client,
                url: endpoint(o, Protocol::HttpProtobuf),
                headers,
            })
        }

        pub(super) fn export(&mut self, frame: &RequestFrame, batch: LogBatch) -> Tried {
            let mut body = Vec::with_capacity(batch.encoded().len() + 256);
            frame.write(&batch, &mut body);
            let sent = self
                .client
                .post(&self.url)
                .headers(self.headers.clone())
                .body(body)
                .send()
                // A connection refused or timed out, or one closed without an answer (a
                // kept-alive connection to a collector that has since restarted), is retried;
                // a timeout of the request is not: it may come after the collector took the
                // batch.
                .map_err(|e| {
                    let retry = e.is_connect() || (!e.is_timeout() && e.is_request());
                    Failed::once(format!("{e}{}", source_chain(&e)), retry)
                })
                .and_then(|resp| {
                    let status = resp.status();
                    let bytes = resp.bytes().unwrap_or_default();
                    if status.is_success() {
                        Ok(ExportLogsServiceResponse::decode(bytes).map_or(0, |r| rejected(&r)))
                    } else {
                        let text =
                            String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
                        Err(Failed::once(
                            format!("HTTP {status}: {text}"),
                            retryable_status(status),
                        ))
                    }
                });
            (sent, Some(batch))
        }
    }
}

/// The causes of `e`, each after ": " (reqwest's own message, "error sending request", names
/// none of them).
#[cfg(feature = "http")]
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The HTTP answers retried: of those the OTLP specification says to retry (429, 502, 503,
/// 504), the ones that say the collector did not take the batch. A 504 is a gateway that
/// timed out waiting for the collector, which may have taken it: not retried, as a timeout
/// of our own is not.
#[cfg(any(feature = "http", test))]
fn retryable_status(s: http::StatusCode) -> bool {
    matches!(s.as_u16(), 429 | 502 | 503)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_waits_double_to_five_seconds_with_jitter() {
        let ms = |t, j| retry_wait(t, j).as_millis();
        assert_eq!(
            (1..=7).map(|t| ms(t, 1.0)).collect::<Vec<_>>(),
            [200, 400, 800, 1600, 3200, 5000, 5000]
        );
        assert_eq!(ms(1, 0.5), 100);
        assert_eq!(ms(40, 0.75), 3750);
        // Out-of-range jitter is clamped.
        assert_eq!((ms(2, 0.0), ms(2, 9.0)), (200, 400));
        let j: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(j.iter().all(|j| (0.5..1.0).contains(j)), "{j:?}");
        assert!(j.iter().any(|x| *x != j[0]), "the jitter varies");
    }

    /// The thread is held off (as by SIGSTOP) past the call's deadline while the answer
    /// arrives on a socket that another task reads: the call still gets its answer, where a
    /// plain timeout, polled first on waking, reports none.
    #[cfg(feature = "grpc")]
    #[test]
    fn an_answer_that_came_while_the_thread_was_held_off_is_read() {
        use std::io::Write as _;
        use std::sync::mpsc::channel;
        use tokio::io::AsyncReadExt as _;

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let run = |grace: bool| {
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let (go_tx, go_rx) = channel::<()>();
                let (wrote_tx, wrote_rx) = channel::<()>();
                // The collector, on another thread: answers once this one is held off.
                let collector = std::thread::spawn(move || {
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    go_rx.recv().unwrap();
                    s.write_all(b"x").unwrap();
                    wrote_tx.send(()).unwrap();
                    s
                });
                let (mut sock, _) = listener.accept().await.unwrap();
                // The connection's task: the answer reaches the call through it.
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(async move {
                    let mut b = [0; 1];
                    sock.read_exact(&mut b).await.unwrap();
                    let _ = tx.send(());
                });
                // Holds the runtime's only thread until the answer is in the socket and the
                // deadline has passed.
                tokio::spawn(async move {
                    go_tx.send(()).unwrap();
                    wrote_rx.recv().unwrap();
                    std::thread::sleep(Duration::from_millis(150));
                });
                let limit = Duration::from_millis(100);
                let answered = if grace {
                    grpc::answer_within(limit, rx).await.is_some()
                } else {
                    tokio::time::timeout(limit, rx).await.is_ok()
                };
                drop(collector.join());
                answered
            })
        };
        assert!(run(true), "the answer in the socket was not read");
        assert!(
            !run(false),
            "a plain timeout read it too: the test no longer holds"
        );
    }

    #[test]
    fn only_failures_that_cannot_have_delivered_are_retried() {
        for code in [429, 502, 503] {
            assert!(
                retryable_status(http::StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 413, 500, 504] {
            assert!(
                !retryable_status(http::StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
        #[cfg(feature = "grpc")]
        {
            assert!(grpc::status_failed(&tonic::Status::unavailable("down")).retry);
            for s in [
                tonic::Status::deadline_exceeded("slow"),
                tonic::Status::cancelled("timeout"),
                tonic::Status::invalid_argument("bad"),
                tonic::Status::unauthenticated("key"),
                tonic::Status::resource_exhausted("no RetryInfo"),
            ] {
                assert!(!grpc::status_failed(&s).retry, "{s:?}");
            }
        }
    }

    #[test]
    fn headers_parse_as_the_otlp_variables_write_them() {
        assert_eq!(
            parse_headers(" api-key = a%20b%2Cc ,x=1,=skipped,novalue=, bare ,y=%zz"),
            vec![
                ("api-key".to_owned(), "a b,c".to_owned()),
                ("x".to_owned(), "1".to_owned()),
                ("y".to_owned(), "%zz".to_owned()),
            ]
        );
        let o = OtlpOptions {
            headers: vec![("Api-Key".into(), "from-builder".into())],
            ..OtlpOptions::default()
        };
        let h = headers(&o).unwrap();
        assert_eq!(h.get_all("api-key").iter().count(), 1);
        assert_eq!(h["api-key"], "from-builder");
        let bad = OtlpOptions {
            headers: vec![("bad name".into(), "v".into())],
            ..OtlpOptions::default()
        };
        assert!(headers(&bad).is_err());
        // The endpoint keeps its scheme; one without gets https:// (no INSECURE set here).
        let o = OtlpOptions {
            endpoint: Some("collector:4317".into()),
            ..OtlpOptions::default()
        };
        assert_eq!(endpoint(&o, Protocol::Grpc), "https://collector:4317");
    }

    #[test]
    fn the_endpoint_gets_the_logs_path_over_http_only() {
        let o = OtlpOptions {
            endpoint: Some("http://collector:4318/".into()),
            ..OtlpOptions::default()
        };
        assert_eq!(
            endpoint(&o, Protocol::HttpProtobuf),
            "http://collector:4318/v1/logs"
        );
        assert_eq!(endpoint(&o, Protocol::Grpc), "http://collector:4318");
        let o = OtlpOptions {
            timeout: Some(Duration::from_millis(1500)),
            ..OtlpOptions::default()
        };
        assert_eq!(timeout(&o), Duration::from_millis(1500));
    }

    #[test]
    fn the_schedule_delay_is_read_in_milliseconds() {
        assert_eq!(schedule_delay(None), Duration::from_secs(1));
        assert_eq!(schedule_delay(Some(" 250 ")), Duration::from_millis(250));
        assert_eq!(schedule_delay(Some("0")), Duration::ZERO);
        assert_eq!(schedule_delay(Some("2s")), Duration::from_secs(1));
        assert_eq!(schedule_delay(Some("-5")), Duration::from_secs(1));
    }
}
