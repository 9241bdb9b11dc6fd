//! Traces for APM: with `Pipeline::tracing_layer` in the subscriber, each auth request is an
//! `auth.request` span (operation, route, method, outcome, failure reason; no address, user or
//! token) whose parent is the caller's W3C `traceparent`, a `TokenGuard` adds an
//! `auth.token_validation` span, and the audit records carry the trace id. Checked at a real
//! rotel collector over OTLP/HTTP. Needs `scripts/test-deps.sh`.

mod common;
mod real;

use std::time::Duration;

use authwatch::{AuthWatch, Protocol};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use real::{eventually, spans, Rotel};
use tower_http::validate_request::ValidateRequestHeaderLayer;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_requests_are_spans_under_the_callers_trace_at_the_collector() {
    let rotel = Rotel::start();
    let watch = AuthWatch::builder()
        .service_name("traced")
        .otlp_endpoint(format!("http://{}", rotel.http))
        .otlp_protocol(Protocol::HttpProtobuf)
        .export_interval(Duration::from_millis(500))
        .build()
        .unwrap();
    tracing_subscriber::registry()
        .with(watch.pipeline().tracing_layer())
        .init();
    let guard = watch.token_guard(ValidateRequestHeaderLayer::custom(
        #[allow(clippy::result_large_err)]
        |req: &mut Request| -> Result<(), Response> {
            if req
                .headers()
                .get("authorization")
                .is_some_and(|v| v == "Bearer good")
            {
                Ok(())
            } else {
                Err(StatusCode::UNAUTHORIZED.into_response())
            }
        },
    ));
    let audit = watch.audit_logger();
    let app = Router::new()
        .route(
            "/api/auth/sign-in/email",
            post(move || {
                let audit = audit.clone();
                async move {
                    audit.log_login_failure("ada@example.com", None, None, "Invalid credentials");
                    StatusCode::UNAUTHORIZED
                }
            }),
        )
        .route("/api/me", get(|| async { "me" }).layer(guard))
        .layer(watch.layer());
    let addr = common::serve(app).await;
    let client = common::http1();
    let traceparent = format!("00-{TRACE}-{PARENT}-01");
    let (s, _) = common::send(
        &client,
        common::request("POST", addr, "/api/auth/sign-in/email")
            .header("traceparent", &traceparent)
            .header("x-forwarded-for", "203.0.113.50"),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = common::send(
        &client,
        common::request("GET", addr, "/api/me").header("authorization", "Bearer forged"),
    )
    .await;
    assert_eq!(s, 401);
    // Let the audit writer pass the records on, then flush every exporter.
    tokio::time::sleep(Duration::from_millis(200)).await;
    watch.shutdown().await.unwrap();

    let all = eventually(20, "the spans at the collector", || {
        let s = spans(&rotel.text());
        if s.iter().any(|s| s.name == "auth.request")
            && s.iter().any(|s| s.name == "auth.token_validation")
        {
            Ok(s)
        } else {
            Err(format!("{s:#?}"))
        }
    });
    let req: Vec<_> = all.iter().filter(|s| s.name == "auth.request").collect();
    assert_eq!(req.len(), 1, "{req:#?}");
    let r = req[0];
    assert_eq!(r.trace_id, TRACE, "the caller's trace");
    assert_eq!(r.parent_id, PARENT, "the caller's span is the parent");
    assert_eq!(r.kind, "SPAN_KIND_SERVER");
    for (k, v) in [
        ("auth.operation", "login"),
        ("auth.outcome", "failure"),
        ("auth.failure.reason", "invalid_credentials"),
        ("http.route", "/api/auth/sign-in/email"),
        ("http.request.method", "POST"),
        ("http.response.status_code", "401"),
    ] {
        assert_eq!(r.attrs.get(k).map(String::as_str), Some(v), "{k} in {r:#?}");
    }
    assert!(
        !r.attrs.contains_key("client.address"),
        "no address unless opted in"
    );
    assert!(
        all.iter().all(|s| s
            .attrs
            .values()
            .all(|v| !v.contains("203.0.113.50") && !v.contains("forged"))),
        "no address or token in any span: {all:#?}"
    );

    let tv: Vec<_> = all
        .iter()
        .filter(|s| s.name == "auth.token_validation")
        .collect();
    assert_eq!(tv.len(), 1, "{tv:#?}");
    assert_eq!(
        tv[0].attrs.get("auth.outcome").map(String::as_str),
        Some("failure")
    );
    assert_eq!(
        tv[0].attrs.get("auth.failure.reason").map(String::as_str),
        Some("invalid_token")
    );
    assert_eq!(
        tv[0].attrs.get("http.route").map(String::as_str),
        Some("/api/me")
    );

    // The audit records of that request carry its trace: the layer's and the handler's.
    let logs = rotel.parse().logs;
    let traced: Vec<_> = logs.iter().filter(|l| l.trace_id == TRACE).collect();
    let names: Vec<&str> = traced
        .iter()
        .filter_map(|l| l.attrs.get("event.name").map(String::as_str))
        .collect();
    assert!(names.contains(&"auth.request"), "{names:?}\n{logs:#?}");
    assert!(names.contains(&"auth.login.failure"), "{names:?}");
}

/// rotel starts a log block with `ResourceLog #` (shared/RECIPES.md): a log record's
/// attributes after a span are not that span's (the parser once looked for `ResourceLogs #`).
#[test]
fn the_span_parser_stops_at_a_log_block() {
    let text = "ResourceSpans #0\nScopeSpans #0\nSpan #0\n    Trace ID       : abc\n    Name           : auth.request\nAttributes:\n     -> auth.operation: Str(login)\nResourceLog #0\nResource attributes:\n     -> service.name: Str(traced)\nLogRecord #0\nAttributes:\n     -> user.id: Str(u-42)\n";
    let s = spans(text);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].name, "auth.request");
    assert_eq!(
        s[0].attrs.get("auth.operation").map(String::as_str),
        Some("login")
    );
    assert!(!s[0].attrs.contains_key("user.id"), "{:?}", s[0].attrs);
    assert!(!s[0].attrs.contains_key("service.name"), "{:?}", s[0].attrs);
}
