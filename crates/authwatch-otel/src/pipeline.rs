//! The export pipeline: OTLP metrics and logs to a collector, Prometheus text for `/metrics`.

// Without a transport, only the Prometheus exposition is built; the OTLP helpers sit unused.
#![cfg_attr(
    not(any(feature = "grpc", feature = "http")),
    allow(dead_code, unused_imports)
)]

use std::fmt;
use std::time::Duration;

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{
    Aggregation, Instrument, InstrumentKind, PeriodicReader, SdkMeterProvider, Stream, Temporality,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// The instrumentation scope name of authwatch's instruments (`otel_scope_name` in Prometheus).
pub const SCOPE: &str = "authwatch";

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// gRPC (tonic), usually port 4317. Needs the `grpc` feature. The connections run on a
    /// thread of authwatch's own (`authwatch-otlp`), not on the service's Tokio workers, so
    /// the pipeline builds inside or outside a runtime.
    Grpc,
    /// HTTP with protobuf bodies, usually port 4318. Needs the `http` feature.
    HttpProtobuf,
}

impl Protocol {
    /// Reads an `OTEL_EXPORTER_OTLP_PROTOCOL` value (`grpc`, `http/protobuf`).
    ///
    /// # Errors
    ///
    /// Any other value, `http/json` included (not built in).
    pub fn parse(s: &str) -> Result<Self, PipelineError> {
        match s.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            other => Err(PipelineError::Config(format!(
                "OTLP protocol {other:?}: expected \"grpc\" or \"http/protobuf\""
            ))),
        }
    }
}

/// How the OTLP pipeline aggregates the latency histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HistogramAggregation {
    /// Explicit buckets tuned for auth latencies, [`LATENCY_BUCKETS_MS`](crate::LATENCY_BUCKETS_MS).
    #[default]
    Explicit,
    /// Base-2 exponential buckets (160 buckets, scale up to 20): mergeable across instances,
    /// what Datadog and Prometheus native histograms want. Only on the OTLP path; `/metrics`
    /// always shows explicit buckets (the text format has no exponential histograms).
    Exponential,
}

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

/// Settings of the OTLP export, from the builder; anything unset falls back to the standard
/// `OTEL_*` variables, then to the OpenTelemetry defaults.
///
/// Built with its setters, so that a new setting is not a breaking change:
///
/// ```
/// use std::time::Duration;
/// use authwatch_otel::{OtlpOptions, Protocol};
///
/// let options = OtlpOptions::new()
///     .endpoint("http://collector:4317")
///     .protocol(Protocol::Grpc)
///     .header("x-api-key", "secret")
///     .timeout(Duration::from_secs(5));
/// assert_eq!(options.endpoint.as_deref(), Some("http://collector:4317"));
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
#[non_exhaustive]
pub struct OtlpOptions {
    /// `Some(false)` turns OTLP off whatever the environment says; `Some(true)` turns it on with
    /// the default endpoint.
    pub enabled: Option<bool>,
    /// The collector's base URL (`http://collector:4318`, `https://collector:4317`); for HTTP,
    /// `/v1/metrics` and `/v1/logs` are appended.
    pub endpoint: Option<String>,
    /// The transport.
    pub protocol: Option<Protocol>,
    /// Extra headers (HTTP) or metadata (gRPC), such as an API key.
    pub headers: Vec<(String, String)>,
    /// Timeout of one export.
    pub timeout: Option<Duration>,
    /// How long the audit trail's log export keeps trying a batch the collector did not take
    /// (refused connection, `UNAVAILABLE`, HTTP 503, …; see [`LogExport`](crate::LogExport)),
    /// from its first try; default 30 s. `Duration::ZERO` tries each batch once.
    pub log_retry: Option<Duration>,
    /// How often metrics are exported.
    pub interval: Option<Duration>,
    /// Cumulative (the default), delta or low-memory temporality.
    pub temporality: Option<Temporality>,
    /// Explicit or exponential latency histograms; default
    /// `OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION` (`explicit_bucket_histogram`
    /// or `base2_exponential_bucket_histogram`), else explicit.
    pub histogram: Option<HistogramAggregation>,
    /// Export logs (the tracing bridge) over OTLP; see [`logs_enabled`](Self::logs_enabled).
    pub logs: Option<bool>,
    /// Export traces (authwatch's `auth.request` spans and yours, through
    /// [`Pipeline::tracing_layer`]) over OTLP; see [`traces_enabled`](Self::traces_enabled).
    pub traces: Option<bool>,
}

pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `OTEL_SDK_DISABLED=true`, or `var` (`OTEL_METRICS_EXPORTER`, `OTEL_LOGS_EXPORTER`) is `none`.
fn switched_off(var: &str) -> bool {
    env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env(var).is_some_and(|v| v.trim() == "none")
}

impl OtlpOptions {
    /// Nothing set: every setting from the `OTEL_*` variables, else the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Turns OTLP export off (`false`) whatever the environment says, or on (`true`).
    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = Some(on);
        self
    }

    /// The collector's base URL; turns OTLP export on.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The transport.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Adds a header (HTTP) or metadata entry (gRPC) sent with every export.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The timeout of one export.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How long the audit trail's log export keeps trying a batch the collector did not take.
    pub fn log_retry(mut self, budget: Duration) -> Self {
        self.log_retry = Some(budget);
        self
    }

    /// How often metrics are exported.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// Cumulative, delta or low-memory temporality.
    pub fn temporality(mut self, temporality: Temporality) -> Self {
        self.temporality = Some(temporality);
        self
    }

    /// Explicit or exponential latency histograms.
    pub fn histogram(mut self, aggregation: HistogramAggregation) -> Self {
        self.histogram = Some(aggregation);
        self
    }

    /// Whether logs (the tracing bridge and the audit trail) are exported over OTLP.
    pub fn logs(mut self, on: bool) -> Self {
        self.logs = Some(on);
        self
    }

    /// Whether traces are exported over OTLP.
    pub fn traces(mut self, on: bool) -> Self {
        self.traces = Some(on);
        self
    }

    /// `later` applied over these options, field by field: what `later` sets wins, what it
    /// leaves unset keeps its value here; its headers are added to these, each replacing one
    /// of the same name (names compare without case).
    pub fn merge(mut self, later: Self) -> Self {
        let Self {
            enabled,
            endpoint,
            protocol,
            headers,
            timeout,
            log_retry,
            interval,
            temporality,
            histogram,
            logs,
            traces,
        } = later;
        self.enabled = enabled.or(self.enabled);
        self.endpoint = endpoint.or(self.endpoint);
        self.protocol = protocol.or(self.protocol);
        for (name, value) in headers {
            self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
            self.headers.push((name, value));
        }
        self.timeout = timeout.or(self.timeout);
        self.log_retry = log_retry.or(self.log_retry);
        self.interval = interval.or(self.interval);
        self.temporality = temporality.or(self.temporality);
        self.histogram = histogram.or(self.histogram);
        self.logs = logs.or(self.logs);
        self.traces = traces.or(self.traces);
        self
    }

    /// Whether OTLP export is on: the builder's word, else on when an OTLP endpoint variable is
    /// set, `OTEL_SDK_DISABLED` is not `true` and `OTEL_METRICS_EXPORTER` is not `none`.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        if let Some(e) = self.enabled {
            return e;
        }
        if self.endpoint.is_some() {
            return true;
        }
        if switched_off("OTEL_METRICS_EXPORTER") {
            return false;
        }
        env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").is_some()
    }

    fn resolved_protocol(&self, signal_var: &str) -> Protocol {
        if let Some(p) = self.protocol {
            return p;
        }
        let default = if cfg!(feature = "http") {
            Protocol::HttpProtobuf
        } else {
            Protocol::Grpc
        };
        let (var, value) = match env(signal_var) {
            Some(v) => (signal_var, v),
            None => match env("OTEL_EXPORTER_OTLP_PROTOCOL") {
                Some(v) => ("OTEL_EXPORTER_OTLP_PROTOCOL", v),
                // The OpenTelemetry default, when built in.
                None => return default,
            },
        };
        // A value from the environment never stops the service: warn and use the default, as
        // the OpenTelemetry SDKs do.
        Protocol::parse(&value).unwrap_or_else(|e| {
            tracing::warn!(%e, "authwatch: ignoring {var}, using {default:?}");
            default
        })
    }

    fn resolved_histogram(&self) -> HistogramAggregation {
        if let Some(h) = self.histogram {
            return h;
        }
        const VAR: &str = "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION";
        match env(VAR).as_deref().map(str::trim) {
            None | Some("explicit_bucket_histogram") => HistogramAggregation::Explicit,
            Some("base2_exponential_bucket_histogram") => HistogramAggregation::Exponential,
            Some(other) => {
                tracing::warn!(
                    "authwatch: ignoring {VAR}={other:?} (expected explicit_bucket_histogram or \
                     base2_exponential_bucket_histogram), using explicit buckets"
                );
                HistogramAggregation::Explicit
            }
        }
    }

    /// Whether OTLP log export is on: the builder's word, else on when a logs or generic
    /// endpoint is known (the builder's, `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`), `OTEL_SDK_DISABLED` is not `true` and
    /// `OTEL_LOGS_EXPORTER` is not `none`.
    #[must_use]
    pub fn logs_enabled(&self) -> bool {
        if let Some(l) = self.logs {
            return l;
        }
        if self.enabled == Some(false) || switched_off("OTEL_LOGS_EXPORTER") {
            return false;
        }
        self.endpoint.is_some()
            || self.enabled == Some(true)
            || env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT").is_some()
            || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
    }

    /// Whether OTLP trace export is on: the builder's word, else on when a traces or generic
    /// endpoint is known (the builder's, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`), `OTEL_SDK_DISABLED` is not `true` and
    /// `OTEL_TRACES_EXPORTER` is not `none`.
    #[must_use]
    pub fn traces_enabled(&self) -> bool {
        if let Some(t) = self.traces {
            return t;
        }
        if self.enabled == Some(false) || switched_off("OTEL_TRACES_EXPORTER") {
            return false;
        }
        self.endpoint.is_some()
            || self.enabled == Some(true)
            || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
    }

    pub(crate) fn signal_endpoint(&self, protocol: Protocol, path: &str) -> Option<String> {
        let base = self.endpoint.as_deref()?.trim_end_matches('/');
        Some(match protocol {
            Protocol::Grpc => base.to_owned(),
            Protocol::HttpProtobuf => format!("{base}{path}"),
        })
    }
}

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
struct GrpcRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(feature = "grpc")]
impl GrpcRuntime {
    fn start() -> Result<Self, PipelineError> {
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

/// Builds a [`Pipeline`].
#[derive(Debug, Default)]
#[must_use]
pub struct PipelineBuilder {
    service_name: Option<String>,
    otlp: OtlpOptions,
    prometheus: bool,
    meter: Option<Meter>,
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

impl PipelineBuilder {
    /// The `service.name` resource attribute (other resource attributes come from
    /// `OTEL_RESOURCE_ATTRIBUTES`).
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// The OTLP settings.
    pub fn otlp(mut self, options: OtlpOptions) -> Self {
        self.otlp = options;
        self
    }

    /// Serve the Prometheus text exposition (default on).
    pub fn prometheus(mut self, on: bool) -> Self {
        self.prometheus = on;
        self
    }

    /// Record into a meter provider of yours instead of building an OTLP one; you export and
    /// shut it down. The `/metrics` exposition stays authwatch's own.
    pub fn meter_provider<P: opentelemetry::metrics::MeterProvider>(
        mut self,
        provider: &P,
    ) -> Self {
        self.meter = Some(provider.meter_with_scope(scope()));
        self
    }

    /// Builds the providers.
    ///
    /// # Errors
    ///
    /// [`PipelineError`] for invalid settings or an exporter that cannot be built.
    pub fn build(self) -> Result<Pipeline, PipelineError> {
        // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES come in through the default detectors;
        // the builder's name wins over both.
        let mut resource = Resource::builder();
        if let Some(name) = &self.service_name {
            resource = resource.with_service_name(name.clone());
        }
        let resource = resource.build();
        let o = &self.otlp;
        // Each signal's transport, read once (an invalid variable is logged once).
        let metrics_protocol = (self.meter.is_none() && o.is_enabled())
            .then(|| o.resolved_protocol("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"));
        let logs_protocol = o
            .logs_enabled()
            .then(|| o.resolved_protocol("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"));
        let traces_protocol = o
            .traces_enabled()
            .then(|| o.resolved_protocol("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"));
        // The gRPC exporters are built inside authwatch's export runtime, where tonic then
        // spawns their connections (see `GrpcRuntime`).
        #[cfg(feature = "grpc")]
        let grpc_runtime = [metrics_protocol, logs_protocol, traces_protocol]
            .contains(&Some(Protocol::Grpc))
            .then(GrpcRuntime::start)
            .transpose()?;
        #[cfg(feature = "grpc")]
        let in_runtime = grpc_runtime.as_ref().map(|r| r.handle.enter());
        let mut meters = Vec::new();
        let mut otlp = None;
        if let Some(m) = self.meter {
            meters.push(m);
        } else if let Some(p) = metrics_protocol {
            let provider = otlp_meter_provider(o, p, &resource)?;
            meters.push(provider.meter_with_scope(scope()));
            otlp = Some(provider);
        }
        let log_settings = logs_protocol.map(|lp| (o.clone(), lp));
        let logs = logs_protocol
            .map(|lp| otlp_logger_provider(o, lp, &resource))
            .transpose()?;
        let traces = traces_protocol
            .map(|tp| otlp_tracer_provider(o, tp, &resource))
            .transpose()?;
        let prometheus = if self.prometheus {
            let registry = prometheus::Registry::new();
            let exporter = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .build()
                .map_err(|e| PipelineError::Prometheus(e.to_string()))?;
            let provider = SdkMeterProvider::builder()
                .with_resource(resource.clone())
                .with_reader(exporter)
                .build();
            meters.push(provider.meter_with_scope(scope()));
            Some((provider, registry))
        } else {
            None
        };
        #[cfg(feature = "grpc")]
        drop(in_runtime);
        Ok(Pipeline {
            resource,
            otlp,
            logs,
            traces,
            prometheus,
            meters,
            protocol: metrics_protocol,
            log_settings,
            #[cfg(feature = "grpc")]
            grpc_runtime,
        })
    }
}

#[cfg(any(feature = "grpc", feature = "http"))]
fn otlp_meter_provider(
    o: &OtlpOptions,
    p: Protocol,
    resource: &Resource,
) -> Result<SdkMeterProvider, PipelineError> {
    let mut reader = PeriodicReader::builder(metric_exporter(o, p)?);
    if let Some(i) = o.interval {
        reader = reader.with_interval(i);
    }
    let mut provider = SdkMeterProvider::builder()
        .with_resource(resource.clone())
        .with_reader(reader.build());
    if o.resolved_histogram() == HistogramAggregation::Exponential {
        provider = provider.with_view(exponential_view);
    }
    Ok(provider.build())
}

#[cfg(any(feature = "grpc", feature = "http"))]
fn otlp_logger_provider(
    o: &OtlpOptions,
    p: Protocol,
    resource: &Resource,
) -> Result<SdkLoggerProvider, PipelineError> {
    Ok(SdkLoggerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(log_exporter(o, p)?)
        .build())
}

#[cfg(any(feature = "grpc", feature = "http"))]
fn otlp_tracer_provider(
    o: &OtlpOptions,
    p: Protocol,
    resource: &Resource,
) -> Result<SdkTracerProvider, PipelineError> {
    Ok(SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(span_exporter(o, p)?)
        .build())
}

#[cfg(not(any(feature = "grpc", feature = "http")))]
fn otlp_tracer_provider(
    _: &OtlpOptions,
    p: Protocol,
    _: &Resource,
) -> Result<SdkTracerProvider, PipelineError> {
    Err(not_built_in(p))
}

#[cfg(not(any(feature = "grpc", feature = "http")))]
fn otlp_meter_provider(
    _: &OtlpOptions,
    p: Protocol,
    _: &Resource,
) -> Result<SdkMeterProvider, PipelineError> {
    Err(not_built_in(p))
}

#[cfg(not(any(feature = "grpc", feature = "http")))]
fn otlp_logger_provider(
    _: &OtlpOptions,
    p: Protocol,
    _: &Resource,
) -> Result<SdkLoggerProvider, PipelineError> {
    Err(not_built_in(p))
}

fn exponential_view(i: &Instrument) -> Option<Stream> {
    (i.kind() == InstrumentKind::Histogram && i.scope().name() == SCOPE)
        .then(|| {
            Stream::builder()
                .with_aggregation(Aggregation::Base2ExponentialHistogram {
                    max_size: 160,
                    max_scale: 20,
                    record_min_max: true,
                })
                .build()
                .ok()
        })
        .flatten()
}

#[cfg(any(feature = "grpc", feature = "http"))]
/// The endpoint and timeout of one signal's exporter, when the builder set them (otherwise
/// the exporter reads its `OTEL_*` variables itself).
fn export_config<B: opentelemetry_otlp::WithExportConfig>(
    mut b: B,
    o: &OtlpOptions,
    p: Protocol,
    http_path: &str,
) -> B {
    if let Some(e) = o.signal_endpoint(p, http_path) {
        b = b.with_endpoint(e);
    }
    if let Some(t) = o.timeout {
        b = b.with_timeout(t);
    }
    b
}

/// HTTP/protobuf with the builder's headers.
#[cfg(feature = "http")]
fn http_config<B: opentelemetry_otlp::WithExportConfig + opentelemetry_otlp::WithHttpConfig>(
    b: B,
    o: &OtlpOptions,
    path: &str,
) -> B {
    let mut b = export_config(b, o, Protocol::HttpProtobuf, path)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    if !o.headers.is_empty() {
        b = b.with_headers(
            o.headers
                .iter()
                .cloned()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    b
}

fn not_built_in(p: Protocol) -> PipelineError {
    PipelineError::Config(format!(
        "OTLP protocol {p:?} is not built in (enable the authwatch-otel feature)"
    ))
}

#[cfg(any(feature = "grpc", feature = "http"))]
#[allow(unused_variables, unreachable_code)]
fn metric_exporter(
    o: &OtlpOptions,
    p: Protocol,
) -> Result<opentelemetry_otlp::MetricExporter, PipelineError> {
    use opentelemetry_otlp::MetricExporter;
    let b = MetricExporter::builder();
    let b = match o.temporality {
        Some(t) => b.with_temporality(t),
        None => b,
    };
    match p {
        #[cfg(feature = "grpc")]
        Protocol::Grpc => {
            let b = export_config(b.with_tonic(), o, p, "");
            Ok(grpc_config(b, o, "METRICS")?.build()?)
        }
        #[cfg(feature = "http")]
        Protocol::HttpProtobuf => Ok(http_config(b.with_http(), o, "/v1/metrics").build()?),
        #[allow(unreachable_patterns)]
        other => Err(not_built_in(other)),
    }
}

#[cfg(any(feature = "grpc", feature = "http"))]
#[allow(unused_variables, unreachable_code)]
pub(crate) fn log_exporter(
    o: &OtlpOptions,
    p: Protocol,
) -> Result<opentelemetry_otlp::LogExporter, PipelineError> {
    use opentelemetry_otlp::LogExporter;
    match p {
        #[cfg(feature = "grpc")]
        Protocol::Grpc => {
            let b = export_config(LogExporter::builder().with_tonic(), o, p, "");
            Ok(grpc_config(b, o, "LOGS")?.build()?)
        }
        #[cfg(feature = "http")]
        Protocol::HttpProtobuf => {
            Ok(http_config(LogExporter::builder().with_http(), o, "/v1/logs").build()?)
        }
        #[allow(unreachable_patterns)]
        other => Err(not_built_in(other)),
    }
}

#[cfg(any(feature = "grpc", feature = "http"))]
#[allow(unused_variables, unreachable_code)]
fn span_exporter(
    o: &OtlpOptions,
    p: Protocol,
) -> Result<opentelemetry_otlp::SpanExporter, PipelineError> {
    use opentelemetry_otlp::SpanExporter;
    match p {
        #[cfg(feature = "grpc")]
        Protocol::Grpc => {
            let b = export_config(SpanExporter::builder().with_tonic(), o, p, "");
            Ok(grpc_config(b, o, "TRACES")?.build()?)
        }
        #[cfg(feature = "http")]
        Protocol::HttpProtobuf => {
            Ok(http_config(SpanExporter::builder().with_http(), o, "/v1/traces").build()?)
        }
        #[allow(unreachable_patterns)]
        other => Err(not_built_in(other)),
    }
}

/// Headers as gRPC metadata, and TLS with the webpki roots (plus the signal's or the generic
/// `OTEL_EXPORTER_OTLP_CERTIFICATE` when set) unless the signal's endpoint is `http://`
/// (schemeless endpoints are `https://` to the exporter).
#[cfg(feature = "grpc")]
fn grpc_config<B: opentelemetry_otlp::WithTonicConfig>(
    mut b: B,
    o: &OtlpOptions,
    signal: &str,
) -> Result<B, PipelineError> {
    if let Some(m) = grpc_metadata(o)? {
        b = b.with_metadata(m);
    }
    if let Some(tls) = grpc_tls(o, signal)? {
        b = b.with_tls_config(tls);
    }
    Ok(b)
}

/// The builder's headers as gRPC metadata, `None` when it set none.
#[cfg(feature = "grpc")]
fn grpc_metadata(
    o: &OtlpOptions,
) -> Result<Option<opentelemetry_otlp::tonic_types::metadata::MetadataMap>, PipelineError> {
    use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
    if o.headers.is_empty() {
        return Ok(None);
    }
    builder_headers(o).map(|h| Some(MetadataMap::from_headers(h)))
}

/// The builder's headers; a bad name or value is an error.
#[cfg(any(feature = "grpc", feature = "http"))]
pub(crate) fn builder_headers(o: &OtlpOptions) -> Result<http::HeaderMap, PipelineError> {
    let mut headers = http::HeaderMap::new();
    for (k, v) in &o.headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| PipelineError::Config(format!("OTLP header name {k:?}")))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|_| PipelineError::Config(format!("OTLP header {k:?} has a bad value")))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// TLS for the signal's gRPC endpoint, `None` when it is `http://` or not set.
#[cfg(feature = "grpc")]
fn grpc_tls(
    o: &OtlpOptions,
    signal: &str,
) -> Result<Option<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig>, PipelineError> {
    let endpoint = o
        .endpoint
        .clone()
        .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")))
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let tls_wanted = endpoint.is_some_and(|e| !e.trim().starts_with("http://"));
    if !tls_wanted {
        return Ok(None);
    }
    grpc_tls_config(signal).map(Some)
}

/// TLS with the webpki roots, plus the signal's or the generic `OTEL_EXPORTER_OTLP_CERTIFICATE`
/// when set.
#[cfg(feature = "grpc")]
pub(crate) fn grpc_tls_config(
    signal: &str,
) -> Result<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig, PipelineError> {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
    let mut tls = ClientTlsConfig::new().with_webpki_roots();
    let var = format!("OTEL_EXPORTER_OTLP_{signal}_CERTIFICATE");
    let ca = env(&var).map(|p| (var.as_str(), p)).or_else(|| {
        env("OTEL_EXPORTER_OTLP_CERTIFICATE").map(|p| ("OTEL_EXPORTER_OTLP_CERTIFICATE", p))
    });
    if let Some((var, path)) = ca {
        let pem = std::fs::read(&path)
            .map_err(|e| PipelineError::Config(format!("{var} {path}: {e}")))?;
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    Ok(tls)
}
