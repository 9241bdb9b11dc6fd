//! The route matcher and path normalisation: any method, path and headers give a lookup
//! without a panic; any template either builds or is refused with an error.
#![no_main]

use std::sync::OnceLock;

use authwatch_layer::{AuthLayer, AuthOp, Routes};
use libfuzzer_sys::fuzz_target;

fn table() -> &'static AuthLayer {
    static T: OnceLock<AuthLayer> = OnceLock::new();
    T.get_or_init(|| {
        AuthLayer::builder()
            .routes(
                Routes::default()
                    .route("/v1/session/{id}", AuthOp::TokenValidation)
                    .route("/t/{*rest}", AuthOp::Login),
            )
            .build()
            .expect("the default table builds")
    })
}

const METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "PROPFIND", "X-CUSTOM",
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    if mode & 1 == 0 {
        // A lookup: the path as a client may send it (any bytes, lossily decoded), with or
        // without a gRPC content type.
        let method = http::Method::from_bytes(METHODS[usize::from(mode >> 1) % METHODS.len()].as_bytes())
            .expect("valid methods");
        let mut headers = http::HeaderMap::new();
        if mode & 2 != 0 {
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
        }
        if let Some(r) = table().routes().lookup(&method, &text, &headers) {
            let info = &table().routes().routes()[usize::from(r.id.0)];
            assert!(!info.template.is_empty());
        }
    } else {
        // A user's route template: built or refused, never a panic.
        let _ = AuthLayer::builder()
            .routes(Routes::empty().route(&*text, AuthOp::Login))
            .build();
    }
});
