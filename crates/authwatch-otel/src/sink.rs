//! [`OtelSink`]: every auth event into OpenTelemetry counters and histograms.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use authwatch_layer::{AuthEvent, AuthOp, EventSink, EventSource, FailureReason, Outcome};
use opentelemetry::metrics::{BoundCounter, BoundHistogram, Counter, Histogram, Meter};
use opentelemetry::KeyValue;

use crate::catalog::{attr, def, Measure, Quantile};

/// Histogram bucket boundaries in milliseconds, from a quarter of a millisecond (a cached token
/// check) to ten seconds (a login stuck on a slow database). 500 ms and 1 s, the spec's alert
/// thresholds, are boundaries, so `histogram_quantile` is exact at them.
pub const LATENCY_BUCKETS_MS: [f64; 17] = [
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0,
    7500.0, 10000.0,
];

const OPS: usize = AuthOp::COUNT;
/// Standard methods plus `_OTHER`, in the order of [`method_index`].
const METHODS: usize = 10;
/// success, 9 failure reasons, rate_limited, error, cancelled.
const OUTCOMES: usize = 13;
/// Route ids below this get a lock-free slot; others (and token-guard labels) share a map.
const ROUTE_SLOTS: usize = 1024;
/// Most labels the shared map keeps; beyond, events go to the `_OTHER` route label.
const MAX_LABELS: usize = 512;

fn method_index(m: &str) -> usize {
    match m {
        "GET" => 0,
        "HEAD" => 1,
        "POST" => 2,
        "PUT" => 3,
        "DELETE" => 4,
        "CONNECT" => 5,
        "OPTIONS" => 6,
        "TRACE" => 7,
        "PATCH" => 8,
        _ => 9,
    }
}

fn reason_index(r: FailureReason) -> usize {
    match r {
        FailureReason::InvalidCredentials => 1,
        FailureReason::InvalidToken => 2,
        FailureReason::Forbidden => 3,
        FailureReason::BadRequest => 4,
        FailureReason::Conflict => 5,
        FailureReason::LockedOut => 6,
        FailureReason::NotFound => 7,
        FailureReason::ClientError => 8,
        _ => 9,
    }
}

fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::Success => 0,
        Outcome::Failure(r) => reason_index(r),
        Outcome::RateLimited => 10,
        Outcome::Error => 11,
        _ => 12,
    }
}

/// The instruments of one meter.
struct Instruments {
    success: [Counter<u64>; OPS],
    failure: [Counter<u64>; OPS],
    rate_limited: Counter<u64>,
    invalid_token: Counter<u64>,
    cancelled: Counter<u64>,
    response_time: Histogram<f64>,
    validation_time: Histogram<f64>,
}

fn counter(meter: &Meter, m: Measure) -> Counter<u64> {
    let d = def(m);
    meter
        .u64_counter(d.name)
        .with_description(d.description)
        .with_unit(d.unit)
        .build()
}

fn histogram(meter: &Meter, m: Measure) -> Histogram<f64> {
    let d = def(m);
    meter
        .f64_histogram(d.name)
        .with_description(d.description)
        .with_unit(d.unit)
        .with_boundaries(LATENCY_BUCKETS_MS.to_vec())
        .build()
}

impl Instruments {
    fn new(meter: &Meter) -> Self {
        Self {
            success: AuthOp::ALL.map(|op| counter(meter, Measure::Success(op))),
            failure: AuthOp::ALL.map(|op| counter(meter, Measure::Failure(op))),
            rate_limited: counter(meter, Measure::RateLimited),
            invalid_token: counter(meter, Measure::InvalidToken),
            cancelled: counter(meter, Measure::Cancelled),
            response_time: histogram(meter, Measure::ResponseTime),
            validation_time: histogram(meter, Measure::TokenValidationTime),
        }
    }

    /// The instruments one kind of event touches, bound to its attributes.
    fn bind(&self, key: &Key<'_>) -> Bound {
        let op = key.op;
        let mut attrs = vec![
            KeyValue::new(attr::OPERATION, op.as_str()),
            KeyValue::new(attr::OUTCOME, key.outcome.as_str()),
            KeyValue::new(attr::HTTP_ROUTE, key.route.to_owned()),
            KeyValue::new(attr::HTTP_METHOD, key.method),
        ];
        if let Some(rpc) = key.rpc_method {
            attrs.push(KeyValue::new(attr::RPC_METHOD, rpc.to_owned()));
        }
        // Timings leave the failure reason out: each reason would multiply the bucket series.
        let timing = attrs.clone();
        if let Some(r) = key.outcome.reason() {
            attrs.push(KeyValue::new(attr::FAILURE_REASON, r.as_str()));
        }
        let count = match key.outcome {
            Outcome::Success => &self.success[op.index()],
            Outcome::Failure(_) | Outcome::Error => &self.failure[op.index()],
            Outcome::RateLimited => &self.rate_limited,
            _ => &self.cancelled,
        };
        let guard = key.source == EventSource::TokenGuard;
        Bound {
            count: count.bind(&attrs),
            invalid_token: key
                .outcome
                .is_invalid_token()
                .then(|| self.invalid_token.bind(&attrs)),
            response_time: (!guard).then(|| self.response_time.bind(&timing)),
            validation_time: (guard || op == AuthOp::TokenValidation)
                .then(|| self.validation_time.bind(&timing)),
        }
    }
}

/// The instruments of one kind of event, bound once to its attribute set.
struct Bound {
    count: BoundCounter<u64>,
    invalid_token: Option<BoundCounter<u64>>,
    response_time: Option<BoundHistogram<f64>>,
    validation_time: Option<BoundHistogram<f64>>,
}

impl Bound {
    #[inline]
    fn record(&self, ms: f64) {
        self.count.add(1);
        if let Some(c) = &self.invalid_token {
            c.add(1);
        }
        if let Some(h) = &self.response_time {
            h.record(ms);
        }
        if let Some(h) = &self.validation_time {
            h.record(ms);
        }
    }
}

/// One kind of event, bound on every meter.
struct Cell(Box<[Bound]>);

impl Cell {
    #[inline]
    fn record(&self, ms: f64) {
        for b in &*self.0 {
            b.record(ms);
        }
    }
}

/// The attribute set of one kind of event.
struct Key<'a> {
    op: AuthOp,
    outcome: Outcome,
    route: &'a str,
    method: &'static str,
    rpc_method: Option<&'a str>,
    source: EventSource,
}

type RouteCells = [OnceLock<Cell>; METHODS * OUTCOMES];

#[derive(Clone, PartialEq, Eq, Hash)]
struct OwnedKey {
    op: AuthOp,
    outcome: Outcome,
    route: Box<str>,
    method: &'static str,
    rpc_method: Option<Box<str>>,
    source: EventSource,
}

/// An [`EventSink`] that records every auth event into OpenTelemetry instruments: the success
/// and failure counter of its operation, the rate-limit, invalid-token and cancelled counters,
/// and the `auth.response.time.ms` / `auth.token.validation.time.ms` histograms (in
/// milliseconds, with [`LATENCY_BUCKETS_MS`] unless a view says otherwise).
///
/// Attributes come only from the bounded set in [`attr`](crate::attr). Each distinct attribute
/// set is bound once, the first time it is seen (bound instruments skip the SDK's per-call
/// attribute lookup); after that, recording an event allocates nothing and takes no lock for
/// the routes of the layer's table. Events with no route id (token guards, events you
/// [`record`](EventSink::record) yourself) go through a shared map capped at 512 labels; beyond
/// that their route label is `_OTHER`.
///
/// One sink can record into several meters (for example one exported over OTLP and one behind
/// `/metrics`); each event is recorded into each.
pub struct OtelSink {
    meters: Box<[Instruments]>,
    routes: Box<[OnceLock<Box<RouteCells>>]>,
    labels: RwLock<HashMap<OwnedKey, Arc<Cell>>>,
    bind_lock: Mutex<()>,
}

impl fmt::Debug for OtelSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelSink")
            .field("meters", &self.meters.len())
            .finish_non_exhaustive()
    }
}

impl OtelSink {
    /// A sink recording into each of `meters`. The instruments are created here, once.
    #[must_use]
    pub fn new<'a>(meters: impl IntoIterator<Item = &'a Meter>) -> Self {
        Self {
            meters: meters.into_iter().map(Instruments::new).collect(),
            routes: (0..ROUTE_SLOTS).map(|_| OnceLock::new()).collect(),
            labels: RwLock::new(HashMap::new()),
            bind_lock: Mutex::new(()),
        }
    }

    fn bind(&self, key: &Key<'_>) -> Cell {
        Cell(self.meters.iter().map(|m| m.bind(key)).collect())
    }

    fn shared_cell(&self, key: Key<'_>) -> Arc<Cell> {
        let mut owned = OwnedKey {
            op: key.op,
            outcome: key.outcome,
            route: key.route.into(),
            method: key.method,
            rpc_method: key.rpc_method.map(Into::into),
            source: key.source,
        };
        let labels = self.labels.read().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = labels.get(&owned) {
            return c.clone();
        }
        drop(labels);
        let mut labels = self.labels.write().unwrap_or_else(|e| e.into_inner());
        if labels.len() >= MAX_LABELS && !labels.contains_key(&owned) {
            owned.route = "_OTHER".into();
            owned.rpc_method = None;
        }
        if let Some(c) = labels.get(&owned) {
            return c.clone();
        }
        let cell = Arc::new(self.bind(&Key {
            route: &owned.route,
            rpc_method: owned.rpc_method.as_deref(),
            ..key
        }));
        labels.insert(owned, cell.clone());
        cell
    }
}

impl EventSink for OtelSink {
    fn record(&self, e: &AuthEvent<'_>) {
        let ms = duration_ms(e.latency);
        let key = Key {
            op: e.op,
            outcome: e.outcome,
            route: e.route,
            method: e.method,
            rpc_method: e.rpc_method,
            source: e.source,
        };
        let slot = e
            .route_id
            .filter(|_| e.source == EventSource::Route)
            .and_then(|id| self.routes.get(usize::from(id.0)));
        let Some(slot) = slot else {
            self.shared_cell(key).record(ms);
            return;
        };
        let cells = slot.get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        let cell = &cells[method_index(e.method) * OUTCOMES + outcome_index(e.outcome)];
        let cell = match cell.get() {
            Some(c) => c,
            None => {
                // One binder at a time, so two threads seeing a new kind of event at once do not
                // both bind it (the SDK would count the loser's handle against its limit).
                let _g = self.bind_lock.lock().unwrap_or_else(|e| e.into_inner());
                cell.get_or_init(|| self.bind(&key))
            }
        };
        cell.record(ms);
    }
}

/// A duration in milliseconds, as the histograms and gauges carry it.
#[must_use]
#[inline]
pub fn duration_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The window percentiles the quantile gauges report, read at collection time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct WindowQuantiles {
    /// Per operation (indexed by [`AuthOp::index`]): p50, p95, p99 of the response time, `None`
    /// when the window holds no request of that operation.
    pub ops: [[Option<Duration>; 3]; OPS],
    /// p50, p95, p99 of the token validation time (routes and guards).
    pub token_validation: [Option<Duration>; 3],
}

impl WindowQuantiles {
    /// No data.
    #[must_use]
    pub fn empty() -> Self {
        Self::default()
    }
}

/// Registers the quantile gauges (`auth.response.time.p95.ms` and the others) on `meter`; each
/// collection calls `source` (at most once per second, the result is cached for the gauges of
/// one collection).
pub fn register_quantile_gauges(
    meter: &Meter,
    source: Arc<dyn Fn() -> WindowQuantiles + Send + Sync>,
) {
    let cache = Arc::new(QuantileCache {
        source,
        last: Mutex::new(None),
    });
    let op_attrs: Arc<[[KeyValue; 1]; OPS]> =
        Arc::new(AuthOp::ALL.map(|op| [KeyValue::new(attr::OPERATION, op.as_str())]));
    for (qi, q) in Quantile::ALL.into_iter().enumerate() {
        let d = def(Measure::ResponseTimeQuantile(q));
        let (c, attrs) = (cache.clone(), op_attrs.clone());
        meter
            .f64_observable_gauge(d.name)
            .with_description(d.description)
            .with_unit(d.unit)
            .with_callback(move |obs| {
                let w = c.get();
                for (i, op) in w.ops.iter().enumerate() {
                    if let Some(v) = op[qi] {
                        obs.observe(duration_ms(v), &attrs[i]);
                    }
                }
            })
            .build();
        let d = def(Measure::TokenValidationQuantile(q));
        let c = cache.clone();
        meter
            .f64_observable_gauge(d.name)
            .with_description(d.description)
            .with_unit(d.unit)
            .with_callback(move |obs| {
                if let Some(v) = c.get().token_validation[qi] {
                    obs.observe(duration_ms(v), &[]);
                }
            })
            .build();
    }
}

struct QuantileCache {
    source: Arc<dyn Fn() -> WindowQuantiles + Send + Sync>,
    last: Mutex<Option<(std::time::Instant, WindowQuantiles)>>,
}

impl QuantileCache {
    fn get(&self) -> WindowQuantiles {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        match *last {
            Some((at, w)) if now.duration_since(at) < Duration::from_secs(1) => w,
            _ => {
                let w = (self.source)();
                *last = Some((now, w));
                w
            }
        }
    }
}
