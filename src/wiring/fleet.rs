//! Fleet mode's flush thread, its gauges and its health check.

use std::sync::Arc;

use authwatch_otel::{register_u64_counter, register_u64_gauge, Measure};
use opentelemetry::metrics::Meter;

use crate::fleet::FleetHandle;
use crate::health::{Details, HealthCheck};
use crate::stats::Stats;
use crate::{BuildError, Fleet};

/// Starts `fleet` for `service`, reading this instance's counts from `stats`, with
/// `auth.fleet.connected` and `auth.fleet.errors.count` on every meter.
pub(crate) fn start(
    fleet: &Fleet,
    service: &str,
    stats: &Arc<Stats>,
    meters: &[Meter],
) -> Result<FleetHandle, BuildError> {
    let st = stats.clone();
    let windows = stats.clone();
    let handle = FleetHandle::start(
        fleet,
        service,
        Arc::new(move || st.request_counts()),
        Arc::new(move || windows.op_windows(authwatch_layer::now())),
    )?;
    for meter in meters {
        let h = handle.clone();
        register_u64_gauge(meter, Measure::FleetConnected, move || {
            u64::from(h.connected())
        });
        let h = handle.clone();
        register_u64_counter(meter, Measure::FleetErrors, move || Some(h.errors()));
    }
    Ok(handle)
}

/// The `fleet` check: healthy while Redis is reached. Not critical: without Redis the
/// instance works on its own view, so it must not be taken out of the load balancer.
pub(crate) fn health_check(fleet: &FleetHandle) -> HealthCheck {
    let f = fleet.clone();
    HealthCheck::new("fleet", move || {
        let s = f.status();
        async move {
            if s.connected {
                let mut d = Details::new();
                d.insert("instances".into(), s.instances.len().into());
                Ok(d)
            } else {
                Err(format!(
                    "Redis unreachable ({}); alert rules read this instance's own counts",
                    s.last_error.as_deref().unwrap_or("not reached yet")
                ))
            }
        }
    })
    .critical(false)
}
