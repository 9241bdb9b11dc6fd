//! [`AuthEvent`], the one record per finished auth request, and the [`EventSink`]s that take it.

use std::fmt;
use std::hash::BuildHasher as _;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::op::{AuthOp, Outcome};
use crate::routes::RouteId;

/// Where an event was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventSource {
    /// An auth route of the [`AuthLayer`](crate::AuthLayer); the latency is the whole response,
    /// to the end of the body.
    Route,
    /// A [`TokenGuard`](crate::TokenGuard) in front of a protected route; the latency is the
    /// token validation alone. The operation is always [`AuthOp::TokenValidation`].
    TokenGuard,
}

/// One finished auth request. Exactly one per auth request, whatever happened to it.
///
/// It is lent to each sink for the duration of [`EventSink::record`]; a sink that keeps
/// something copies what it needs. The fields are the bounded metric attributes (operation,
/// outcome, route template, method, rpc method) plus facts that must never become metric
/// attributes (the client address).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthEvent<'a> {
    /// The operation.
    pub op: AuthOp,
    /// How it ended.
    pub outcome: Outcome,
    /// The route template (`http.route`), never the raw path.
    pub route: &'a str,
    /// The route's index: for [`EventSource::Route`] in the layer's
    /// [`RouteTable`](crate::RouteTable), for [`EventSource::TokenGuard`] among the guard
    /// routes of the [`Sinks`] ([`Sinks::guard_route`]), so a sink can keep per-route state
    /// in an array instead of a map keyed by the label. `None` when unknown (an event built by
    /// hand, or a guard route past [`MAX_GUARD_ROUTES`]).
    pub route_id: Option<RouteId>,
    /// The request method (`http.request.method`), `_OTHER` for non-standard ones.
    pub method: &'static str,
    /// The gRPC method name (`rpc.method`) for gRPC routes.
    pub rpc_method: Option<&'a str>,
    /// The HTTP status, when a response head was produced.
    pub status: Option<u16>,
    /// The gRPC status code, when one was read.
    pub grpc_status: Option<u16>,
    /// From the request entering the layer to the end of the response body (or to the drop, or
    /// for the guard, to the validator's decision).
    pub latency: Duration,
    /// When it ended, on authwatch's clock ([`now`](crate::now)).
    pub finished_at: Instant,
    /// The client address under the configured [`ClientIp`](crate::ClientIp) rules. Never a
    /// metric attribute.
    pub client_ip: Option<IpAddr>,
    /// The request's `User-Agent`, when it is visible ASCII; unbounded and client-controlled, so
    /// a sink that keeps it truncates and escapes it. Never a metric attribute.
    pub user_agent: Option<&'a str>,
    /// Where it was measured.
    pub source: EventSource,
    /// A keyed hash of the credential the request presented (the bearer token or the session
    /// cookie), for counting distinct sessions; the key is random per process, so the value
    /// says nothing about the token and matches nothing outside. `None` without one, or with
    /// session tracking off. Never a metric attribute.
    pub session: Option<u64>,
}

impl<'a> AuthEvent<'a> {
    /// An event for code that measures auth work itself (a queue consumer, a non-HTTP path),
    /// to feed the same sinks. Other fields start empty; set them with the `with_` methods.
    #[must_use]
    pub fn new(op: AuthOp, outcome: Outcome, latency: Duration, finished_at: Instant) -> Self {
        Self {
            op,
            outcome,
            route: "",
            route_id: None,
            method: "_OTHER",
            rpc_method: None,
            status: None,
            grpc_status: None,
            latency,
            finished_at,
            client_ip: None,
            user_agent: None,
            source: EventSource::Route,
            session: None,
        }
    }

    /// Sets the route template.
    #[must_use]
    pub fn with_route(mut self, route: &'a str) -> Self {
        self.route = route;
        self
    }

    /// Sets the client address.
    #[must_use]
    pub fn with_client_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.client_ip = ip;
        self
    }

    /// Sets the user agent.
    #[must_use]
    pub fn with_user_agent(mut self, user_agent: Option<&'a str>) -> Self {
        self.user_agent = user_agent;
        self
    }

    /// Sets the session key.
    #[must_use]
    pub fn with_session(mut self, session: Option<u64>) -> Self {
        self.session = session;
        self
    }

    /// Sets the source.
    #[must_use]
    pub fn with_source(mut self, source: EventSource) -> Self {
        self.source = source;
        self
    }

    /// Sets the HTTP status.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
}

/// Something that takes every finished auth request: stats, metrics, alerts, audit.
///
/// `record` runs on the request's task, at the end of the response body, once per auth request.
/// It must be cheap and must never block or panic: count, record into a histogram, or push onto a
/// bounded queue, and do anything slow elsewhere.
///
/// Closures `Fn(&AuthEvent<'_>)` are sinks.
pub trait EventSink: Send + Sync + 'static {
    /// Takes one event.
    fn record(&self, event: &AuthEvent<'_>);

    /// The outcomes this sink takes: [`Sinks`] asks once, when the sink joins, and does not
    /// call it for the others. Every outcome unless a sink says otherwise.
    fn interest(&self) -> Interest {
        Interest::ALL
    }
}

/// A set of outcomes a sink takes ([`EventSink::interest`]): most requests succeed, and a
/// sink that keeps only failures then costs them nothing, not even a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interest(u8);

impl Interest {
    /// Every outcome.
    pub const ALL: Self = Self(0b1_1111);
    /// [`Outcome::Success`].
    pub const SUCCESS: Self = Self(1);
    /// [`Outcome::Failure`], whatever the reason.
    pub const FAILURE: Self = Self(1 << 1);
    /// [`Outcome::Error`].
    pub const ERROR: Self = Self(1 << 2);
    /// [`Outcome::RateLimited`].
    pub const RATE_LIMITED: Self = Self(1 << 3);
    /// [`Outcome::Cancelled`].
    pub const CANCELLED: Self = Self(1 << 4);

    /// Both sets.
    #[must_use]
    pub const fn or(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether the set holds `outcome`.
    #[must_use]
    #[inline]
    pub const fn contains(self, outcome: Outcome) -> bool {
        self.0 & Self::of(outcome).0 != 0
    }

    #[inline]
    const fn of(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Success => Self::SUCCESS,
            Outcome::Failure(_) => Self::FAILURE,
            Outcome::Error => Self::ERROR,
            Outcome::RateLimited => Self::RATE_LIMITED,
            Outcome::Cancelled => Self::CANCELLED,
        }
    }
}

impl<F> EventSink for F
where
    F: Fn(&AuthEvent<'_>) + Send + Sync + 'static,
{
    fn record(&self, event: &AuthEvent<'_>) {
        self(event);
    }
}

/// A sink that takes only some outcomes: `sink`, called for those of `interest` alone.
///
/// ```
/// use authwatch_layer::{AuthEvent, Interest, Only, Sinks};
/// use std::sync::Arc;
///
/// let failures = Only::new(Interest::FAILURE.or(Interest::ERROR), |e: &AuthEvent<'_>| {
///     eprintln!("{} failed", e.op.as_str());
/// });
/// let sinks = Sinks::new().with(Arc::new(failures));
/// # let _ = sinks;
/// ```
#[derive(Debug, Clone)]
pub struct Only<S> {
    interest: Interest,
    sink: S,
}

impl<S: EventSink> Only<S> {
    /// `sink`, for the outcomes of `interest` alone.
    pub fn new(interest: Interest, sink: S) -> Self {
        Self { interest, sink }
    }
}

impl<S: EventSink> EventSink for Only<S> {
    fn record(&self, event: &AuthEvent<'_>) {
        if self.interest.contains(event.outcome) {
            self.sink.record(event);
        }
    }

    fn interest(&self) -> Interest {
        Interest(self.interest.0 & self.sink.interest().0)
    }
}

/// How many distinct route labels the token guards of one [`Sinks`] number
/// ([`Sinks::guard_route`]); further labels go without a [`RouteId`].
pub const MAX_GUARD_ROUTES: usize = 256;

/// The route labels of token-guard events, each numbered once, for the life of the sinks.
///
/// Guard labels are axum's `MatchedPath` templates or a guard's fixed label: bounded by the
/// application, never by its clients. An open-addressed table of write-once slots: a lookup
/// is a hash, atomic loads and a string compare, never a lock or a shared write, so every
/// worker thread reads it without moving a cache line.
struct GuardRoutes {
    slots: Box<[OnceLock<Box<str>>]>,
}

impl Default for GuardRoutes {
    fn default() -> Self {
        Self {
            slots: (0..MAX_GUARD_ROUTES).map(|_| OnceLock::new()).collect(),
        }
    }
}

impl GuardRoutes {
    fn intern(&self, label: &str) -> Option<RouteId> {
        let start = foldhash::fast::FixedState::default().hash_one(label) as usize;
        for probe in 0..self.slots.len() {
            let i = (start.wrapping_add(probe)) % self.slots.len();
            let slot = &self.slots[i];
            let taken = match slot.get() {
                Some(l) => l,
                // Free: take it (another thread may take it first, with this label or another).
                None => slot.get_or_init(|| label.into()),
            };
            if **taken == *label {
                return u16::try_from(i).ok().map(RouteId);
            }
        }
        None
    }

    fn label(&self, id: RouteId) -> Option<&str> {
        self.slots.get(usize::from(id.0))?.get().map(|l| &**l)
    }
}

/// A fan-out to several sinks, each called in turn with the same event.
///
/// Clones share the sinks and the numbering of guard routes ([`guard_route`](Self::guard_route)).
#[derive(Clone, Default)]
pub struct Sinks {
    /// Each sink with the outcomes it takes.
    sinks: Arc<[(Interest, Arc<dyn EventSink>)]>,
    guard_routes: Arc<GuardRoutes>,
}

impl fmt::Debug for Sinks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sinks")
            .field("len", &self.sinks.len())
            .finish()
    }
}

impl Sinks {
    /// No sinks.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// These sinks plus `sink`.
    #[must_use]
    pub fn with(self, sink: Arc<dyn EventSink>) -> Self {
        let mut v: Vec<_> = self.sinks.iter().cloned().collect();
        v.push((sink.interest(), sink));
        Self {
            sinks: v.into(),
            guard_routes: self.guard_routes,
        }
    }

    /// The number of a token guard's route label (`label` is the first label given that
    /// number), the same for every guard feeding these sinks: what
    /// [`AuthEvent::route_id`] carries for [`EventSource::TokenGuard`] events. `None` once
    /// [`MAX_GUARD_ROUTES`] labels are numbered.
    #[must_use]
    pub fn guard_route(&self, label: &str) -> Option<RouteId> {
        self.guard_routes.intern(label)
    }

    /// The label numbered `id` by [`guard_route`](Self::guard_route).
    #[must_use]
    pub fn guard_label(&self, id: RouteId) -> Option<&str> {
        self.guard_routes.label(id)
    }

    /// How many sinks there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    /// True when there is none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }
}

impl EventSink for Sinks {
    fn record(&self, event: &AuthEvent<'_>) {
        let outcome = Interest::of(event.outcome).0;
        for (interest, s) in self.sinks.iter() {
            if interest.0 & outcome != 0 {
                s.record(event);
            }
        }
    }

    fn interest(&self) -> Interest {
        Interest(self.sinks.iter().fold(0, |a, (i, _)| a | i.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_routes_are_numbered_once_for_every_clone_and_thread() {
        let sinks = Sinks::new();
        let other = sinks.clone().with(Arc::new(|_: &AuthEvent<'_>| {}));
        let me = sinks.guard_route("/api/me").unwrap();
        assert_eq!(other.guard_route("/api/me"), Some(me));
        assert_eq!(sinks.guard_label(me), Some("/api/me"));
        // Threads numbering the same labels at once agree on every number.
        let labels: Vec<String> = (0..100).map(|i| format!("/r/{i}")).collect();
        let ids: Vec<Vec<Option<RouteId>>> = std::thread::scope(|s| {
            let runs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| labels.iter().map(|l| sinks.guard_route(l)).collect()))
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|v| *v == ids[0]));
        for (l, id) in labels.iter().zip(&ids[0]) {
            assert_eq!(sinks.guard_label(id.unwrap()), Some(l.as_str()));
        }
        // Bounded: past the table's size a label goes unnumbered, the others keep theirs.
        for i in 0..MAX_GUARD_ROUTES {
            let _ = sinks.guard_route(&format!("/more/{i}"));
        }
        assert_eq!(sinks.guard_route("/one/too/many"), None);
        assert_eq!(sinks.guard_route("/api/me"), Some(me));
        // A new set of sinks numbers anew.
        assert_eq!(Sinks::new().guard_label(me), None);
    }
}
