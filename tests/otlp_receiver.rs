//! Exact values over OTLP/gRPC into a small receiver built on the official `opentelemetry-proto`
//! types (next to the real collector in `otlp_collector.rs`): delta temporality and exponential
//! histograms chosen through the standard variables, every count equal to what was sent, and
//! no address, e-mail or token in any attribute.

mod real;

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsServiceServer;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{number_data_point, AggregationTemporality};
use real::*;

/// Sums the delta points of every counter and histogram, per metric and attribute set.
fn totals(reqs: &[ExportMetricsServiceRequest]) -> BTreeMap<(String, Attrs), f64> {
    let mut out: BTreeMap<(String, Attrs), f64> = BTreeMap::new();
    let delta = AggregationTemporality::Delta as i32;
    for r in reqs {
        for rm in &r.resource_metrics {
            let res = attrs(&rm.resource.as_ref().unwrap().attributes);
            assert_eq!(res["service.name"], "accounts");
            for sm in &rm.scope_metrics {
                assert_eq!(sm.scope.as_ref().unwrap().name, "authwatch");
                for m in &sm.metrics {
                    match m.data.as_ref().unwrap() {
                        Data::Sum(s) => {
                            assert_eq!(s.aggregation_temporality, delta, "{}", m.name);
                            assert!(s.is_monotonic);
                            for p in &s.data_points {
                                let v = match p.value {
                                    Some(number_data_point::Value::AsInt(i)) => i as f64,
                                    Some(number_data_point::Value::AsDouble(d)) => d,
                                    None => 0.0,
                                };
                                *out.entry((m.name.clone(), attrs(&p.attributes)))
                                    .or_default() += v;
                            }
                        }
                        Data::ExponentialHistogram(h) => {
                            assert_eq!(h.aggregation_temporality, delta, "{}", m.name);
                            for p in &h.data_points {
                                let buckets: u64 = p.zero_count
                                    + p.positive
                                        .as_ref()
                                        .map_or(0, |b| b.bucket_counts.iter().sum())
                                    + p.negative
                                        .as_ref()
                                        .map_or(0, |b| b.bucket_counts.iter().sum());
                                assert_eq!(buckets, p.count, "bucket counts add up");
                                *out.entry((m.name.clone(), attrs(&p.attributes)))
                                    .or_default() += p.count as f64;
                            }
                        }
                        Data::Histogram(_) => {
                            panic!("{}: explicit buckets, wanted exponential", m.name)
                        }
                        Data::Gauge(_) | Data::Summary(_) => {}
                    }
                }
            }
        }
    }
    out
}

fn total(t: &BTreeMap<(String, Attrs), f64>, metric: &str, want: &[(&str, &str)]) -> f64 {
    t.iter()
        .filter(|((m, a), _)| {
            m == metric
                && want
                    .iter()
                    .all(|(k, v)| a.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn exact_delta_counts_and_exponential_histograms_over_grpc() {
    let http = Http::new();
    let rx = Receiver::default();
    let addr = http.rt.block_on(serve_metrics(&rx));
    let ex = Example::start(
        "axum",
        &["--port", "0"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200".into()),
            (
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                "delta".into(),
            ),
            (
                "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
                "base2_exponential_bucket_histogram".into(),
            ),
            // The receiver has no logs service.
            ("OTEL_LOGS_EXPORTER", "none".into()),
        ],
    );
    let want = drive_axum(&http, ex.addr);
    // Let the cancelled request land, then stop: shutdown flushes the last delta.
    std::thread::sleep(std::time::Duration::from_millis(300));
    ex.stop();
    let reqs = rx.0.lock().unwrap().clone();
    assert!(reqs.len() >= 2, "{} exports", reqs.len());
    let t = totals(&reqs);
    let bad: Vec<String> = want
        .iter()
        .filter_map(|(m, a, v)| {
            let got = total(&t, m, a);
            (got != *v).then(|| format!("{m} {a:?}: want {v}, got {got}"))
        })
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
    for (m, a) in t.keys() {
        for (k, v) in a {
            for s in SECRETS {
                assert!(!v.contains(s), "{m} carries {s:?} in {k}={v}");
            }
        }
    }
}

/// The metric export's gRPC connection runs on authwatch's own export thread, not on the
/// service's runtime: a pipeline built inside a current-thread runtime flushes while that
/// runtime's only thread is busy (before, the flush waited for the service's runtime, and a
/// service that blocked it stalled its own export until the timeout), and one built outside
/// any runtime exports too (before, that was an error).
#[test]
fn grpc_export_runs_on_its_own_thread_inside_or_outside_a_runtime() {
    let http = Http::new();
    let rx = Receiver::default();
    let addr = http.rt.block_on(serve_metrics(&rx));
    // Only the flush below exports.
    let build = move || grpc_pipeline(addr, None);
    let exported = |name: &str| {
        rx.0.lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .any(|m| m.name == name)
    };

    // Inside a current-thread runtime whose one thread then blocks in the flush. On its own
    // thread, so that a flush that never returns fails the test instead of hanging it.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let service = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let flushed = service.block_on(async {
            let p = build();
            p.meters()[0]
                .u64_counter("inside_runtime")
                .build()
                .add(1, &[]);
            // Blocks the runtime's only thread until the export is done.
            let flushed = p.force_flush();
            let _ = p.shutdown();
            flushed
        });
        let _ = done.send(flushed);
    });
    let flushed = finished
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("a flush from inside the service's blocked runtime never returned");
    assert_eq!(flushed, Ok(()));
    assert!(exported("inside_runtime"), "nothing arrived");

    // Outside any runtime.
    let p = build();
    p.meters()[0]
        .u64_counter("outside_runtime")
        .build()
        .add(1, &[]);
    assert_eq!(p.force_flush(), Ok(()));
    assert!(exported("outside_runtime"), "nothing arrived");
    p.shutdown().unwrap();
}

/// Dropping the pipeline flushes the logs of a `tracing` bridge that outlives it (the bridge
/// holds its own reference to the logger provider): the provider is shut down while the
/// gRPC export runtime still runs. Before, the pipeline's runtime stopped first and the
/// bridge's pending record was exported into it, and lost.
#[test]
fn dropping_the_pipeline_flushes_a_bridge_that_outlives_it() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let http = Http::new();
    let rx = LogReceiver::default();
    let addr = http.rt.block_on(serve_logs(&rx));
    let p = grpc_pipeline(addr, Some(true));
    let subscriber = tracing_subscriber::registry().with(p.tracing_bridge().unwrap());
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(target: "accounts", "written before the pipeline is dropped");
        drop(p);
    });
    let arrived = || {
        rx.records().iter().any(|(_, r)| {
            r.body.as_ref().is_some_and(|b| {
                format!("{b:?}").contains("written before the pipeline is dropped")
            })
        })
    };
    // The drop flushed it; the schedule's export (every second) would have run by now too.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !arrived() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        arrived(),
        "the bridge's record was lost: {:?}",
        rx.records()
    );
}

/// The audit trail's own export (records encoded straight to protobuf) read back over gRPC with
/// the official types (HTTP/protobuf is read back by the real collector in
/// `otlp_collector.rs`): every record once, with its fields, under the
/// `authwatch::audit` scope; records a collector reports rejected are counted lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_arrive_exactly_and_rejected_ones_are_counted_lost() {
    use authwatch::{AuthEvent, AuthOp, Outcome};
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use std::time::Duration;

    let rx = LogReceiver {
        reject: 2,
        ..LogReceiver::default()
    };
    let addr = serve_logs(&rx).await;
    let watch = grpc_watch(addr);
    let now = authwatch::layer::now();
    for i in 0..700_u64 {
        // Half way, a sync: what was written goes out as one request, the rest as another
        // (a batch holds up to 2,048 records).
        if i == 350 {
            let logger = watch.audit_logger();
            tokio::task::spawn_blocking(move || logger.sync())
                .await
                .unwrap();
        }
        let outcome = if i % 7 == 0 {
            Outcome::RateLimited
        } else {
            Outcome::Failure(authwatch::FailureReason::InvalidCredentials)
        };
        watch.record(
            &AuthEvent::new(AuthOp::Login, outcome, Duration::from_micros(1500 + i), now)
                .with_route("/login"),
        );
    }
    // Successes leave no record by default.
    watch.record(&AuthEvent::new(
        AuthOp::Login,
        Outcome::Success,
        Duration::from_millis(1),
        now,
    ));
    let logger = watch.audit_logger();
    tokio::task::spawn_blocking(move || logger.sync())
        .await
        .unwrap();
    let lost = audit_lost(&watch).expect("the lost counter");
    watch.shutdown().await.unwrap();

    let records = rx.records();
    assert_eq!(records.len(), 700, "every record once");
    let requests = rx.requests.lock().unwrap().len();
    // Two syncs: two requests at least, and each rejected 2 of its records.
    assert!(requests >= 2, "{requests}");
    assert_eq!(
        lost,
        (2 * requests) as f64,
        "rejected records are counted lost"
    );
    let resource = rx.requests.lock().unwrap()[0].resource_logs[0]
        .resource
        .clone()
        .unwrap();
    assert_eq!(attrs(&resource.attributes)["service.name"], "accounts");
    let mut limited = 0;
    for (scope, r) in &records {
        assert_eq!(scope, "authwatch::audit");
        assert_eq!((r.severity_number, r.severity_text.as_str()), (13, "WARN"));
        assert_eq!(r.event_name, "auth.request");
        assert!(r.time_unix_nano > 0 && r.observed_time_unix_nano >= r.time_unix_nano);
        let body = r.body.as_ref().and_then(|b| b.value.clone());
        assert_eq!(body, Some(Value::StringValue("auth.request".into())));
        let a = attrs(&r.attributes);
        assert_eq!(a["audit.class"], "security");
        if a["auth.outcome"] == "failure" {
            assert_eq!(a["error.type"], "invalid_credentials");
        }
        assert_eq!(a["audit.source"], "layer");
        assert_eq!(a["auth.operation"], "login");
        assert_eq!(a["http.route"], "/login");
        assert!(a["audit.retention_days"].contains("365"), "{a:?}");
        assert!(a["auth.duration_ms"].contains("DoubleValue"), "{a:?}");
        if a["auth.outcome"] == "rate_limited" {
            limited += 1;
        } else {
            assert_eq!(a["auth.outcome"], "failure");
        }
    }
    assert_eq!(limited, 100);
}

/// The collector is down when the audit records go out, and comes back on the same port a
/// couple of seconds later (a restart): the export tries the batch again, and every record
/// arrives once, none counted lost. Before the retries, the whole batch was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_wait_out_a_collector_restart() {
    use authwatch::{AuthEvent, AuthOp, Outcome};
    use std::time::{Duration, Instant};

    // A port nobody listens on yet: connections are refused until the receiver starts.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let watch = grpc_watch(addr);
    for i in 0..300_u64 {
        watch.record(
            &AuthEvent::new(
                AuthOp::Login,
                Outcome::Failure(authwatch::FailureReason::InvalidCredentials),
                Duration::from_micros(1000 + i),
                authwatch::layer::now(),
            )
            .with_route("/login"),
        );
    }
    let logger = watch.audit_logger();
    tokio::task::spawn_blocking(move || logger.sync())
        .await
        .unwrap();
    // The sync hands the batch to the export at once; it finds no collector and is being
    // retried (the sync stops waiting for it after 5 s). The collector comes back after that.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(audit_lost(&watch), Some(0.0), "lost while retrying");
    let rx = LogReceiver::default();
    serve_on(
        logs_router(&rx),
        tokio::net::TcpListener::bind(addr).await.unwrap(),
    );
    // The longest wait between two tries is 5 s (a generous bound for a loaded machine).
    let deadline = Instant::now() + Duration::from_secs(30);
    // The 300 failures also open incidents (the failure-rate alerts): their records are not
    // the ones counted here.
    let failures = || {
        rx.records()
            .iter()
            .filter(|(_, r)| !r.attributes.iter().any(|kv| kv.key == "auth.incident"))
            .count()
    };
    while failures() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(failures(), 300, "every record, once");
    assert_eq!(audit_lost(&watch), Some(0.0));
    watch.shutdown().await.unwrap();
    assert_eq!(failures(), 300, "nothing sent twice");
}

/// A trickle of audit records, without a sync, still reaches the collector, in one request
/// per schedule delay (`OTEL_BLRP_SCHEDULE_DELAY`, 1 s by default) rather than one per 50-ms
/// drain of the layer's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_of_audit_records_goes_out_once_per_schedule_delay() {
    use authwatch::{AuthEvent, AuthOp, Outcome};
    use std::time::{Duration, Instant};

    let rx = LogReceiver::default();
    let addr = serve_logs(&rx).await;
    let watch = grpc_watch(addr);
    // Six failed sign-ins 120 ms apart: each lands in another drain of the layer's records.
    let started = Instant::now();
    for _ in 0..6 {
        watch.record(
            &AuthEvent::new(
                AuthOp::Login,
                Outcome::Failure(authwatch::FailureReason::InvalidCredentials),
                Duration::from_millis(2),
                authwatch::layer::now(),
            )
            .with_route("/login"),
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let spread = started.elapsed();
    // No sync: they go out on their own (a generous bound for a loaded machine).
    let deadline = Instant::now() + Duration::from_secs(20);
    while rx.records().len() < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rx.records().len(), 6, "every record arrives without a sync");
    let requests = rx.requests.lock().unwrap().len();
    // One request a second of spread at most, plus one (a batch can start just before a
    // second ends): two when the loop took its 600 ms, more only when the machine stalled it;
    // one request per drain would be six.
    let most = 2 + spread.as_secs() as usize;
    assert!(
        requests <= most,
        "{requests} requests for 6 records written over {spread:?}"
    );
    watch.shutdown().await.unwrap();
}

/// authwatch exporting over gRPC to the receiver at `addr` (5-s timeout), whose metrics go
/// out only when flushed.
fn grpc_watch(addr: std::net::SocketAddr) -> authwatch::AuthWatch {
    use std::time::Duration;
    authwatch::AuthWatch::builder()
        .service_name("accounts")
        .otlp_endpoint(format!("http://{addr}"))
        .otlp_protocol(authwatch::Protocol::Grpc)
        .otlp_timeout(Duration::from_secs(5))
        .export_interval(Duration::from_secs(3600))
        .build()
        .unwrap()
}

/// `auth_audit_export_lost_count_total` on `watch`'s `/metrics` page.
fn audit_lost(watch: &authwatch::AuthWatch) -> Option<f64> {
    metric_value(
        &watch.metrics_text().unwrap(),
        "auth_audit_export_lost_count_total",
    )
}

/// A pipeline exporting over gRPC to the receiver at `addr`, with `logs` as given (unset: the
/// default), whose metrics go out only when flushed (the schedule is an hour).
fn grpc_pipeline(addr: std::net::SocketAddr, logs: Option<bool>) -> authwatch_otel::Pipeline {
    use authwatch_otel::{OtlpOptions, Pipeline, Protocol};
    let mut options = OtlpOptions::new()
        .endpoint(format!("http://{addr}"))
        .protocol(Protocol::Grpc)
        .interval(std::time::Duration::from_secs(3600))
        .timeout(std::time::Duration::from_secs(5));
    options.logs = logs;
    Pipeline::builder()
        .service_name("accounts")
        .prometheus(false)
        .otlp(options)
        .build()
        .unwrap()
}

/// Serves `router` on a free loopback port, on the current runtime.
async fn serve(router: tonic::transport::server::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve_on(router, listener);
    addr
}

/// Serves `router` on `listener`, on the current runtime.
fn serve_on(router: tonic::transport::server::Router, listener: tokio::net::TcpListener) {
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
}

/// Serves `rx` as an OTLP/gRPC metrics receiver on a free port.
async fn serve_metrics(rx: &Receiver) -> std::net::SocketAddr {
    serve(tonic::transport::Server::builder().add_service(MetricsServiceServer::new(rx.clone())))
        .await
}

/// Serves `rx` (and a metrics receiver, for the pipeline's metrics) on a free port.
async fn serve_logs(rx: &LogReceiver) -> std::net::SocketAddr {
    serve(logs_router(rx)).await
}

/// A server of `rx` and of a metrics receiver (for the pipeline's metrics).
fn logs_router(rx: &LogReceiver) -> tonic::transport::server::Router {
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsServiceServer;
    tonic::transport::Server::builder()
        .add_service(LogsServiceServer::new(rx.clone()))
        .add_service(MetricsServiceServer::new(Receiver::default()))
}

/// With OTLP logs on and a local log, each flush's checkpoint also goes to the collector as an
/// `auth.audit.checkpoint` record (out of the host's reach), and the copy the collector holds
/// verifies the local log: the last one counts every record written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_logs_checkpoints_reach_the_collector() {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use std::time::Duration;
    let rx = LogReceiver::default();
    let addr = serve_logs(&rx).await;
    let dir = std::env::temp_dir().join(format!(
        "authwatch-otlp-checkpoints-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    let watch = authwatch::AuthWatch::builder()
        .service_name("accounts")
        .otlp_endpoint(format!("http://{addr}"))
        .otlp_protocol(authwatch::Protocol::Grpc)
        .otlp_timeout(Duration::from_secs(5))
        .export_interval(Duration::from_secs(3600))
        .audit_requests(false)
        .audit_dir(&dir)
        .audit_key("s3cret")
        .build()
        .unwrap();
    let logger = watch.audit_logger();
    for i in 0..25 {
        logger.log_login_failure(&format!("u-{i}"), None, None, "Invalid credentials");
    }
    tokio::task::spawn_blocking(move || logger.sync())
        .await
        .unwrap();
    watch.shutdown().await.unwrap();

    let checkpoints: Vec<String> = rx
        .records()
        .iter()
        .filter(|(_, r)| r.event_name == "auth.audit.checkpoint")
        .filter_map(|(_, r)| {
            r.attributes
                .iter()
                .find(|kv| kv.key == "auth.audit.checkpoint")
                .and_then(|kv| kv.value.as_ref()?.value.clone())
                .and_then(|v| match v {
                    Value::StringValue(s) => Some(s),
                    _ => None,
                })
        })
        .collect();
    assert!(!checkpoints.is_empty(), "{:?}", rx.records());
    let last: serde_json::Value = serde_json::from_str(checkpoints.last().unwrap()).unwrap();
    assert_eq!(last["records"], 25, "{last}");
    assert_eq!(last["chain"], "hmac-sha256");
    // The collector's copy verifies the local log.
    let copy = dir.join("collector-copy.jsonl");
    std::fs::write(
        &copy,
        checkpoints
            .iter()
            .map(|c| serde_json::json!({"auth.audit.checkpoint": c}).to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let r = authwatch::audit::verify_with_checkpoints(&dir, Some(b"s3cret"), &copy).unwrap();
    assert_eq!((r.records, r.checkpoints), (25, 1));
    let _ = std::fs::remove_dir_all(&dir);
}
