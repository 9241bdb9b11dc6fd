//! The alert engine, wired to the percentiles and the health checks, and its gauges: the
//! brute-force detector's bounded summaries (never an address) and the firing alerts per rule.

use std::sync::Arc;

use authwatch_alerts::{AlertConfig, AlertEngine};
use authwatch_otel::{attr, def, register_u64_gauge, Measure};
use opentelemetry::metrics::Meter;
use opentelemetry::KeyValue;

use crate::fleet::FleetHandle;
use crate::health::Health;
use crate::stats::Stats;

/// What acts on the alerts: the block list, and the attack-time limit when there is one.
pub(crate) struct Responders<'a> {
    pub(crate) blocker: &'a Arc<crate::blocks::Blocker>,
    pub(crate) limiter: Option<&'a Arc<crate::limit::AttackLimiter>>,
    pub(crate) incidents: &'a Arc<crate::incidents::Incidents>,
}

/// The engine of `config`, labelled with `service` unless it names its own, reading the
/// window percentiles from `stats`, the request counts from `stats` (or, in fleet mode, the
/// fleet's), and running the health checks at each tick, with its
/// gauges on every meter.
pub(crate) fn start(
    config: AlertConfig,
    service: &str,
    stats: &Arc<Stats>,
    fleet: Option<&FleetHandle>,
    health: &Arc<Health>,
    respond: Responders<'_>,
    meters: &[Meter],
) -> AlertEngine {
    let Responders {
        blocker,
        limiter,
        incidents,
    } = respond;
    let mut cfg = config;
    if cfg.service_name().is_none() {
        cfg = cfg.service(service.to_owned());
    }
    let st = stats.clone();
    cfg = match fleet {
        // The fleet's: this instance's window merged with the others' (HDR merges exactly).
        Some(f) => {
            let f = f.clone();
            cfg.quantiles(Arc::new(move |op, q| {
                f.op_quantile(op, q, st.op_window(op, authwatch_layer::now()))
            }))
        }
        None => cfg.quantiles(Arc::new(move |op, q| {
            st.op_quantile(op, q, authwatch_layer::now())
        })),
    };
    // The statistics count every event already: the engine reads their counters instead of
    // counting each request a second time, and only takes the failing clients.
    let outbox = Arc::new(authwatch_alerts::FailureOutbox::new());
    // In fleet mode, the fleet's: these plus what the other instances counted; and one
    // webhook message per change of state for the whole fleet.
    cfg = match fleet {
        Some(f) => {
            if !cfg.has_notify_gate() {
                cfg = cfg.notify_gate(f.notify_gate());
            }
            // The failing clients too: the detector's failures go to the fleet, and the
            // fleet's suspects and routes come back.
            cfg = cfg
                .failure_outbox(outbox.clone())
                .shared_detections(f.shared_detections());
            let f = f.clone();
            cfg.counts(Arc::new(move || f.counts()))
        }
        None => {
            let st = stats.clone();
            cfg.counts(Arc::new(move || st.request_counts()))
        }
    };
    // Each tick runs the health checks (when stale), so that `AuthServiceDown` works
    // without probes (a hook of the caller's own replaces this), and ends the blocks whose
    // time is up.
    let own_tick = !cfg.has_on_tick();
    // Weak: the health checks hold the engine (`on_run`); a strong reference back would keep
    // both alive, and the engine's thread running, after the monitor is dropped.
    let h = (own_tick && health.has_checks()).then(|| Arc::downgrade(health));
    let b = Arc::downgrade(blocker);
    let l = limiter.map(Arc::downgrade);
    if own_tick {
        cfg = cfg.on_tick(Arc::new(move || {
            if let Some(h) = h.as_ref().and_then(std::sync::Weak::upgrade) {
                h.last_or_refresh();
            }
            if let Some(b) = b.upgrade() {
                b.sweep();
            }
            if let Some(l) = l.as_ref().and_then(std::sync::Weak::upgrade) {
                l.tick();
            }
        }));
    }
    // The attack alerts block the addresses they name (with a block policy), and turn the
    // attack-time limit on and off (with one).
    // Every incident, from firing to resolved, goes to the audit trail with what was done.
    let b = Arc::downgrade(blocker);
    let l = limiter.map(Arc::downgrade);
    let inc = Arc::downgrade(incidents);
    cfg = cfg.on_event(Arc::new(move |e| {
        let inc = inc.upgrade();
        if let Some(i) = &inc {
            i.on_alert(e);
        }
        if let Some(blocked) = b.upgrade().and_then(|b| b.on_alert(e)) {
            if let Some(i) = &inc {
                i.blocked(&e.alert, &blocked.ip.to_string());
            }
        }
        if let Some(l) = l.as_ref().and_then(std::sync::Weak::upgrade) {
            l.on_alert(e);
        }
    }));
    let inc = Arc::downgrade(incidents);
    cfg = cfg.on_firing(Arc::new(move |firing| {
        if let Some(i) = inc.upgrade() {
            i.observe(firing);
        }
    }));
    let engine = AlertEngine::new(cfg);
    if let Some(f) = fleet {
        f.attach_detection(outbox, &engine);
    }
    let e = engine.clone();
    let _ = health.on_run.set(Arc::new(move |ok| e.observe_health(ok)));
    for meter in meters {
        register(meter, &engine);
    }
    engine
}

fn register(meter: &Meter, engine: &AlertEngine) {
    let e = engine.clone();
    register_u64_gauge(meter, Measure::AttackTopIpFailures, move || {
        e.top_ip_failures()
    });
    let e = engine.clone();
    register_u64_gauge(meter, Measure::AttackSuspectedIps, move || {
        e.suspects().len() as u64
    });
    let e = engine.clone();
    register_u64_gauge(meter, Measure::AttackTopAccountFailures, move || {
        e.top_account_failures()
    });
    let e = engine.clone();
    register_u64_gauge(meter, Measure::AttackAccountsUnderAttack, move || {
        e.accounts_under_attack()
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
