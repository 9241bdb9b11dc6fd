//! The tonic and hyper examples, run as their own processes and driven over real sockets; their
//! `/metrics` (served by `metrics_service()`, no axum) shows what the layer saw.

mod real;

#[path = "../examples/support/auth_v1.rs"]
mod auth_v1;

use auth_v1::*;
use real::*;

fn line_value(text: &str, prefix: &str, must_contain: &[&str]) -> f64 {
    let l = text
        .lines()
        .find(|l| l.starts_with(prefix) && must_contain.iter().all(|c| l.contains(c)))
        .unwrap_or_else(|| panic!("{prefix} {must_contain:?} missing from\n{text}"));
    l.rsplit(' ').next().unwrap().parse().unwrap()
}

async fn call<Req, Res>(
    ch: &tonic::transport::Channel,
    path: &'static str,
    req: Req,
) -> Result<Res, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Res: prost::Message + Default + Send + Sync + 'static,
{
    let mut g = tonic::client::Grpc::new(ch.clone());
    g.ready().await.unwrap();
    g.unary(
        tonic::Request::new(req),
        http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::<Req, Res>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

#[test]
fn tonic_example_counts_grpc_outcomes_from_trailers() {
    let ex = Example::start("tonic", &["--port", "0", "--metrics-port", "0"], &[]);
    let grpc = ex
        .seen
        .iter()
        .find_map(|l| l.strip_prefix("grpc on "))
        .expect("grpc address")
        .to_owned();
    let http = Http::new();
    http.rt.block_on(async {
        let ch = tonic::transport::Channel::from_shared(grpc)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let login = |pw: &str| LoginRequest {
            email: "ada@example.com".into(),
            password: pw.into(),
        };
        for _ in 0..3 {
            let e = call::<_, LoginReply>(&ch, LOGIN, login("wrong"))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
        }
        let token = call::<_, LoginReply>(&ch, LOGIN, login("correct horse"))
            .await
            .unwrap()
            .token;
        let e = call::<_, LoginReply>(&ch, LOGIN, LoginRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let bob = LoginRequest {
            email: "bob@example.com".into(),
            password: "long enough".into(),
        };
        call::<_, Empty>(&ch, REGISTER, bob.clone()).await.unwrap();
        let e = call::<_, Empty>(&ch, REGISTER, bob).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::AlreadyExists);
        call::<_, ValidateTokenReply>(&ch, VALIDATE_TOKEN, ValidateTokenRequest { token })
            .await
            .unwrap();
        let e = call::<_, ValidateTokenReply>(
            &ch,
            VALIDATE_TOKEN,
            ValidateTokenRequest {
                token: "nope".into(),
            },
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        // Not an auth method: not counted.
        let e = call::<_, Empty>(&ch, "/auth.v1.AuthService/Ping", Empty {})
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
    });
    let (status, text) = http.get(&format!("http://{}/metrics", ex.addr));
    assert_eq!(status, 200);
    let rpc = "rpc_method=\"Login\"";
    assert_eq!(
        line_value(
            &text,
            "auth_login_failure_count_total{",
            &[rpc, "auth_failure_reason=\"invalid_credentials\""]
        ),
        3.0
    );
    assert_eq!(
        line_value(
            &text,
            "auth_login_failure_count_total{",
            &[rpc, "auth_failure_reason=\"bad_request\""]
        ),
        1.0
    );
    assert_eq!(
        line_value(&text, "auth_login_success_count_total{", &[rpc]),
        1.0
    );
    assert_eq!(
        line_value(&text, "auth_registration_success_count_total{", &[]),
        1.0
    );
    assert_eq!(
        line_value(
            &text,
            "auth_registration_failure_count_total{",
            &["auth_failure_reason=\"conflict\""]
        ),
        1.0
    );
    assert_eq!(
        line_value(&text, "auth_token_validation_success_count_total{", &[]),
        1.0
    );
    assert_eq!(
        line_value(
            &text,
            "auth_invalid_token_attempts_count_total{",
            &["rpc_method=\"ValidateToken\""]
        ),
        1.0
    );
    // Timing runs to the end of the gRPC body (the trailers).
    assert_eq!(
        line_value(
            &text,
            "auth_response_time_ms_count{",
            &[rpc, "auth_outcome=\"failure\""]
        ),
        4.0
    );
    assert!(!text.contains("Ping"), "a non-auth method became a series");
    let (status, body) = http.get(&format!("http://{}/auth/health", ex.addr));
    assert_eq!(status, 200, "{body}");
    let out = ex.stop();
    assert!(
        out.contains("login"),
        "the example prints its snapshot on exit: {out}"
    );
}

#[test]
fn hyper_example_counts_through_a_plain_service_builder() {
    let ex = Example::start("hyper", &["--port", "0"], &[]);
    let http = Http::new();
    let u = |p: &str| format!("http://{}{p}", ex.addr);
    assert_eq!(
        http.send("POST", &u("/login"), &[], "ada@example.com:wrong")
            .0,
        401
    );
    assert_eq!(
        http.send("POST", &u("/login"), &[], "ada@example.com:correct horse")
            .0,
        200
    );
    assert_eq!(http.send("POST", &u("/login"), &[], "garbage").0, 400);
    assert_eq!(http.send("POST", &u("/register"), &[], "").0, 201);
    assert_eq!(http.send("POST", &u("/token/refresh"), &[], "").0, 200);
    assert_eq!(http.send("GET", &u("/elsewhere"), &[], "").0, 404);
    let (status, text) = http.get(&u("/metrics"));
    assert_eq!(status, 200);
    assert_eq!(
        line_value(
            &text,
            "auth_login_success_count_total{",
            &["http_route=\"/login\""]
        ),
        1.0
    );
    assert_eq!(
        line_value(
            &text,
            "auth_login_failure_count_total{",
            &["auth_failure_reason=\"invalid_credentials\""]
        ),
        1.0
    );
    assert_eq!(
        line_value(
            &text,
            "auth_login_failure_count_total{",
            &["auth_failure_reason=\"bad_request\""]
        ),
        1.0
    );
    assert_eq!(
        line_value(&text, "auth_registration_success_count_total{", &[]),
        1.0
    );
    assert_eq!(
        line_value(&text, "auth_token_refresh_success_count_total{", &[]),
        1.0
    );
    assert!(!text.contains("/elsewhere"));
    assert!(
        !text.contains("http_route=\"/metrics\""),
        "/metrics is not an auth route"
    );
    let (status, body) = http.get(&u("/auth/health"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\": \"healthy\""), "{body}");
    ex.stop();
}
