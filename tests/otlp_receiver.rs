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
    let listener = http
        .rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    http.rt.spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(rx.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
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
