//! The request statistics and the OpenTelemetry instruments: the in-process [`Stats`] (the
//! snapshot, the HDR windows), the quantile gauges read from them, the process gauges, and
//! the [`OtelSink`] that counts every event into the exported instruments.

use std::sync::Arc;
use std::time::Instant;

use authwatch_otel::{OtelSink, Pipeline};
use opentelemetry::metrics::Meter;

use crate::stats::Stats;
use crate::WindowConfig;

/// The statistics, with their gauges on every meter.
pub(crate) fn stats(window: WindowConfig, started: Instant, meters: &[Meter]) -> Arc<Stats> {
    let stats = Arc::new(Stats::new(window));
    for meter in meters {
        let s = stats.clone();
        authwatch_otel::register_quantile_gauges(
            meter,
            Arc::new(move || s.quantiles(authwatch_layer::now())),
        );
        authwatch_otel::register_uptime_gauge(meter, started);
        authwatch_otel::register_process_gauges(meter);
    }
    stats
}

/// The sink of the exported instruments (its lockout counter is the audit logger's too).
pub(crate) fn sink(pipeline: &Pipeline) -> Arc<OtelSink> {
    Arc::new(OtelSink::for_pipeline(pipeline))
}
