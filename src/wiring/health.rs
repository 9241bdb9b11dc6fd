//! The health checks behind `/auth/health`, with their gauges.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::metrics::Meter;

use crate::health::{self, Health, HealthCheck};

/// The checks and their settings, from the builder.
pub(crate) struct Settings {
    pub(crate) checks: Vec<HealthCheck>,
    pub(crate) cache: Duration,
    pub(crate) details: Option<bool>,
}

/// The health of `service`, with `auth.health.status` and `auth.health.check.time.ms` on
/// every meter.
pub(crate) fn start(
    service: String,
    started: Instant,
    settings: Settings,
    meters: &[Meter],
) -> Arc<Health> {
    let health = Arc::new(Health::new(
        service,
        started,
        settings.checks,
        settings.cache,
        settings.details,
    ));
    for meter in meters {
        health::register_gauges(meter, &health);
    }
    health
}
