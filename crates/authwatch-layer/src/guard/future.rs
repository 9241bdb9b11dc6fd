//! [`GuardFuture`]: waits for the validator's answer and decides the outcome when the
//! validator answered by itself.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

#[cfg(doc)]
use super::service::TokenGuard;
use super::ticket::TicketState;
use crate::op::{FailureReason, Outcome};

/// Emits `Cancelled` if the guard's future is dropped before anything was decided.
pub(super) struct DropTicket(pub(super) Option<Arc<TicketState>>);

impl Drop for DropTicket {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            let outcome = if std::thread::panicking() {
                Outcome::Error
            } else {
                Outcome::Cancelled
            };
            t.emit_once(outcome, None);
        }
    }
}

/// Held across a poll of the validator: a panic there is a validation error.
struct TicketOnPanic<'a>(&'a mut DropTicket);

impl Drop for TicketOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(t) = self.0 .0.take() {
                t.emit_once(Outcome::Error, None);
            }
        }
    }
}

pin_project! {
    /// The response future of [`TokenGuard`].
    pub struct GuardFuture<F> {
        #[pin]
        pub(super) inner: F,
        pub(super) ticket: DropTicket,
    }
}

impl<F> fmt::Debug for GuardFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardFuture").finish_non_exhaustive()
    }
}

/// What the validator's own answer means, when it did not let the request through.
fn rejection<B>(res: &Response<B>) -> Outcome {
    if let Some(o) = res
        .extensions()
        .get::<Outcome>()
        .and_then(|o| o.normalize_override())
    {
        return o;
    }
    match res.status().as_u16() {
        200..=399 => Outcome::Success,
        429 => Outcome::RateLimited,
        400..=499 => Outcome::Failure(FailureReason::InvalidToken),
        _ => Outcome::Error,
    }
}

impl<F, B, E> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _in_span = this.ticket.0.as_ref().and_then(|t| t.enter());
        // If the validator panics, an outer catch-panic layer would otherwise make this look
        // like a cancellation.
        let guard = TicketOnPanic(this.ticket);
        let result = ready!(this.inner.poll(cx));
        drop(guard);
        if let Some(t) = this.ticket.0.take() {
            match &result {
                Ok(res) => t.emit_once(rejection(res), Some(res.status().as_u16())),
                Err(_) => t.emit_once(Outcome::Error, None),
            }
        }
        Poll::Ready(result)
    }
}
