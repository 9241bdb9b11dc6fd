//! Faults together, under concurrent load, over real sockets: the OTLP collector accepts
//! connections and never answers (gRPC and HTTP), handlers panic under `CatchPanicLayer`,
//! clients leave mid-body or give up before the answer. Every request is still answered as the
//! handler answers it, every outcome is counted exactly once (snapshot and `/metrics`), exports
//! to the silent collector time out instead of piling up, and shutdown returns. (A collector
//! that is down and comes back is `tests/otlp_collector.rs`; an Alertmanager that is down is
//! `tests/alertmanager.rs`.)

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use authwatch::{AuthOp, AuthWatch, Protocol};
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use common::*;
use http_body_util::BodyExt as _;
use tower_http::catch_panic::CatchPanicLayer;

/// A "collector" that accepts every connection and never reads or writes a byte.
struct Silent {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Silent {
    fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = accepted.clone();
        let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                seen.fetch_add(1, Ordering::Relaxed);
                held.lock().unwrap().push(s);
            }
        });
        Self { addr, accepted }
    }
}

/// The handler does what the `x-case` header says.
async fn login(headers: HeaderMap) -> Response {
    match headers.get("x-case").and_then(|v| v.to_str().ok()) {
        Some("ok") => "welcome".into_response(),
        Some("bad") => StatusCode::UNAUTHORIZED.into_response(),
        Some("limited") => StatusCode::TOO_MANY_REQUESTS.into_response(),
        Some("panic") => panic!("the handler panics"),
        Some("mid-body") => {
            // One chunk, then a body that never ends: the client leaves after the first.
            let first = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(Bytes::from("chunk0\n"))
            });
            let never = futures_util::stream::pending();
            Body::from_stream(futures_util::StreamExt::chain(first, never)).into_response()
        }
        Some("hang") => {
            // Tell the client the handler runs, then never answer.
            let id = headers
                .get("x-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if let Some(tx) = started().lock().unwrap().remove(id) {
                let _ = tx.send(());
            }
            std::future::pending().await
        }
        _ => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// The handlers of `hang` requests that have started, by request id.
fn started() -> &'static Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>> {
    static M: OnceLock<Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>> = OnceLock::new();
    M.get_or_init(Mutex::default)
}

/// The handlers' own panics are expected: keep their messages and backtraces out of the output.
fn quiet_handler_panics() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&"the handler panics") {
                default(info);
            }
        }));
    });
}

const CASES: [&str; 6] = ["ok", "bad", "limited", "panic", "mid-body", "hang"];
const EACH: usize = 60;

async fn one(c: HttpClient, addr: SocketAddr, case: &'static str, id: String) -> Option<u16> {
    let req = request("POST", addr, "/login")
        .header("x-case", case)
        .header("x-id", &id)
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    match case {
        "hang" => {
            // The client gives up once the handler runs, before any answer.
            let (tx, rx) = tokio::sync::oneshot::channel();
            started().lock().unwrap().insert(id, tx);
            tokio::select! {
                r = c.request(req) => panic!("a hanging handler answered: {r:?}"),
                _ = rx => None,
            }
        }
        "mid-body" => {
            let res = c.request(req).await.unwrap();
            let status = res.status().as_u16();
            let mut body = res.into_body();
            let first = body.frame().await.unwrap().unwrap();
            assert_eq!(first.into_data().unwrap(), "chunk0\n");
            Some(status)
        }
        _ => {
            let res = c.request(req).await.unwrap();
            let status = res.status().as_u16();
            let _ = res.into_body().collect().await;
            Some(status)
        }
    }
}

async fn scenario(protocol: Protocol) {
    quiet_handler_panics();
    let silent = Silent::start();
    let watch = AuthWatch::builder()
        .route("/login", AuthOp::Login)
        .otlp_endpoint(format!("http://{}", silent.addr))
        .otlp_protocol(protocol)
        .otlp_timeout(Duration::from_millis(500))
        .export_interval(Duration::from_millis(200))
        .build()
        .unwrap();
    let app = Router::new()
        .route("/login", post(login))
        .layer(CatchPanicLayer::new())
        .layer(watch.layer());
    let addr = serve(app).await;
    let mut tasks = Vec::new();
    for i in 0..EACH * CASES.len() {
        let case = CASES[i % CASES.len()];
        // A client per case: a client that leaves takes its connection with it.
        let c = http1();
        let id = format!("{protocol:?}-{i}");
        tasks.push(tokio::spawn(
            async move { (case, one(c, addr, case, id).await) },
        ));
    }
    for t in tasks {
        let (case, status) = t.await.unwrap();
        let want = match case {
            "ok" | "mid-body" => Some(200),
            "bad" => Some(401),
            "limited" => Some(429),
            "panic" => Some(500),
            _ => None,
        };
        assert_eq!(status, want, "{case}: answered as the handler answers");
    }
    // Every request is counted once, once its end (or its abandonment) is seen.
    let want = (
        EACH as u64,
        2 * EACH as u64,
        EACH as u64,
        EACH as u64,
        2 * EACH as u64,
    );
    let mut got = (0, 0, 0, 0, 0);
    for _ in 0..100 {
        let l = watch.snapshot().op(AuthOp::Login);
        got = (l.success, l.failure, l.rate_limited, l.errors, l.cancelled);
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // (success, failure incl. errors, rate limited, errors, cancelled)
    assert_eq!(got, want, "{protocol:?}");
    // Nothing counted twice later on either.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let l = watch.snapshot().op(AuthOp::Login);
    assert_eq!(
        (l.success, l.failure, l.rate_limited, l.errors, l.cancelled),
        want
    );
    let text = watch.metrics_text().unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("auth_login_success_count_total{"))
        .expect("the success counter on /metrics");
    assert!(line.ends_with(&format!(" {EACH}")), "{line}");
    // The exporter did try the silent collector, and the service never waited for it.
    assert!(silent.accepted.load(Ordering::Relaxed) >= 1);
    // Every audit record (one per failed or rate-limited request) was lost by the OTLP log
    // export, and counted exactly once; none was lost before it (the audit queue kept up).
    let records = want.1 + want.2;
    let metric = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    let mut lost = None;
    for _ in 0..600 {
        lost = metric(
            &watch.metrics_text().unwrap(),
            "auth_audit_export_lost_count_total",
        );
        if lost == Some(records) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lost, Some(records), "{protocol:?}");
    let text = watch.metrics_text().unwrap();
    assert_eq!(metric(&text, "auth_audit_dropped_count_total"), Some(0));
    // Shutdown gives up on the silent collector after its timeouts instead of hanging.
    let done = tokio::time::timeout(Duration::from_secs(60), watch.shutdown()).await;
    let result = done.expect("shutdown hung on a silent collector");
    // …and says the last export did not get through.
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_under_load_with_a_silent_grpc_collector() {
    scenario(Protocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_under_load_with_a_silent_http_collector() {
    scenario(Protocol::HttpProtobuf).await;
}

/// Dropping the last `AuthWatch` on a service's thread returns at once, even with metrics,
/// logs and audit records waiting for a collector that never answers: the final flush runs on
/// a thread of authwatch's own (`shutdown().await` is the call that waits for it).
fn drop_returns_at_once(protocol: Protocol) {
    let silent = Silent::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let watch = AuthWatch::builder()
            .route("/login", AuthOp::Login)
            .otlp_endpoint(format!("http://{}", silent.addr))
            .otlp_protocol(protocol)
            .otlp_timeout(Duration::from_secs(5))
            .export_interval(Duration::from_secs(3600))
            .build()
            .unwrap();
        let app = Router::new()
            .route("/login", post(login))
            .layer(watch.layer());
        let addr = serve(app).await;
        let c = http1();
        for case in ["ok", "bad", "limited"] {
            assert!(one(c.clone(), addr, case, String::new()).await.is_some());
        }
        let l = watch.snapshot().op(AuthOp::Login);
        assert_eq!((l.success, l.failure, l.rate_limited), (1, 1, 1));
        let t = std::time::Instant::now();
        drop(watch);
        let took = t.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "{protocol:?}: drop(watch) held the runtime's thread for {took:?}"
        );
    });
}

#[test]
fn dropping_the_last_watch_returns_at_once_grpc() {
    drop_returns_at_once(Protocol::Grpc);
}

#[test]
fn dropping_the_last_watch_returns_at_once_http() {
    drop_returns_at_once(Protocol::HttpProtobuf);
}
