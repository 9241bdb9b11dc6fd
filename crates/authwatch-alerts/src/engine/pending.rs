//! Failures on their way to the brute-force [`Detector`]: each one copied into the recording
//! thread's shard, and counted into the detector in batches, off the request path.
//!
//! A failure is about 24 bytes pushed under the thread's own lock. The detector's sketch
//! update (several hashes, a read of every slot, the per-route counts) runs when someone reads
//! the detector ([`Inner::lock_detector`], which the evaluation calls every tick), or once a
//! thread's shard holds [`FLUSH_AT`] failures: the thread counts the batch under one lock if
//! the detector is free, and otherwise (the tick moving the window, `/metrics` counting
//! suspects, another thread's batch) hands it to the engine's thread, which counts it
//! ([`Inner::count_ready`]): in a flood, no request waits for the detector. Only when
//! [`READY_MAX`] batches already wait (the engine's thread behind), or the engine has no
//! thread (a zero tick), does a recording thread wait for the lock. Until counted a failure is
//! in a shard or a handed batch, never lost: nothing reads the detector without counting both
//! first.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, OnceLock};

use authwatch_layer::{
    AuthEvent, AuthOp, EventSource, FailureReason, Outcome, RouteId, MAX_GUARD_ROUTES,
};

use super::Inner;
use crate::detector::Detector;

/// How many of the last runs a failure may join.
const RECENT: usize = 4;

/// Failures a shard holds before its thread hands them over.
pub(super) const FLUSH_AT: usize = 256;

/// Handed batches that may wait for the engine's thread (4 MiB at most); beyond, a recording
/// thread counts its batch itself.
pub(super) const READY_MAX: usize = 64;

/// Route ids of the layer's table below this are numbered here; failures on others (and
/// events without a route id) go straight to the detector.
const ROUTE_LABELS: usize = 1024;

/// One thread's failures waiting for the detector: the client, the route's label number and
/// how many. A client failing again on the same route adds to its entry among the last
/// [`RECENT`] instead of taking another: an attack is a run of failures from one client,
/// which the detector then counts in one update ([`Detector::record_n`]). (Joining an earlier
/// run changes no count: the detector's counts do not depend on the order of failures
/// between two window moves.)
pub(super) type Waiting = Mutex<Vec<Run>>;

/// Failures in a row from one client on one route.
pub(super) struct Run {
    ip: IpAddr,
    label: u16,
    n: u32,
    /// Token failures (an invalid token, or a failed token validation): counted for the
    /// client, not for the route's distributed-attack signal.
    token: bool,
}

/// Whether `e` is a token failure rather than a credential one.
fn token_failure(e: &AuthEvent<'_>) -> bool {
    e.op == AuthOp::TokenValidation
        || matches!(e.outcome, Outcome::Failure(FailureReason::InvalidToken))
}

/// The route labels of pending failures, numbered by route id: write-once slots, read with
/// one atomic load.
pub(super) struct Labels {
    slots: Box<[OnceLock<Box<str>>]>,
}

impl Labels {
    pub(super) fn new() -> Self {
        Self {
            slots: (0..ROUTE_LABELS + MAX_GUARD_ROUTES)
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// The number of the event's route label, when it has one.
    #[inline]
    pub(super) fn number(&self, e: &AuthEvent<'_>) -> Option<u16> {
        let RouteId(id) = e.route_id?;
        let i = match e.source {
            EventSource::Route if usize::from(id) < ROUTE_LABELS => usize::from(id),
            EventSource::TokenGuard if usize::from(id) < MAX_GUARD_ROUTES => {
                ROUTE_LABELS + usize::from(id)
            }
            _ => return None,
        };
        let slot = &self.slots[i];
        let label = slot.get_or_init(|| e.route.into());
        if **label == *e.route {
            u16::try_from(i).ok()
        } else {
            // Another table numbered this id for another template: not ours to number.
            None
        }
    }

    fn text(&self, n: u16) -> &str {
        self.slots[usize::from(n)].get().map_or("_OTHER", |l| l)
    }
}

impl Inner {
    /// Counts a failure from `ip`: into the calling thread's shard, or straight into the
    /// detector when its route has no number.
    #[inline]
    pub(super) fn failed(&self, shard: &Waiting, ip: IpAddr, e: &AuthEvent<'_>) {
        let token = token_failure(e);
        let Some(label) = self.labels.number(e) else {
            return self.record_now(ip, e.route, token);
        };
        let mut w = shard.lock().unwrap_or_else(|e| e.into_inner());
        // The last few runs: a client's failures on a sign-in route and on a token route
        // interleave.
        let tail = w.len().saturating_sub(RECENT);
        match w[tail..]
            .iter_mut()
            .rfind(|r| r.ip == ip && r.label == label && r.token == token && r.n < u32::MAX)
        {
            Some(r) => r.n += 1,
            None => w.push(Run {
                ip,
                label,
                n: 1,
                token,
            }),
        }
        if w.len() >= FLUSH_AT {
            let full = std::mem::replace(&mut *w, Vec::with_capacity(FLUSH_AT));
            drop(w);
            self.count_batch(full);
        }
    }

    #[cold]
    fn record_now(&self, ip: IpAddr, route: &str, token: bool) {
        let mut d = self.lock_detector();
        let route = (!token).then_some(route);
        d.record_on(ip, route, 1);
        if let Some(o) = &self.cfg.failure_outbox {
            o.add(d.config().client_key(ip), route.unwrap_or(""), 1);
        }
    }

    #[cold]
    fn count_batch(&self, mut batch: Vec<Run>) {
        // Free: counted here, as a batch. Busy (the tick moving the window, a reader, another
        // thread's batch): handed to the engine's thread rather than waited for.
        match self.detector.try_lock() {
            Ok(mut d) => return self.count_runs(&mut d, &mut batch),
            Err(std::sync::TryLockError::Poisoned(e)) => {
                return self.count_runs(&mut e.into_inner(), &mut batch)
            }
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        if self.handoff.load(Ordering::Relaxed) {
            let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
            if ready.len() < READY_MAX {
                ready.push(batch);
                drop(ready);
                let (m, cv) = &*self.stop;
                m.lock().unwrap_or_else(|e| e.into_inner()).work = true;
                cv.notify_one();
                return;
            }
        }
        let mut d = self.detector.lock().unwrap_or_else(|e| e.into_inner());
        self.count_runs(&mut d, &mut batch);
    }

    /// Counts the batches handed over (the engine's thread, when woken and every tick).
    pub(super) fn count_ready(&self) {
        if self
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            return;
        }
        // The detector first, then the batches: a reader never sees a batch taken and not
        // yet counted.
        let mut d = self.detector.lock().unwrap_or_else(|e| e.into_inner());
        let batches = std::mem::take(&mut *self.ready.lock().unwrap_or_else(|e| e.into_inner()));
        for mut b in batches {
            self.count_runs(&mut d, &mut b);
        }
    }

    /// Counts `runs` into `d`, leaving `runs` empty (with its capacity).
    fn count_runs(&self, d: &mut Detector, runs: &mut Vec<Run>) {
        for r in runs.drain(..) {
            let route = (!r.token).then(|| self.labels.text(r.label));
            d.record_on(r.ip, route, r.n);
            // In a fleet, shared too (a token failure on no route: "").
            if let Some(o) = &self.cfg.failure_outbox {
                o.add(d.config().client_key(r.ip), route.unwrap_or(""), r.n);
            }
        }
    }

    /// The detector, with every waiting failure counted into it first.
    pub(super) fn lock_detector(&self) -> MutexGuard<'_, Detector> {
        let mut d = self.detector.lock().unwrap_or_else(|e| e.into_inner());
        let batches = std::mem::take(&mut *self.ready.lock().unwrap_or_else(|e| e.into_inner()));
        for mut b in batches {
            self.count_runs(&mut d, &mut b);
        }
        // The order is always detector, then the handed batches, then a shard; a recording
        // thread never holds its shard while it takes either.
        for s in self.shards.iter() {
            let mut w = s.waiting.lock().unwrap_or_else(|e| e.into_inner());
            self.count_runs(&mut d, &mut w);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use authwatch_layer::{AuthOp, EventSink, FailureReason, Outcome};

    use super::*;
    use crate::{AlertConfig, AlertEngine, ManualClock};

    fn failure(ip: IpAddr, route: &str, id: Option<u16>, source: EventSource) -> AuthEvent<'_> {
        let mut e = AuthEvent::new(
            AuthOp::Login,
            Outcome::Failure(FailureReason::InvalidCredentials),
            Duration::from_millis(1),
            Instant::now(),
        )
        .with_route(route)
        .with_client_ip(Some(ip))
        .with_source(source);
        e.route_id = id.map(RouteId);
        e
    }

    /// The runs waiting in every shard.
    fn waiting_runs(engine: &AlertEngine) -> usize {
        engine
            .inner
            .shards
            .iter()
            .map(|s| s.waiting.lock().unwrap().len())
            .sum()
    }

    /// The decision of `docs/runbooks.md`: a token failure counts for its client (brute force
    /// on tokens is brute force) but not for its route's distributed-attack signal (many
    /// addresses with a bad token are usually expired sessions).
    #[test]
    fn token_failures_count_for_their_client_and_not_for_the_route() {
        let engine = AlertEngine::new(
            AlertConfig::new()
                .tick(Duration::ZERO)
                .clock(Arc::new(ManualClock::new())),
        );
        let token = |ip: IpAddr, op: AuthOp, reason: FailureReason| {
            let mut e = failure(ip, "/session", Some(5), EventSource::Route);
            e.op = op;
            e.outcome = Outcome::Failure(reason);
            engine.record(&e);
        };
        for i in 0..60u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i));
            token(
                ip,
                AuthOp::TokenValidation,
                FailureReason::InvalidCredentials,
            );
            token(ip, AuthOp::Login, FailureReason::InvalidToken);
        }
        let one = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 250));
        for _ in 0..51 {
            token(one, AuthOp::TokenValidation, FailureReason::InvalidToken);
        }
        assert!(
            engine.route_failures().is_empty(),
            "{:?}",
            engine.route_failures()
        );
        let s = engine.suspects();
        assert_eq!((s.len(), s[0].ip, s[0].failures), (1, one, 51));
        // Credential failures from 60 addresses do count for the route.
        for i in 0..60u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0xc000_0300 + i));
            engine.record(&failure(ip, "/login", Some(6), EventSource::Route));
        }
        let r = engine.route_failures();
        assert_eq!((r.len(), r[0].route.as_str(), r[0].ips), (1, "/login", 60));
    }

    /// With the engine's thread running, a full batch that finds the detector busy is handed
    /// to it: the thread counts it once the detector is free, without any reader asking, and
    /// the recording thread never waits for the detector's lock (held here by the test, as
    /// while a tick moves the window). A batch that finds it free is counted at once.
    #[test]
    fn batches_that_find_the_detector_busy_are_counted_by_the_engine_thread() {
        let engine = AlertEngine::new(
            AlertConfig::new()
                .tick(Duration::from_secs(3_600))
                .clock(Arc::new(ManualClock::new())),
        );
        let record = |n: usize, first: u32| {
            for i in 0..n {
                let ip = IpAddr::V4(Ipv4Addr::from(first + i as u32));
                engine.record(&failure(ip, "/login", Some(3), EventSource::Route));
            }
        };
        let counted = || -> u64 {
            let d = engine.inner.detector.lock().unwrap();
            d.routes().iter().map(|r| r.failures).sum()
        };
        record(FLUSH_AT, 0xc611_0000);
        assert_eq!(
            counted(),
            FLUSH_AT as u64,
            "free: counted by the recording thread"
        );
        {
            let _busy = engine.inner.detector.lock().unwrap();
            record(FLUSH_AT * 3 + 5, 0xc612_0000);
            assert_eq!(engine.inner.ready.lock().unwrap().len(), 3, "three handed");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while counted() != (FLUSH_AT * 4) as u64 {
            assert!(Instant::now() < deadline, "{} counted", counted());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(engine.inner.ready.lock().unwrap().is_empty());
        assert_eq!(waiting_runs(&engine), 5);
        let all: u64 = engine.route_failures().iter().map(|r| r.failures).sum();
        assert_eq!(all, (FLUSH_AT * 4 + 5) as u64, "a reader counts the rest");
    }

    /// Failures wait in their thread's shard (a part of a batch), are counted in full batches
    /// by the thread that fills one, and every reader of the detector sees all of them: none
    /// lost, none counted twice, each under its own route's label.
    #[test]
    fn every_waiting_failure_is_counted_once_before_any_read() {
        let engine = AlertEngine::new(
            AlertConfig::new()
                .tick(Duration::ZERO)
                .clock(Arc::new(ManualClock::new())),
        );
        let per_thread = FLUSH_AT * 2 + 17;
        std::thread::scope(|s| {
            for t in 0..3u8 {
                let engine = &engine;
                s.spawn(move || {
                    let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, t));
                    for i in 0..per_thread {
                        let e = if i % 2 == 0 {
                            failure(ip, "/login", Some(3), EventSource::Route)
                        } else {
                            failure(ip, "/api/me", Some(3), EventSource::TokenGuard)
                        };
                        engine.record(&e);
                    }
                });
            }
        });
        let waiting = waiting_runs(&engine);
        assert!(waiting > 0 && waiting < 3 * FLUSH_AT, "{waiting} waiting");
        // A run of failures from one client on one route takes one entry.
        let runner = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
        for _ in 0..1_000 {
            engine.record(&failure(runner, "/login", Some(3), EventSource::Route));
        }
        assert_eq!(waiting_runs(&engine), waiting + 1);
        // A failure without a route id, and one whose id another template already holds, go
        // straight to the detector (which counts the waiting ones first).
        let other = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
        engine.record(&failure(other, "/hand-made", None, EventSource::Route));
        engine.record(&failure(other, "/other-table", Some(3), EventSource::Route));

        let mut suspects = engine.suspects();
        suspects.sort_by_key(|s| s.ip);
        let counts: Vec<u64> = suspects.iter().map(|s| s.failures).collect();
        assert_eq!(
            counts,
            vec![
                1_000,
                per_thread as u64,
                per_thread as u64,
                per_thread as u64
            ],
            "{suspects:?}"
        );
        assert_eq!(engine.top_ip_failures(), 1_000);
        let mut routes = engine.route_failures();
        routes.sort_by(|a, b| a.route.cmp(&b.route));
        let by_route: Vec<(&str, u64)> = routes
            .iter()
            .map(|r| (r.route.as_str(), r.failures))
            .collect();
        let login = 3 * per_thread.div_ceil(2) as u64;
        assert_eq!(
            by_route,
            vec![
                ("/api/me", 3 * per_thread as u64 - login),
                ("/hand-made", 1),
                ("/login", login + 1_000),
                ("/other-table", 1),
            ]
        );
        assert_eq!(waiting_runs(&engine), 0);
    }
}
