//! The Tower pieces [`AuthWatch::layer`](crate::AuthWatch::layer) and
//! [`AuthWatch::token_guard`](crate::AuthWatch::token_guard) hand out, the route table, and the
//! event every auth request becomes ([`AuthEvent`]), for sinks of your own.
//!
//! ```
//! use std::sync::Arc;
//! use authwatch::layer::{AuthEvent, EventSink};
//!
//! // A sink of your own gets every event after authwatch's.
//! let failures = |e: &AuthEvent<'_>| {
//!     if e.outcome.is_failure() {
//!         eprintln!("{} failed on {}", e.op, e.route);
//!     }
//! };
//! let watch = authwatch::AuthWatch::builder().sink(Arc::new(failures)).build()?;
//! # drop(watch);
//! # Ok::<(), authwatch::BuildError>(())
//! ```

pub use authwatch_layer::{
    method_label, now, peer_addr, AuthEvent, AuthLayer, AuthLayerBuilder, AuthService, BlockSource,
    BlockedIp, Blocklist, EventSink, EventSource, GuardFuture, Inserted, Methods, Probe,
    ResponseBody, ResponseFuture, RouteError, RouteId, RouteInfo, RouteTable, Routes, Sinks,
    SpanHook, TokenGuard, TokenGuardLayer, DEFAULT_BASE_PATH, DEFAULT_GUARD_ROUTE,
    DEFAULT_SESSION_COOKIES, LOCKOUT_HEADER, MAX_TRUSTED_HOPS,
};
