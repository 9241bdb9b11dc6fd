//! The alert engine's gauges: the brute-force detector's bounded summaries (never an address)
//! and the firing alerts per rule.

use authwatch_alerts::AlertEngine;
use authwatch_otel::{attr, def, register_u64_gauge, Measure};
use opentelemetry::metrics::Meter;
use opentelemetry::KeyValue;

pub(crate) fn register(meter: &Meter, engine: &AlertEngine) {
    let e = engine.clone();
    register_u64_gauge(meter, Measure::AttackTopIpFailures, move || {
        e.top_ip_failures()
    });
    let e = engine.clone();
    register_u64_gauge(meter, Measure::AttackSuspectedIps, move || {
        e.suspects().len() as u64
    });
    let e = engine.clone();
    let d = def(Measure::AttackFailingIps);
    meter
        .u64_observable_gauge(d.name)
        .with_description(d.description)
        .with_unit(d.unit)
        .with_callback(move |obs| {
            // Route templates are bounded by the route table (and the detector's 256 + `_OTHER`).
            for r in e.route_failures() {
                obs.observe(r.ips, &[KeyValue::new(attr::HTTP_ROUTE, r.route)]);
            }
        })
        .build();
    let e = engine.clone();
    let d = def(Measure::AlertsFiring);
    meter
        .u64_observable_gauge(d.name)
        .with_description(d.description)
        .with_unit(d.unit)
        .with_callback(move |obs| {
            let firing = e.firing();
            // Every enabled rule, 0 when quiet, so that a dashboard shows the full list.
            for r in e.config().rule_set().iter().filter(|r| r.enabled) {
                let n = firing.iter().filter(|a| a.name == r.name).count() as u64;
                obs.observe(
                    n,
                    &[
                        KeyValue::new(attr::ALERT_NAME, r.name.to_string()),
                        KeyValue::new(attr::ALERT_SEVERITY, r.severity.as_str()),
                    ],
                );
            }
        })
        .build();
}
