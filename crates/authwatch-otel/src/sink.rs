//! [`OtelSink`]: every auth event into OpenTelemetry counters and histograms.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use authwatch_hdr::thread_shard;
use authwatch_layer::catalog::{attr, def, Measure, Quantile};
use authwatch_layer::{
    AuthEvent, AuthOp, EventSink, EventSource, FailureReason, Outcome, MAX_GUARD_ROUTES,
};
use opentelemetry::metrics::{BoundHistogram, Histogram, Meter};
use opentelemetry::KeyValue;
use prometheus::proto::LabelPair;

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

/// Values a shard holds before it records them into the histograms.
const BATCH: usize = 64;

/// The histograms of one meter. Counters are observable instruments reading the cells.
struct Histograms {
    response_time: Histogram<f64>,
    validation_time: Histogram<f64>,
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

/// The counter measures, each an observable counter over the cells.
fn counter_measures() -> impl Iterator<Item = Measure> {
    AuthOp::ALL
        .into_iter()
        .flat_map(|op| [Measure::Success(op), Measure::Failure(op)])
        .chain([
            Measure::RateLimited,
            Measure::InvalidToken,
            Measure::Lockout,
            Measure::Cancelled,
        ])
}

/// The attribute set of one kind of event.
#[derive(Clone, Copy)]
struct Key<'a> {
    op: AuthOp,
    outcome: Outcome,
    route: &'a str,
    method: &'static str,
    rpc_method: Option<&'a str>,
    source: EventSource,
}

/// One thread's part of a cell, alone on its cache lines.
#[repr(align(128))]
struct Shard {
    count: AtomicU64,
    pending: Mutex<Pending>,
}

struct Pending {
    len: usize,
    /// The latencies waiting for the histograms and the windows, in nanoseconds, and when
    /// each ended.
    nanos: [u64; BATCH],
    ended: [Instant; BATCH],
    /// The sum of this thread's latencies in whole microseconds, each rounded down.
    latency_us: u64,
    /// The `/metrics` histogram of this thread's part of the cell, counted here instead of by
    /// the SDK (see [`OtelSink::for_pipeline`]).
    exposed: Buckets,
}

/// Latencies counted per [`LATENCY_BUCKETS_MS`] bucket (the last one is `+Inf`), with their sum.
#[derive(Clone, Copy, Default)]
struct Buckets {
    counts: [u64; LATENCY_BUCKETS_MS.len() + 1],
    sum: f64,
}

impl Buckets {
    #[inline]
    fn add(&mut self, ms: f64) {
        // Bucket i holds (bound[i-1], bound[i]], as the SDK's explicit buckets do.
        let i = LATENCY_BUCKETS_MS.partition_point(|b| *b < ms);
        self.counts[i] += 1;
        self.sum += ms;
    }

    fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }
}

/// The histograms one kind of event goes to, bound once, on one meter.
struct BoundTimings {
    response_time: Option<BoundHistogram<f64>>,
    validation_time: Option<BoundHistogram<f64>>,
}

/// One kind of event (operation, outcome, route, method): its count per thread, its pending
/// latencies per thread, its attributes, and its histograms bound on every meter.
struct Cell {
    op: AuthOp,
    outcome: Outcome,
    source: EventSource,
    /// The counter it counts toward.
    counter: Measure,
    /// Cells with the same counter and attributes (a route event and one you recorded
    /// yourself with the same template) share a group, and are observed as one sum: an
    /// observable instrument keeps only the last value observed for an attribute set.
    group: OnceLock<usize>,
    attrs: Box<[KeyValue]>,
    shards: Box<[OnceLock<Box<Shard>>]>,
    timings: Box<[BoundTimings]>,
    /// The `/metrics` histograms this cell counts into itself: response time, validation time.
    exposed: Option<Exposed>,
}

/// What the `/metrics` exposition shows of a cell's latencies.
struct Exposed {
    response_time: bool,
    validation_time: bool,
    /// The timing attributes as Prometheus label pairs, scope labels included.
    labels: Vec<LabelPair>,
}

impl Cell {
    fn new(key: &Key<'_>, histograms: &[Histograms], expose: bool, shards: usize) -> Self {
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
        let counter = match key.outcome {
            Outcome::Success => Measure::Success(op),
            Outcome::Failure(_) | Outcome::Error => Measure::Failure(op),
            Outcome::RateLimited => Measure::RateLimited,
            _ => Measure::Cancelled,
        };
        let guard = key.source == EventSource::TokenGuard;
        let (response_time, validation_time) = (!guard, guard || op == AuthOp::TokenValidation);
        Self {
            op,
            outcome: key.outcome,
            source: key.source,
            counter,
            group: OnceLock::new(),
            attrs: attrs.into(),
            shards: (0..shards).map(|_| OnceLock::new()).collect(),
            exposed: expose.then(|| Exposed {
                response_time,
                validation_time,
                labels: exposition_labels(&timing),
            }),
            timings: histograms
                .iter()
                .map(|h| BoundTimings {
                    response_time: response_time.then(|| h.response_time.bind(&timing)),
                    validation_time: validation_time.then(|| h.validation_time.bind(&timing)),
                })
                .collect(),
        }
    }

    #[inline]
    fn record(&self, inner: &Inner, latency: Duration, ended: Instant) {
        let shard = self.shards[thread_shard(self.shards.len())].get_or_init(|| {
            Box::new(Shard {
                count: AtomicU64::new(0),
                pending: Mutex::new(Pending {
                    len: 0,
                    nanos: [0; BATCH],
                    ended: [ended; BATCH],
                    latency_us: 0,
                    exposed: Buckets::default(),
                }),
            })
        });
        // Whole seconds and nanoseconds apart: no u128 arithmetic.
        let nanos = latency
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(latency.subsec_nanos()));
        shard.count.fetch_add(1, Ordering::Relaxed);
        let mut p = shard.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.latency_us = p.latency_us.wrapping_add(nanos / 1_000);
        if self.exposed.is_some() {
            p.exposed.add(duration_ms(latency));
        }
        // Only the SDK histograms and the windows read the batch.
        if !self.timings.is_empty() || inner.windows.get().is_some() {
            let len = p.len;
            p.nanos[len] = nanos;
            p.ended[len] = ended;
            p.len = len + 1;
            if p.len == BATCH {
                self.record_pending(&mut p, inner.windows.get());
            }
        }
    }

    /// This cell's `/metrics` histogram: every thread's part.
    fn exposed(&self) -> Buckets {
        let mut b = Buckets::default();
        for shard in self.shards.iter().filter_map(OnceLock::get) {
            b.merge(
                &shard
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .exposed,
            );
        }
        b
    }

    /// Records the pending latencies into every meter's histograms and into the windows.
    #[cold]
    #[inline(never)]
    fn record_pending(&self, p: &mut Pending, windows: Option<&Arc<dyn LatencyWindows>>) {
        let nanos = &p.nanos[..p.len];
        if !self.timings.is_empty() {
            let mut ms = [0.0; BATCH];
            for (m, n) in ms.iter_mut().zip(nanos) {
                *m = duration_ms(Duration::from_nanos(*n));
            }
            let ms = &ms[..nanos.len()];
            for t in &*self.timings {
                if let Some(h) = &t.response_time {
                    ms.iter().for_each(|v| h.record(*v));
                }
                if let Some(h) = &t.validation_time {
                    ms.iter().for_each(|v| h.record(*v));
                }
            }
        }
        if let Some(w) = windows {
            let mut values = nanos
                .iter()
                .zip(&p.ended)
                .map(|(n, at)| (Duration::from_nanos(*n), *at));
            w.record_batch(self.op, self.source, &mut values);
        }
        p.len = 0;
    }

    fn flush(&self, windows: Option<&Arc<dyn LatencyWindows>>) {
        for shard in self.shards.iter().filter_map(OnceLock::get) {
            let mut p = shard.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.len > 0 {
                self.record_pending(&mut p, windows);
            }
        }
    }

    /// The sum of the latencies, in microseconds.
    fn latency_us(&self) -> u64 {
        self.shards
            .iter()
            .filter_map(OnceLock::get)
            .map(|s| {
                s.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .latency_us
            })
            .fold(0, u64::wrapping_add)
    }

    fn total(&self) -> u64 {
        self.shards
            .iter()
            .filter_map(OnceLock::get)
            .map(|s| s.count.load(Ordering::Relaxed))
            .sum()
    }

    fn locked_out(&self) -> bool {
        self.outcome == Outcome::Failure(FailureReason::LockedOut)
    }

    fn counts_toward(&self, m: Measure) -> bool {
        self.counter == m
            || (m == Measure::InvalidToken && self.outcome.is_invalid_token())
            || (m == Measure::Lockout && self.locked_out())
    }
}

type RouteCells = [OnceLock<Arc<Cell>>; METHODS * OUTCOMES];

#[derive(Clone, PartialEq, Eq, Hash)]
struct OwnedKey {
    op: AuthOp,
    outcome: Outcome,
    route: Box<str>,
    method: &'static str,
    rpc_method: Option<Box<str>>,
    source: EventSource,
}

struct Inner {
    histograms: Box<[Histograms]>,
    routes: Box<[OnceLock<Box<RouteCells>>]>,
    /// The same for the token guards' routes, by their number ([`Sinks::guard_route`]).
    ///
    /// [`Sinks::guard_route`]: authwatch_layer::Sinks::guard_route
    guards: Box<[OnceLock<Box<RouteCells>>]>,
    labels: RwLock<HashMap<OwnedKey, Arc<Cell>>>,
    /// Every cell, for the collection-time callbacks.
    cells: RwLock<Vec<Arc<Cell>>>,
    /// Lockouts the application reported itself (no route).
    app_lockouts: Arc<AtomicU64>,
    /// Whether the cells count the `/metrics` latency histograms themselves.
    expose: bool,
    shards: usize,
    /// Where the latencies go besides the histograms ([`OtelSink::feed_windows`]).
    windows: OnceLock<Arc<dyn LatencyWindows>>,
}

impl Inner {
    fn new_cell(&self, key: &Key<'_>) -> Arc<Cell> {
        let cell = Arc::new(Cell::new(key, &self.histograms, self.expose, self.shards));
        let mut cells = self.cells.write().unwrap_or_else(|e| e.into_inner());
        let group = cells
            .iter()
            .find(|c| c.counter == cell.counter && c.attrs == cell.attrs)
            .and_then(|c| c.group.get().copied())
            .unwrap_or(cells.len());
        let _ = cell.group.set(group);
        cells.push(cell.clone());
        cell
    }

    /// The cells now (a copy, so no lock is held while they are read).
    fn cells(&self) -> Vec<Arc<Cell>> {
        self.cells.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records every pending latency, so a collection sees all of them.
    fn flush(&self, cells: &[Arc<Cell>]) {
        let windows = self.windows.get();
        for c in cells {
            c.flush(windows);
        }
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
        let cell = self.new_cell(&Key {
            route: &owned.route,
            rpc_method: owned.rpc_method.as_deref(),
            ..key
        });
        labels.insert(owned, cell.clone());
        cell
    }
}

/// An [`EventSink`] that turns every auth event into OpenTelemetry metrics: the success and
/// failure counter of its operation, the rate-limit, invalid-token and cancelled counters, and
/// the `auth.response.time.ms` / `auth.token.validation.time.ms` histograms (in milliseconds,
/// with [`LATENCY_BUCKETS_MS`] unless a view says otherwise).
///
/// Attributes come only from the bounded set in [`attr`](crate::attr). Each kind of event
/// (operation, outcome, route, method) has a cell with one counter and a small batch of
/// latencies per thread shard (threads share a shard only when there are more threads than
/// shards), so threads recording at once do not bounce cache lines. The counters are
/// observable instruments that read the cells at collection time; the latencies go into
/// histograms bound once to the cell's attributes, 64 at a time, and whatever is pending when a
/// collection starts is recorded before the histograms are read, so nothing is lost. (An event
/// counted while a collection runs may have its latency in the next collection's histogram.)
/// After the first event of a kind, recording allocates nothing and takes no shared lock for
/// the routes of the layer's table. Events with no route id (token guards, events you
/// [`record`](EventSink::record) yourself) go through a shared map capped at 512 labels; beyond
/// that their route label is `_OTHER`.
///
/// One sink can feed several meters (for example one exported over OTLP and one behind
/// `/metrics`); each sees every event. Use one sink per meter provider: two would register the
/// same observable counters twice, and a collection keeps only one of their values.
pub struct OtelSink {
    inner: Arc<Inner>,
    bind_lock: Mutex<()>,
}

impl fmt::Debug for OtelSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelSink")
            .field("meters", &self.inner.histograms.len())
            .finish_non_exhaustive()
    }
}

impl OtelSink {
    /// A sink feeding each of `meters`. The instruments are created here, once.
    #[must_use]
    pub fn new<'a>(meters: impl IntoIterator<Item = &'a Meter>) -> Self {
        let meters: Vec<&Meter> = meters.into_iter().collect();
        Self::build(&meters, &meters, None)
    }

    /// The sink of a [`Pipeline`](crate::Pipeline): every instrument on each of its meters,
    /// except that the latency histograms of the `/metrics` exposition are counted by the
    /// cells themselves (a bucket index and an addition in the lock `record` takes anyway)
    /// and exposed through the pipeline's Prometheus registry under the names, labels and
    /// buckets the SDK's exposition gives them. The SDK's histogram costs about 160
    /// instructions per value and per meter; with OTLP and `/metrics` both on, this halves
    /// what every auth request pays for its latency.
    #[must_use]
    pub fn for_pipeline(pipeline: &crate::Pipeline) -> Self {
        let all: Vec<&Meter> = pipeline.meters().iter().collect();
        let timed: Vec<&Meter> = pipeline.sdk_histogram_meters().iter().collect();
        Self::build(&all, &timed, pipeline.prometheus_registry())
    }

    fn build(meters: &[&Meter], timed: &[&Meter], registry: Option<&prometheus::Registry>) -> Self {
        let inner = Arc::new(Inner {
            histograms: timed
                .iter()
                .map(|m| Histograms {
                    response_time: histogram(m, Measure::ResponseTime),
                    validation_time: histogram(m, Measure::TokenValidationTime),
                })
                .collect(),
            routes: (0..ROUTE_SLOTS).map(|_| OnceLock::new()).collect(),
            guards: (0..MAX_GUARD_ROUTES).map(|_| OnceLock::new()).collect(),
            labels: RwLock::new(HashMap::new()),
            cells: RwLock::new(Vec::new()),
            app_lockouts: Arc::new(AtomicU64::new(0)),
            expose: registry.is_some(),
            shards: authwatch_hdr::default_shards(),
            windows: OnceLock::new(),
        });
        if let Some(registry) = registry {
            let collector = Exposition::new(Arc::downgrade(&inner));
            if let Err(e) = registry.register(Box::new(collector)) {
                tracing::error!(error = %e, "authwatch: the latency histograms could not join /metrics");
            }
        }
        for meter in meters {
            for (i, m) in counter_measures().enumerate() {
                let d = def(m);
                // A weak reference: the callbacks live as long as the provider, the cells
                // only as long as the sink.
                let weak = Arc::downgrade(&inner);
                meter
                    .u64_observable_counter(d.name)
                    .with_description(d.description)
                    .with_unit(d.unit)
                    .with_callback(move |obs| {
                        let Some(inner) = weak.upgrade() else { return };
                        let cells = inner.cells();
                        // The collection runs every callback before it reads the histograms;
                        // the first one records the pending latencies.
                        if i == 0 {
                            inner.flush(&cells);
                        }
                        let mut sums: Vec<(usize, u64, &[KeyValue])> = Vec::new();
                        for c in cells.iter().filter(|c| c.counts_toward(m)) {
                            let g = c.group.get().copied().unwrap_or(usize::MAX);
                            match sums.iter_mut().find(|(k, _, _)| *k == g) {
                                Some((_, n, _)) => *n += c.total(),
                                None => sums.push((g, c.total(), &c.attrs)),
                            }
                        }
                        for (_, n, attrs) in sums {
                            obs.observe(n, attrs);
                        }
                        if m == Measure::Lockout {
                            let n = inner.app_lockouts.load(Ordering::Relaxed);
                            if n > 0 {
                                obs.observe(n, &app_lockout_attrs());
                            }
                        }
                    })
                    .build();
            }
        }
        Self {
            inner,
            bind_lock: Mutex::new(()),
        }
    }
}

fn app_lockout_attrs() -> [KeyValue; 3] {
    [
        KeyValue::new(attr::OPERATION, AuthOp::Login.as_str()),
        KeyValue::new(
            attr::OUTCOME,
            Outcome::Failure(FailureReason::LockedOut).as_str(),
        ),
        KeyValue::new(attr::FAILURE_REASON, FailureReason::LockedOut.as_str()),
    ]
}

/// What the cells' latencies also go to: windows kept apart from the OpenTelemetry histograms
/// (authwatch's in-process statistics, its HDR windows), so that a request is recorded once.
///
/// The cells hand their latencies over in batches: when a thread's batch of a cell is full,
/// and at [`OtelSink::flush`], which a reader calls before it reads the windows.
pub trait LatencyWindows: Send + Sync {
    /// `values` (each latency with the instant it ended, in no particular order, some of them
    /// a while ago) are of `op`, recorded by `source`.
    fn record_batch(
        &self,
        op: AuthOp,
        source: EventSource,
        values: &mut dyn Iterator<Item = (Duration, Instant)>,
    );
}

/// The events of one operation counted since start, by outcome ([`OtelSink::op_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpCounts {
    /// Successes.
    pub success: u64,
    /// Failures: client failures of every reason, and server errors.
    pub failure: u64,
    /// Server errors (also in `failure`).
    pub errors: u64,
    /// Failures for an invalid or expired token (also in `failure`).
    pub invalid_token: u64,
    /// Failures for a locked account (also in `failure`).
    pub locked_out: u64,
    /// Rate-limited requests.
    pub rate_limited: u64,
    /// Requests cancelled before their end.
    pub cancelled: u64,
    /// The sum of the latencies of all but the cancelled, in whole microseconds (each rounded
    /// down).
    pub latency_us: u64,
}

impl OtelSink {
    /// Sends every latency the cells record to `windows` too, in batches (see
    /// [`LatencyWindows`]). Set once, before the first event: returns false, and changes
    /// nothing, when windows are already set.
    pub fn feed_windows(&self, windows: Arc<dyn LatencyWindows>) -> bool {
        self.inner.windows.set(windows).is_ok()
    }

    /// Hands every latency the cells hold to the histograms and the windows now: a reader of
    /// the windows calls this first, and then sees every event recorded before the call.
    pub fn flush(&self) {
        let cells = self.inner.cells();
        self.inner.flush(&cells);
    }

    /// The events counted since start, per operation (indexed by [`AuthOp::index`]).
    #[must_use]
    pub fn op_counts(&self) -> [OpCounts; OPS] {
        let mut out = [OpCounts::default(); OPS];
        for c in self.inner.cells() {
            let n = c.total();
            if n == 0 {
                continue;
            }
            let o = &mut out[c.op.index()];
            match c.outcome {
                Outcome::Success => o.success += n,
                Outcome::Failure(_) | Outcome::Error => {
                    o.failure += n;
                    if c.outcome == Outcome::Error {
                        o.errors += n;
                    }
                    if c.outcome.is_invalid_token() {
                        o.invalid_token += n;
                    }
                    if c.locked_out() {
                        o.locked_out += n;
                    }
                }
                Outcome::RateLimited => o.rate_limited += n,
                _ => {
                    o.cancelled += n;
                    continue;
                }
            }
            o.latency_us = o.latency_us.wrapping_add(c.latency_us());
        }
        out
    }

    /// The counter of lockouts the application reports itself (for example through an audit
    /// logger): each `fetch_add(1)` is one more `auth.lockout.count` with no route label.
    #[must_use]
    pub fn application_lockouts(&self) -> Arc<AtomicU64> {
        self.inner.app_lockouts.clone()
    }
}

impl EventSink for OtelSink {
    fn record(&self, e: &AuthEvent<'_>) {
        // Built only for a kind of event seen the first time (or without a route number).
        let key = || Key {
            op: e.op,
            outcome: e.outcome,
            route: e.route,
            method: e.method,
            rpc_method: e.rpc_method,
            source: e.source,
        };
        let slots = match e.source {
            EventSource::Route => &self.inner.routes,
            EventSource::TokenGuard => &self.inner.guards,
            _ => &self.inner.routes[..0],
        };
        let slot = e.route_id.and_then(|id| slots.get(usize::from(id.0)));
        let Some(slot) = slot else {
            self.inner
                .shared_cell(key())
                .record(&self.inner, e.latency, e.finished_at);
            return;
        };
        let cells = slot.get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        let cell = &cells[method_index(e.method) * OUTCOMES + outcome_index(e.outcome)];
        let cell = match cell.get() {
            Some(c) => c,
            None => {
                // One binder at a time, so two threads seeing a new kind of event at once do not
                // both bind it.
                let _g = self.bind_lock.lock().unwrap_or_else(|e| e.into_inner());
                cell.get_or_init(|| self.inner.new_cell(&key()))
            }
        };
        cell.record(&self.inner, e.latency, e.finished_at);
    }
}

/// A cell's timing attributes as the SDK's Prometheus exposition labels them: keys with `_`
/// for `.`, sorted, then the instrumentation scope's name and version.
fn exposition_labels(timing: &[KeyValue]) -> Vec<LabelPair> {
    let pair = |name: String, value: String| {
        let mut l = LabelPair::default();
        l.set_name(name);
        l.set_value(value);
        l
    };
    let mut labels: Vec<LabelPair> = timing
        .iter()
        .map(|kv| {
            pair(
                kv.key.as_str().replace('.', "_"),
                kv.value.as_str().into_owned(),
            )
        })
        .collect();
    labels.sort_by(|a, b| a.name().cmp(b.name()));
    labels.push(pair("otel_scope_name".into(), crate::SCOPE.into()));
    labels.push(pair(
        "otel_scope_version".into(),
        env!("CARGO_PKG_VERSION").into(),
    ));
    labels
}

/// The `auth.response.time.ms` and `auth.token.validation.time.ms` histograms of `/metrics`,
/// read from the cells at each scrape: cumulative, one series per set of timing attributes
/// (cells that differ only by failure reason add up, as bound SDK histograms with the same
/// attributes do).
struct Exposition {
    inner: std::sync::Weak<Inner>,
    descs: [prometheus::core::Desc; 2],
}

impl Exposition {
    fn new(inner: std::sync::Weak<Inner>) -> Self {
        let desc = |m: Measure| {
            let d = def(m);
            prometheus::core::Desc::new(
                d.name.replace('.', "_"),
                d.description.to_owned(),
                Vec::new(),
                HashMap::new(),
            )
            .expect("catalog names are valid Prometheus names")
        };
        Self {
            inner,
            descs: [
                desc(Measure::ResponseTime),
                desc(Measure::TokenValidationTime),
            ],
        }
    }
}

impl prometheus::core::Collector for Exposition {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::proto::{
            Bucket, Histogram as PromHistogram, Metric, MetricFamily, MetricType,
        };
        let Some(inner) = self.inner.upgrade() else {
            return Vec::new();
        };
        let cells = inner.cells();
        let mut families = Vec::with_capacity(2);
        for (fi, desc) in self.descs.iter().enumerate() {
            // Series by label set, in the order first seen.
            let mut series: Vec<(&[LabelPair], Buckets)> = Vec::new();
            for c in &cells {
                let Some(e) = &c.exposed else { continue };
                if !(if fi == 0 {
                    e.response_time
                } else {
                    e.validation_time
                }) {
                    continue;
                }
                let b = c.exposed();
                match series.iter_mut().find(|(l, _)| *l == e.labels.as_slice()) {
                    Some((_, sum)) => sum.merge(&b),
                    None => series.push((&e.labels, b)),
                }
            }
            let metrics: Vec<Metric> = series
                .into_iter()
                .map(|(labels, b)| {
                    let mut h = PromHistogram::default();
                    let mut cumulative = 0;
                    let mut buckets = Vec::with_capacity(LATENCY_BUCKETS_MS.len());
                    for (bound, n) in LATENCY_BUCKETS_MS.iter().zip(b.counts) {
                        cumulative += n;
                        let mut bucket = Bucket::default();
                        bucket.set_upper_bound(*bound);
                        bucket.set_cumulative_count(cumulative);
                        buckets.push(bucket);
                    }
                    h.set_bucket(buckets);
                    h.set_sample_count(b.counts.iter().sum());
                    h.set_sample_sum(b.sum);
                    let mut m = Metric::from_label(labels.to_vec());
                    m.set_histogram(h);
                    m
                })
                .collect();
            let mut f = MetricFamily::default();
            f.set_name(desc.fq_name.clone());
            f.set_help(desc.help.clone());
            f.set_field_type(MetricType::HISTOGRAM);
            f.set_metric(metrics);
            families.push(f);
        }
        families
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

/// Most query names [`QueryTimer`] keeps apart; beyond, they are `_OTHER`.
pub const MAX_QUERY_NAMES: usize = 64;

/// Times the application's own auth queries into `auth.db.query.time.ms`, by query name.
pub struct QueryTimer {
    histograms: Box<[Histogram<f64>]>,
    names: RwLock<HashMap<String, Arc<[BoundHistogram<f64>]>>>,
}

impl fmt::Debug for QueryTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryTimer")
            .field("meters", &self.histograms.len())
            .finish_non_exhaustive()
    }
}

impl QueryTimer {
    /// A timer recording into each of `meters`.
    #[must_use]
    pub fn new<'a>(meters: impl IntoIterator<Item = &'a Meter>) -> Self {
        Self {
            histograms: meters
                .into_iter()
                .map(|m| histogram(m, Measure::DbQueryTime))
                .collect(),
            names: RwLock::new(HashMap::new()),
        }
    }

    /// Records one query of `name` that took `d`. The first [`MAX_QUERY_NAMES`] names are
    /// their own series; later ones share `_OTHER`.
    pub fn record(&self, name: &str, d: Duration) {
        let ms = duration_ms(d);
        let found = self
            .names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        let bound = match found {
            Some(b) => b,
            None => {
                let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
                let key = if names.len() >= MAX_QUERY_NAMES && !names.contains_key(name) {
                    "_OTHER"
                } else {
                    name
                };
                names
                    .entry(key.to_owned())
                    .or_insert_with(|| {
                        let attrs = [KeyValue::new(attr::DB_QUERY_NAME, key.to_owned())];
                        self.histograms.iter().map(|h| h.bind(&attrs)).collect()
                    })
                    .clone()
            }
        };
        for h in bound.iter() {
            h.record(ms);
        }
    }
}
