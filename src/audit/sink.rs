//! The layer's side: [`AuditSink`], the [`EventSink`] that copies the auth requests into the
//! thread shards.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use authwatch_layer::{AuthEvent, EventSink, EventSource, Interest};

use super::buffers::{LayerRecord, SHARD_CAP, UA_INLINE};
use super::record::{class_of, AuditClass};
use super::worker::{Auditor, Msg};

/// The [`EventSink`] that turns the auth requests the layer sees (the security events, or
/// all of them) into `auth.request` records. Recording copies the event into the calling
/// thread's shard (no allocation, no shared cache line); the worker drains the shards every
/// 50 ms, or as soon as one is half full.
pub(crate) struct AuditSink {
    pub(crate) auditor: Arc<Auditor>,
    /// Successes and cancellations too (authentication class), not only the security events.
    pub(crate) successes: bool,
}

impl EventSink for AuditSink {
    fn interest(&self) -> Interest {
        if self.successes {
            Interest::ALL
        } else {
            // The security events: what `class_of` does not call authentication.
            Interest::FAILURE
                .or(Interest::ERROR)
                .or(Interest::RATE_LIMITED)
        }
    }

    fn record(&self, e: &AuthEvent<'_>) {
        if !self.successes && class_of(e.outcome) == AuditClass::Authentication {
            return;
        }
        let auditor = &self.auditor;
        if auditor.closed.load(Ordering::Relaxed) {
            auditor.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let layer = &auditor.layer;
        let mut ua = [0u8; UA_INLINE];
        let (mut ua_len, mut ua_cut) = (0, false);
        if let Some(s) = e.user_agent {
            // Cut at a character boundary (the layer hands over visible ASCII; an event built
            // by hand may hold anything).
            let mut n = s.len().min(UA_INLINE);
            while !s.is_char_boundary(n) {
                n -= 1;
            }
            ua[..n].copy_from_slice(&s.as_bytes()[..n]);
            ua_len = n as u16;
            ua_cut = n < s.len();
        }
        let rec = LayerRecord {
            finished_at: e.finished_at,
            op: e.op,
            outcome: e.outcome,
            route: layer.route_key(e),
            method: e.method,
            ip: e.client_ip,
            ms: e.latency.as_secs_f64() * 1000.0,
            guard: e.source == EventSource::TokenGuard,
            trace: crate::tracing_ctx::current(),
            ua_len,
            ua_cut,
            ua,
        };
        let shard = &layer.shards[authwatch_hdr::thread_shard(layer.shards.len())];
        let mut guard = shard.0.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut *guard;
        if s.records.len() < SHARD_CAP && !s.closed {
            s.records.push(rec);
            let half = s.records.len() == SHARD_CAP / 2;
            drop(guard);
            if half {
                // Once per half a shard; when the queue is full the worker is busy anyway.
                let _ = auditor.tx.try_send(Msg::Drain);
            }
        } else {
            drop(guard);
            auditor.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
