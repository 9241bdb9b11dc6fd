//! OTLP over HTTP/protobuf: a blocking reqwest client.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message as _;

use super::retry::retryable_status;
use super::settings::{endpoint, headers, timeout};
use super::transport::{rejected, Failed, Tried};
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
                    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
                    Err(Failed::once(
                        format!("HTTP {status}: {text}"),
                        retryable_status(status),
                    ))
                }
            });
        (sent, Some(batch))
    }
}

/// The causes of `e`, each after ": " (reqwest's own message, "error sending request", names
/// none of them).
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
