//! OTLP over gRPC: a tonic channel driven on the export thread's own single-threaded runtime.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use super::settings::{endpoint, headers, timeout};
use super::transport::{rejected, Failed, Tried};
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
            .map_err(|e| PipelineError::Config(format!("cannot build the export runtime: {e}")))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread is held off (as by SIGSTOP) past the call's deadline while the answer
    /// arrives on a socket that another task reads: the call still gets its answer, where a
    /// plain timeout, polled first on waking, reports none.
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
                    answer_within(limit, rx).await.is_some()
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
}
