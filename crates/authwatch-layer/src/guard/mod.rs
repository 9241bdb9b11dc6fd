//! [`TokenGuardLayer`]: measures an existing token-validating middleware without changing it.
//!
//! [`TokenGuardLayer`] is in `layer.rs`, the [`TokenGuard`] it wraps around your validator and
//! the [`Probe`] behind it in `service.rs`, its [`GuardFuture`] in `future.rs`, and the ticket
//! that links them for one request (and emits its one event) in `ticket.rs`.

mod future;
mod layer;
mod service;
mod ticket;

pub use future::GuardFuture;
pub use layer::{TokenGuardLayer, DEFAULT_GUARD_ROUTE};
pub use service::{Probe, TokenGuard};
