//! The layer's records waiting for the worker: one buffer per thread shard, with no heap per
//! record.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use authwatch_layer::{AuthEvent, AuthOp, EventSource, Outcome, MAX_GUARD_ROUTES};

use super::record::{class_of, AuditRecord};
use super::sanitize::{sanitize, MAX_USER_AGENT};

/// User-agent bytes a layer record holds inline (it is cut to [`MAX_USER_AGENT`] when written).
pub(super) const UA_INLINE: usize = MAX_USER_AGENT;
/// Route ids with a slot of their own (as in the metrics sink); others are interned labels.
const ROUTE_SLOTS: usize = 1024;
/// Most other labels kept (guard routes past [`MAX_GUARD_ROUTES`], events built by hand);
/// beyond, the label is `_OTHER`.
const MAX_LABELS: usize = 512;
/// Layer records a thread shard holds between two drains before new ones are dropped.
pub(super) const SHARD_CAP: usize = 2048;

#[derive(Clone, Copy)]
pub(super) enum RouteKey {
    Table(u16),
    /// A token guard's route, by its number ([`Sinks::guard_route`](authwatch_layer::Sinks::guard_route)).
    Guard(u16),
    Label(u16),
}

/// What the layer's sink keeps of one event: no heap, so recording allocates nothing.
#[derive(Clone, Copy)]
pub(super) struct LayerRecord {
    /// When the request ended, as the layer measured it (authwatch's clock); the worker turns
    /// it into wall-clock time, so the request path reads no second clock.
    pub(super) finished_at: std::time::Instant,
    pub(super) op: AuthOp,
    pub(super) outcome: Outcome,
    pub(super) route: RouteKey,
    pub(super) method: &'static str,
    pub(super) ip: Option<IpAddr>,
    pub(super) ms: f64,
    pub(super) guard: bool,
    /// The trace the request belongs to, when one is being recorded.
    pub(super) trace: Option<crate::tracing_ctx::TraceCtx>,
    pub(super) ua_len: u16,
    /// The user agent was longer than what is kept.
    pub(super) ua_cut: bool,
    pub(super) ua: [u8; UA_INLINE],
}

/// One thread's records, alone on its cache lines.
#[repr(align(128))]
pub(super) struct LayerShard(pub(super) Mutex<ShardState>);

#[derive(Default)]
pub(super) struct ShardState {
    pub(super) records: Vec<LayerRecord>,
    /// Set under the lock once the worker has stopped: a record that passed the sink's
    /// `closed` check just before shutdown is counted as dropped here instead of being left
    /// in a shard nobody drains.
    pub(super) closed: bool,
}

/// The layer's records waiting for the worker, per thread shard, and the route names they
/// refer to.
pub(crate) struct LayerRecords {
    pub(super) shards: Box<[LayerShard]>,
    routes: Box<[OnceLock<Arc<str>>]>,
    guards: Box<[OnceLock<Arc<str>>]>,
    labels: std::sync::RwLock<(std::collections::HashMap<Box<str>, u16>, Vec<Arc<str>>)>,
}

impl LayerRecords {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..authwatch_hdr::default_shards())
                .map(|_| LayerShard(Mutex::new(ShardState::default())))
                .collect(),
            routes: (0..ROUTE_SLOTS).map(|_| OnceLock::new()).collect(),
            guards: (0..MAX_GUARD_ROUTES).map(|_| OnceLock::new()).collect(),
            labels: std::sync::RwLock::new(Default::default()),
        }
    }

    pub(super) fn route_key(&self, e: &AuthEvent<'_>) -> RouteKey {
        // Numbered routes (the table's, the guards') without a lock.
        if let Some(id) = e.route_id {
            let (slots, key): (&[OnceLock<Arc<str>>], fn(u16) -> RouteKey) = match e.source {
                EventSource::Route => (&self.routes, RouteKey::Table),
                EventSource::TokenGuard => (&self.guards, RouteKey::Guard),
                _ => (&[], RouteKey::Table),
            };
            if let Some(slot) = slots.get(usize::from(id.0)) {
                slot.get_or_init(|| e.route.into());
                return key(id.0);
            }
        }
        if let Some(i) = self
            .labels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(e.route)
        {
            return RouteKey::Label(*i);
        }
        let mut l = self.labels.write().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = l.0.get(e.route) {
            return RouteKey::Label(*i);
        }
        let label = if l.1.len() >= MAX_LABELS {
            "_OTHER"
        } else {
            e.route
        };
        if let Some(i) = l.0.get(label) {
            return RouteKey::Label(*i);
        }
        let i = l.1.len() as u16;
        l.1.push(label.into());
        l.0.insert(label.into(), i);
        RouteKey::Label(i)
    }

    fn route_name(&self, k: RouteKey) -> Box<str> {
        match k {
            RouteKey::Table(id) => self.routes[usize::from(id)]
                .get()
                .map_or_else(|| "_OTHER".into(), |r| (**r).into()),
            RouteKey::Guard(id) => self.guards[usize::from(id)]
                .get()
                .map_or_else(|| "_OTHER".into(), |r| (**r).into()),
            RouteKey::Label(i) => self
                .labels
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .get(usize::from(i))
                .map_or_else(|| "_OTHER".into(), |r| (**r).into()),
        }
    }

    /// Takes every waiting record (the shard keeps `spare`'s capacity, so nothing is
    /// reallocated in the steady state).
    /// `out` gets each record and the drain's wall-clock time.
    pub(super) fn drain(
        &self,
        spare: &mut Vec<LayerRecord>,
        out: &mut dyn FnMut(AuditRecord, SystemTime),
    ) {
        // One reading of both clocks per drain: records are at most a drain interval old.
        let anchor = (SystemTime::now(), authwatch_layer::now());
        for shard in self.shards.iter() {
            spare.clear();
            std::mem::swap(
                &mut shard.0.lock().unwrap_or_else(|e| e.into_inner()).records,
                spare,
            );
            for r in spare.iter() {
                out(self.to_record(r, anchor), anchor.0);
            }
        }
    }

    /// Closes every shard (later records are dropped and counted by the sink) and returns
    /// how many records were still waiting in them.
    pub(super) fn close(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| {
                let mut s = shard.0.lock().unwrap_or_else(|e| e.into_inner());
                s.closed = true;
                let n = s.records.len() as u64;
                s.records = Vec::new();
                n
            })
            .sum()
    }

    fn to_record(
        &self,
        l: &LayerRecord,
        (wall, mono): (SystemTime, std::time::Instant),
    ) -> AuditRecord {
        let mut r = AuditRecord::at(
            "auth.request",
            class_of(l.outcome),
            "layer",
            wall - mono.saturating_duration_since(l.finished_at),
        );
        r.set_trace(l.trace);
        r.client_address = l.ip;
        if l.ua_len > 0 {
            let ua = String::from_utf8_lossy(&l.ua[..usize::from(l.ua_len)]);
            let mut ua = sanitize(&ua, MAX_USER_AGENT);
            if l.ua_cut && !ua.ends_with('…') {
                while ua.len() + '…'.len_utf8() > MAX_USER_AGENT {
                    ua.pop();
                }
                ua.push('…');
            }
            r.user_agent = Some(ua);
        }
        r.error_type = l.outcome.reason().map(|x| x.as_str().to_owned());
        r.operation = Some(l.op.as_str());
        r.outcome = Some(l.outcome.as_str());
        r.route = Some(self.route_name(l.route));
        r.method = Some(l.method);
        r.duration_ms = Some(l.ms);
        if l.guard {
            r.source = "token_guard";
        }
        r
    }
}
