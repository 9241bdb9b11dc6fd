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
//! - `peers/auth/*_minus_bare`: the paired difference for the auth request of each setup a user
//!   would pick, every one added with `Router::layer` to the same router, every OpenTelemetry
//!   one with its own SDK provider on a `ManualReader` that is never collected:
//!   `authwatch` (stats + OpenTelemetry instruments behind `/metrics`), `authwatch_otlp` (the
//!   same plus a second provider standing for an OTLP pipeline: every instrument recorded
//!   twice, as in production), `authwatch_stats_only` (no OpenTelemetry), tower-http's
//!   `TraceLayer` (no subscriber), `axum-otel-metrics` 0.14 (OTel 0.32),
//!   `opentelemetry-instrumentation-tower` 0.19 (OTel 0.33, via the global provider),
//!   `axum-prometheus` 0.10 (metrics-rs; its histograms bucket at render time, not per request);
//!   `outer_authwatch_otlp` (the layer around the router, no re-boxing),
//!   `wrapped_authwatch_otlp` (`watch.wrap(app)`: the same, the response as `axum::serve`
//!   takes it) and `router_pass_through` (a layer that only wraps the body: axum's re-boxing
//!   alone).
//! - `mix/{authwatch,trace_layer}_minus_bare`: the end-to-end bench's service
//!   (`examples/support/bench_app.rs`) and traffic mix (`scripts/e2e/mix.lua`: good and failed
//!   sign-ins, a rate-limited one, a sign-up, session reads with and without a token, the
//!   guarded `/api/me`, a non-auth route), paired against the bare service: authwatch as the
//!   bench server's `authwatch` stack adds it (`Router::layer`, the token guard, the audit
//!   records of failed requests, an uncollected provider for the OTLP pipeline), and
//!   `TraceLayer`. The average request of real traffic, where the `peers` rows send one good
//!   sign-in only.
//! - `auth_2_threads/{bare,outer/authwatch,outer/authwatch_otlp}`: the auth request, per thread,
//!   with two threads calling clones of one service at once (contention on shared state shows
//!   here); `added_2_threads/auth/*_minus_bare`: the paired difference with both threads
//!   running the same block at once, to compare with the one-thread `added` and `peers` rows.
//! - `fleet/sign_in/{off,on}`: the auth request through the layer around the router, without
//!   and with fleet mode (a `redis-server` of the bench's own from `scripts/test-deps.sh` when
//!   installed, else an address where nothing listens: the request path is the same, it never
//!   touches Redis); `fleet/request/{success,failure}/{1_thread,2_threads}`: per thread, one
//!   sign-in through the layer in fleet mode that succeeds or fails, from one of 10,000
//!   addresses (a flood), with one thread or two at once: failures next to successes, and the
//!   2-thread/1-thread ratio shows contention on the detector;
//!   `fleet/flush/{10k,100k}_failures_per_s`: the time the fleet's flush thread spends on one
//!   second of failures from as many new addresses (Redis' scripts included; Redis' own CPU
//!   per address is printed beside). Needs the `redis-server` above.
//! - `blocks/check/{empty,miss_10k,hit_10k}`: the block list's check alone, with no block, and
//!   with 10,000 blocks for an address that is not blocked and one that is (the refusal
//!   counted); `blocks/sign_in/{no_blocks,10k_blocks}`: the auth request through the layer
//!   around the router, from an address that is not blocked, with the list empty and holding
//!   10,000 blocks.
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

use authwatch::{AuthLayer, AuthWatch};
use authwatch_hdr::{WindowConfig, WindowedHistogram};
use axum::body::Body;
use axum::routing::{get, post};
use axum::Router;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::Request;
use http_body::Body as _;
use tower::Layer;
use tower::Service;

/// A meter provider whose reader is never collected: recording costs what it costs in
/// production, exporting never runs during a measurement.
fn uncollected_provider() -> opentelemetry_sdk::metrics::SdkMeterProvider {
    opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(opentelemetry_sdk::metrics::ManualReader::builder().build())
        .build()
}

/// authwatch as deployed with a collector: stats, the `/metrics` provider, and an OTLP-like
/// second provider (the instruments are recorded into both).
fn watch_otlp() -> (AuthWatch, opentelemetry_sdk::metrics::SdkMeterProvider) {
    let p = uncollected_provider();
    let w = AuthWatch::builder()
        .otlp(false)
        .meter_provider(&p)
        .build()
        .unwrap();
    (w, p)
}

/// The application's routes, not yet finalized.
fn routes() -> Router {
    Router::new()
        .route("/api/auth/sign-in/email", post(|| async { "signed in" }))
        .route("/api/users/{id}", get(|| async { "a user" }))
}

/// The application as `axum::serve` runs it: `with_state(())` turns each handler into its
/// route once. Called as a plain service, an unfinalized router does that on every request,
/// and applies every `Router::layer` layer again each time, which no server does.
fn app() -> Router {
    routes().with_state(())
}

/// The application with `layer` added by `Router::layer`, then finalized as `axum::serve`
/// finalizes it (the layer wraps each route's handler, once).
macro_rules! routed {
    ($layer:expr) => {
        routes().layer($layer).with_state(())
    };
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
    run_req(svc, req);
}

/// Runs `req` to completion without a runtime: the handlers never wait.
fn run_req<S, B>(svc: &mut S, req: Request<Body>)
where
    S: Service<Request<Body>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
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
    let watch = AuthWatch::builder().otlp(false).build().unwrap();
    let no_sink = AuthLayer::builder().build().unwrap();
    let bare = app();

    // `Router::layer`, as most axum users write it: axum boxes every route's response body.
    let routed_noop = routed!(PassThrough);
    let routed_watch = routed!(watch.layer());
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
/// A sample where the bare side happened to be slower counts as (almost) zero added time (1 ns
/// for the whole sample: criterion rejects a zero).
fn added(c: &mut Criterion) {
    let watch = AuthWatch::builder().otlp(false).build().unwrap();
    let mut g = c.benchmark_group("added");
    for (name, method, path) in [
        ("non_auth", "GET", "/api/users/42"),
        ("auth", "POST", "/api/auth/sign-in/email"),
    ] {
        paired(
            &mut g,
            &format!("{name}/outer_authwatch_minus_bare"),
            watch.layer().layer(app()),
            method,
            path,
        );
    }
    g.finish();
}

/// One paired-difference row: `svc` minus the bare router, alternating blocks of 256 requests.
fn paired<S, B>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    svc: S,
    method: &'static str,
    path: &'static str,
) where
    S: Service<Request<Body>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let req = move |_| {
        Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap()
    };
    paired_on(g, name, svc, app(), req);
}

/// One paired-difference row: `svc` minus `bare`, alternating blocks of 256 requests; the
/// `i`-th request of the run is `req(i)` for both.
fn paired_on<S, B, T, C>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut svc: S,
    mut bare: T,
    req: impl Fn(u64) -> Request<Body>,
) where
    S: Service<Request<Body>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
    T: Service<Request<Body>, Response = http::Response<C>>,
    T::Error: std::fmt::Debug,
    C: http_body::Body,
    C::Error: std::fmt::Debug,
{
    g.bench_function(name, |b| {
        b.iter_custom(|iters| paired_blocks(&mut svc, &mut bare, &req, iters, || {}))
    });
}

/// `iters` requests through `svc` and as many through `bare`, in alternating blocks of 256
/// (`sync` runs before each block: the two-thread rows wait for each other there); the `i`-th
/// request is `req(i)` for both. The time `svc` took beyond `bare`: a sample where the bare
/// side happened to be slower counts as 1 ns (criterion rejects a zero).
fn paired_blocks<S, B, T, C>(
    svc: &mut S,
    bare: &mut T,
    req: impl Fn(u64) -> Request<Body>,
    iters: u64,
    mut sync: impl FnMut(),
) -> Duration
where
    S: Service<Request<Body>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
    T: Service<Request<Body>, Response = http::Response<C>>,
    T::Error: std::fmt::Debug,
    C: http_body::Body,
    C::Error: std::fmt::Debug,
{
    const BLOCK: u64 = 256;
    let (mut with, mut without) = (Duration::ZERO, Duration::ZERO);
    let mut done = 0;
    while done < iters {
        let n = BLOCK.min(iters - done);
        sync();
        let t = Instant::now();
        for i in done..done + n {
            run_req(svc, req(i));
        }
        with += t.elapsed();
        sync();
        let t = Instant::now();
        for i in done..done + n {
            run_req(bare, req(i));
        }
        without += t.elapsed();
        done += n;
    }
    with.saturating_sub(without).max(Duration::from_nanos(1))
}

/// The global `metrics` recorder axum-prometheus records into, installed once; its upkeep
/// (which buckets the samples) never runs during a measurement.
fn prometheus_handle() -> &'static axum_prometheus::metrics_exporter_prometheus::PrometheusHandle {
    use axum_prometheus::metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    static HANDLE: std::sync::OnceLock<
        axum_prometheus::metrics_exporter_prometheus::PrometheusHandle,
    > = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(axum_prometheus::AXUM_HTTP_REQUESTS_DURATION_SECONDS.to_string()),
                axum_prometheus::utils::SECONDS_DURATION_BUCKETS,
            )
            .expect("buckets")
            .install_recorder()
            .expect("the only global metrics recorder")
    })
}

/// Our full cost next to the peers', each as a paired difference against the bare router.
fn peers(c: &mut Criterion) {
    let (method, path) = ("POST", "/api/auth/sign-in/email");
    let mut g = c.benchmark_group("peers/auth");

    let watch = AuthWatch::builder().otlp(false).build().unwrap();
    paired(
        &mut g,
        "authwatch_minus_bare",
        routed!(watch.layer()),
        method,
        path,
    );
    let (watch2, _p) = watch_otlp();
    paired(
        &mut g,
        "authwatch_otlp_minus_bare",
        routed!(watch2.layer()),
        method,
        path,
    );
    // The same, around the whole router (ServiceBuilder, hyper, tonic): no axum re-boxing.
    paired(
        &mut g,
        "outer_authwatch_otlp_minus_bare",
        watch2.layer().layer(app()),
        method,
        path,
    );
    // The same without the alert engine's sink (alerts are on by default): its cost is the
    // difference between the two rows.
    let p_no_alerts = uncollected_provider();
    let no_alerts = AuthWatch::builder()
        .otlp(false)
        .meter_provider(&p_no_alerts)
        .alerting(false)
        .build()
        .unwrap();
    paired(
        &mut g,
        "outer_authwatch_otlp_no_alerts_minus_bare",
        no_alerts.layer().layer(app()),
        method,
        path,
    );
    // Around the router as `watch.wrap(app)` puts it, the response as `axum::serve` needs it.
    let wrapped = watch2.wrap(app());
    paired(
        &mut g,
        "wrapped_authwatch_otlp_minus_bare",
        wrapped.clone(),
        method,
        path,
    );
    // What axum's `Router::layer` costs any layer that wraps the response body, alone.
    paired(
        &mut g,
        "router_pass_through_minus_bare",
        routed!(PassThrough),
        method,
        path,
    );
    let stats_only = AuthWatch::builder()
        .otlp(false)
        .prometheus(false)
        .audit_requests(false)
        .build()
        .unwrap();
    // Everything but the audit trail (the sinks of the OpenTelemetry issue), around the router.
    let p_no_audit = uncollected_provider();
    let no_audit = AuthWatch::builder()
        .otlp(false)
        .meter_provider(&p_no_audit)
        .audit_requests(false)
        .build()
        .unwrap();
    paired(
        &mut g,
        "outer_authwatch_otlp_no_audit_minus_bare",
        no_audit.layer().layer(app()),
        method,
        path,
    );
    paired(
        &mut g,
        "authwatch_stats_only_minus_bare",
        routed!(stats_only.layer()),
        method,
        path,
    );
    paired(
        &mut g,
        "trace_layer_minus_bare",
        routed!(tower_http::trace::TraceLayer::new_for_http()),
        method,
        path,
    );

    let p032 = otel_sdk_032::metrics::SdkMeterProvider::builder()
        .with_reader(otel_sdk_032::metrics::ManualReader::builder().build())
        .build();
    let otel_metrics = axum_otel_metrics::HttpMetricsLayerBuilder::new()
        .with_provider(p032.clone())
        .build();
    paired(
        &mut g,
        "axum_otel_metrics_minus_bare",
        routed!(otel_metrics),
        method,
        path,
    );

    let p033 = uncollected_provider();
    opentelemetry::global::set_meter_provider(p033.clone());
    let tower_layer = opentelemetry_instrumentation_tower::http::server::LayerBuilder::builder()
        .with_tracing(false)
        .with_route_extractor_fn(|r: &Request<Body>| {
            r.extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|p| p.as_str().to_owned())
        })
        .build()
        .expect("instrumentation-tower layer");
    paired(
        &mut g,
        "otel_instrumentation_tower_minus_bare",
        routed!(tower_layer),
        method,
        path,
    );

    let _ = prometheus_handle();
    paired(
        &mut g,
        "axum_prometheus_minus_bare",
        routed!(axum_prometheus::PrometheusMetricLayer::new()),
        method,
        path,
    );
    // Last, because a subscriber, once set, stays noted for the whole process: the same
    // layer with a typical production subscriber installed (fmt at `warn` through an
    // `EnvFilter`), which makes every span callsite ask the filter.
    let sub = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .finish();
    let scoped = tracing::subscriber::set_default(sub);
    paired(
        &mut g,
        "outer_authwatch_otlp_fmt_warn_subscriber_minus_bare",
        watch2.layer().layer(app()),
        method,
        path,
    );
    drop(scoped);
    g.finish();
    prometheus_handle().run_upkeep();
    drop((p032, p033));
}

/// Per-thread time of one auth request with two threads calling their own clones of the same
/// service at once: shows contention on anything the clones share (the layer's state, the
/// stats), which a one-thread run cannot.
fn routers_two_threads(c: &mut Criterion) {
    let watch = AuthWatch::builder().otlp(false).build().unwrap();
    let bare = app();
    let outer_watch = watch.layer().layer(app());
    let (watch2, _p) = watch_otlp();
    let outer_watch_otlp = watch2.layer().layer(app());
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
    g.bench_function("outer/authwatch_otlp", |b| {
        b.iter_custom(|iters| two(&outer_watch_otlp, iters))
    });
    g.finish();

    // The paired difference with two threads (`two_paired_on`), for a sign-in.
    fn two_paired<S, B>(watched: &S, iters: u64) -> Duration
    where
        S: Service<Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
        S::Error: std::fmt::Debug,
        B: http_body::Body,
        B::Error: std::fmt::Debug,
    {
        two_paired_on(watched, &app(), sign_in, iters)
    }
    let mut g = c.benchmark_group("added_2_threads");
    g.bench_function("auth/outer_authwatch_minus_bare", |b| {
        b.iter_custom(|iters| two_paired(&outer_watch, iters))
    });
    g.bench_function("auth/outer_authwatch_otlp_minus_bare", |b| {
        b.iter_custom(|iters| two_paired(&outer_watch_otlp, iters))
    });
    let routed_watch_otlp = routed!(watch2.layer());
    let wrapped_watch_otlp = watch2.wrap(app());
    g.bench_function("auth/wrapped_authwatch_otlp_minus_bare", |b| {
        b.iter_custom(|iters| two_paired(&wrapped_watch_otlp, iters))
    });
    g.bench_function("auth/router_layer_authwatch_otlp_minus_bare", |b| {
        b.iter_custom(|iters| two_paired(&routed_watch_otlp, iters))
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
    // The alert engine's sink alone: a success (per-thread counters), and a failure with a
    // client address (counters plus the brute-force sketch behind its mutex), the attack path.
    let engine = authwatch::AlertEngine::new(authwatch::AlertConfig::new().tick(Duration::ZERO));
    let at = Instant::now();
    let ok = authwatch::AuthEvent::new(
        authwatch::AuthOp::Login,
        authwatch::Outcome::Success,
        Duration::from_millis(3),
        at,
    );
    g.bench_function("alerts/record_success", |b| {
        b.iter(|| authwatch::EventSink::record(&engine, black_box(&ok)))
    });
    // A failed sign-in from `ip`.
    let failure = |ip: std::net::IpAddr| {
        authwatch::AuthEvent::new(
            authwatch::AuthOp::Login,
            authwatch::Outcome::Failure(authwatch::FailureReason::InvalidCredentials),
            Duration::from_millis(3),
            at,
        )
        .with_route("/api/auth/sign-in/email")
        .with_client_ip(Some(ip))
    };
    let mut n = 0u32;
    g.bench_function("alerts/record_failure_new_ip", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let e = failure(std::net::IpAddr::V4(n.into()));
            authwatch::EventSink::record(&engine, black_box(&e));
        })
    });
    // One client over the brute-force threshold (an attack in progress): every failure
    // updates a suspect.
    let attacker = failure(std::net::IpAddr::V4([203, 0, 113, 7].into()));
    g.bench_function("alerts/record_failure_suspect", |b| {
        b.iter(|| authwatch::EventSink::record(&engine, black_box(&attacker)))
    });
    g.finish();
}

/// The end-to-end bench's service (`examples/support/bench_app.rs`, shared with
/// `examples/bench_server.rs`).
#[path = "../examples/support/bench_app.rs"]
mod bench_app;

/// The end-to-end bench's traffic (`scripts/e2e/mix.lua`), in-process: every outcome the layer
/// treats differently (failures go to the audit trail and the attack detectors, bearer
/// requests to the session tracking, `/api/me` through the token guard), in the e2e mix's
/// proportions.
mod mix {
    use axum::http::header;

    /// (method, path, bearer token?, JSON body) of the mix's 20 requests, in mix.lua's
    /// proportions: 8 good sign-ins, 4 wrong passwords, 1 rate-limited, 1 sign-up, 3 session
    /// reads with a token and 1 without, 1 guarded route, 1 non-auth route.
    const MIX: [(&str, &str, bool, Option<&str>); 20] = {
        const GOOD: (&str, &str, bool, Option<&str>) = (
            "POST",
            "/api/auth/sign-in/email",
            false,
            Some(r#"{"email":"ada@example.com","password":"correct horse"}"#),
        );
        const WRONG: (&str, &str, bool, Option<&str>) = (
            "POST",
            "/api/auth/sign-in/email",
            false,
            Some(r#"{"email":"ada@example.com","password":"wrong"}"#),
        );
        const LIMITED: (&str, &str, bool, Option<&str>) = (
            "POST",
            "/api/auth/sign-in/email",
            false,
            Some(r#"{"email":"limited@example.com","password":"x"}"#),
        );
        const SIGN_UP: (&str, &str, bool, Option<&str>) = (
            "POST",
            "/api/auth/sign-up/email",
            false,
            Some(r#"{"email":"new@example.com","password":"long enough"}"#),
        );
        const SESSION: (&str, &str, bool, Option<&str>) =
            ("GET", "/api/auth/get-session", true, None);
        const NO_SESSION: (&str, &str, bool, Option<&str>) =
            ("GET", "/api/auth/get-session", false, None);
        const ME: (&str, &str, bool, Option<&str>) = ("GET", "/api/me", true, None);
        const ORDER: (&str, &str, bool, Option<&str>) = ("GET", "/api/orders/42", false, None);
        [
            GOOD, WRONG, SESSION, GOOD, ORDER, GOOD, WRONG, SESSION, GOOD, LIMITED, GOOD,
            NO_SESSION, WRONG, GOOD, ME, SESSION, GOOD, SIGN_UP, WRONG, GOOD,
        ]
    };

    /// The `i`-th request of the mix.
    pub(super) fn request(i: u64) -> http::Request<axum::body::Body> {
        let (method, path, bearer, body) = MIX[(i % MIX.len() as u64) as usize];
        let mut b = http::Request::builder().method(method).uri(path);
        if bearer {
            b = b.header(header::AUTHORIZATION, "Bearer tok-ada");
        }
        match body {
            Some(json) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(axum::body::Body::from(json)),
            None => b.body(axum::body::Body::empty()),
        }
        .unwrap()
    }
}

/// The e2e traffic mix in-process, paired against the bare app: what each stack adds to the
/// average request of real traffic (the `peers/auth` rows send one successful sign-in only,
/// which no audit record or attack detector sees).
fn mixed(c: &mut Criterion) {
    let mut g = c.benchmark_group("mix");
    // authwatch as the bench server's `authwatch` stack builds it (audit trail of the security
    // events, alerts, the token guard on `/api/me`), with an uncollected provider standing for
    // the OTLP pipeline.
    let (watch, _p) = watch_otlp();
    let watched = bench_app::watched(&watch)
        .layer(watch.layer())
        .merge(watch.endpoints())
        .with_state(());
    paired_on(
        &mut g,
        "authwatch_minus_bare",
        watched,
        bench_app::bare().with_state(()),
        mix::request,
    );
    let traced = bench_app::bare()
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(());
    paired_on(
        &mut g,
        "trace_layer_minus_bare",
        traced,
        bench_app::bare().with_state(()),
        mix::request,
    );
    g.finish();
}

/// A successful sign-in's request (no body: the bench's handler reads none).
fn sign_in(_: u64) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri("/api/auth/sign-in/email")
        .body(Body::empty())
        .unwrap()
}

/// The paired difference with two threads: both threads run the same block (`watched`, then
/// `bare`) at the same time, a barrier between blocks; per-thread watched minus bare. The
/// `i`-th request of a thread's run is `req(i)` for both.
fn two_paired_on<S, B, T, C>(
    watched: &S,
    bare: &T,
    req: fn(u64) -> Request<Body>,
    iters: u64,
) -> Duration
where
    S: Service<Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
    T: Service<Request<Body>, Response = http::Response<C>> + Clone + Send + 'static,
    T::Error: std::fmt::Debug,
    C: http_body::Body,
    C::Error: std::fmt::Debug,
{
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (mut svc, mut bare) = (watched.clone(), bare.clone());
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                paired_blocks(&mut svc, &mut bare, req, iters, || {
                    barrier.wait();
                })
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .sum::<Duration>()
        / 2
}

/// A request through the token guard (`GET /api/me` with a valid session, as the e2e mix
/// sends it), paired against the bare app's plain session check: what the guard adds, on one
/// thread and on two at once (their state is shared, so the second thread shows contention).
fn token_guard(c: &mut Criterion) {
    let (watch, _p) = watch_otlp();
    fn me(_: u64) -> Request<Body> {
        Request::builder()
            .uri("/api/me")
            .header(http::header::AUTHORIZATION, "Bearer tok-ada")
            .body(Body::empty())
            .unwrap()
    }
    let guarded = bench_app::watched(&watch).with_state(());
    let mut g = c.benchmark_group("token_guard");
    paired_on(
        &mut g,
        "guarded_minus_bare",
        guarded.clone(),
        bench_app::bare().with_state(()),
        me,
    );
    let bare = bench_app::bare().with_state(());
    g.bench_function("2_threads/guarded_minus_bare", |b| {
        b.iter_custom(|iters| two_paired_on(&guarded, &bare, me, iters))
    });
    g.finish();
}

/// A `redis-server` of the bench's own (killed on drop), when `scripts/test-deps.sh` installed
/// one.
struct BenchRedis(Option<std::process::Child>, String);

impl BenchRedis {
    fn start() -> Self {
        let bin =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-deps/bin/redis-server");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(16_379);
        let child = bin.exists().then(|| {
            std::process::Command::new(&bin)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .ok()
        });
        match child.flatten() {
            Some(c) => {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                for _ in 0..100 {
                    if std::net::TcpStream::connect(addr).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Self(Some(c), format!("redis://127.0.0.1:{port}"))
            }
            None => {
                eprintln!("fleet bench: no .test-deps/bin/redis-server; fleet mode on an address where nothing listens");
                Self(None, "redis://127.0.0.1:1".into())
            }
        }
    }
}

impl Drop for BenchRedis {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn fleet(c: &mut Criterion) {
    let redis = BenchRedis::start();
    let off = AuthWatch::builder().otlp(false).build().unwrap();
    let on = AuthWatch::builder()
        .otlp(false)
        .fleet(authwatch::Fleet::redis(redis.1.clone()))
        .build()
        .unwrap();
    let mut g = c.benchmark_group("fleet");
    let mut s = off.layer().layer(app());
    g.bench_function("sign_in/off", |b| {
        b.iter(|| run(&mut s, "POST", "/api/auth/sign-in/email"))
    });
    let mut s = on.layer().layer(app());
    g.bench_function("sign_in/on", |b| {
        b.iter(|| run(&mut s, "POST", "/api/auth/sign-in/email"))
    });
    // Sign-ins through the layer, from one of 10,000 addresses (trusted X-Forwarded-For): the
    // failures take the detector's path (the thread's shard, the fleet's outbox).
    let flood = AuthWatch::builder()
        .otlp(false)
        .client_ip(authwatch::ClientIp::x_forwarded_for(1))
        .route("/login/ok", authwatch::AuthOp::Login)
        .route("/login/bad", authwatch::AuthOp::Login)
        .fleet(authwatch::Fleet::redis(redis.1.clone()))
        .build()
        .unwrap();
    let flood_app = flood.layer().layer(
        Router::new()
            .route("/login/ok", post(|| async { "signed in" }))
            .route(
                "/login/bad",
                post(|| async { http::StatusCode::UNAUTHORIZED }),
            ),
    );
    for (name, path) in [("success", "/login/ok"), ("failure", "/login/bad")] {
        for threads in [1, 2] {
            let app = flood_app.clone();
            let record: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |i| {
                let ip = std::net::Ipv4Addr::from(0x0a00_0000 + (i % 10_000) as u32);
                let req = Request::builder()
                    .method("POST")
                    .uri(path)
                    .header("x-forwarded-for", ip.to_string())
                    .body(Body::empty())
                    .unwrap();
                run_req(&mut app.clone(), req);
            });
            let id = format!(
                "request/{name}/{threads}_thread{}",
                if threads > 1 { "s" } else { "" }
            );
            g.bench_function(id, |b| {
                b.iter_custom(|iters| per_thread(threads, iters, record.clone()))
            });
        }
    }
    g.finish();
    flush_cost(&redis);
    drop(redis);
}

/// `fleet/flush/{10k,100k}_failures_per_s`: what one second of failures from as many new
/// addresses costs the fleet's flush: the time its thread spends in the flushes that carry
/// them (this instance's encoding and Redis' scripts, round trips included; the flush runs
/// every 100 ms here, so an iteration also holds about one flush with nothing new). Redis' CPU
/// for them is printed beside (`INFO cpu`).
fn flush_cost(redis: &BenchRedis) {
    if redis.0.is_none() {
        eprintln!("fleet/flush: skipped (no redis-server: scripts/test-deps.sh installs it)");
        return;
    }
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut g = c.benchmark_group("fleet/flush");
    g.sampling_mode(criterion::SamplingMode::Flat);
    let watch = AuthWatch::builder()
        .otlp(false)
        .service_name("flush-bench")
        .fleet(authwatch::Fleet::redis(redis.1.clone()).flush_interval(Duration::from_millis(100)))
        .build()
        .unwrap();
    let status = || watch.fleet_status().unwrap();
    let wait = |flushes: u64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while status().flushes < flushes && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    wait(1);
    let mut next_ip = 0x0b00_0000u32;
    let mut redis_cpu = Duration::ZERO;
    let mut failures = 0u64;
    for (name, per_s) in [
        ("10k_failures_per_s", 10_000u32),
        ("100k_failures_per_s", 100_000),
    ] {
        g.throughput(criterion::Throughput::Elements(u64::from(per_s)));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let before = status();
                    let cpu = redis_cpu_now(&redis.1);
                    for _ in 0..per_s {
                        let ip = std::net::Ipv4Addr::from(next_ip);
                        next_ip = next_ip.wrapping_add(1);
                        watch.record(
                            &authwatch::AuthEvent::new(
                                authwatch::AuthOp::Login,
                                authwatch::Outcome::Failure(
                                    authwatch::FailureReason::InvalidCredentials,
                                ),
                                Duration::from_millis(2),
                                authwatch::layer::now(),
                            )
                            .with_route("/login")
                            .with_client_ip(Some(ip.into())),
                        );
                    }
                    // The alert engine hands its failures to the fleet when it counts them:
                    // every tick, and here now.
                    let _ = watch
                        .alert_engine()
                        .map(authwatch::alerts::AlertEngine::suspects);
                    wait(before.flushes + 2);
                    spent += status().flush_time.saturating_sub(before.flush_time);
                    redis_cpu += redis_cpu_now(&redis.1).saturating_sub(cpu);
                    failures += u64::from(per_s);
                }
                spent
            });
        });
        if failures > 0 {
            eprintln!(
                "fleet/flush/{name}: Redis CPU {:.2} µs per failing address ({failures} addresses)",
                redis_cpu.as_secs_f64() * 1e6 / failures as f64
            );
        }
        (redis_cpu, failures) = (Duration::ZERO, 0);
    }
    g.finish();
}

/// Redis' CPU time so far (`used_cpu_sys` + `used_cpu_user`), zero when unreachable.
fn redis_cpu_now(url: &str) -> Duration {
    let port = url.rsplit(':').next().unwrap_or("6379");
    let out = std::process::Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".test-deps/bin/redis-cli"),
    )
    .args(["-p", port, "info", "cpu"])
    .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let secs: f64 = text
        .lines()
        .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum();
    Duration::from_secs_f64(secs)
}

fn blocks(c: &mut Criterion) {
    use authwatch::layer::{BlockSource, Blocklist};
    let mut g = c.benchmark_group("blocks");
    let empty = Blocklist::new(100_000, 64, false);
    let full = Blocklist::new(100_000, 64, false);
    for i in 0..10_000u32 {
        full.insert(
            std::net::Ipv4Addr::from(0x0a00_0000 + i).into(),
            Duration::from_secs(3600),
            "bench",
            BlockSource::Manual,
        );
    }
    let miss: std::net::IpAddr = "198.51.100.7".parse().unwrap();
    let hit: std::net::IpAddr = "10.0.0.7".parse().unwrap();
    let op = Some(authwatch::AuthOp::Login);
    g.bench_function("check/empty", |b| {
        b.iter(|| empty.check(black_box(miss), op))
    });
    g.bench_function("check/miss_10k", |b| {
        b.iter(|| full.check(black_box(miss), op))
    });
    g.bench_function("check/hit_10k", |b| {
        b.iter(|| full.check(black_box(hit), op))
    });
    // Through the layer: a sign-in from an address that is not blocked.
    let watch = |n: u32| {
        let w = AuthWatch::builder()
            .otlp(false)
            .client_ip(authwatch::ClientIp::x_forwarded_for(1))
            .build()
            .unwrap();
        for i in 0..n {
            w.block_ip(
                std::net::Ipv4Addr::from(0x0a00_0000 + i).into(),
                Duration::from_secs(3600),
                "bench",
            )
            .unwrap();
        }
        w
    };
    for (name, n) in [("no_blocks", 0), ("10k_blocks", 10_000)] {
        let w = watch(n);
        let mut s = w.layer().layer(app());
        g.bench_function(format!("sign_in/{name}"), |b| {
            b.iter(|| {
                let req = Request::builder()
                    .method("POST")
                    .uri("/api/auth/sign-in/email")
                    .header("x-forwarded-for", "198.51.100.7")
                    .body(Body::empty())
                    .unwrap();
                run_req(&mut s, req)
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = routers, added, peers, mixed, token_guard, routers_two_threads, hdr, pieces, fleet,
        blocks
}
criterion_main!(benches);
