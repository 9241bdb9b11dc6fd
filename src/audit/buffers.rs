//! The layer's records waiting for the worker: one buffer per thread shard, with no heap per
//! record.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use authwatch_layer::{AuthEvent, AuthOp, EventSource, Outcome, MAX_GUARD_ROUTES};

#[cfg(test)]
use super::record::AuditRecord;
use super::record::{class_of, unix_nanos, RecordView};
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

    /// The route's name: borrowed for the numbered routes, a shared label otherwise.
    fn route_name(&self, k: RouteKey) -> RouteName<'_> {
        let slot = match k {
            RouteKey::Table(id) => self.routes[usize::from(id)].get(),
            RouteKey::Guard(id) => self.guards[usize::from(id)].get(),
            RouteKey::Label(i) => {
                return self
                    .labels
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .1
                    .get(usize::from(i))
                    .map_or(RouteName::Borrowed("_OTHER"), |r| {
                        RouteName::Shared(r.clone())
                    })
            }
        };
        slot.map_or(RouteName::Borrowed("_OTHER"), |r| RouteName::Borrowed(r))
    }

    /// Takes every waiting record (the shard keeps `spare`'s capacity, so nothing is
    /// reallocated in the steady state).
    /// `out` gets each record and the drain's wall-clock time.
    #[cfg(test)]
    pub(super) fn drain(
        &self,
        spare: &mut Vec<LayerRecord>,
        out: &mut dyn FnMut(AuditRecord, SystemTime),
    ) {
        self.drain_views(spare, &mut |r, seen| {
            out(
                r.to_record(),
                SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(seen),
            );
        });
    }

    /// Takes every waiting record, as [`drain`](Self::drain), and hands each to `out` borrowed
    /// with the drain's wall-clock time (nanoseconds since the Unix epoch): nothing is
    /// allocated per record (a user agent that needs escaping aside).
    pub(super) fn drain_views(
        &self,
        spare: &mut Vec<LayerRecord>,
        out: &mut dyn FnMut(&RecordView<'_>, u64),
    ) {
        // One reading of both clocks per drain: records are at most a drain interval old.
        let anchor = (unix_nanos(SystemTime::now()), authwatch_layer::now());
        let mut scratch = ViewScratch::default();
        for shard in self.shards.iter() {
            spare.clear();
            std::mem::swap(
                &mut shard.0.lock().unwrap_or_else(|e| e.into_inner()).records,
                spare,
            );
            for r in spare.iter() {
                let route = self.route_name(r.route);
                out(&scratch.view(r, &route, anchor), anchor.0);
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
}

/// A route's name for one record.
enum RouteName<'a> {
    Borrowed(&'a str),
    Shared(Arc<str>),
}

impl RouteName<'_> {
    fn as_str(&self) -> &str {
        match self {
            Self::Borrowed(s) => s,
            Self::Shared(s) => s,
        }
    }
}

/// Room for the text a layer record's view holds that is not in the record as it is: a cut
/// user agent, an escaped one, the trace and span ids in hex.
#[derive(Default)]
struct ViewScratch {
    ua: Vec<u8>,
    ua_escaped: String,
    trace_id: [u8; 32],
    span_id: [u8; 16],
}

impl ViewScratch {
    /// The record `l` as written: `auth.request` at the time the request ended (from the
    /// drain's two clock readings), its user agent sanitized and cut as [`sanitize`] does.
    fn view<'a>(
        &'a mut self,
        l: &'a LayerRecord,
        route: &'a RouteName<'_>,
        (wall, mono): (u64, std::time::Instant),
    ) -> RecordView<'a> {
        let (trace_id, span_id) = match &l.trace {
            Some(t) => (
                Some(hex_into(&t.trace_id.to_bytes(), &mut self.trace_id)),
                Some(hex_into(&t.span_id.to_bytes(), &mut self.span_id)),
            ),
            None => (None, None),
        };
        let user_agent = if l.ua_len == 0 {
            None
        } else {
            Some(user_agent(l, &mut self.ua, &mut self.ua_escaped))
        };
        RecordView {
            name: "auth.request",
            // As `nanos(wall - age)`: 0 before the epoch.
            time_unix_nano: wall.saturating_sub(
                u64::try_from(mono.saturating_duration_since(l.finished_at).as_nanos())
                    .unwrap_or(u64::MAX),
            ),
            class: class_of(l.outcome),
            source: if l.guard { "token_guard" } else { "layer" },
            user_id: None,
            client_address: l.ip,
            user_agent,
            error_type: l.outcome.reason().map(|x| x.as_str()),
            operation: Some(l.op.as_str()),
            outcome: Some(l.outcome.as_str()),
            route: Some(route.as_str()),
            method: Some(l.method),
            duration_ms: Some(l.ms),
            token_type: None,
            db_query: None,
            block_source: None,
            block_reason: None,
            block_ttl_s: None,
            block_refused: None,
            incident: None,
            access: None,
            checkpoint: None,
            trace_id,
            span_id,
            trace: l.trace,
        }
    }
}

/// `bytes` in lowercase hex (as `TraceId` and `SpanId` display), written into `out`.
fn hex_into<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, o) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        o[0] = DIGITS[usize::from(b >> 4)];
        o[1] = DIGITS[usize::from(b & 15)];
    }
    std::str::from_utf8(&out[..bytes.len() * 2]).unwrap_or_default()
}

/// The user agent of `l` as written: sanitized with [`sanitize`], and ending in `…` when the
/// sink cut it. Visible ASCII without quotes or backslashes, what browsers and clients send,
/// is kept as it is (what `sanitize` gives back for it) without building a `String`.
fn user_agent<'a>(l: &'a LayerRecord, cut: &'a mut Vec<u8>, escaped: &'a mut String) -> &'a str {
    let raw = &l.ua[..usize::from(l.ua_len)];
    let plain = raw
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'\\' && b != b'"');
    if plain {
        if !l.ua_cut {
            return std::str::from_utf8(raw).unwrap_or_default();
        }
        // As below: cut to leave room for the ellipsis (one byte per character here).
        let n = raw.len().min(MAX_USER_AGENT - '…'.len_utf8());
        cut.clear();
        cut.extend_from_slice(&raw[..n]);
        cut.extend_from_slice("…".as_bytes());
        return std::str::from_utf8(cut).unwrap_or_default();
    }
    let ua = String::from_utf8_lossy(raw);
    let mut ua = sanitize(&ua, MAX_USER_AGENT);
    if l.ua_cut && !ua.ends_with('…') {
        while ua.len() + '…'.len_utf8() > MAX_USER_AGENT {
            ua.pop();
        }
        ua.push('…');
    }
    *escaped = ua;
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use authwatch_layer::FailureReason;

    /// The record of `l` as it was built before views: every text field an owned `String`.
    fn reference(
        records: &LayerRecords,
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
        r.route = Some(records.route_name(l.route).as_str().into());
        r.method = Some(l.method);
        r.duration_ms = Some(l.ms);
        if l.guard {
            r.source = "token_guard";
        }
        r
    }

    /// A layer record with the user agent `ua` as the sink keeps it.
    fn layer_record(ua: &str, route: RouteKey) -> LayerRecord {
        let mut buf = [0u8; UA_INLINE];
        let mut n = ua.len().min(UA_INLINE);
        while !ua.is_char_boundary(n) {
            n -= 1;
        }
        buf[..n].copy_from_slice(&ua.as_bytes()[..n]);
        LayerRecord {
            finished_at: authwatch_layer::now(),
            op: AuthOp::Login,
            outcome: Outcome::Failure(FailureReason::InvalidCredentials),
            route,
            method: "POST",
            ip: Some("192.0.2.7".parse().unwrap()),
            ms: 1.25,
            guard: false,
            trace: None,
            ua_len: n as u16,
            ua_cut: n < ua.len(),
            ua: buf,
        }
    }

    #[test]
    fn views_hold_what_records_held() {
        let records = LayerRecords::new();
        let e = AuthEvent::new(
            AuthOp::Login,
            Outcome::RateLimited,
            std::time::Duration::from_millis(3),
            authwatch_layer::now(),
        )
        .with_route("/login/{id}");
        let label = records.route_key(&e);
        let table = {
            let mut e = e.clone();
            e.route_id = Some(authwatch_layer::RouteId(3));
            e.source = EventSource::Route;
            e.route = "/api/auth/sign-in/email";
            records.route_key(&e)
        };
        let uas = [
            String::new(),
            "curl/8.5.0".into(),
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0".into(),
            "x".repeat(253),
            "x".repeat(254),
            "y".repeat(256),
            "z".repeat(400),
            "evil\nINFO forged\t\"quoted\" \\ \u{1b}[31m".into(),
            "é".repeat(200),
            format!("{}\u{202e}tail", "a".repeat(250)),
            "ab\u{7f}cd".into(),
            format!("{}…", "w".repeat(300)),
        ];
        let wall = SystemTime::now();
        let anchor = (unix_nanos(wall), authwatch_layer::now());
        let mut scratch = ViewScratch::default();
        for (i, ua) in uas.iter().enumerate() {
            for route in [label, table, RouteKey::Guard(7), RouteKey::Label(400)] {
                let mut l = layer_record(ua, route);
                l.guard = i % 3 == 1;
                l.outcome = [
                    Outcome::Success,
                    Outcome::RateLimited,
                    Outcome::Failure(FailureReason::InvalidToken),
                ][i % 3];
                if i % 2 == 1 {
                    l.ip = Some("2001:db8::7".parse().unwrap());
                    l.trace = Some(crate::tracing_ctx::TraceCtx {
                        trace_id: opentelemetry::trace::TraceId::from_bytes([
                            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xa, 0xb, 0xc, 0xd, 0xe, 0xff,
                        ]),
                        span_id: opentelemetry::trace::SpanId::from_bytes([
                            0xf0, 0x0f, 0, 9, 0x10, 0xab, 0xcd, 0xef,
                        ]),
                        flags: opentelemetry::trace::TraceFlags::SAMPLED,
                    });
                }
                let name = records.route_name(l.route);
                let got = scratch.view(&l, &name, anchor).to_record();
                let want = reference(&records, &l, (wall, anchor.1));
                assert_eq!(got, want, "user agent {ua:?}");
            }
        }
    }
}
