//! Who uses the service: distinct active users (from the audit logger's calls), distinct
//! sessions (from the token hashes the layer hands over), the application's own session count,
//! and attempts per country.

use std::sync::Arc;

use authwatch_otel::{attr, def, register_f64_gauge, register_u64_gauge, Measure};
use opentelemetry::metrics::Meter;
use opentelemetry::KeyValue;

use crate::{active, geo, WindowConfig};

/// The application's exact count of active sessions ([`active_sessions`](crate::AuthWatchBuilder::active_sessions)).
pub(crate) type SessionCount = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Distinct active users over the window (the audit logger inserts from every handler thread:
/// one ring per thread shard), with `auth.users.active` (and `auth.sessions.active` when the
/// application counts its sessions) on every meter.
pub(crate) fn active_users(
    window: WindowConfig,
    sessions: Option<&SessionCount>,
    meters: &[Meter],
) -> Arc<active::ActiveUsers> {
    let users = Arc::new(active::ActiveUsers::new(
        window.window(),
        window.slots() as usize,
        authwatch_layer::now(),
    ));
    for meter in meters {
        let a = users.clone();
        register_f64_gauge(meter, Measure::ActiveUsers, move || {
            a.estimate(authwatch_layer::now())
        });
        if let Some(f) = sessions {
            let f = f.clone();
            register_u64_gauge(meter, Measure::ActiveSessions, move || f());
        }
    }
    users
}

/// Distinct sessions over the window from the keyed token hashes the layer and the guards hand
/// over (on the request path: one ring per thread shard), with `auth.sessions.estimated`.
pub(crate) fn sessions(window: WindowConfig, meters: &[Meter]) -> Arc<active::Distinct<u64>> {
    let sessions = Arc::new(active::Distinct::<u64>::new(
        window.window(),
        window.slots() as usize,
        authwatch_layer::now(),
    ));
    for meter in meters {
        let a = sessions.clone();
        register_f64_gauge(meter, Measure::EstimatedSessions, move || {
            a.estimate(authwatch_layer::now())
        });
    }
    sessions
}

/// `auth.geo.attempts.count` per country, read from `geo` at each collection.
pub(crate) fn geo_counter(geo: &Arc<geo::Geo>, meters: &[Meter]) {
    for meter in meters {
        let g = geo.clone();
        let d = def(Measure::GeoAttempts);
        meter
            .u64_observable_counter(d.name)
            .with_description(d.description)
            .with_unit(d.unit)
            .with_callback(move |obs| {
                for (op, outcome, country, n) in g.totals() {
                    obs.observe(
                        n,
                        &[
                            KeyValue::new(attr::OPERATION, op.as_str()),
                            KeyValue::new(attr::OUTCOME, outcome),
                            KeyValue::new(attr::GEO_COUNTRY, country),
                        ],
                    );
                }
            })
            .build();
    }
}
