//! The export thread's loop: each batch exported in turn, what is lost counted, failures and
//! recoveries said once, emptied batches handed back for reuse.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::retry::export_with_retries;
use super::transport::Transport;
use super::{Msg, SHUTDOWN_WAIT};
use crate::log_encode::{LogBatch, RequestFrame};

/// Exported batches with more room than this are let go rather than kept for reuse.
const SPARE_MAX_BYTES: usize = 2 << 20;

/// What the export thread's loop shares with the rest.
pub(super) struct Ctx<'a> {
    pub(super) frame: &'a Arc<RequestFrame>,
    pub(super) lost: &'a AtomicU64,
    pub(super) stopping: &'a OnceLock<Instant>,
    pub(super) empties: &'a SyncSender<LogBatch>,
    pub(super) retry_budget: Duration,
}

pub(super) fn run(rx: &Receiver<Msg>, transport: &mut Transport, cx: &Ctx<'_>) {
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
