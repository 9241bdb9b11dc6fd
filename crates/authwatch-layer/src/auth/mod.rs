//! [`AuthLayer`] and [`AuthService`]: recognise, time, and hand over.
//!
//! [`AuthLayer`] and its builder are in `layer.rs`, the [`AuthService`] it wraps around yours
//! in `service.rs`, its [`ResponseFuture`] in `future.rs` and [`ResponseBody`] in `body.rs`;
//! both call back into the request's tracker (`tracker.rs`), which emits its one event.

mod body;
mod future;
mod layer;
mod service;
mod tracker;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::{AuthLayer, AuthLayerBuilder, SpanHook};
pub use service::AuthService;
