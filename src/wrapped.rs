//! [`Wrapped`]: an axum app with authwatch around it, what [`AuthWatch::wrap`] returns.
//!
//! Its own service and future rather than tower's `MapResponse`: a mapped future moves itself
//! out when it completes, a copy of the whole router's future on every request.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use authwatch_layer::{AuthService, ResponseBody, ResponseFuture};
use axum::body::Body;
use axum::routing::future::RouteFuture;
use tower_service::Service;

#[cfg(doc)]
use crate::AuthWatch;

/// An axum app with authwatch around it: what [`AuthWatch::wrap`] returns, a service
/// `axum::serve` takes.
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
#[derive(Clone)]
pub struct Wrapped {
    pub(crate) inner: AuthService<axum::Router>,
}

impl fmt::Debug for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wrapped").finish_non_exhaustive()
    }
}

impl<B> Service<http::Request<B>> for Wrapped
where
    AuthService<axum::Router>: Service<
        http::Request<B>,
        Response = http::Response<ResponseBody<Body>>,
        Error = Infallible,
        Future = ResponseFuture<RouteFuture<Infallible>>,
    >,
{
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = WrappedFuture;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<http::Request<B>>::poll_ready(&mut self.inner, cx)
    }

    #[inline]
    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        WrappedFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Wrapped`].
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub struct WrappedFuture {
        #[pin]
        inner: ResponseFuture<RouteFuture<Infallible>>,
    }
}

impl fmt::Debug for WrappedFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedFuture").finish_non_exhaustive()
    }
}

impl Future for WrappedFuture {
    type Output = Result<axum::response::Response, Infallible>;

    /// The response as `axum::serve` takes it: a body the layer no longer watches is the
    /// router's own `Body`, passed on as it is; only a watched one is boxed.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map_ok(|res| {
            res.map(|b| match b.into_untracked() {
                Ok(body) => body,
                Err(watched) => Body::new(watched),
            })
        })
    }
}
