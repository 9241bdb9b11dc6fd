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
        inner: Kind<B>,
        tracker: Tracker,
    }
}

pin_project! {
    /// Your body, or none (the refusal of a blocked address).
    #[project = KindProj]
    enum Kind<B> {
        Body { #[pin] b: B },
        Empty,
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
    pub(crate) fn untracked(b: B) -> Self {
        Self {
            inner: Kind::Body { b },
            tracker: Tracker::none(),
        }
    }

    pub(crate) fn tracked(b: B, tracker: Tracker) -> Self {
        Self {
            inner: Kind::Body { b },
            tracker,
        }
    }

    /// The body of a refusal: empty.
    pub(crate) fn empty() -> Self {
        Self {
            inner: Kind::Empty,
            tracker: Tracker::none(),
        }
    }

    /// The wrapped body itself, when nothing is left to watch: the response of a route the
    /// layer does not time, or one that ended with its head. Otherwise `Err(self)`, unchanged
    /// (also for the empty body of a refused request, which wraps none).
    ///
    /// For a server that boxes every response body (axum's `Body::new`), this spares the box
    /// around a body that is already boxed.
    pub fn into_untracked(self) -> Result<B, Self> {
        match self.inner {
            Kind::Body { b } if !self.tracker.is_active() => Ok(b),
            inner => Err(Self {
                inner,
                tracker: self.tracker,
            }),
        }
    }

    /// The wrapped body; `None` for the empty body of a refused request.
    pub fn get_ref(&self) -> Option<&B> {
        match &self.inner {
            Kind::Body { b } => Some(b),
            Kind::Empty => None,
        }
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
        let mut inner = match this.inner.project() {
            KindProj::Body { b } => b,
            KindProj::Empty => return Poll::Ready(None),
        };
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
        match &self.inner {
            Kind::Body { b } => b.is_end_stream(),
            Kind::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Kind::Body { b } => b.size_hint(),
            Kind::Empty => SizeHint::with_exact(0),
        }
    }
}
