//! [`AuthEvent`], the one record per finished auth request, and the [`EventSink`]s that take it.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
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
    /// The route's index in the layer's [`RouteTable`](crate::RouteTable); `None` for
    /// [`EventSource::TokenGuard`] events.
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
}

impl<F> EventSink for F
where
    F: Fn(&AuthEvent<'_>) + Send + Sync + 'static,
{
    fn record(&self, event: &AuthEvent<'_>) {
        self(event);
    }
}

/// A fan-out to several sinks, each called in turn with the same event.
#[derive(Clone, Default)]
pub struct Sinks {
    sinks: Arc<[Arc<dyn EventSink>]>,
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
        v.push(sink);
        Self { sinks: v.into() }
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
        for s in self.sinks.iter() {
            s.record(event);
        }
    }
}
