//! [`TokenGuardLayer`] and the settings it shares with every [`TokenGuard`] it makes.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::service::{Probe, TokenGuard};
use crate::auth::AuthLayer;
use crate::client_ip::ClientIp;
use crate::event::Sinks;
#[cfg(doc)]
use crate::op::{AuthOp, FailureReason, Outcome};
use crate::routes::RouteId;
use crate::stripe::Striped;

/// The route label of guarded requests when no better one is known.
pub const DEFAULT_GUARD_ROUTE: &str = "(guarded)";

pub(super) struct GuardShared {
    pub(super) sinks: Sinks,
    pub(super) client_ip: ClientIp,
    pub(super) label: Box<str>,
    /// The label's number among the guard routes of `sinks` ([`Sinks::guard_route`]).
    pub(super) label_id: Option<RouteId>,
    /// The auth layer in front, whose token-validation routes are not counted again.
    pub(super) watched_by: Option<AuthLayer>,
    /// Session keys: the watching layer's (so a token counts once across both), else our own.
    pub(super) sessions: Option<crate::session::SessionKeys>,
}

/// Wraps your token-validating middleware (say, tower-http's
/// `ValidateRequestHeaderLayer::bearer`, or an `axum::middleware::from_fn` JWT check) so that
/// every protected request is a [`AuthOp::TokenValidation`] event, without changing it.
///
/// The validator runs as before. authwatch puts a probe between it and your handler:
///
/// - when the validator hands the request on, that is a validation **success**, and the latency
///   is the time the validator took (not the handler's);
/// - when the validator answers by itself, that is a **failure** with reason
///   [`FailureReason::InvalidToken`] (one invalid-token attempt), or
///   [`Outcome::RateLimited`] for a 429, or [`Outcome::Error`] for a 5xx or a service error; the
///   latency is the time to its answer;
/// - when the request is dropped before either, it is [`Outcome::Cancelled`]; when the validator
///   panics, [`Outcome::Error`].
///
/// The probe notes the success on the thread that runs the validator, while the guard calls it
/// or polls its future: that is where `axum::middleware::from_fn`, tower-http's auth layers and
/// plain services hand the request on. A validator that hands it to another task (a `Buffer`
/// between the guard and the probe) is decided from its response instead: success for a 2xx or
/// 3xx, timed to the response, handler included.
///
/// The route label is axum's `MatchedPath` when available (feature `axum`, layer added with
/// `Router::layer` or `route_layer`), else the label set with [`label`](Self::label)
/// ([`DEFAULT_GUARD_ROUTE`] by default).
///
/// A guard on a route that an [`AuthLayer`] already records as a token validation
/// (get-session, userinfo) would count each request twice; tell the guard about the layer with
/// [`watched_by`](Self::watched_by) and it leaves those to the layer.
#[derive(Clone)]
pub struct TokenGuardLayer<L> {
    validator: L,
    shared: Arc<Striped<GuardShared>>,
}

impl<L> fmt::Debug for TokenGuardLayer<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGuardLayer")
            .field("label", &self.shared.shared().label)
            .finish_non_exhaustive()
    }
}

impl<L> TokenGuardLayer<L> {
    /// Wraps `validator`, sending events to `sinks`.
    pub fn new(validator: L, sinks: Sinks) -> Self {
        Self {
            validator,
            shared: Arc::new(Striped::new(GuardShared {
                label_id: sinks.guard_route(DEFAULT_GUARD_ROUTE),
                sinks,
                client_ip: ClientIp::default(),
                label: DEFAULT_GUARD_ROUTE.into(),
                watched_by: None,
                sessions: Some(crate::session::SessionKeys::new(
                    crate::session::DEFAULT_SESSION_COOKIES,
                )),
            })),
        }
    }

    fn map_shared(self, f: impl FnOnce(&mut GuardShared)) -> Self {
        let old = self.shared.shared();
        let mut shared = GuardShared {
            sinks: old.sinks.clone(),
            client_ip: old.client_ip,
            label: old.label.clone(),
            label_id: old.label_id,
            watched_by: old.watched_by.clone(),
            sessions: old.sessions.clone(),
        };
        f(&mut shared);
        Self {
            validator: self.validator,
            shared: Arc::new(Striped::new(shared)),
        }
    }

    /// How to find the client address (default [`ClientIp::peer`]).
    #[must_use]
    pub fn client_ip(self, client_ip: ClientIp) -> Self {
        self.map_shared(|s| s.client_ip = client_ip)
    }

    /// Requests that `layer` already records as token validations (its `get-session`,
    /// `userinfo`, introspection routes) are not counted again by this guard, and session keys
    /// are the layer's (a token counts as one session across both).
    /// `authwatch::AuthWatch::token_guard` sets this for you.
    #[must_use]
    pub fn watched_by(self, layer: AuthLayer) -> Self {
        self.map_shared(|s| {
            s.sessions = layer.session_keys().cloned();
            s.watched_by = Some(layer);
        })
    }

    /// The route label when axum's `MatchedPath` is not available. Keep it a constant: it is a
    /// metric attribute.
    #[must_use]
    pub fn label(self, label: impl Into<Box<str>>) -> Self {
        let label = label.into();
        self.map_shared(|s| {
            s.label_id = s.sinks.guard_route(&label);
            s.label = label;
        })
    }
}

impl<S, L> Layer<S> for TokenGuardLayer<L>
where
    L: Layer<Probe<S>>,
{
    type Service = TokenGuard<L::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenGuard {
            inner: self.validator.layer(Probe { inner }),
            shared: self.shared.clone(),
        }
    }
}
