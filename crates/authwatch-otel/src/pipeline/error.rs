//! What can go wrong building the pipeline.

/// What went wrong building the pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A setting (from the builder or an `OTEL_*` variable) is invalid.
    #[error("OpenTelemetry configuration: {0}")]
    Config(String),
    /// The OTLP exporter could not be built (bad endpoint, missing TLS support, …).
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The Prometheus exporter could not be built.
    #[error("Prometheus exporter: {0}")]
    Prometheus(String),
}
