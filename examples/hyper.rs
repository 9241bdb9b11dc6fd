//! A plain hyper 1 server built from a `tower::ServiceBuilder` with the authwatch layer: no
//! framework, no router crate.
//!
//! ```sh
//! cargo run --example hyper                 # http://127.0.0.1:3001
//! cargo run --example hyper -- --port 0
//! ```
//!
//! `POST /login` (body `email:password`; `ada@example.com:correct horse` works), `POST /register`,
//! `POST /token/refresh`, `GET /metrics`, `GET /auth/health`.

use std::convert::Infallible;
use std::net::SocketAddr;

use authwatch::AuthWatch;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tower::{ServiceBuilder, ServiceExt as _};

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{code}\n"))));
    *r.status_mut() = code;
    r
}

/// The whole service: a `match` on method and path.
async fn handle(
    watch: AuthWatch,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/metrics") => watch.metrics_service().oneshot(req).await,
        (Method::GET, "/auth/health") => watch.health_service().oneshot(req).await,
        (Method::POST, "/login") => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            Ok(match body.as_deref() {
                Ok(b"ada@example.com:correct horse") => status(StatusCode::OK),
                Ok(b) if !b.contains(&b':') => status(StatusCode::BAD_REQUEST),
                Ok(_) => status(StatusCode::UNAUTHORIZED),
                Err(_) => status(StatusCode::BAD_REQUEST),
            })
        }
        (Method::POST, "/register") => Ok(status(StatusCode::CREATED)),
        (Method::POST, "/token/refresh") => Ok(status(StatusCode::OK)),
        _ => Ok(status(StatusCode::NOT_FOUND)),
    }
}

fn port() -> u16 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .map_or(3001, |p| p.parse().expect("--port takes a number"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let watch = AuthWatch::builder()
        .service_name("accounts-hyper")
        .build()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port())).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            r = listener.accept() => r?,
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        };
        let w = watch.clone();
        let svc = ServiceBuilder::new()
            // The peer address, for `ClientIp::peer` (never a metric attribute); outside the
            // layer so the layer sees it.
            .map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(peer);
                req
            })
            .layer(watch.layer())
            .service_fn(move |req| handle(w.clone(), req));
        tokio::spawn(async move {
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(stream),
                        hyper_util::service::TowerToHyperService::new(svc),
                    )
                    .await;
        });
    }
    println!("{}", watch.snapshot());
    // Flush the last export; a collector that is gone by now costs a warning, not the exit code.
    if let Err(e) = watch.shutdown().await {
        eprintln!("warning: {e}");
    }
    Ok(())
}
