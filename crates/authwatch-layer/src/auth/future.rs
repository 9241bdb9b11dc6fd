//! [`ResponseFuture`]: waits for the response head and classifies it.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::body::ResponseBody;
use super::tracker::{OnPanic, Tracker};
use crate::blocks::Refusal;
use crate::classify::classify_head;
use crate::op::Outcome;

pin_project! {
    /// The response future of [`AuthService`](crate::AuthService).
    ///
    /// Dropping it before it completes (a client that went away, an outer timeout) records the
    /// request as [`Outcome::Cancelled`].
    pub struct ResponseFuture<F> {
        #[pin]
        pub(crate) inner: Inner<F>,
        pub(crate) tracker: Tracker,
    }
}

pin_project! {
    /// Your service's future, or the refusal of a blocked address (your service not called).
    #[project = InnerProj]
    pub(crate) enum Inner<F> {
        Call { #[pin] f: F },
        Refused { refusal: Refusal },
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("tracked", &self.tracker.is_active())
            .finish_non_exhaustive()
    }
}

/// The body length a response announced: the body's exact size hint first (no header lookup
/// for ordinary bodies), else the `Content-Length` header, which a streamed body may carry.
fn declared_len<B: Body>(res: &Response<B>) -> Option<u64> {
    res.body().size_hint().exact().or_else(|| {
        let v = res.headers().get(http::header::CONTENT_LENGTH)?.as_bytes();
        // Digits only, as hyper reads it (`parse` would also take "+5").
        if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(v).ok()?.parse::<u64>().ok()
    })
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = match this.inner.project() {
            InnerProj::Call { f } => f,
            InnerProj::Refused { refusal } => {
                let res = Response::from_parts(refusal.head(), ());
                // The attack-time limit's refusal is this request's answer: classified and
                // recorded (rate limited) as if the service had given it.
                if let Some((op, grpc)) = this.tracker.route() {
                    let classified = classify_head(op, &res, grpc, false);
                    let status = res.status().as_u16();
                    let mut tracker = std::mem::replace(this.tracker, Tracker::none());
                    tracker.head(status, classified, true, || Some(0));
                }
                return Poll::Ready(Ok(res.map(|()| ResponseBody::empty())));
            }
        };
        let Some((op, grpc)) = this.tracker.route() else {
            let result = ready!(inner.poll(cx));
            return Poll::Ready(result.map(|res| res.map(ResponseBody::untracked)));
        };
        // A panic in the handler is a server error. An outer `CatchPanicLayer` would catch it
        // and then drop this future normally, which would read as a cancellation: the guard
        // records it while the panic unwinds through here.
        let in_span = this.tracker.enter();
        let guard = OnPanic(this.tracker);
        let result = ready!(inner.poll(cx));
        drop(guard);
        drop(in_span);
        let mut res = match result {
            Ok(res) => res,
            Err(e) => {
                this.tracker.finish(Outcome::Error);
                return Poll::Ready(Err(e));
            }
        };
        // The lockout header is taken off every refusal, so the client is not told (a lockout
        // answered as a plain 401 stays a plain 401); the same lookup tells the classifier.
        let locked_out =
            res.status().is_client_error() && crate::classify::take_lockout(res.headers_mut());
        let classified = classify_head(op, &res, grpc, locked_out);
        let status = res.status().as_u16();
        let mut tracker = std::mem::replace(this.tracker, Tracker::none());
        let ended = tracker.head(status, classified, res.body().is_end_stream(), || {
            declared_len(&res)
        });
        Poll::Ready(Ok(if ended {
            res.map(ResponseBody::untracked)
        } else {
            res.map(|b| ResponseBody::tracked(b, tracker))
        }))
    }
}
