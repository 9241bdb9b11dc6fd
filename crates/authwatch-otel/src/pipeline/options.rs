//! What the builder and the `OTEL_*` variables say about the OTLP export: [`OtlpOptions`],
//! [`Protocol`], [`HistogramAggregation`].

use std::time::Duration;

use opentelemetry_sdk::metrics::Temporality;

use super::PipelineError;

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
    /// [`Pipeline::tracing_layer`](super::Pipeline::tracing_layer)) over OTLP; see [`traces_enabled`](Self::traces_enabled).
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

    pub(super) fn resolved_protocol(&self, signal_var: &str) -> Protocol {
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

    pub(super) fn resolved_histogram(&self) -> HistogramAggregation {
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
