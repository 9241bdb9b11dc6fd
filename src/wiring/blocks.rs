//! The block list's instruments: refused requests per operation, and the blocks in force.

use std::sync::Arc;

use authwatch_layer::AuthOp;
use authwatch_otel::{attr, def, register_u64_gauge, Measure};
use opentelemetry::metrics::Meter;
use opentelemetry::KeyValue;

use crate::blocks::Blocker;

/// `auth.blocked.count` and `auth.blocks.active` on every meter.
pub(crate) fn register(blocker: &Arc<Blocker>, meters: &[Meter]) {
    for meter in meters {
        let list = blocker.list().clone();
        let d = def(Measure::Blocked);
        meter
            .u64_observable_counter(d.name)
            .with_description(d.description)
            .with_unit(d.unit)
            .with_callback(move |obs| {
                let refused = list.refused();
                for op in AuthOp::ALL {
                    obs.observe(
                        refused[op.index()],
                        &[KeyValue::new(attr::OPERATION, op.as_str())],
                    );
                }
                // Other routes, with `BlockPolicy::all_routes`: only once there are some.
                if refused[AuthOp::COUNT] > 0 {
                    obs.observe(
                        refused[AuthOp::COUNT],
                        &[KeyValue::new(attr::OPERATION, "none")],
                    );
                }
            })
            .build();
        let list = blocker.list().clone();
        register_u64_gauge(meter, Measure::BlocksActive, move || {
            list.list().len() as u64
        });
    }
}

/// The non-critical `crowdsec` health check: whether the Local API answered the last call.
pub(crate) fn crowdsec_health_check(link: &crate::crowdsec::Link) -> crate::HealthCheck {
    let l = link.clone();
    crate::HealthCheck::new("crowdsec", move || {
        let s = l.status();
        async move {
            if s.connected {
                let mut d = crate::health::Details::new();
                d.insert("pushed".into(), s.pushed.into());
                d.insert("enforced".into(), s.enforced.into());
                Ok(d)
            } else {
                Err(format!(
                    "CrowdSec's Local API unreachable ({}); {} pushes queued, blocks enforced here meanwhile",
                    s.last_error.as_deref().unwrap_or("not reached yet"),
                    s.pending
                ))
            }
        }
    })
    .critical(false)
}
