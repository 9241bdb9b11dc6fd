//! `OTEL_BLRP_MAX_EXPORT_BATCH_SIZE` sets how many audit records go in one OTLP export
//! request. It is a process-wide variable, so this test has a binary of its own.

mod real;

use std::time::Duration;

use authwatch::{AuthEvent, AuthOp, FailureReason, Outcome, Protocol};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsServiceServer;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsServiceServer;
use real::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_size_variable_caps_the_records_of_one_export() {
    // Set before the monitor starts its export; nothing else in this binary reads it.
    std::env::set_var("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", " 4 ");
    let rx = LogReceiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LogsServiceServer::new(rx.clone()))
            .add_service(MetricsServiceServer::new(Receiver::default()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let watch = authwatch::AuthWatch::builder()
        .service_name("accounts")
        .otlp_endpoint(format!("http://{addr}"))
        .otlp_protocol(Protocol::Grpc)
        .otlp_timeout(Duration::from_secs(5))
        .export_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    for _ in 0..10 {
        watch.record(
            &AuthEvent::new(
                AuthOp::Login,
                Outcome::Failure(FailureReason::InvalidCredentials),
                Duration::from_millis(2),
                authwatch::layer::now(),
            )
            .with_route("/login"),
        );
    }
    watch.shutdown().await.unwrap();
    assert_eq!(rx.records().len(), 10, "every record, once");
    let sizes: Vec<usize> = rx
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| {
            r.resource_logs
                .iter()
                .flat_map(|rl| &rl.scope_logs)
                .map(|sl| sl.log_records.len())
                .sum()
        })
        .collect();
    assert!(
        sizes.iter().all(|&n| n <= 4),
        "no request holds more than 4 records: {sizes:?}"
    );
    assert!(sizes.len() >= 3, "10 records in batches of 4: {sizes:?}");
}
