//! OTLP over gRPC to an `https://` endpoint: the metrics exporter and the audit trail's own
//! export verify the collector's certificate (here a self-signed one, trusted through
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`) and deliver; a collector they cannot verify gets nothing
//! and the service notices nothing.

mod real;

use std::time::Duration;

use authwatch::{AuthEvent, AuthOp, AuthWatch, Outcome, Protocol};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsServiceServer;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsServiceServer;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use real::*;

fn logins(rx: &Receiver) -> i64 {
    let reqs = rx.0.lock().unwrap();
    let mut last = 0;
    for r in reqs.iter() {
        for m in r
            .resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|s| &s.metrics)
        {
            if m.name == "auth.login.success.count" {
                if let Some(Data::Sum(s)) = &m.data {
                    for p in &s.data_points {
                        if let Some(number_data_point::Value::AsInt(v)) = p.value {
                            last = v;
                        }
                    }
                }
            }
        }
    }
    last
}

async fn export_to(endpoint: &str, n: u32) -> AuthWatch {
    let watch = AuthWatch::builder()
        .service_name("accounts")
        .otlp_endpoint(endpoint)
        .otlp_protocol(Protocol::Grpc)
        .otlp_timeout(Duration::from_secs(2))
        .export_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    // One failed sign-in: an audit record, exported on the audit trail's own connection.
    watch.record(&AuthEvent::new(
        AuthOp::Login,
        Outcome::Failure(authwatch::FailureReason::InvalidCredentials),
        Duration::from_millis(4),
        authwatch::layer::now(),
    ));
    let logger = watch.audit_logger();
    tokio::task::spawn_blocking(move || logger.sync())
        .await
        .unwrap();
    for _ in 0..n {
        watch.record(
            &AuthEvent::new(
                AuthOp::Login,
                Outcome::Success,
                Duration::from_millis(4),
                authwatch::layer::now(),
            )
            .with_route("/login"),
        );
    }
    watch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_tls_to_a_collector_with_a_private_ca() {
    // The test's server side needs a process-wide rustls provider when more than one is built
    // in (the exporter's client side picks ring itself).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempdir::Dir::new("tls");
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let identity =
        tonic::transport::Identity::from_pem(cert.cert.pem(), cert.signing_key.serialize_pem());

    let rx = Receiver::default();
    let logs = LogReceiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .unwrap()
            .add_service(MetricsServiceServer::new(rx.clone()))
            .add_service(LogsServiceServer::new(logs.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let endpoint = format!("https://localhost:{}", addr.port());

    // Without the CA: the certificate is not trusted, nothing arrives, and shutdown says so.
    let w = export_to(&endpoint, 3).await;
    assert!(w.shutdown().await.is_err());
    assert_eq!(logins(&rx), 0);
    assert_eq!(logs.records().len(), 0, "no record without the CA either");

    // With it (the only test in this binary, so the variable touches no other test).
    std::env::set_var("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca);
    let w = export_to(&endpoint, 5).await;
    w.shutdown().await.unwrap();
    assert_eq!(logins(&rx), 5);
    let records = logs.records();
    assert_eq!(records.len(), 1, "the audit record, over TLS");
    assert_eq!(records[0].0, "authwatch::audit");
}
