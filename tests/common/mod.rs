//! Shared test plumbing: a real server on 127.0.0.1, a real HTTP client, an event recorder.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authwatch::{AuthEvent, AuthOp, EventSource, Outcome};
use axum::Router;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// Serves `app` on an ephemeral loopback port, with the peer address in `ConnectInfo`.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// An HTTP/1.1 client.
pub fn http1() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 (prior knowledge) client, as gRPC uses.
pub fn http2() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub fn request(method: &str, addr: SocketAddr, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
}

/// Sends a request and reads the whole body (status, body).
pub async fn send(client: &HttpClient, req: http::request::Builder) -> (u16, Bytes) {
    let res: Response<_> = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("request failed");
    let status = res.status().as_u16();
    let body = res
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, body)
}

/// What a sink saw, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub op: AuthOp,
    pub outcome: Outcome,
    pub route: String,
    pub method: &'static str,
    pub rpc_method: Option<String>,
    pub status: Option<u16>,
    pub grpc_status: Option<u16>,
    pub latency: Duration,
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub source: EventSource,
}

#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<Seen>>>);

impl Recorder {
    pub fn sink(&self) -> Arc<dyn authwatch::EventSink> {
        let seen = self.0.clone();
        Arc::new(move |e: &AuthEvent<'_>| {
            seen.lock().unwrap().push(Seen {
                op: e.op,
                outcome: e.outcome,
                route: e.route.to_owned(),
                method: e.method,
                rpc_method: e.rpc_method.map(str::to_owned),
                status: e.status,
                grpc_status: e.grpc_status,
                latency: e.latency,
                client_ip: e.client_ip,
                user_agent: e.user_agent.map(str::to_owned),
                source: e.source,
            })
        })
    }

    pub fn events(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until `n` events arrived, then returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Seen> {
        for _ in 0..1000 {
            if self.0.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Give a double count the chance to show.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ev = self.events();
        assert_eq!(ev.len(), n, "expected {n} events, got {ev:#?}");
        ev
    }
}

/// A fresh folder under the system's temp dir, named by `tag`, the process and the time.
pub fn tempdir(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "authwatch-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&p).unwrap();
    p
}
