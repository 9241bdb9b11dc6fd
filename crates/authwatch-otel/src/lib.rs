//! The OpenTelemetry side of authwatch: the metric catalog, [`OtelSink`], the OTLP pipeline and
//! the Prometheus text exposition.
//!
//! Most users get all of this through the `authwatch` facade. Used directly:
//!
//! ```
//! use std::sync::Arc;
//! use authwatch_layer::{AuthEvent, AuthOp, EventSink, Outcome};
//! use authwatch_otel::{OtelSink, Pipeline};
//!
//! // No OTLP variable set, so only the Prometheus exposition is on.
//! let pipeline = Pipeline::builder().service_name("accounts").build()?;
//! let sink = OtelSink::new(pipeline.meters());
//!
//! let event = AuthEvent::new(
//!     AuthOp::Login,
//!     Outcome::Success,
//!     std::time::Duration::from_millis(12),
//!     authwatch_layer::now(),
//! )
//! .with_route("/login");
//! sink.record(&event);
//!
//! let text = pipeline.render_prometheus().unwrap();
//! assert!(text.contains("auth_login_success_count_total{"));
//! assert!(text.contains("auth_response_time_ms_bucket{"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Names
//!
//! Instrument names are exactly the spec's (`auth.login.success.count`,
//! `auth.response.time.ms`, …); see [`CATALOG`]. The timing instruments carry no OpenTelemetry
//! unit because their names already end in `.ms`: with the unit `ms`, both this crate's
//! Prometheus exposition and a collector's OTLP→Prometheus translation would name the histogram
//! `auth_response_time_ms_milliseconds`. Without it, every path gives
//! [`MetricDef::prometheus_name`]: dots to underscores, `_total` on counters.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod log_encode;
#[cfg(any(feature = "grpc", feature = "http"))]
mod log_export;
mod pipeline;
mod resources;
mod sink;

#[cfg(test)]
mod tests;

use std::time::Instant;

pub use authwatch_layer::catalog::{
    attr, def, markdown_table, InstrumentKind, Measure, MetricDef, Quantile, CATALOG,
};
pub use log_encode::{AttrValue, LogBatch, LogFields, RecordWriter, MAX_EXPORT_BATCH};
#[cfg(any(feature = "grpc", feature = "http"))]
pub use log_export::LogExport;
pub use pipeline::{
    HistogramAggregation, OtlpOptions, Pipeline, PipelineBuilder, PipelineError, Protocol, SCOPE,
};
pub use resources::register_process_gauges;
pub use sink::{
    duration_ms, register_quantile_gauges, LatencyWindows, OpCounts, OtelSink, QueryTimer,
    WindowQuantiles, LATENCY_BUCKETS_MS, MAX_QUERY_NAMES,
};

/// The OpenTelemetry crates authwatch is built on, so your code uses the same versions.
pub mod reexports {
    pub use opentelemetry;
    pub use opentelemetry_appender_tracing;
    pub use opentelemetry_otlp;
    pub use opentelemetry_prometheus;
    pub use opentelemetry_sdk;
    pub use prometheus;
}

/// Registers `auth.uptime.seconds` on `meter`, counting from `started`.
pub fn register_uptime_gauge(meter: &opentelemetry::metrics::Meter, started: Instant) {
    register_f64_gauge(meter, Measure::Uptime, move || {
        started.elapsed().as_secs_f64()
    });
}

/// Registers the catalog's gauge for `measure` (name, description and unit from [`CATALOG`])
/// on `meter`, without attributes, read from `value` at each collection.
pub fn register_f64_gauge(
    meter: &opentelemetry::metrics::Meter,
    measure: Measure,
    value: impl Fn() -> f64 + Send + Sync + 'static,
) {
    let d = def(measure);
    meter
        .f64_observable_gauge(d.name)
        .with_description(d.description)
        .with_unit(d.unit)
        .with_callback(move |obs| obs.observe(value(), &[]))
        .build();
}

/// As [`register_f64_gauge`], for a whole number.
pub fn register_u64_gauge(
    meter: &opentelemetry::metrics::Meter,
    measure: Measure,
    value: impl Fn() -> u64 + Send + Sync + 'static,
) {
    let d = def(measure);
    meter
        .u64_observable_gauge(d.name)
        .with_description(d.description)
        .with_unit(d.unit)
        .with_callback(move |obs| obs.observe(value(), &[]))
        .build();
}

/// Registers the catalog's counter for `measure` on `meter`, without attributes, read from
/// `value` at each collection (its running total; `None` observes nothing, for a source that
/// is gone: a counter must not go back to 0).
pub fn register_u64_counter(
    meter: &opentelemetry::metrics::Meter,
    measure: Measure,
    value: impl Fn() -> Option<u64> + Send + Sync + 'static,
) {
    let d = def(measure);
    meter
        .u64_observable_counter(d.name)
        .with_description(d.description)
        .with_unit(d.unit)
        .with_callback(move |obs| {
            if let Some(v) = value() {
                obs.observe(v, &[]);
            }
        })
        .build();
}

/// Lowers the calling thread's scheduling priority (its nice value 10 higher, at most 19, on
/// Linux, where the nice value is per thread; nothing elsewhere). For threads that work off the request path: when the
/// machine is busy, the scheduler runs the request threads first and this one in the gaps,
/// with at least a tenth of a core, instead of letting a burst of background work hold
/// requests off. Threads it starts inherit the priority.
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        if let Ok(now) = getpriority_process(None) {
            let _ = setpriority_process(None, (now + 10).min(19));
        }
    }
}
