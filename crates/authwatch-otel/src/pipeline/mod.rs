//! The export pipeline: OTLP metrics and logs to a collector, Prometheus text for `/metrics`.
//!
//! [`Pipeline`] here; its settings in `options.rs`, its builder in `builder.rs`, the OTLP
//! exporters in `exporters.rs`, the gRPC export thread in `runtime.rs`.

// Without a transport, only the Prometheus exposition is built; the OTLP helpers sit unused.
#![cfg_attr(
    not(any(feature = "grpc", feature = "http")),
    allow(dead_code, unused_imports)
)]

mod builder;
mod error;
mod exporters;
mod options;
#[cfg(feature = "grpc")]
mod runtime;

use std::fmt;

use opentelemetry::metrics::Meter;
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

pub use builder::PipelineBuilder;
pub use error::PipelineError;
#[cfg(any(feature = "grpc", feature = "http"))]
pub(crate) use exporters::builder_headers;
#[cfg(feature = "grpc")]
pub(crate) use exporters::grpc_tls_config;
pub(crate) use options::env;
pub use options::{HistogramAggregation, OtlpOptions, Protocol};
#[cfg(feature = "grpc")]
use runtime::GrpcRuntime;

/// The instrumentation scope name of authwatch's instruments (`otel_scope_name` in Prometheus).
pub const SCOPE: &str = "authwatch";

/// The built pipeline: the meter providers authwatch records into and the logger provider.
///
/// Export runs on the SDK's own threads (and [`log_export`](Self::log_export)'s on its own),
/// never on a request: a slow or dead collector costs the service nothing but the exporter's
/// memory, bounded by the number of series.
pub struct Pipeline {
    resource: Resource,
    otlp: Option<SdkMeterProvider>,
    logs: Option<SdkLoggerProvider>,
    traces: Option<SdkTracerProvider>,
    prometheus: Option<(SdkMeterProvider, prometheus::Registry)>,
    meters: Vec<Meter>,
    protocol: Option<Protocol>,
    /// The settings and transport of the logs, for [`log_export`](Self::log_export).
    log_settings: Option<(OtlpOptions, Protocol)>,
    /// Where the gRPC exporters' connections run. Last, so that it outlives the providers
    /// above when the pipeline is dropped (their last export, on drop, needs it).
    #[cfg(feature = "grpc")]
    grpc_runtime: Option<GrpcRuntime>,
}

/// Flushes and stops the providers given; the first error, as [`Pipeline::shutdown`] says.
fn shut_down(
    otlp: Option<&SdkMeterProvider>,
    logs: Option<&SdkLoggerProvider>,
    traces: Option<&SdkTracerProvider>,
    prometheus: Option<&SdkMeterProvider>,
) -> Result<(), String> {
    use opentelemetry_sdk::error::OTelSdkError;
    let mut first = None;
    // A second shutdown is not an error worth reporting.
    let mut note = |what: &str, r: Result<(), OTelSdkError>| match r {
        Ok(()) | Err(OTelSdkError::AlreadyShutdown) => {}
        Err(e) => {
            first.get_or_insert(format!("{what}: {e}"));
        }
    };
    if let Some(p) = otlp {
        note("metrics", p.shutdown());
    }
    if let Some(p) = logs {
        note("logs", p.shutdown());
    }
    if let Some(p) = traces {
        note("traces", p.shutdown());
    }
    if let Some(p) = prometheus {
        let _ = p.shutdown();
    }
    first.map_or(Ok(()), Err)
}

/// Dropping the pipeline returns at once: the last flush and stop of its OTLP providers (as
/// [`shutdown`](Pipeline::shutdown)) run on a thread of their own, `authwatch-drop`, while
/// the gRPC export runtime they need still runs; the runtime goes after them.
///
/// The flush talks to the collector (up to the export timeout per signal), and a pipeline is
/// often dropped on a service's Tokio worker, which must not wait for it; nor may the
/// providers stop unflushed, since a logger or tracer provider held elsewhere (the `tracing`
/// bridges keep one) would export into a stopped runtime. Call
/// [`shutdown`](Pipeline::shutdown) (or `AuthWatch::shutdown().await`) before the process
/// exits to wait for that flush: a process that ends right after the drop ends the thread with
/// it.
impl Drop for Pipeline {
    fn drop(&mut self) {
        let otlp = self.otlp.take();
        let logs = self.logs.take();
        let traces = self.traces.take();
        let prometheus = self.prometheus.take().map(|(p, _)| p);
        #[cfg(feature = "grpc")]
        let runtime = self.grpc_runtime.take();
        let exports = otlp.is_some() || logs.is_some() || traces.is_some();
        let part = move || {
            let _ = shut_down(
                otlp.as_ref(),
                logs.as_ref(),
                traces.as_ref(),
                prometheus.as_ref(),
            );
            // The providers' last references (and the SDK's own export threads) first, then
            // the runtime their connections ran on.
            drop((otlp, logs, traces, prometheus));
            #[cfg(feature = "grpc")]
            drop(runtime);
        };
        if !exports {
            // Nothing goes over the network: `/metrics` alone stops at once.
            part();
        } else if let Err(e) = std::thread::Builder::new()
            .name("authwatch-drop".into())
            .spawn(part)
        {
            // The system refused a thread: the providers were dropped with the closure, and
            // the SDK flushed them on this one.
            tracing::warn!(error = %e, "authwatch: no thread for the last OTLP flush");
        }
    }
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Pipeline");
        d.field("otlp", &self.protocol)
            .field("logs", &self.logs.is_some())
            .field("traces", &self.traces.is_some())
            .field("prometheus", &self.prometheus.is_some())
            .field("meters", &self.meters.len());
        #[cfg(feature = "grpc")]
        d.field("grpc_export_thread", &self.grpc_runtime.is_some());
        d.finish()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(SCOPE)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

impl Pipeline {
    /// A builder: Prometheus exposition on, OTLP as the environment says.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder {
            prometheus: true,
            ..PipelineBuilder::default()
        }
    }

    /// The meters to record into: the OTLP one (or yours), and the `/metrics` one.
    #[must_use]
    pub fn meters(&self) -> &[Meter] {
        &self.meters
    }

    /// The meters whose latency histograms the OpenTelemetry SDK aggregates: all but the
    /// `/metrics` one, whose histograms [`OtelSink::for_pipeline`](crate::OtelSink::for_pipeline)
    /// counts itself.
    pub(crate) fn sdk_histogram_meters(&self) -> &[Meter] {
        match self.prometheus {
            // The `/metrics` meter is the last one.
            Some(_) => &self.meters[..self.meters.len() - 1],
            None => &self.meters,
        }
    }

    /// The registry behind `/metrics`, when the exposition is on.
    pub(crate) fn prometheus_registry(&self) -> Option<&prometheus::Registry> {
        self.prometheus.as_ref().map(|(_, r)| r)
    }

    /// The OTLP transport in use, `None` when OTLP export is off.
    #[must_use]
    pub fn otlp_protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// The OTLP logger provider, when OTLP log export is on; attach
    /// [`tracing_bridge`](Self::tracing_bridge) to your subscriber to send `tracing` events.
    #[must_use]
    pub fn logger_provider(&self) -> Option<&SdkLoggerProvider> {
        self.logs.as_ref()
    }

    /// A new dedicated OTLP log export (its own connection and thread, see
    /// [`LogExport`](crate::LogExport)) to the same collector as
    /// [`logger_provider`](Self::logger_provider), when OTLP log export is on; its records are
    /// exported under `scope` (an instrumentation scope name, such as `authwatch::audit`).
    /// authwatch sends its audit trail through one.
    ///
    /// # Errors
    ///
    /// [`PipelineError`] when the endpoint, headers or TLS settings are invalid or the thread
    /// cannot start.
    #[cfg(any(feature = "grpc", feature = "http"))]
    pub fn log_export(&self, scope: &str) -> Result<Option<crate::LogExport>, PipelineError> {
        let Some((o, p)) = &self.log_settings else {
            return Ok(None);
        };
        crate::LogExport::start(
            o,
            *p,
            &self.resource,
            &InstrumentationScope::builder(scope.to_owned())
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        )
        .map(Some)
    }

    /// The OTLP tracer provider, when OTLP trace export is on.
    #[must_use]
    pub fn tracer_provider(&self) -> Option<&SdkTracerProvider> {
        self.traces.as_ref()
    }

    /// A `tracing` layer that exports spans as OpenTelemetry traces over OTLP
    /// (`tracing-opentelemetry`): authwatch's `auth.request` and `auth.token_validation` spans,
    /// and your own. Add it to your subscriber; without it (or any subscriber), authwatch's
    /// spans are disabled and cost one relaxed load each.
    #[must_use]
    pub fn tracing_layer<S>(
        &self,
    ) -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use opentelemetry::trace::TracerProvider as _;
        self.traces.as_ref().map(|p| {
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer_with_scope(scope()))
                .with_tracked_inactivity(false)
        })
    }

    /// A `tracing` layer that sends events to the OTLP logger provider, for your own logs.
    /// authwatch's audit records (target `authwatch::audit`) are left out: they go to the
    /// provider directly, with their retention class, and would otherwise arrive twice. Filter
    /// out the exporters' own crates (`opentelemetry`, `tonic`, `h2`, `hyper`, `reqwest`) in
    /// front of it, or export failures would be logged into the exporter that failed.
    #[must_use]
    pub fn tracing_bridge<S>(
        &self,
    ) -> Option<impl tracing_subscriber::Layer<S> + Send + Sync + 'static>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::Layer as _;
        self.logs.as_ref().map(|p| {
            opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(p).with_filter(
                tracing_subscriber::filter::filter_fn(|m| m.target() != "authwatch::audit"),
            )
        })
    }

    /// The Prometheus text exposition (format 0.0.4) of every instrument, for `/metrics`.
    /// Observable gauges are read now, on the calling thread.
    #[must_use]
    pub fn render_prometheus(&self) -> Option<String> {
        use prometheus::Encoder as _;
        let (_, registry) = self.prometheus.as_ref()?;
        let mut buf = Vec::new();
        // Encoding into a Vec fails only for a metric family the registry itself rejected.
        if let Err(e) = prometheus::TextEncoder::new().encode(&registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "authwatch: could not encode /metrics");
        }
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Exports what is pending now. Blocks the calling thread (call it from
    /// `spawn_blocking` in async code).
    ///
    /// # Errors
    ///
    /// The first provider's error (the collector unreachable, …); the others are still flushed.
    pub fn force_flush(&self) -> Result<(), String> {
        let mut first = None;
        if let Some(p) = &self.otlp {
            if let Err(e) = p.force_flush() {
                first.get_or_insert(format!("metrics: {e}"));
            }
        }
        if let Some(p) = &self.logs {
            if let Err(e) = p.force_flush() {
                first.get_or_insert(format!("logs: {e}"));
            }
        }
        if let Some(p) = &self.traces {
            if let Err(e) = p.force_flush() {
                first.get_or_insert(format!("traces: {e}"));
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Flushes and stops every exporter. Blocks the calling thread. Later calls do nothing.
    ///
    /// # Errors
    ///
    /// As [`force_flush`](Self::force_flush).
    pub fn shutdown(&self) -> Result<(), String> {
        shut_down(
            self.otlp.as_ref(),
            self.logs.as_ref(),
            self.traces.as_ref(),
            self.prometheus.as_ref().map(|(p, _)| p),
        )
    }

    /// The `service.name` of the resource: the builder's, else `OTEL_SERVICE_NAME`, else
    /// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, else `unknown_service:<executable>`.
    #[must_use]
    pub fn service_name(&self) -> String {
        self.resource
            .get(&opentelemetry::Key::from_static_str("service.name"))
            .map_or_else(|| "unknown_service".to_owned(), |v| v.to_string())
    }
}
