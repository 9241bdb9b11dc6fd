//! Outcome classification of whole responses: any status, `WWW-Authenticate`, `grpc-status`
//! (in the head or in trailers) and content type give exactly one event, never a panic.
#![no_main]

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use authwatch_layer::{AuthEvent, AuthLayer, AuthOp, Routes};
use bytes::Bytes;
use http_body::{Body, Frame};
use libfuzzer_sys::fuzz_target;
use tower_layer::Layer;
use tower_service::Service;

/// One data frame, then trailers when there are any.
struct Reply {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

#[derive(Clone)]
struct Fixed(Arc<(u16, Vec<(String, Vec<u8>)>, Option<Vec<u8>>)>);

impl Service<http::Request<()>> for Fixed {
    type Response = http::Response<Reply>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        let (status, headers, trailer) = &*self.0;
        let mut res = http::Response::new(Reply {
            data: Some(Bytes::from_static(b"x")),
            trailers: trailer.as_ref().and_then(|t| {
                let v = http::HeaderValue::from_bytes(t).ok()?;
                let mut m = http::HeaderMap::new();
                m.insert("grpc-status", v);
                Some(m)
            }),
        });
        *res.status_mut() = http::StatusCode::from_u16(*status).unwrap_or(http::StatusCode::OK);
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_bytes(v),
            ) {
                res.headers_mut().append(k, v);
            }
        }
        std::future::ready(Ok(res))
    }
}

/// Events seen by the layers' sink (libFuzzer runs one input at a time).
static EVENTS: AtomicU64 = AtomicU64::new(0);

/// Built once: a login route and a token-validation route (building per input made the
/// target spend most of its time in the route matcher).
fn layers() -> &'static [AuthLayer; 2] {
    static LAYERS: OnceLock<[AuthLayer; 2]> = OnceLock::new();
    LAYERS.get_or_init(|| {
        [AuthOp::Login, AuthOp::TokenValidation].map(|op| {
            AuthLayer::builder()
                .routes(Routes::empty().route("/x", op))
                .sink(Arc::new(|_: &AuthEvent<'_>| {
                    EVENTS.fetch_add(1, Ordering::Relaxed);
                }))
                .build()
                .expect("one route")
        })
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let status = 100 + u16::from_be_bytes([data[0], data[1]]) % 500;
    let flags = data[2];
    let rest = &data[3..];
    let mut parts = rest.splitn(3, |&b| b == 0xff);
    let www = parts.next().unwrap_or_default().to_vec();
    let grpc = parts.next().unwrap_or_default().to_vec();
    let trailer = parts.next().map(<[u8]>::to_vec);
    let mut headers = vec![("www-authenticate".to_owned(), www)];
    if flags & 1 != 0 {
        headers.push(("grpc-status".to_owned(), grpc));
    }
    if flags & 2 != 0 {
        headers.push(("content-type".to_owned(), b"application/grpc".to_vec()));
    }
    if flags & 4 != 0 {
        headers.push(("content-length".to_owned(), b"1".to_vec()));
    }
    let op = usize::from(flags & 8 != 0);
    let layer = &layers()[op];
    let before = EVENTS.load(Ordering::Relaxed);
    let mut svc = layer.layer(Fixed(Arc::new((status, headers, trailer))));
    let req = http::Request::post("/x").body(()).expect("a request");
    let mut cx = Context::from_waker(Waker::noop());
    let mut fut = pin!(svc.call(req));
    let Poll::Ready(Ok(res)) = fut.as_mut().poll(&mut cx) else {
        panic!("a ready inner service is ready");
    };
    let mut body = pin!(res.into_body());
    while let Poll::Ready(Some(_)) = body.as_mut().poll_frame(&mut cx) {}
    drop(body);
    let after = EVENTS.load(Ordering::Relaxed);
    assert_eq!(after - before, 1, "exactly one event per request");
});
