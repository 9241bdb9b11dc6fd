//! The thread and runtime the gRPC exporters' connections run on.

use super::PipelineError;

/// The thread the gRPC exporters' connections run on: a current-thread Tokio runtime driven by
/// a thread of its own, at a lower scheduling priority
/// ([`lower_thread_priority`](crate::lower_thread_priority)).
///
/// tonic spawns a channel's tasks (its request buffer, the HTTP/2 connection that encodes and
/// writes every export) on the runtime current when the exporter is built. Built inside the
/// service's runtime, they ran on the service's workers: each export's encoding ran between
/// two requests of the worker that polled it, a busy service delayed its own export, and a
/// service on a current-thread runtime that blocked stalled it. The audit trail's export
/// has had its own runtime from the start ([`LogExport`](crate::LogExport)); this gives the
/// SDK's exporters (metrics, logs, traces) the same.
#[cfg(feature = "grpc")]
pub(super) struct GrpcRuntime {
    pub(super) handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(feature = "grpc")]
impl GrpcRuntime {
    pub(super) fn start() -> Result<Self, PipelineError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PipelineError::Config(format!("cannot build the export runtime: {e}")))?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("authwatch-otlp".into())
            .spawn(move || {
                crate::lower_thread_priority();
                // Runs the connections' tasks until the pipeline goes; the runtime (and any
                // task still in it) is dropped here, outside any async context.
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| PipelineError::Config(format!("cannot start the export thread: {e}")))?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

#[cfg(feature = "grpc")]
impl Drop for GrpcRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
