//! What authwatch adds to a request, measured side by side in one run.
//!
//! Scenarios (all in-process, one request = build the request, call the router, drain the body):
//!
//! - `non_auth/*`: `GET /api/users/42`, a route the layer does not watch. The layer's own cost
//!   is one route lookup.
//! - `auth/*`: `POST /api/auth/sign-in/email`, a watched route.
//!
//! Each group has, on the same axum router:
//! - `bare`: no layer;
//! - `outer/pass_through`: a layer that only wraps the response body, around the whole router:
//!   the price of being a body-watching layer at all;
//! - `outer/layer_no_sink`, `outer/authwatch`: the layer around the whole router (as with
//!   `ServiceBuilder`, hyper or tonic), with no sink (the layer's own clock, classification and
//!   event) and with the full `AuthWatch` stats sink (exact counters + HDR window);
//! - `router_layer/pass_through`, `router_layer/authwatch`: added with `Router::layer`, as most
//!   axum users write it. axum then boxes every route's response body; `pass_through` (a layer
//!   that only wraps the body) is that price alone, which every body-watching middleware pays.
//! - `added/{non_auth,auth}/outer_authwatch_minus_bare`: the same comparison as a paired
//!   difference (alternating blocks of the two services within each sample), so the machine's
//!   drift cancels: the figure to quote for "what authwatch adds".
//! - `auth_2_threads/{bare,outer/authwatch}`: the auth request, per thread, with two threads
//!   calling clones of one service at once (contention on shared state shows here).
//! - `hdr/record/{1_thread,2_threads}`: one `WindowedHistogram::record`, per thread, with one
//!   thread or two recording at once; `hdr/mutex_shared/2_threads` is the design we avoid (one
//!   `Mutex<Histogram>` shared by both threads), for reference.
//!
//! Run with `cargo bench --bench overhead`. Quote medians and the ratios between rows of the
//! same run; the machine is small and noisy.

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, Barrier, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use authwatch::authwatch_hdr::{WindowConfig, WindowedHistogram};
use authwatch::{AuthLayer, AuthWatch};
use axum::body::Body;
use axum::routing::{get, post};
use axum::Router;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::Request;
use http_body::Body as _;
use tower::Layer;
use tower::Service;

fn app() -> Router {
    Router::new()
        .route("/api/auth/sign-in/email", post(|| async { "signed in" }))
        .route("/api/users/{id}", get(|| async { "a user" }))
}

/// Runs one request to completion without a runtime: the handlers never wait.
fn run<S, B>(svc: &mut S, method: &str, path: &'static str)
where
    S: Service<Request<Body>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut fut = pin!(svc.call(req));
    let res = loop {
        if let Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
            break r.unwrap();
        }
    };
    let mut body = pin!(res.into_body());
    while !body.is_end_stream() {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(Some(f)) => {
                black_box(f.unwrap());
            }
            Poll::Ready(None) => break,
            Poll::Pending => {}
        }
    }
}

/// A layer that does nothing but wrap the response body in its own type, as every
/// body-watching middleware must (tower-http's `TraceLayer`, authwatch). Under `Router::layer`,
/// axum boxes such a body into its `Body` for every request of every route; this row shows that
/// price alone.
#[derive(Clone)]
struct PassThrough;

impl<S> tower::Layer<S> for PassThrough {
    type Service = PassThroughService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PassThroughService(inner)
    }
}

#[derive(Clone)]
struct PassThroughService<S>(S);

impl<S, B> Service<Request<Body>> for PassThroughService<S>
where
    S: Service<Request<Body>, Response = http::Response<B>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Wrapped<B>>;
    type Error = S::Error;
    type Future = futures_util::future::MapOk<S::Future, fn(http::Response<B>) -> Self::Response>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }
    fn call(&mut self, req: Request<Body>) -> Self::Future {
        use futures_util::TryFutureExt;
        self.0.call(req).map_ok(|r| r.map(Wrapped))
    }
}

struct Wrapped<B>(B);

impl<B: http_body::Body + Unpin> http_body::Body for Wrapped<B> {
    type Data = B::Data;
    type Error = B::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.0).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }
}

fn routers(c: &mut Criterion) {
    let watch = AuthWatch::builder().build().unwrap();
    let no_sink = AuthLayer::builder().build().unwrap();
    let bare = app();

    // `Router::layer`, as most axum users write it: axum boxes every route's response body.
    let routed_noop = app().layer(PassThrough);
    let routed_watch = app().layer(watch.layer());
    // The layer around the whole router (`ServiceBuilder`, hyper, tonic): no re-boxing.
    let outer_watch = watch.layer().layer(app());
    let outer_no_sink = no_sink.layer(app());
    let outer_noop = PassThrough.layer(app());

    for (group, method, path) in [
        ("non_auth", "GET", "/api/users/42"),
        ("auth", "POST", "/api/auth/sign-in/email"),
    ] {
        let mut g = c.benchmark_group(group);
        let mut b0 = bare.clone();
        g.bench_function("bare", |b| b.iter(|| run(&mut b0, method, path)));
        let mut s = outer_noop.clone();
        g.bench_function("outer/pass_through", |b| {
            b.iter(|| run(&mut s, method, path))
        });
        let mut s = outer_no_sink.clone();
        g.bench_function("outer/layer_no_sink", |b| {
            b.iter(|| run(&mut s, method, path))
        });
        let mut s = outer_watch.clone();
        g.bench_function("outer/authwatch", |b| b.iter(|| run(&mut s, method, path)));
        let mut s = routed_noop.clone();
        g.bench_function("router_layer/pass_through", |b| {
            b.iter(|| run(&mut s, method, path))
        });
        let mut s = routed_watch.clone();
        g.bench_function("router_layer/authwatch", |b| {
            b.iter(|| run(&mut s, method, path))
        });
        g.finish();
    }
}

/// What authwatch adds, measured as a paired difference: each sample runs the same request
/// through the watched and the bare service in alternating blocks of 256, and reports the
/// watched time minus the bare time. Drifts of the machine between samples (frequency, the
/// other core's load) hit both sides alike and cancel, which the separate rows above cannot do.
/// A sample where the bare side happened to be slower counts as zero added time.
fn added(c: &mut Criterion) {
    const BLOCK: u64 = 256;
    let watch = AuthWatch::builder().build().unwrap();
    let mut g = c.benchmark_group("added");
    for (name, method, path) in [
        ("non_auth", "GET", "/api/users/42"),
        ("auth", "POST", "/api/auth/sign-in/email"),
    ] {
        let mut bare = app();
        let mut watched = watch.layer().layer(app());
        g.bench_function(format!("{name}/outer_authwatch_minus_bare"), |b| {
            b.iter_custom(|iters| {
                let (mut with, mut without) = (Duration::ZERO, Duration::ZERO);
                let mut done = 0;
                while done < iters {
                    let n = BLOCK.min(iters - done);
                    let t = Instant::now();
                    for _ in 0..n {
                        run(&mut watched, method, path);
                    }
                    with += t.elapsed();
                    let t = Instant::now();
                    for _ in 0..n {
                        run(&mut bare, method, path);
                    }
                    without += t.elapsed();
                    done += n;
                }
                with.saturating_sub(without)
            })
        });
    }
    g.finish();
}

/// Per-thread time of one auth request with two threads calling their own clones of the same
/// service at once: shows contention on anything the clones share (the layer's state, the
/// stats), which a one-thread run cannot.
fn routers_two_threads(c: &mut Criterion) {
    let watch = AuthWatch::builder().build().unwrap();
    let bare = app();
    let outer_watch = watch.layer().layer(app());
    let mut g = c.benchmark_group("auth_2_threads");
    fn two<S, B>(svc: &S, iters: u64) -> Duration
    where
        S: Service<Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
        S::Error: std::fmt::Debug,
        B: http_body::Body,
        B::Error: std::fmt::Debug,
    {
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let mut svc = svc.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        run(&mut svc, "POST", "/api/auth/sign-in/email");
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<Duration>()
            / 2
    }
    g.bench_function("bare", |b| b.iter_custom(|iters| two(&bare, iters)));
    g.bench_function("outer/authwatch", |b| {
        b.iter_custom(|iters| two(&outer_watch, iters))
    });
    g.finish();
}

/// Per-thread time of one record, with `threads` threads recording at once.
fn per_thread(threads: usize, iters: u64, record: Arc<dyn Fn(u64) + Send + Sync>) -> Duration {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let barrier = barrier.clone();
            let record = record.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                for i in 0..iters {
                    record(black_box(1_000 + (i * 7919 + t as u64) % 5_000_000));
                }
                start.elapsed()
            })
        })
        .collect();
    let total: Duration = handles.into_iter().map(|h| h.join().unwrap()).sum();
    total / threads as u32
}

fn hdr(c: &mut Criterion) {
    let mut g = c.benchmark_group("hdr/record");
    let now = Instant::now();
    for threads in [1usize, 2] {
        let w = Arc::new(WindowedHistogram::new(WindowConfig::default()));
        let record: Arc<dyn Fn(u64) + Send + Sync> =
            Arc::new(move |v| w.record(Duration::from_nanos(v), now));
        g.bench_function(
            BenchmarkId::from_parameter(if threads == 1 {
                "1_thread".to_owned()
            } else {
                format!("{threads}_threads")
            }),
            |b| b.iter_custom(|iters| per_thread(threads, iters, record.clone())),
        );
    }
    g.finish();

    let mut g = c.benchmark_group("hdr/mutex_shared");
    let h = Arc::new(Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap(),
    ));
    let record: Arc<dyn Fn(u64) + Send + Sync> =
        Arc::new(move |v| h.lock().unwrap().saturating_record(v));
    g.bench_function("2_threads", |b| {
        b.iter_custom(|iters| per_thread(2, iters, record.clone()))
    });
    g.finish();
}

/// The pieces of the auth-route cost, for reading the rows above.
fn pieces(c: &mut Criterion) {
    let layer = AuthLayer::builder().build().unwrap();
    let routes = layer.routes();
    let headers = http::HeaderMap::new();
    let mut g = c.benchmark_group("pieces");
    g.bench_function("lookup/non_auth", |b| {
        b.iter(|| {
            routes
                .lookup(&http::Method::GET, black_box("/api/users/42"), &headers)
                .is_some()
        })
    });
    g.bench_function("lookup/auth", |b| {
        b.iter(|| {
            routes
                .lookup(
                    &http::Method::POST,
                    black_box("/api/auth/sign-in/email"),
                    &headers,
                )
                .is_some()
        })
    });
    g.bench_function("instant_now_elapsed", |b| {
        b.iter(|| black_box(Instant::now()).elapsed())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = routers, added, routers_two_threads, hdr, pieces
}
criterion_main!(benches);
