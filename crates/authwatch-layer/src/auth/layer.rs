//! [`AuthLayer`], its builder and the settings it shares with every [`AuthService`] it makes.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::service::AuthService;
use crate::client_ip::ClientIp;
#[cfg(doc)]
use crate::event::AuthEvent;
use crate::event::{EventSink, Sinks};
use crate::routes::{RouteError, RouteTable, Routes};
use crate::stripe::Striped;

pub(crate) struct Shared {
    pub(crate) routes: RouteTable,
    pub(crate) client_ip: ClientIp,
    pub(crate) sinks: Sinks,
    pub(crate) span_hook: Option<SpanHook>,
    pub(crate) span_client_address: bool,
    pub(crate) sessions: Option<crate::session::SessionKeys>,
    pub(crate) blocks: Option<Arc<crate::blocks::Blocklist>>,
    pub(crate) limiter: Option<Arc<dyn crate::blocks::Limiter>>,
}

/// Called with each enabled `auth.request` span and the request's headers, before the inner
/// service runs: where an OpenTelemetry bridge sets the span's parent from a W3C `traceparent`
/// header (the facade does).
#[derive(Clone)]
pub struct SpanHook(pub Arc<dyn Fn(&tracing::Span, &http::HeaderMap) + Send + Sync>);

impl fmt::Debug for SpanHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpanHook")
    }
}

/// The Tower layer that watches auth routes. See the [crate docs](crate).
///
/// Cheap to clone (one `Arc`). Build it with [`AuthLayer::builder`], or get it from
/// `authwatch::AuthWatch::layer`, which wires it to authwatch's own sinks.
#[derive(Clone)]
pub struct AuthLayer {
    handle: Arc<Striped<Shared>>,
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("routes", &self.handle.shared().routes.routes().len())
            .field("client_ip", &self.handle.shared().client_ip)
            .field("sinks", &self.handle.shared().sinks)
            .finish()
    }
}

impl AuthLayer {
    /// A builder with the default [`Routes`], [`ClientIp::peer`] and no sink.
    pub fn builder() -> AuthLayerBuilder {
        AuthLayerBuilder {
            routes: Routes::default(),
            client_ip: ClientIp::default(),
            sinks: Sinks::new(),
            span_hook: None,
            span_client_address: false,
            sessions: Some(crate::session::SessionKeys::new(
                crate::session::DEFAULT_SESSION_COOKIES,
            )),
            blocks: None,
            limiter: None,
        }
    }

    /// The route table this layer matches against.
    #[must_use]
    pub fn routes(&self) -> &RouteTable {
        &self.handle.shared().routes
    }

    /// The client-address rules.
    #[must_use]
    pub fn client_ip(&self) -> ClientIp {
        self.handle.shared().client_ip
    }

    pub(crate) fn span_hook(&self) -> Option<&SpanHook> {
        self.handle.shared().span_hook.as_ref()
    }

    pub(crate) fn session_keys(&self) -> Option<&crate::session::SessionKeys> {
        self.handle.shared().sessions.as_ref()
    }
}

/// Builds an [`AuthLayer`].
#[derive(Debug)]
#[must_use]
pub struct AuthLayerBuilder {
    routes: Routes,
    client_ip: ClientIp,
    sinks: Sinks,
    span_hook: Option<SpanHook>,
    span_client_address: bool,
    sessions: Option<crate::session::SessionKeys>,
    blocks: Option<Arc<crate::blocks::Blocklist>>,
    limiter: Option<Arc<dyn crate::blocks::Limiter>>,
}

impl fmt::Debug for dyn crate::blocks::Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("active", &self.active())
            .finish()
    }
}

impl AuthLayerBuilder {
    /// The routes to watch (default: [`Routes::default`]).
    pub fn routes(mut self, routes: Routes) -> Self {
        self.routes = routes;
        self
    }

    /// How to find the client address (default: [`ClientIp::peer`]).
    pub fn client_ip(mut self, client_ip: ClientIp) -> Self {
        self.client_ip = client_ip;
        self
    }

    /// Adds a sink; every event goes to every sink, in the order added.
    pub fn sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sinks = self.sinks.with(sink);
        self
    }

    /// Replaces the sinks with `sinks`.
    pub fn sinks(mut self, sinks: Sinks) -> Self {
        self.sinks = sinks;
        self
    }

    /// Called with each enabled `auth.request` span and the request headers (see
    /// [`SpanHook`]).
    pub fn on_request_span(mut self, hook: SpanHook) -> Self {
        self.span_hook = Some(hook);
        self
    }

    /// Which cookies hold a session (default [`DEFAULT_SESSION_COOKIES`](crate::DEFAULT_SESSION_COOKIES));
    /// with the bearer token, they give each event its [`session`](AuthEvent::session) key.
    /// An empty list keeps only bearer tokens.
    pub fn session_cookies(mut self, names: &[&str]) -> Self {
        self.sessions = Some(crate::session::SessionKeys::new(names));
        self
    }

    /// Turns session keys on (the default) or off (events carry `session: None`; no token or
    /// cookie is read).
    pub fn session_keys(mut self, on: bool) -> Self {
        match (on, self.sessions.is_some()) {
            (false, _) => self.sessions = None,
            (true, false) => {
                self.sessions = Some(crate::session::SessionKeys::new(
                    crate::session::DEFAULT_SESSION_COOKIES,
                ));
            }
            (true, true) => {}
        }
        self
    }

    /// Puts the client address on the `auth.request` span as `client.address` (default off:
    /// spans carry no address, user id or token unless you opt in).
    pub fn span_client_address(mut self, on: bool) -> Self {
        self.span_client_address = on;
        self
    }

    /// Refuses the requests of the addresses in `blocks` (`429` with `Retry-After`, your
    /// service not called): on auth routes, or on every route when the list says so. While the
    /// list is empty, the check is one relaxed atomic load.
    pub fn blocklist(mut self, blocks: Arc<crate::blocks::Blocklist>) -> Self {
        self.blocks = Some(blocks);
        self
    }

    /// Applies `limiter` to the auth routes while it is on (see [`Limiter`](crate::Limiter)):
    /// while it is off, the check is its [`active`](crate::Limiter::active).
    pub fn limiter(mut self, limiter: Arc<dyn crate::blocks::Limiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Builds the layer.
    ///
    /// # Errors
    ///
    /// A [`RouteError`] when a route template is invalid or two conflict.
    pub fn build(self) -> Result<AuthLayer, RouteError> {
        crate::clock::init();
        Ok(AuthLayer {
            handle: Arc::new(Striped::new(Shared {
                routes: self.routes.build()?,
                client_ip: self.client_ip,
                sinks: self.sinks,
                span_hook: self.span_hook,
                span_client_address: self.span_client_address,
                sessions: self.sessions,
                blocks: self.blocks,
                limiter: self.limiter,
            })),
        })
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            handle: self.handle.clone(),
        }
    }
}
