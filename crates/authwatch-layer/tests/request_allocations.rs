//! What the layer allocates per auth request, counted by a counting allocator: after a thread's
//! first request, nothing. The tracker's box is kept per thread and filled again by the next
//! request, so a request costs no malloc and no free of the layer's own (the router and the
//! server still allocate what they allocate without it).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use authwatch_layer::{AuthEvent, AuthLayer, Outcome};
use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, Service};

/// A sign-in whose headers share their bytes, as a server's do (hyper's header values are
/// slices of its read buffer: cloning one counts a reference). A value built from a `&str`
/// would allocate its shared count on its first clone, which no server request does.
fn sign_in() -> Request<Full<Bytes>> {
    Request::post("/api/auth/sign-in/email")
        .header("user-agent", HeaderValue::from_static("curl/8.5.0"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

/// Calls `svc` with `req` and reads the whole body: the service, its future and its body all
/// answer at once.
fn serve<S, B>(svc: &mut S, req: Request<Full<Bytes>>)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>, Error = Infallible>,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let res = svc.call(req).now_or_never().unwrap().unwrap();
    let body = res.into_body().collect().now_or_never().unwrap().unwrap();
    assert_eq!(body.to_bytes().len(), 2);
}

#[test]
fn an_auth_request_allocates_nothing_of_the_layers_after_the_first() {
    let handler = || {
        service_fn(|_req: Request<Full<Bytes>>| async {
            let mut res = Response::new(Full::new(Bytes::from_static(b"no")));
            *res.status_mut() = StatusCode::UNAUTHORIZED;
            Ok::<_, Infallible>(res)
        })
    };
    let failures = Arc::new(AtomicU64::new(0));
    let seen = failures.clone();
    let layer = AuthLayer::builder()
        .sink(Arc::new(move |e: &AuthEvent<'_>| {
            if matches!(e.outcome, Outcome::Failure(_)) {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }))
        .build()
        .unwrap();
    let mut bare = handler();
    let mut watched = layer.layer(handler());
    // The first request of the thread allocates its tracker box (and the clock's anchor).
    serve(&mut bare, sign_in());
    serve(&mut watched, sign_in());
    assert_eq!(failures.load(Ordering::Relaxed), 1);

    for round in 0..3 {
        let (req_a, req_b) = (sign_in(), sign_in());
        let without = allocation_counter::measure(|| serve(&mut bare, req_a));
        let with = allocation_counter::measure(|| serve(&mut watched, req_b));
        assert_eq!(
            with.count_total, without.count_total,
            "round {round}: {} allocations with the layer, {} without",
            with.count_total, without.count_total
        );
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        4,
        "every request recorded"
    );
}
