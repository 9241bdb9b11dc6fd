//! How a batch reaches the collector: the transport built for the protocol, and what one try
//! gives back.

use std::sync::Arc;

#[cfg(feature = "grpc")]
use super::grpc;
#[cfg(feature = "http")]
use super::http_proto;
use crate::log_encode::{LogBatch, RequestFrame};
use crate::pipeline::{OtlpOptions, PipelineError, Protocol};

/// Why an export failed, whether trying the same batch again is safe and useful, and how
/// many tries it had.
#[derive(Debug)]
pub(super) struct Failed {
    pub(super) reason: String,
    /// The collector cannot have taken the batch, and may take it later.
    pub(super) retry: bool,
    pub(super) tries: u32,
}

impl Failed {
    pub(super) fn once(reason: impl Into<String>, retry: bool) -> Self {
        Self {
            reason: reason.into(),
            retry,
            tries: 1,
        }
    }
}

/// One try's outcome: the records the collector rejected, or why it failed; and the batch
/// back when the transport is done with it.
pub(super) type Tried = (Result<u64, Failed>, Option<LogBatch>);

/// How a batch reaches the collector: gRPC on the thread's own Tokio runtime (the
/// connection's tasks run inside it, during the export), or HTTP/protobuf with a blocking
/// client (which has its own thread and must not run inside a runtime).
pub(super) enum Transport {
    #[cfg(feature = "grpc")]
    Grpc(Box<grpc::Client>),
    #[cfg(feature = "http")]
    Http(http_proto::Client),
}

impl Transport {
    pub(super) fn build(o: &OtlpOptions, p: Protocol) -> Result<Self, PipelineError> {
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
    pub(super) fn export(&mut self, frame: &Arc<RequestFrame>, batch: LogBatch) -> Tried {
        match self {
            #[cfg(feature = "grpc")]
            Self::Grpc(c) => c.export(frame, batch),
            #[cfg(feature = "http")]
            Self::Http(c) => c.export(frame, batch),
        }
    }
}

/// The records a collector's `ExportLogsServiceResponse` says it rejected.
pub(super) fn rejected(
    resp: &opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse,
) -> u64 {
    resp.partial_success
        .as_ref()
        .map_or(0, |p| u64::try_from(p.rejected_log_records).unwrap_or(0))
}
