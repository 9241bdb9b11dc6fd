use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use authwatch_layer::{AuthEvent, AuthOp, EventSink, EventSource, FailureReason, Outcome};

use crate::*;

fn event(op: AuthOp, outcome: Outcome, route: &str) -> AuthEvent<'_> {
    AuthEvent::new(
        op,
        outcome,
        Duration::from_millis(3),
        authwatch_layer::now(),
    )
    .with_route(route)
    .with_client_ip(Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 77))))
}

fn pipeline() -> Pipeline {
    Pipeline::builder()
        .otlp(OtlpOptions {
            enabled: Some(false),
            ..OtlpOptions::default()
        })
        .build()
        .unwrap()
}

/// Every catalog instrument the sink and the gauges register shows up under the documented
/// Prometheus name, in the real opentelemetry-prometheus exposition.
#[test]
fn prometheus_names_match_the_catalog() {
    let p = pipeline();
    let sink = OtelSink::new(p.meters());
    for m in p.meters() {
        register_quantile_gauges(
            m,
            Arc::new(|| {
                let mut w = WindowQuantiles::empty();
                w.ops[AuthOp::Login.index()] = [Some(Duration::from_millis(2)); 3];
                w.token_validation = [Some(Duration::from_millis(1)); 3];
                w
            }),
        );
        register_uptime_gauge(m, std::time::Instant::now());
        register_process_gauges(m);
    }
    for op in AuthOp::ALL {
        sink.record(&event(op, Outcome::Success, "/x"));
        sink.record(&event(
            op,
            Outcome::Failure(FailureReason::InvalidCredentials),
            "/x",
        ));
    }
    sink.record(&event(AuthOp::Login, Outcome::RateLimited, "/login"));
    sink.record(&event(
        AuthOp::Login,
        Outcome::Failure(FailureReason::LockedOut),
        "/login",
    ));
    sink.record(&event(AuthOp::Login, Outcome::Cancelled, "/login"));
    sink.record(
        &event(
            AuthOp::TokenValidation,
            Outcome::Failure(FailureReason::InvalidToken),
            "/api/me",
        )
        .with_source(EventSource::TokenGuard),
    );
    let text = p.render_prometheus().unwrap();
    for d in CATALOG.iter().filter(|d| {
        // Registered by the facade.
        !matches!(
            d.measure,
            Measure::HealthStatus
                | Measure::HealthCheckTime
                | Measure::AuditDropped
                | Measure::AuditExportLost
                | Measure::DbQueryTime
                | Measure::ActiveUsers
                | Measure::ActiveSessions
                | Measure::EstimatedSessions
                | Measure::GeoAttempts
                | Measure::AttackTopIpFailures
                | Measure::AttackSuspectedIps
                | Measure::AttackFailingIps
                | Measure::AttackTopAccountFailures
                | Measure::AttackAccountsUnderAttack
                | Measure::AlertsFiring
                | Measure::FleetConnected
                | Measure::FleetErrors
                | Measure::Blocked
                | Measure::BlocksActive
                | Measure::ConfigReloadErrors
        )
    }) {
        let name = d.prometheus_name();
        let want = format!("# TYPE {name} {}", d.kind.prometheus_type());
        assert!(text.contains(&want), "{want} missing from\n{text}");
        assert!(text.contains(&format!("# HELP {name} ")), "{name} help");
    }
    assert!(text.contains("auth_response_time_ms_bucket{auth_operation=\"login\""));
    assert!(text.contains("le=\"0.25\""));
    assert!(text.contains("le=\"10000\""));
    assert!(!text.contains("203.0.113.77"), "client address leaked");
    assert!(
        !text.contains("_milliseconds"),
        "unit suffix appended:\n{text}"
    );
}

#[test]
fn counts_are_exact_and_carry_only_bounded_attributes() {
    let p = pipeline();
    let sink = OtelSink::new(p.meters());
    let mut table = authwatch_layer::Routes::empty()
        .route("/login", AuthOp::Login)
        .build()
        .unwrap();
    let id = table.routes()[0].id;
    let _ = &mut table;
    for i in 0..1000u32 {
        let mut e = event(
            AuthOp::Login,
            if i % 4 == 0 {
                Outcome::Failure(FailureReason::InvalidCredentials)
            } else {
                Outcome::Success
            },
            "/login",
        );
        e.route_id = Some(id);
        e.method = "POST";
        sink.record(&e);
    }
    let text = p.render_prometheus().unwrap();
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} missing:\n{text}"))
            .to_owned()
    };
    let ok = line("auth_login_success_count_total{");
    assert!(ok.ends_with(" 750"), "{ok}");
    let ko = line("auth_login_failure_count_total{");
    assert!(ko.ends_with(" 250"), "{ko}");
    assert!(
        ko.contains("auth_failure_reason=\"invalid_credentials\""),
        "{ko}"
    );
    assert!(ko.contains("http_route=\"/login\""), "{ko}");
    assert!(ko.contains("http_request_method=\"POST\""), "{ko}");
    let count = line("auth_response_time_ms_count{");
    assert!(
        count.ends_with(" 750") || count.ends_with(" 250"),
        "{count}"
    );
    // Only catalog attribute keys (plus the scope labels the exposition adds).
    let allowed: HashSet<String> = attr::ALL
        .iter()
        .map(|k| k.replace('.', "_"))
        .chain(["otel_scope_name", "otel_scope_version", "le"].map(String::from))
        .collect();
    for l in text.lines().filter(|l| l.starts_with("auth_")) {
        let labels = &l[l.find('{').unwrap() + 1..l.rfind('}').unwrap()];
        for kv in labels.split("\",") {
            let k = kv.split('=').next().unwrap().trim_start_matches(',');
            assert!(allowed.contains(k), "label {k} in {l}");
        }
    }
}

#[test]
fn token_guard_labels_are_capped() {
    let p = pipeline();
    let sink = OtelSink::new(p.meters());
    let routes: Vec<String> = (0..600).map(|i| format!("/api/r{i}")).collect();
    for r in &routes {
        sink.record(
            &event(AuthOp::TokenValidation, Outcome::Success, r)
                .with_source(EventSource::TokenGuard),
        );
    }
    let text = p.render_prometheus().unwrap();
    let series = text
        .lines()
        .filter(|l| l.starts_with("auth_token_validation_success_count_total{"))
        .count();
    assert_eq!(series, 513, "512 labels plus _OTHER");
    let other = text
        .lines()
        .find(|l| {
            l.starts_with("auth_token_validation_success_count_total{")
                && l.contains("http_route=\"_OTHER\"")
        })
        .unwrap();
    assert!(other.ends_with(" 88"), "{other}");
}

#[test]
fn options_parse_protocols() {
    assert_eq!(Protocol::parse("grpc").unwrap(), Protocol::Grpc);
    assert_eq!(
        Protocol::parse("http/protobuf").unwrap(),
        Protocol::HttpProtobuf
    );
    assert!(Protocol::parse("http/json").is_err());
}

#[test]
fn grpc_builds_outside_a_runtime_on_a_thread_of_its_own() {
    let p = Pipeline::builder()
        .otlp(OtlpOptions {
            endpoint: Some("http://127.0.0.1:1".into()),
            protocol: Some(Protocol::Grpc),
            ..OtlpOptions::default()
        })
        .build()
        .unwrap();
    assert!(
        format!("{p:?}").contains("grpc_export_thread: true"),
        "{p:?}"
    );
    // The thread names itself once it runs: look for up to 5 s.
    let running = || {
        std::fs::read_dir("/proc/self/task").map(|d| {
            d.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .any(|c| c.trim() == "authwatch-otlp")
        })
    };
    if running().is_ok() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !running().unwrap_or(false) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(running().unwrap_or(false), "no authwatch-otlp thread");
    }
    drop(p);
}

#[test]
fn readme_table_lists_every_instrument() {
    let t = markdown_table();
    for d in &CATALOG {
        assert!(t.contains(&format!("`{}`", d.name)), "{}", d.name);
    }
}

/// Four threads recording at once: every count and every latency lands exactly once, whatever
/// was still pending in a thread's batch when the collection came.
#[test]
fn concurrent_recording_is_exact() {
    let p = pipeline();
    let sink = Arc::new(OtelSink::new(p.meters()));
    let table = authwatch_layer::Routes::empty()
        .route("/login", AuthOp::Login)
        .build()
        .unwrap();
    let id = table.routes()[0].id;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let sink = sink.clone();
            std::thread::spawn(move || {
                for i in 0..10_001u32 {
                    let mut e = event(AuthOp::Login, Outcome::Success, "/login");
                    e.route_id = Some(id);
                    e.method = "POST";
                    e.latency = Duration::from_micros(u64::from(t * 10 + i % 7));
                    sink.record(&e);
                }
            })
        })
        .collect();
    // Collections while the threads record.
    for _ in 0..20 {
        let _ = p.render_prometheus();
    }
    for t in threads {
        t.join().unwrap();
    }
    let text = p.render_prometheus().unwrap();
    let ok = text
        .lines()
        .find(|l| l.starts_with("auth_login_success_count_total{"))
        .unwrap();
    assert!(ok.ends_with(" 40004"), "{ok}");
    let count = text
        .lines()
        .find(|l| l.starts_with("auth_response_time_ms_count{"))
        .unwrap();
    assert!(count.ends_with(" 40004"), "{count}");
}

/// An event of a table route and one recorded by hand with the same labels are two cells with
/// one attribute set: the counter is their sum, not the last one observed.
#[test]
fn cells_with_the_same_labels_add_up() {
    let p = pipeline();
    let sink = OtelSink::new(p.meters());
    let table = authwatch_layer::Routes::empty()
        .route("/login", AuthOp::Login)
        .build()
        .unwrap();
    for _ in 0..3 {
        let mut e = event(AuthOp::Login, Outcome::Success, "/login");
        e.route_id = Some(table.routes()[0].id);
        e.method = "POST";
        sink.record(&e);
    }
    for _ in 0..2 {
        let mut e = event(AuthOp::Login, Outcome::Success, "/login");
        e.method = "POST";
        sink.record(&e);
    }
    let text = p.render_prometheus().unwrap();
    let ok: Vec<_> = text
        .lines()
        .filter(|l| l.starts_with("auth_login_success_count_total{"))
        .collect();
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert!(ok[0].ends_with(" 5"), "{}", ok[0]);
}

#[test]
fn logs_follow_the_builder_and_an_endpoint() {
    let on = OtlpOptions {
        endpoint: Some("http://collector:4318".into()),
        ..OtlpOptions::default()
    };
    assert!(on.logs_enabled());
    let off = OtlpOptions {
        logs: Some(false),
        ..on.clone()
    };
    assert!(!off.logs_enabled());
    let disabled = OtlpOptions {
        enabled: Some(false),
        ..OtlpOptions::default()
    };
    assert!(!disabled.logs_enabled());
}

#[test]
fn query_names_are_series_up_to_the_cap() {
    let p = pipeline();
    let t = QueryTimer::new(p.meters());
    t.record("find_user", Duration::from_millis(3));
    t.record("find_user", Duration::from_millis(5));
    for i in 0..MAX_QUERY_NAMES + 10 {
        t.record(&format!("q{i}"), Duration::from_millis(1));
    }
    let text = p.render_prometheus().unwrap();
    let count = |name: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("auth_db_query_time_ms_count{")
                    && l.contains(&format!("db_query_name=\"{name}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    assert_eq!(count("find_user").as_deref(), Some("2"));
    // 64 names: find_user and q0..q62; the rest share _OTHER.
    assert_eq!(count("q62").as_deref(), Some("1"));
    assert_eq!(count("q63"), None);
    assert_eq!(count("_OTHER").as_deref(), Some("11"));
}

/// The nice value in a `/proc/…/stat` file (Linux).
#[cfg(target_os = "linux")]
fn nice_in(stat: &str) -> i32 {
    nice_of(&std::fs::read_to_string(stat).unwrap())
}

/// The nice value in the text of a `/proc/…/stat` file.
#[cfg(target_os = "linux")]
fn nice_of(s: &str) -> i32 {
    // Fields after the command (which may hold spaces) start at the third: nice is the 19th.
    let rest = &s[s.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(16).unwrap().parse().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn background_threads_run_at_a_lower_priority_and_pass_it_on() {
    std::thread::spawn(|| {
        let before = nice_in("/proc/thread-self/stat");
        lower_thread_priority();
        let after = nice_in("/proc/thread-self/stat");
        assert_eq!(after, (before + 10).min(19));
        let child = std::thread::spawn(|| nice_in("/proc/thread-self/stat"));
        assert_eq!(child.join().unwrap(), after);
    })
    .join()
    .unwrap();
    // The calling thread is left alone.
    assert_eq!(
        nice_in("/proc/thread-self/stat"),
        nice_in("/proc/self/stat")
    );
}

/// A pipeline exporting over HTTP (500-ms timeout) to a port nothing listens on, its log
/// export trying a batch for `log_retry` (unset: the default).
#[cfg(feature = "http")]
fn dead_http_pipeline(log_retry: Option<Duration>) -> Pipeline {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    Pipeline::builder()
        .prometheus(false)
        .otlp(OtlpOptions {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            protocol: Some(Protocol::HttpProtobuf),
            timeout: Some(Duration::from_millis(500)),
            log_retry,
            ..OtlpOptions::default()
        })
        .build()
        .unwrap()
}

#[cfg(feature = "http")]
#[test]
fn a_log_export_to_a_dead_collector_counts_every_record_it_loses() {
    // Each refused batch is tried again for 0.3 s, then counted.
    let p = dead_http_pipeline(Some(Duration::from_millis(300)));
    let export = p
        .log_export("test")
        .unwrap()
        .expect("logs are on with an endpoint");
    #[cfg(target_os = "linux")]
    {
        // Its thread runs below the service's priority. Other tests' threads come and go
        // while the list is read: one that has ended by the time it is read is skipped.
        let base = nice_in("/proc/self/stat");
        let niced: Vec<i32> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| {
                let t = t.ok()?.path();
                let comm = std::fs::read_to_string(t.join("comm")).ok()?;
                if comm.trim() != "authwatch-log-e" {
                    return None;
                }
                let stat = std::fs::read_to_string(t.join("stat")).ok()?;
                Some(nice_of(&stat))
            })
            .collect();
        assert!(!niced.is_empty());
        assert!(niced.iter().all(|n| *n == (base + 10).min(19)), "{niced:?}");
    }
    let batch = |n: usize| {
        let mut b = crate::LogBatch::default();
        for i in 0..n {
            b.push(|r| {
                r.body("auth.request").attr("i", i as i64);
            });
        }
        b
    };
    // Three batches of 300 records; some may find the queue full.
    for _ in 0..3 {
        export.send(batch(300));
    }
    // An empty batch is not a request and loses nothing.
    export.send(crate::LogBatch::default());
    export.flush(Duration::from_secs(30));
    assert_eq!(export.lost(), 900, "every record counted once");
    // Exported (here: failed) batches come back emptied for reuse, their buffer kept; at
    // most two are kept.
    let reused = export.empty_batch();
    assert!(
        reused.is_empty() && reused.capacity() > 300,
        "{}",
        reused.capacity()
    );
    assert!(export.empty_batch().capacity() > 300);
    assert_eq!(export.empty_batch().capacity(), 0, "at most two are kept");
    assert!(export.shutdown());
    export.send(batch(1));
    assert_eq!(export.lost(), 901, "records after shutdown are counted too");
    let _ = p.shutdown();
}

/// A shutdown while a batch waits between two tries ends the retries: the batch gets its
/// last try and is counted lost, and the shutdown finishes within its wait, even with a retry
/// budget without end (`Duration::MAX`, which must not overflow the deadline).
#[cfg(feature = "http")]
#[test]
fn a_shutdown_ends_the_retries_of_a_batch() {
    let p = dead_http_pipeline(Some(Duration::MAX));
    let export = p.log_export("test").unwrap().unwrap();
    let mut b = crate::LogBatch::default();
    for i in 0..5 {
        b.push(|r| {
            r.body("auth.request").attr("i", i);
        });
    }
    export.send(b);
    // Its first tries fail (nothing listens); it is still being retried.
    export.flush(Duration::from_millis(800));
    assert_eq!(export.lost(), 0, "counted before its retries ended");
    assert!(
        export.shutdown(),
        "the export thread outlived the shutdown's wait"
    );
    assert_eq!(export.lost(), 5);
    let _ = p.shutdown();
}

/// A one-connection-at-a-time HTTP server: answers each request with the next of `answers`
/// (status, body) and keeps each request's headers and body.
#[cfg(feature = "http")]
fn http_collector(
    answers: Vec<(u16, Vec<u8>)>,
) -> (
    std::net::SocketAddr,
    std::sync::mpsc::Receiver<(String, Vec<u8>)>,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut answers = answers.into_iter();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            // Keep-alive: several requests per connection.
            loop {
                let mut head = String::new();
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                if head.is_empty() {
                    break;
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let Some((status, answer)) = answers.next() else {
                    return;
                };
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
                    answer.len()
                )
                .into_bytes();
                out.extend_from_slice(&answer);
                reader.get_mut().write_all(&out).unwrap();
                tx.send((head, body)).unwrap();
            }
        }
    });
    (addr, rx)
}

#[cfg(feature = "http")]
#[test]
fn a_log_export_over_http_sends_protobuf_retries_503_and_counts_rejected_and_refused_records() {
    use opentelemetry_proto::tonic::collector::logs::v1::{
        ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
    };
    use prost::Message as _;
    let partial = ExportLogsServiceResponse {
        partial_success: Some(ExportLogsPartialSuccess {
            rejected_log_records: 3,
            error_message: "3 too old".into(),
        }),
    }
    .encode_to_vec();
    // The second batch finds the collector busy, then goes through when tried again; the
    // third is refused as bad, which is not retried.
    let (addr, requests) = http_collector(vec![
        (200, partial),
        (503, b"busy".to_vec()),
        (200, Vec::new()),
        (400, b"bad".to_vec()),
    ]);
    let p = Pipeline::builder()
        .prometheus(false)
        .service_name("accounts")
        .otlp(OtlpOptions {
            endpoint: Some(format!("http://{addr}")),
            protocol: Some(Protocol::HttpProtobuf),
            headers: vec![("x-api-key".into(), "secret-1".into())],
            timeout: Some(Duration::from_secs(5)),
            ..OtlpOptions::default()
        })
        .build()
        .unwrap();
    let export = p.log_export("authwatch::audit").unwrap().unwrap();
    let batch = |n: i64| {
        let mut b = crate::LogBatch::default();
        for i in 0..n {
            b.push(|r| {
                r.body("auth.request").attr("i", i);
            });
        }
        b
    };
    for n in [10, 20, 30] {
        export.send(batch(n));
        export.flush(Duration::from_secs(10));
    }
    // 3 rejected of the first batch, and the whole refused third one.
    assert_eq!(export.lost(), 3 + 30);
    for n in [10, 20, 20, 30] {
        let (head, body) = requests.recv_timeout(Duration::from_secs(5)).unwrap();
        let head = head.to_ascii_lowercase();
        assert!(head.starts_with("post /v1/logs "), "{head}");
        assert!(
            head.contains("content-type: application/x-protobuf"),
            "{head}"
        );
        assert!(head.contains("x-api-key: secret-1"), "{head}");
        let req = ExportLogsServiceRequest::decode(body.as_slice()).unwrap();
        let rl = &req.resource_logs[0];
        assert!(rl
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .any(|kv| kv.key == "service.name"));
        let sl = &rl.scope_logs[0];
        assert_eq!(sl.scope.as_ref().unwrap().name, "authwatch::audit");
        assert_eq!(sl.log_records.len(), n);
    }
    assert!(export.shutdown());
    let _ = p.shutdown();
}

/// The `/metrics` latency histograms the pipeline's sink counts itself read exactly as the
/// SDK's exposition of the same events: the same series (cells that differ only by failure
/// reason in one), buckets (values on a bound included in it), sums and counts; the counters
/// and the OTLP-side histograms are untouched.
#[test]
fn the_pipeline_sinks_own_histograms_expose_what_the_sdk_exposed() {
    let render = |own: bool| {
        let p = pipeline();
        let sink = if own {
            OtelSink::for_pipeline(&p)
        } else {
            OtelSink::new(p.meters())
        };
        // Latencies on and between the bounds, and past the last one (quarter milliseconds,
        // so that every sum is exact whatever the order of its additions).
        let latencies_us = [250, 500, 750, 1_000, 5_000, 10_000, 12_000_000, 3_250];
        for i in 0..200usize {
            let (op, outcome, route, source) = match i % 5 {
                0 => (
                    AuthOp::Login,
                    Outcome::Success,
                    "/login",
                    EventSource::Route,
                ),
                1 => (
                    AuthOp::Login,
                    Outcome::Failure(FailureReason::InvalidCredentials),
                    "/login",
                    EventSource::Route,
                ),
                2 => (
                    AuthOp::Login,
                    Outcome::Failure(FailureReason::LockedOut),
                    "/login",
                    EventSource::Route,
                ),
                3 => (
                    AuthOp::TokenValidation,
                    Outcome::Failure(FailureReason::InvalidToken),
                    "/api/me",
                    EventSource::TokenGuard,
                ),
                _ => (
                    AuthOp::TokenValidation,
                    Outcome::Success,
                    "/oauth/introspect",
                    EventSource::Route,
                ),
            };
            let mut e = event(op, outcome, route).with_source(source);
            e.latency = Duration::from_micros(latencies_us[i % latencies_us.len()]);
            e.method = "POST";
            sink.record(&e);
        }
        let text = p.render_prometheus().unwrap();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with("process_") && !l.contains("uptime"))
            .map(String::from)
            .collect();
        lines.sort();
        lines
    };
    let (sdk, own) = (render(false), render(true));
    let histogram_lines = |v: &[String]| {
        v.iter()
            .filter(|l| l.contains("_time_ms"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        histogram_lines(&sdk).len() > 4 * 20,
        "{:#?}",
        histogram_lines(&sdk)
    );
    assert_eq!(histogram_lines(&own), histogram_lines(&sdk));
    assert_eq!(own, sdk);
}
