//! In-process tests of the layer's bookkeeping: exactly one event per auth request, whatever
//! the body or the caller does. The socket-level tests are in the workspace's `tests/`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use tower::{service_fn, Layer, Service, ServiceExt};

use crate::*;

type Seen = Arc<
    Mutex<
        Vec<(
            AuthOp,
            Outcome,
            String,
            Option<u16>,
            Option<u16>,
            EventSource,
        )>,
    >,
>;

fn layer() -> (AuthLayer, Seen) {
    layer_with(Routes::default())
}

fn layer_with(routes: Routes) -> (AuthLayer, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let sink = move |e: &AuthEvent<'_>| {
        s.lock().unwrap().push((
            e.op,
            e.outcome,
            e.route.to_owned(),
            e.status,
            e.grpc_status,
            e.source,
        ));
    };
    let layer = AuthLayer::builder()
        .routes(routes)
        .sink(Arc::new(sink))
        .build()
        .unwrap();
    (layer, seen)
}

fn outcomes(seen: &Seen) -> Vec<Outcome> {
    seen.lock().unwrap().iter().map(|e| e.1).collect()
}

fn post(path: &str) -> Request<Empty<Bytes>> {
    Request::post(path).body(Empty::new()).unwrap()
}

type Frames = Vec<Result<Frame<Bytes>, std::io::Error>>;

fn streamed(
    frames: Frames,
) -> StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>>
{
    StreamBody::new(futures_util::stream::iter(frames))
}

fn grpc_head() -> http::response::Builder {
    Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
}

fn trailers(code: &'static str) -> Frame<Bytes> {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from_static(code));
    Frame::trailers(t)
}

/// Polls a future once with a no-op waker.
fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    let waker = futures_util::task::noop_waker();
    f.poll_unpin(&mut Context::from_waker(&waker))
}

#[tokio::test]
async fn non_auth_routes_emit_nothing() {
    let (layer, seen) = layer();
    let svc = layer.layer(service_fn(|_r: Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hi"))))
    }));
    let res = svc.oneshot(post("/api/users")).await.unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "hi");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_event_comes_at_the_end_of_the_body() {
    let (layer, seen) = layer();
    let svc = layer.layer(service_fn(|_r: Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
            b"{\"ok\":true}",
        ))))
    }));
    let res = svc.oneshot(post("/api/auth/sign-in/email")).await.unwrap();
    assert!(seen.lock().unwrap().is_empty(), "not before the body ends");
    let mut body = res.into_body();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "{\"ok\":true}");
    // Full reports is_end_stream after its only frame: the event is out already.
    assert_eq!(outcomes(&seen), vec![Outcome::Success]);
    assert!(body.frame().await.is_none());
    drop(body);
    assert_eq!(seen.lock().unwrap().len(), 1, "exactly one");
    let e = &seen.lock().unwrap()[0];
    assert_eq!(
        (e.0, e.2.as_str(), e.3),
        (AuthOp::Login, "/api/auth/sign-in/email", Some(200))
    );
}

#[tokio::test]
async fn empty_bodies_and_head_requests_end_with_the_head() {
    let (layer, seen) = layer();
    let svc = layer.layer(service_fn(|_r: Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .status(204)
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
    }));
    let res = svc.oneshot(post("/api/auth/sign-out")).await.unwrap();
    assert_eq!(outcomes(&seen), vec![Outcome::Success]);
    drop(res);
    assert_eq!(seen.lock().unwrap().len(), 1);

    let (layer, seen) = layer_with(Routes::empty().route("/session", AuthOp::TokenValidation));
    let svc = layer.layer(service_fn(|_r: Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"never sent"))))
    }));
    let req = Request::head("/session").body(Empty::new()).unwrap();
    let res = svc.oneshot(req).await.unwrap();
    drop(res); // hyper never polls the body of a HEAD response
    assert_eq!(outcomes(&seen), vec![Outcome::Success]);
}

#[tokio::test]
async fn dropping_the_future_is_one_cancellation() {
    let (layer, seen) = layer();
    let mut svc = layer.layer(service_fn(|_r: Request<Empty<Bytes>>| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    }));
    let mut fut = Box::pin(svc.call(post("/login")));
    assert!(poll_once(&mut fut).is_pending());
    assert!(seen.lock().unwrap().is_empty());
    drop(fut);
    assert_eq!(outcomes(&seen), vec![Outcome::Cancelled]);
}

#[tokio::test]
async fn dropping_the_body_midway_is_one_cancellation() {
    let (layer, seen) = layer();
    let svc = layer.layer(service_fn(|_r: Request<Empty<Bytes>>| async {
        let frames: Frames = vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Ok(Frame::data(Bytes::from_static(b"b"))),
        ];
        Ok::<_, Infallible>(Response::new(streamed(frames)))
    }));
    let res = svc.oneshot(post("/register")).await.unwrap();
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    assert!(seen.lock().unwrap().is_empty());
    drop(body);
    assert_eq!(outcomes(&seen), vec![Outcome::Cancelled]);
    assert_eq!(seen.lock().unwrap()[0].3, Some(200), "the status is kept");
}

#[tokio::test]
async fn a_body_error_is_an_error() {
    let (layer, seen) = layer();
    let svc = layer.layer(service_fn(|_r: Request<Empty<Bytes>>| async {
        let frames: Frames = vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Err(std::io::Error::other("disk on fire")),
        ];
        Ok::<_, Infallible>(Response::new(streamed(frames)))
    }));
    let res = svc.oneshot(post("/login")).await.unwrap();
    assert!(res.into_body().collect().await.is_err());
    assert_eq!(outcomes(&seen), vec![Outcome::Error]);
}

#[tokio::test]
async fn a_service_error_is_an_error() {
    let (layer, seen) = layer();
    let svc = layer.layer(service_fn(|_r: Request<Empty<Bytes>>| async {
        Err::<Response<Empty<Bytes>>, _>(std::io::Error::other("refused"))
    }));
    assert!(svc.oneshot(post("/login")).await.is_err());
    assert_eq!(outcomes(&seen), vec![Outcome::Error]);
}

#[tokio::test]
async fn grpc_status_from_trailers_or_headers() {
    let cases: Vec<(Frames, Option<&'static str>, Outcome, Option<u16>)> = vec![
        (
            vec![
                Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                Ok(trailers("0")),
            ],
            None,
            Outcome::Success,
            Some(0),
        ),
        (
            vec![Ok(trailers("16"))],
            None,
            Outcome::Failure(FailureReason::InvalidCredentials),
            Some(16),
        ),
        (vec![Ok(trailers("8"))], None, Outcome::RateLimited, Some(8)),
        (vec![Ok(trailers("nope"))], None, Outcome::Error, None),
        (
            vec![Ok(Frame::data(Bytes::from_static(b"x")))],
            None,
            Outcome::Error,
            None,
        ),
        (
            vec![],
            Some("7"),
            Outcome::Failure(FailureReason::Forbidden),
            Some(7),
        ),
        (vec![], Some("garbage"), Outcome::Error, None),
    ];
    for (frames, head_status, want, want_code) in cases {
        let (layer, seen) = layer();
        let frames = Mutex::new(Some(frames));
        let svc = layer.layer(service_fn(move |_r: Request<Empty<Bytes>>| {
            let frames = frames.lock().unwrap().take().unwrap();
            async move {
                let mut b = grpc_head();
                if let Some(s) = head_status {
                    b = b.header("grpc-status", s);
                }
                Ok::<_, Infallible>(b.body(streamed(frames)).unwrap())
            }
        }));
        let mut req = post("/acme.Auth/Login");
        req.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        let res = svc.oneshot(req).await.unwrap();
        let _ = res.into_body().collect().await;
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].1, seen[0].4), (want, want_code), "{head_status:?}");
        assert_eq!(seen[0].2, "/{service}/Login");
    }
}

#[tokio::test]
async fn outcome_override_in_extensions() {
    let (layer, seen) = layer();
    let svc = layer.layer(service_fn(|_r: Request<Empty<Bytes>>| async {
        let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
        res.extensions_mut()
            .insert(Outcome::Failure(FailureReason::LockedOut));
        Ok::<_, Infallible>(res)
    }));
    let res = svc.oneshot(post("/login")).await.unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(
        outcomes(&seen),
        vec![Outcome::Failure(FailureReason::LockedOut)]
    );
}

/// A stand-in validator: lets requests with `authorization: Bearer good` through.
#[derive(Clone)]
struct Validator;
impl<S> Layer<S> for Validator {
    type Service = ValidatorService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ValidatorService(inner)
    }
}
#[derive(Clone)]
struct ValidatorService<S>(S);
impl<S> Service<Request<Empty<Bytes>>> for ValidatorService<S>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Infallible>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }
    fn call(&mut self, req: Request<Empty<Bytes>>) -> Self::Future {
        let ok = req
            .headers()
            .get("authorization")
            .is_some_and(|v| v == "Bearer good");
        let status = req
            .headers()
            .get("x-status")
            .map(|v| v.to_str().unwrap().parse::<u16>().unwrap());
        if ok {
            Box::pin(self.0.call(req))
        } else {
            Box::pin(async move {
                Ok(Response::builder()
                    .status(status.unwrap_or(401))
                    .body(Full::new(Bytes::new()))
                    .unwrap())
            })
        }
    }
}

#[tokio::test]
async fn token_guard_counts_validation_not_the_handler() {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let sinks = Sinks::new().with(Arc::new(move |e: &AuthEvent<'_>| {
        s.lock()
            .unwrap()
            .push((e.op, e.outcome, e.route.into(), e.status, None, e.source));
    }));
    let guard = TokenGuardLayer::new(Validator, sinks).label("/api/me");
    let handler = service_fn(|_r: Request<Empty<Bytes>>| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"me"))))
    });
    let svc = guard.layer(handler);

    let mut req = Request::get("/api/me").body(Empty::new()).unwrap();
    req.headers_mut()
        .insert("authorization", HeaderValue::from_static("Bearer good"));
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let bad = Request::get("/api/me").body(Empty::new()).unwrap();
    assert_eq!(svc.clone().oneshot(bad).await.unwrap().status(), 401);
    let mut limited = Request::get("/api/me").body(Empty::new()).unwrap();
    limited
        .headers_mut()
        .insert("x-status", HeaderValue::from_static("429"));
    svc.clone().oneshot(limited).await.unwrap();
    let mut broken = Request::get("/api/me").body(Empty::new()).unwrap();
    broken
        .headers_mut()
        .insert("x-status", HeaderValue::from_static("503"));
    svc.clone().oneshot(broken).await.unwrap();

    // Dropped while the handler runs, after validation: already a success, not a cancellation.
    let mut req = Request::get("/api/me").body(Empty::new()).unwrap();
    req.headers_mut()
        .insert("authorization", HeaderValue::from_static("Bearer good"));
    let mut s2 = svc.clone();
    let mut fut = s2.call(req);
    assert!(poll_once(&mut fut).is_pending());
    drop(fut);

    let seen = seen.lock().unwrap();
    let got: Vec<_> = seen.iter().map(|e| (e.0, e.1, e.2.as_str(), e.5)).collect();
    let tv = AuthOp::TokenValidation;
    let g = EventSource::TokenGuard;
    assert_eq!(
        got,
        vec![
            (tv, Outcome::Success, "/api/me", g),
            (
                tv,
                Outcome::Failure(FailureReason::InvalidToken),
                "/api/me",
                g
            ),
            (tv, Outcome::RateLimited, "/api/me", g),
            (tv, Outcome::Error, "/api/me", g),
            (tv, Outcome::Success, "/api/me", g),
        ]
    );
}

/// A validator that hands the request on from its future, after a pending poll (as
/// `axum::middleware::from_fn` does), or from another task when `spawn` is set.
fn async_validator<S>(
    spawn: bool,
) -> impl Layer<
    S,
    Service = tower::util::BoxCloneService<
        Request<Empty<Bytes>>,
        Response<Full<Bytes>>,
        Infallible,
    >,
> + Clone
where
    S: Service<Request<Empty<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    tower::layer::layer_fn(move |inner: S| {
        tower::util::BoxCloneService::new(service_fn(move |req: Request<Empty<Bytes>>| {
            let mut inner = inner.clone();
            async move {
                tokio::task::yield_now().await;
                if req.headers().get("authorization").is_none() {
                    return Ok(Response::builder()
                        .status(401)
                        .body(Full::new(Bytes::new()))
                        .unwrap());
                }
                if spawn {
                    // The probe is called on the spawned task, not in the guard's poll.
                    let handed = tokio::spawn(async move { inner.call(req).await });
                    Ok(handed.await.unwrap().unwrap())
                } else {
                    inner.call(req).await
                }
            }
        }))
    })
}

type Timed = Arc<Mutex<Vec<(String, Outcome, Duration)>>>;

fn timed_sinks() -> (Sinks, Timed) {
    let seen: Timed = Arc::default();
    let s = seen.clone();
    let sinks = Sinks::new().with(Arc::new(move |e: &AuthEvent<'_>| {
        s.lock()
            .unwrap()
            .push((e.route.to_owned(), e.outcome, e.latency));
    }));
    (sinks, seen)
}

fn slow_handler() -> impl Service<
    Request<Empty<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    service_fn(|_r: Request<Empty<Bytes>>| async {
        tokio::time::sleep(Duration::from_millis(60)).await;
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"me"))))
    })
}

fn bearer(path: &str) -> Request<Empty<Bytes>> {
    let mut req = Request::get(path).body(Empty::new()).unwrap();
    req.headers_mut()
        .insert("authorization", HeaderValue::from_static("Bearer good"));
    req
}

/// The probe finds its guard's request whether the validator hands the request on in its
/// `call` or from its future, and through guards nested in each other: each guard's success
/// is timed at its own probe, not at the end of the handler.
#[tokio::test]
async fn each_guard_finds_its_request_from_the_validators_call_or_future() {
    let (sinks, seen) = timed_sinks();
    let inner_guard = TokenGuardLayer::new(Validator, sinks.clone()).label("/inner");
    let outer_guard = TokenGuardLayer::new(async_validator(false), sinks).label("/outer");
    let svc = outer_guard.layer(inner_guard.layer(slow_handler()));
    let res = svc.clone().oneshot(bearer("/api/me")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // No token: the outer validator answers by itself, the inner guard never sees the request.
    let res = svc
        .oneshot(Request::get("/api/me").body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let seen = seen.lock().unwrap();
    let got: Vec<_> = seen.iter().map(|e| (e.0.as_str(), e.1)).collect();
    assert_eq!(
        got,
        vec![
            ("/outer", Outcome::Success),
            ("/inner", Outcome::Success),
            ("/outer", Outcome::Failure(FailureReason::InvalidToken)),
        ]
    );
    for (route, _, latency) in seen.iter().take(2) {
        assert!(
            *latency < Duration::from_millis(60),
            "{route}: {latency:?} includes the handler"
        );
    }
}

/// A validator that hands the request to another task: the probe there finds no guard, and
/// the guard decides from the response (a success, timed to the response).
#[tokio::test]
async fn a_validator_handing_the_request_to_another_task_is_decided_by_the_response() {
    let (sinks, seen) = timed_sinks();
    let guard = TokenGuardLayer::new(async_validator(true), sinks).label("/handoff");
    let svc = guard.layer(slow_handler());
    let res = svc.clone().oneshot(bearer("/api/me")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].0.as_str(), seen[0].1),
        ("/handoff", Outcome::Success)
    );
    assert!(seen[0].2 >= Duration::from_millis(60), "{seen:?}");
}

/// A validator that panics is a server error, once, whether it panics in its `call` or in its
/// future.
#[tokio::test]
async fn a_panicking_validator_is_one_error() {
    #[derive(Clone)]
    struct Panics {
        in_call: bool,
    }
    impl<S> Layer<S> for Panics {
        type Service = PanicService;
        fn layer(&self, _inner: S) -> PanicService {
            PanicService(self.in_call)
        }
    }
    #[derive(Clone)]
    struct PanicService(bool);
    impl Service<Request<Empty<Bytes>>> for PanicService {
        type Response = Response<Full<Bytes>>;
        type Error = Infallible;
        type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _req: Request<Empty<Bytes>>) -> Self::Future {
            assert!(!self.0, "validator panics in call");
            Box::pin(async { panic!("validator panics in its future") })
        }
    }
    for in_call in [true, false] {
        let (sinks, seen) = timed_sinks();
        let svc = TokenGuardLayer::new(Panics { in_call }, sinks).layer(slow_handler());
        let caught = std::panic::AssertUnwindSafe(svc.oneshot(bearer("/api/me")))
            .catch_unwind()
            .await;
        assert!(caught.is_err());
        let got: Vec<_> = seen.lock().unwrap().iter().map(|e| e.1).collect();
        assert_eq!(got, vec![Outcome::Error], "in_call {in_call}");
    }
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<AuthLayer>();
    send_sync::<AuthService<tower::util::BoxCloneSyncService<Request<()>, Response<()>, ()>>>();
    send_sync::<ResponseBody<Full<Bytes>>>();
    send::<ResponseFuture<std::future::Ready<()>>>();
    send::<GuardFuture<std::future::Ready<()>>>();
    send_sync::<Probe<()>>();
    send_sync::<TokenGuard<()>>();
    send_sync::<TokenGuardLayer<Validator>>();
    send_sync::<RouteTable>();
    send_sync::<Sinks>();
    send_sync::<AuthEvent<'static>>();
    send_sync::<ClientIp>();
    send_sync::<Outcome>();
    // ResponseBody is a Body whenever the inner one is.
    fn body<B: Body>() {}
    body::<ResponseBody<Full<Bytes>>>();
    let _ = Method::GET;
}

/// hyper's HTTP/2 server stops polling at the trailers and drops the body: that is the end of
/// the request, not a cancellation (regression: it was counted as cancelled).
#[tokio::test]
async fn trailers_end_the_request_even_if_the_body_is_dropped_right_after() {
    let (layer, seen) = layer();
    let svc = layer.layer(service_fn(|_r: Request<Empty<Bytes>>| async {
        let frames: Frames = vec![Ok(Frame::data(Bytes::from_static(b"m"))), Ok(trailers("0"))];
        Ok::<_, Infallible>(grpc_head().body(streamed(frames)).unwrap())
    }));
    let mut req = post("/acme.Auth/Login");
    req.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    let mut body = svc.oneshot(req).await.unwrap().into_body();
    assert!(body.frame().await.unwrap().unwrap().is_data());
    assert!(body.frame().await.unwrap().unwrap().is_trailers());
    drop(body);
    assert_eq!(outcomes(&seen), vec![Outcome::Success]);
}

/// hyper's HTTP/1 server drops a body as soon as the bytes its `Content-Length` announced are
/// out, without polling it to the end: that is a complete response, not a cancellation.
#[tokio::test]
async fn a_body_ends_with_its_declared_length() {
    let (layer, seen) = layer();
    let svc = layer.layer(service_fn(|_r: Request<Empty<Bytes>>| async {
        let frames: Frames = vec![
            Ok(Frame::data(Bytes::from_static(b"abc"))),
            Ok(Frame::data(Bytes::from_static(b"de"))),
        ];
        let res = Response::builder()
            .header("content-length", "5")
            .body(streamed(frames))
            .unwrap();
        Ok::<_, Infallible>(res)
    }));
    let mut body = svc.oneshot(post("/login")).await.unwrap().into_body();
    body.frame().await.unwrap().unwrap();
    assert!(seen.lock().unwrap().is_empty(), "3 of 5 bytes");
    body.frame().await.unwrap().unwrap();
    drop(body);
    assert_eq!(outcomes(&seen), vec![Outcome::Success]);
}

/// A panic in the handler (no `CatchPanicLayer` inside the layer) is a server error, not a
/// client that left, even when something outside catches it and drops the future normally.
#[tokio::test]
async fn a_panic_inside_is_an_error_not_a_cancellation() {
    let (layer, seen) = layer();
    let mut svc = layer.layer(service_fn(|_r: Request<Empty<Bytes>>| async {
        if true {
            panic!("handler bug");
        }
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    }));
    let fut = svc.call(post("/login"));
    let caught = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(fut)).await;
    assert!(caught.is_err());
    assert_eq!(outcomes(&seen), vec![Outcome::Error]);
}

/// A body that panics while it is polled: the panic is caught outside, the body dropped
/// normally; still one error.
#[tokio::test]
async fn a_panic_in_the_body_is_an_error() {
    struct Bomb;
    impl Body for Bomb {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            panic!("body bug")
        }
    }
    let (layer, seen) = layer();
    let svc = layer.layer(service_fn(|_r: Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Bomb))
    }));
    let mut body = svc.oneshot(post("/login")).await.unwrap().into_body();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poll_once(&mut body.frame())
    }));
    assert!(caught.is_err());
    drop(body);
    assert_eq!(outcomes(&seen), vec![Outcome::Error]);
}

/// A body that ends before the bytes its `Content-Length` announced was cut short (hyper
/// aborts the response): an error, whatever the status said.
#[tokio::test]
async fn a_body_shorter_than_its_content_length_is_an_error() {
    let (layer, seen) = layer();
    let svc = layer.layer(service_fn(|_r: Request<Empty<Bytes>>| async {
        let frames: Frames = vec![Ok(Frame::data(Bytes::from_static(b"abc")))];
        let res = Response::builder()
            .header("content-length", "10")
            .body(streamed(frames))
            .unwrap();
        Ok::<_, Infallible>(res)
    }));
    let res = svc.oneshot(post("/login")).await.unwrap();
    let _ = res.into_body().collect().await;
    assert_eq!(outcomes(&seen), vec![Outcome::Error]);
}

/// 204 and 304 end with their head even if the service put a body on them (hyper never sends
/// it), and so does a HEAD request with a `Content-Length`.
#[tokio::test]
async fn no_content_statuses_and_head_end_at_the_head_whatever_the_body() {
    for (method, status) in [
        (Method::POST, 204u16),
        (Method::POST, 304),
        (Method::HEAD, 200),
    ] {
        let (layer, seen) = layer_with(Routes::empty().route("/x", AuthOp::Logout));
        let svc = layer.layer(service_fn(move |_r: Request<Empty<Bytes>>| async move {
            let frames: Frames = vec![Ok(Frame::data(Bytes::from_static(b"never sent")))];
            let res = Response::builder()
                .status(status)
                .header("content-length", "10")
                .body(streamed(frames))
                .unwrap();
            Ok::<_, Infallible>(res)
        }));
        let req = Request::builder()
            .method(method.clone())
            .uri("/x")
            .body(Empty::new())
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(outcomes(&seen), vec![Outcome::Success], "{method} {status}");
        drop(res);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}

#[test]
fn a_template_with_too_many_parameters_is_an_error_not_a_panic() {
    let t: String = (0..26).map(|i| format!("/{{p{i}}}")).collect();
    let e = crate::AuthLayer::builder()
        .routes(crate::Routes::empty().route(&t, crate::AuthOp::Login))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("more than 25 parameters"), "{e}");
    let ok: String = (0..25).map(|i| format!("/{{p{i}}}")).collect();
    assert!(crate::AuthLayer::builder()
        .routes(crate::Routes::empty().route(&ok, crate::AuthOp::Login))
        .build()
        .is_ok());
}
