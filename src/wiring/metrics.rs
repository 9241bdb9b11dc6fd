//! The request statistics and the OpenTelemetry instruments: the [`OtelSink`] that records
//! every event once (its cells feed the exported instruments and the statistics), the
//! in-process [`Stats`] read from it (the snapshot, the HDR windows), the quantile gauges read
//! from those, and the process gauges.

use std::sync::Arc;
use std::time::Instant;

use authwatch_otel::{OtelSink, Pipeline};
use opentelemetry::metrics::Meter;

use crate::stats::Stats;
use crate::WindowConfig;

/// The statistics of what `sink` records, with their gauges on every meter.
pub(crate) fn stats(
    window: WindowConfig,
    started: Instant,
    meters: &[Meter],
    sink: Arc<OtelSink>,
) -> Arc<Stats> {
    let stats = Arc::new(Stats::new(window, sink));
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
