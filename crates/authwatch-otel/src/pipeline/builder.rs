//! [`PipelineBuilder`]: builds the providers from the options and the environment.

// Without a transport, only the Prometheus exposition is built; the OTLP helpers sit unused.
#![cfg_attr(
    not(any(feature = "grpc", feature = "http")),
    allow(dead_code, unused_imports)
)]

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::Resource;

use super::exporters::{otlp_logger_provider, otlp_meter_provider, otlp_tracer_provider};
#[cfg(feature = "grpc")]
use super::GrpcRuntime;
#[cfg(feature = "grpc")]
use super::Protocol;
use super::{scope, OtlpOptions, Pipeline, PipelineError};

/// Builds a [`Pipeline`].
#[derive(Debug, Default)]
#[must_use]
pub struct PipelineBuilder {
    pub(super) service_name: Option<String>,
    pub(super) otlp: OtlpOptions,
    pub(super) prometheus: bool,
    pub(super) meter: Option<Meter>,
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
