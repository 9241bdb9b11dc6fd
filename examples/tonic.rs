//! A gRPC `auth.v1.AuthService` (Login, Register, ValidateToken) on tonic, with authwatch as a
//! server layer. The route table knows gRPC methods named `Login`, `Register`, `ValidateToken`
//! in any service, and reads `grpc-status` from the trailers.
//!
//! ```sh
//! cargo run --example tonic                  # gRPC on 127.0.0.1:50051, /metrics on :9464
//! cargo run --example tonic -- --port 0 --metrics-port 0
//! ```
//!
//! The messages are in `examples/support/auth_v1.rs` (prost derive; no `protoc` needed).
//! `/metrics` and `/auth/health` are served by `watch.metrics_service()` and
//! `watch.health_service()` on a small hyper server beside the gRPC one.

#[path = "support/auth_v1.rs"]
mod auth_v1;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use auth_v1::*;
use authwatch::AuthWatch;
use tonic::{Request, Response, Status};
use tower::ServiceExt as _;

#[derive(Clone, Default)]
struct Db {
    users: Arc<Mutex<HashMap<String, String>>>,
    sessions: Arc<Mutex<HashMap<String, String>>>,
}

impl Db {
    fn login(&self, r: LoginRequest) -> Result<LoginReply, Status> {
        if r.email.is_empty() {
            return Err(Status::invalid_argument("email is required"));
        }
        if self.users.lock().unwrap().get(&r.email) != Some(&r.password) {
            return Err(Status::unauthenticated("wrong e-mail or password"));
        }
        let token = format!("tok-{}", self.sessions.lock().unwrap().len() + 1);
        self.sessions.lock().unwrap().insert(token.clone(), r.email);
        Ok(LoginReply { token })
    }

    fn register(&self, r: LoginRequest) -> Result<Empty, Status> {
        if r.password.len() < 8 {
            return Err(Status::invalid_argument("password too short"));
        }
        let mut users = self.users.lock().unwrap();
        if users.contains_key(&r.email) {
            return Err(Status::already_exists("e-mail already registered"));
        }
        users.insert(r.email, r.password);
        Ok(Empty {})
    }

    fn validate(&self, r: ValidateTokenRequest) -> Result<ValidateTokenReply, Status> {
        match self.sessions.lock().unwrap().get(&r.token) {
            Some(email) => Ok(ValidateTokenReply {
                email: email.clone(),
            }),
            None => Err(Status::unauthenticated("invalid token")),
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The hand-written equivalent of what `tonic-build` generates for the service.
#[derive(Clone)]
struct AuthServer(Db);

impl tonic::server::NamedService for AuthServer {
    const NAME: &'static str = SERVICE;
}

fn unary<Req, Res>(
    db: Db,
    f: fn(&Db, Req) -> Result<Res, Status>,
    req: http::Request<tonic::body::Body>,
) -> BoxFuture<Result<http::Response<tonic::body::Body>, Infallible>>
where
    Req: prost::Message + Default + Send + 'static,
    Res: prost::Message + Send + 'static,
{
    let svc = tower::service_fn(move |r: Request<Req>| {
        let db = db.clone();
        async move { f(&db, r.into_inner()).map(Response::new) }
    });
    Box::pin(async move {
        let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Res, Req>::default());
        Ok(grpc.unary(svc, req).await)
    })
}

impl tower::Service<http::Request<tonic::body::Body>> for AuthServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let db = self.0.clone();
        match req.uri().path() {
            LOGIN => unary(db, Db::login, req),
            REGISTER => unary(db, Db::register, req),
            VALIDATE_TOKEN => unary(db, Db::validate, req),
            _ => Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

fn arg(name: &str, default: u16) -> u16 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |p| p.parse().expect("a port number"))
}

/// `/metrics` and `/auth/health` on a plain hyper server: the tower services need no axum.
async fn serve_endpoints(watch: AuthWatch, listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (metrics, health) = (watch.metrics_service(), watch.health_service());
        let svc = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let (metrics, health) = (metrics.clone(), health.clone());
            async move {
                if req.uri().path() == "/auth/health" {
                    health.oneshot(req).await
                } else {
                    metrics.oneshot(req).await
                }
            }
        });
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
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let watch = AuthWatch::builder().service_name("accounts-grpc").build()?;
    let db = Db::default();
    db.users
        .lock()
        .unwrap()
        .insert("ada@example.com".into(), "correct horse".into());

    let grpc = tokio::net::TcpListener::bind(("127.0.0.1", arg("--port", 50051))).await?;
    let metrics = tokio::net::TcpListener::bind(("127.0.0.1", arg("--metrics-port", 9464))).await?;
    println!("grpc on http://{}", grpc.local_addr()?);
    println!("listening on http://{}", metrics.local_addr()?);
    tokio::spawn(serve_endpoints(watch.clone(), metrics));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tonic::transport::Server::builder()
        .layer(watch.layer())
        .add_service(AuthServer(db))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc),
            async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            },
        )
        .await?;
    println!("{}", watch.snapshot());
    // Flush the last export; a collector that is gone by now costs a warning, not the exit code.
    if let Err(e) = watch.shutdown().await {
        eprintln!("warning: {e}");
    }
    Ok(())
}
