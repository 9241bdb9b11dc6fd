//! One Better Auth-shaped service under each monitoring stack, served over TCP, for the
//! end-to-end comparison `scripts/e2e-bench.sh` drives with `wrk`.
//!
//! ```sh
//! cargo run --release --example bench_server -- --stack authwatch --port 0 --workers 1
//! ```
//!
//! `--stack` is one of:
//! - `bare`: the service alone;
//! - `authwatch`: `.layer(watch.layer())` on the router as the README shows, every sink on:
//!   stats and HDR windows, `/metrics`, OTLP metrics and the audit trail as OTLP logs (to
//!   `OTEL_EXPORTER_OTLP_ENDPOINT`), the alert engine, session estimate, the token guard.
//!   The layer writes an audit record for each failed, rate-limited or refused request (the
//!   default);
//! - `authwatch-fleet`: the same in fleet mode on `BENCH_FLEET_URL` (default
//!   `redis://127.0.0.1:1`, where nothing listens: Redis down);
//! - `authwatch-audit-every-request`: the same with a record for every auth request
//!   (`audit_request_successes(true)`);
//! - `authwatch-no-request-audit`: the same without the layer's audit records
//!   (`audit_requests(false)`; the handlers' own audit records are unaffected);
//! - `authwatch-wrap`: the same around the whole router, served as the README shows
//!   (`axum::serve` of `watch.wrap(app)` with `/metrics` and `/auth/health` merged into `app`);
//! - `authwatch-traces`: `authwatch` plus an `auth.request` span per request exported over OTLP;
//! - `trace-layer`: tower-http's `TraceLayer::new_for_http()`, which records nothing under the
//!   `warn` subscriber every stack gets (its spans and events are at `debug`);
//! - `trace-layer-logging`: the same `TraceLayer` logging as axum's examples configure it
//!   (`tower_http=debug`: a span per request and its two events, formatted by the `fmt` layer),
//!   each line written with one `write(2)` to `/dev/null`, so the formatting and the system call
//!   are counted and no disk is;
//! - `axum-otel-metrics`, `otel-tower` (opentelemetry-instrumentation-tower), `axum-prometheus`:
//!   the metrics middlewares, each recording into its own in-process provider (they do not
//!   export here: an advantage to them).
//!
//! Every stack gets the same `fmt` subscriber at `warn` (what a production service runs) and the
//! same handlers (`examples/support/bench_app.rs`, which the in-process bench's `mix` rows call
//! too), which do no I/O: the monitoring's cost is as visible as it can be.
//! `--sign-in-work-us N` makes each sign-in spend N µs of the thread's CPU time, as checking a
//! password hash does (real hashes cost milliseconds). `--session-work-us N` makes each session
//! check spend N µs the same way (every `get-session`, and the check in front of `/api/me`,
//! whatever its answer), as a session lookup does. Both default to 0 (no work).

use std::net::SocketAddr;

use authwatch::AuthWatch;
use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

#[path = "support/bench_app.rs"]
mod bench_app;
use bench_app::{SESSION_WORK, SIGN_IN_WORK};

const STACKS: [&str; 13] = [
    "bare",
    "identity-layer",
    "authwatch",
    "authwatch-fleet",
    "authwatch-audit-every-request",
    "authwatch-no-request-audit",
    "authwatch-wrap",
    "authwatch-traces",
    "trace-layer",
    "trace-layer-logging",
    "axum-otel-metrics",
    "otel-tower",
    "axum-prometheus",
];

/// The app under `stack`, and the authwatch instance to shut down at the end.
fn app(stack: &str) -> (Router, Option<AuthWatch>) {
    match stack {
        "bare" => (bench_app::bare(), None),
        "authwatch"
        | "authwatch-fleet"
        | "authwatch-audit-every-request"
        | "authwatch-no-request-audit"
        | "authwatch-wrap"
        | "authwatch-traces" => {
            let builder = AuthWatch::builder()
                .service_name("bench")
                .audit_requests(stack != "authwatch-no-request-audit")
                .audit_request_successes(stack == "authwatch-audit-every-request");
            // Fleet mode on `BENCH_FLEET_URL`, by default an address where nothing listens:
            // Redis down.
            let builder = if stack == "authwatch-fleet" {
                builder.fleet(authwatch::Fleet::redis(
                    std::env::var("BENCH_FLEET_URL")
                        .unwrap_or_else(|_| "redis://127.0.0.1:1".into()),
                ))
            } else {
                builder
            };
            let watch = builder.build().expect("authwatch");
            let app = bench_app::watched(&watch);
            // `authwatch-wrap` is wrapped where it is served (`main`), endpoints included.
            let app = if stack == "authwatch-wrap" {
                app
            } else {
                app.layer(watch.layer())
            };
            (app.merge(watch.endpoints()), Some(watch))
        }
        // What `Router::layer` costs by itself: a layer that adds nothing (its service is the
        // route it gets), so the rest is axum's boxing of the route, per request.
        "identity-layer" => (
            bench_app::bare().layer(tower::layer::util::Identity::new()),
            None,
        ),
        "trace-layer" | "trace-layer-logging" => (
            bench_app::bare().layer(tower_http::trace::TraceLayer::new_for_http()),
            None,
        ),
        "axum-otel-metrics" => {
            let provider = otel_sdk_032::metrics::SdkMeterProvider::builder()
                .with_reader(otel_sdk_032::metrics::ManualReader::builder().build())
                .build();
            let layer = axum_otel_metrics::HttpMetricsLayerBuilder::new()
                .with_provider(provider)
                .build();
            (bench_app::bare().layer(layer), None)
        }
        "otel-tower" => {
            let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
                .with_reader(opentelemetry_sdk::metrics::ManualReader::builder().build())
                .build();
            opentelemetry::global::set_meter_provider(provider);
            let layer = opentelemetry_instrumentation_tower::http::server::LayerBuilder::builder()
                .with_tracing(false)
                .with_route_extractor_fn(|r: &Request| {
                    r.extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map(|p| p.as_str().to_owned())
                })
                .build()
                .expect("instrumentation-tower layer");
            (bench_app::bare().layer(layer), None)
        }
        "axum-prometheus" => {
            let (layer, handle) = axum_prometheus::PrometheusMetricLayer::pair();
            let app = bench_app::bare()
                .route("/metrics", get(move || async move { handle.render() }))
                .layer(layer);
            (app, None)
        }
        other => panic!("unknown --stack {other}; one of {STACKS:?}"),
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Resolves at Ctrl-C or SIGTERM (the bench scripts stop the server with SIGTERM).
async fn stopped() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stack = arg("--stack").unwrap_or_else(|| "authwatch".into());
    let port: u16 = arg("--port").map_or(Ok(3000), |p| p.parse())?;
    let workers: usize = arg("--workers").map_or(Ok(1), |p| p.parse())?;
    let work: u64 = arg("--sign-in-work-us").map_or(Ok(0), |p| p.parse())?;
    let _ = SIGN_IN_WORK.set(std::time::Duration::from_micros(work));
    let session_work: u64 = arg("--session-work-us").map_or(Ok(0), |p| p.parse())?;
    let _ = SESSION_WORK.set(std::time::Duration::from_micros(session_work));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (app, watch) = app(&stack);
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_filter(EnvFilter::new("warn"));
        let registry = tracing_subscriber::registry().with(fmt);
        // Spans go to the collector only in `authwatch-traces`, and the request log only in
        // `trace-layer-logging`; elsewhere no layer wants them.
        match &watch {
            Some(w) if stack == "authwatch-traces" => {
                registry.with(w.pipeline().tracing_layer()).init();
            }
            _ if stack == "trace-layer-logging" => {
                let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
                let log = tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(null))
                    .with_filter(EnvFilter::new("tower_http=debug"));
                registry.with(log).init();
            }
            _ => registry.init(),
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        eprintln!("stack: {stack}");
        println!("listening on http://{}", listener.local_addr()?);
        // The two services differ in type (boxing them into one would add a cost per request
        // to every stack): one serving expression for both.
        macro_rules! serve {
            ($make:expr) => {
                axum::serve(listener, $make)
                    .with_graceful_shutdown(stopped())
                    .await?
            };
        }
        match &watch {
            Some(w) if stack == "authwatch-wrap" => serve!(
                axum::ServiceExt::<Request>::into_make_service_with_connect_info::<SocketAddr>(
                    w.wrap(app)
                )
            ),
            _ => serve!(app.into_make_service_with_connect_info::<SocketAddr>()),
        }
        if let Some(w) = watch {
            eprintln!("{}", w.snapshot());
            if let Err(e) = w.shutdown().await {
                eprintln!("warning: {e}");
            }
        }
        Ok(())
    })
}
