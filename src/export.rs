//! The export pipeline: OTLP to a collector (gRPC or HTTP/protobuf) and the Prometheus text of
//! `/metrics`. Set it up with the builder's `otlp_*` calls or one [`OtlpOptions`]; anything
//! left unset comes from the standard `OTEL_*` variables.
//!
//! ```
//! use std::time::Duration;
//! use authwatch::export::{OtlpOptions, Protocol};
//!
//! let watch = authwatch::AuthWatch::builder()
//!     .otlp_options(OtlpOptions::new().enabled(false).timeout(Duration::from_secs(5)))
//!     .build()?;
//! assert!(watch.pipeline().meters().len() == 1); // `/metrics` only
//! # let _ = Protocol::Grpc;
//! # Ok::<(), authwatch::BuildError>(())
//! ```

pub use authwatch_otel::{HistogramAggregation, OtlpOptions, Pipeline, PipelineError, Protocol};
pub use opentelemetry_sdk::metrics::Temporality;
