//! [`ResponseBody`]: stops the clock at the end of the body and reads gRPC trailers.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::tracker::{OnPanic, Tracker};
use crate::op::Outcome;

pin_project! {
    /// The response body of [`AuthService`](crate::AuthService): your body, unchanged, with the
    /// end of the request recorded when it ends.
    ///
    /// The request's event is emitted when the body returns its last frame (trailers, `None`,
    /// a frame after which [`is_end_stream`](Body::is_end_stream) is true, or the last of the
    /// bytes its `Content-Length` announced), as an error when it
    /// returns an error, and as [`Outcome::Cancelled`] when it is dropped before the end.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        tracker: Tracker,
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("tracked", &self.tracker.is_active())
            .finish_non_exhaustive()
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn untracked(inner: B) -> Self {
        Self {
            inner,
            tracker: Tracker::none(),
        }
    }

    pub(crate) fn tracked(inner: B, tracker: Tracker) -> Self {
        Self { inner, tracker }
    }

    /// The wrapped body itself, when nothing is left to watch: the response of a route the
    /// layer does not time, or one that ended with its head. Otherwise `Err(self)`, unchanged.
    ///
    /// For a server that boxes every response body (axum's `Body::new`), this spares the box
    /// around a body that is already boxed.
    pub fn into_untracked(self) -> Result<B, Self> {
        if self.tracker.is_active() {
            Err(self)
        } else {
            Ok(self.inner)
        }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        if !this.tracker.is_active() {
            return inner.poll_frame(cx);
        }
        // As in the response future: a panic while producing the body is a server error.
        let in_span = this.tracker.enter();
        let guard = OnPanic(this.tracker);
        let frame = ready!(inner.as_mut().poll_frame(cx));
        drop(guard);
        drop(in_span);
        match &frame {
            None => this.tracker.finish_body(),
            Some(Err(_)) => this.tracker.finish(Outcome::Error),
            // Trailers are always the last frame; the server stops polling here.
            Some(Ok(f)) => match f.trailers_ref() {
                Some(trailers) => this.tracker.finish_trailers(trailers),
                None => {
                    if let Some(data) = f.data_ref() {
                        this.tracker.sent(data);
                    }
                    if inner.is_end_stream() {
                        this.tracker.finish_body();
                    }
                }
            },
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
