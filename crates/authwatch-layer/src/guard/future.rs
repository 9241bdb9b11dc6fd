//! [`GuardFuture`]: waits for the validator's answer and decides the outcome when the
//! validator answered by itself.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

#[cfg(doc)]
use super::service::TokenGuard;
use super::ticket::{Current, TicketState};
use crate::op::{FailureReason, Outcome};

/// The guarded request's ticket while nobody has decided: emits the request as cancelled when
/// the future is dropped before the decision (as an error when dropped by a panic).
pub(super) struct DropTicket(pub(super) Option<Box<TicketState>>);

impl Drop for DropTicket {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            let outcome = if std::thread::panicking() {
                Outcome::Error
            } else {
                Outcome::Cancelled
            };
            t.emit(outcome, None);
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
        if this.ticket.0.is_none() {
            return this.inner.poll(cx);
        }
        let result = {
            let _in_span = this.ticket.0.as_deref().and_then(TicketState::enter);
            // The probe behind the validator finds the ticket while the validator runs.
            let _current = Current::install(&mut this.ticket.0);
            ready!(this.inner.poll(cx))
        };
        if let Some(t) = this.ticket.0.take() {
            match &result {
                Ok(res) => t.emit(rejection(res), Some(res.status().as_u16())),
                Err(_) => t.emit(Outcome::Error, None),
            }
        }
        Poll::Ready(result)
    }
}
