//! The default classifier: response (and trailers) → [`Outcome`], by the outcome table of the
//! [crate docs](crate), which the guide's metric reference (docs/guide/metrics.md) repeats.

use http::{header, HeaderMap, HeaderName, Response, StatusCode};

use crate::grpc_web::{Encoding, GrpcWebScan};
use crate::op::{AuthOp, FailureReason, Outcome};

/// The result of looking at the response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Classified {
    /// The outcome is known from the head; the body only ends the clock.
    Ready {
        outcome: Outcome,
        grpc_status: Option<u16>,
    },
    /// A gRPC response whose status comes in the trailers.
    RequiresTrailers,
    /// A gRPC-Web response whose status comes in the trailers frame at the end of its body:
    /// the body is scanned as it goes out.
    GrpcWeb(GrpcWebScan),
}

impl Classified {
    /// The outcome if the body ends now: a gRPC response that never sent its status failed.
    pub(crate) fn at_end(self) -> (Outcome, Option<u16>) {
        match self {
            Self::Ready {
                outcome,
                grpc_status,
            } => (outcome, grpc_status),
            Self::RequiresTrailers => (Outcome::Error, None),
            Self::GrpcWeb(scan) => scan.at_end(),
        }
    }
}

/// A gRPC or gRPC-Web message (`application/grpc`, `application/grpc+proto`,
/// `application/grpc-web+proto`, …): what a request must be to match a gRPC method route.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Native gRPC (not gRPC-Web, whose trailers travel inside the body): its status may come in
/// real trailers.
pub(crate) fn is_native_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .strip_prefix(b"application/grpc")
            .is_some_and(subtype_ends)
    })
}

/// How a gRPC-Web response encodes its frames: `application/grpc-web[+…][;…]` is binary,
/// `application/grpc-web-text[+…][;…]` base64; `None` for anything else.
pub(crate) fn grpc_web_encoding(headers: &HeaderMap) -> Option<Encoding> {
    let rest = headers
        .get(header::CONTENT_TYPE)?
        .as_bytes()
        .strip_prefix(b"application/grpc-web")?;
    if subtype_ends(rest) {
        return Some(Encoding::Binary);
    }
    rest.strip_prefix(b"-text")
        .filter(|rest| subtype_ends(rest))
        .map(|_| Encoding::Text)
}

/// Whether what follows a media type's subtype ends it: nothing, a `+suffix` or parameters.
fn subtype_ends(rest: &[u8]) -> bool {
    rest.is_empty() || rest[0] == b'+' || rest[0] == b';'
}

/// Classifies a response head for operation `op`; `grpc`: whether the route may answer gRPC;
/// `locked_out`: whether a refusal carried [`LOCKOUT_HEADER`] (the response future takes the
/// header off before the client sees it, and that one lookup answers both).
pub(crate) fn classify_head<B>(
    op: AuthOp,
    res: &Response<B>,
    grpc: bool,
    locked_out: bool,
) -> Classified {
    if let Some(o) = res.extensions().get::<Outcome>() {
        if let Some(outcome) = o.normalize_override() {
            let grpc_status = grpc_status(res.headers()).and_then(Result::ok);
            return Classified::Ready {
                outcome,
                grpc_status,
            };
        }
    }
    let headers = res.headers();
    if grpc && res.status() == StatusCode::OK && is_grpc(headers) {
        return match grpc_status(headers) {
            Some(code) => {
                let (outcome, grpc_status) = classify_grpc(op, code, Some(headers));
                Classified::Ready {
                    outcome,
                    grpc_status,
                }
            }
            None if is_native_grpc(headers) => Classified::RequiresTrailers,
            // gRPC-Web puts its trailers in a frame at the end of the body.
            None => match grpc_web_encoding(headers) {
                Some(encoding) => Classified::GrpcWeb(GrpcWebScan::new(op, encoding)),
                // Neither gRPC nor gRPC-Web framing (`application/grpcx`): a plain 200.
                None => Classified::Ready {
                    outcome: Outcome::Success,
                    grpc_status: None,
                },
            },
        };
    }
    Classified::Ready {
        outcome: classify_http(op, res.status(), headers, locked_out),
        grpc_status: None,
    }
}

/// Classifies a gRPC response from its trailers (`None`: the body ended without any).
pub(crate) fn classify_trailers(
    op: AuthOp,
    trailers: Option<&HeaderMap>,
) -> (Outcome, Option<u16>) {
    match trailers.and_then(|t| grpc_status(t).map(|c| (c, t))) {
        Some((code, t)) => classify_grpc(op, code, Some(t)),
        // A gRPC response must end with a status; without one the call failed.
        None => (Outcome::Error, None),
    }
}

/// A response header a lockout middleware inside the layer (or the handler) can set on a
/// refusal to say the account is locked, when it answers with another 4xx than 423: the request
/// then counts as [`FailureReason::LockedOut`] (`auth.lockout.count`). Any value; read on 4xx
/// responses only, and removed from them, so the client never sees it (a lockout answered as a
/// plain 401 to avoid account enumeration stays a plain 401).
pub const LOCKOUT_HEADER: &str = "x-authwatch-lockout";

/// [`LOCKOUT_HEADER`] as a header name: a lookup by a `&str` name parses and validates it
/// first, on every response.
pub(crate) const LOCKOUT: HeaderName = HeaderName::from_static(LOCKOUT_HEADER);

/// Takes [`LOCKOUT_HEADER`] off a refusal, telling whether it was there. The names are scanned
/// before the header is removed: a refusal carries a handful of headers, and comparing them
/// costs less than hashing the custom name for a lookup (about 150 instructions a 4xx under
/// `scripts/instructions.sh`).
#[inline]
pub(crate) fn take_lockout(headers: &mut HeaderMap) -> bool {
    headers.keys().any(|k| *k == LOCKOUT) && headers.remove(LOCKOUT).is_some()
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The HTTP part of the outcome table; `locked_out`: the refusal carried [`LOCKOUT_HEADER`].
pub(crate) fn classify_http(
    op: AuthOp,
    status: StatusCode,
    headers: &HeaderMap,
    locked_out: bool,
) -> Outcome {
    let code = status.as_u16();
    match code {
        200..=399 => Outcome::Success,
        429 => Outcome::RateLimited,
        400..=499 => {
            if locked_out {
                return Outcome::Failure(FailureReason::LockedOut);
            }
            if www_authenticate_invalid_token(headers) {
                return Outcome::Failure(FailureReason::InvalidToken);
            }
            Outcome::Failure(match code {
                401 if op == AuthOp::TokenValidation => FailureReason::InvalidToken,
                401 => FailureReason::InvalidCredentials,
                403 => FailureReason::Forbidden,
                400 | 422 => FailureReason::BadRequest,
                409 => FailureReason::Conflict,
                423 => FailureReason::LockedOut,
                404 | 405 => FailureReason::NotFound,
                _ => FailureReason::ClientError,
            })
        }
        // 5xx, and codes no server should send as a final answer (1xx, 600+).
        _ => Outcome::Error,
    }
}

/// The gRPC part of the outcome table; `headers`: where a `WWW-Authenticate` may say a 16 was
/// an invalid token (the head or the trailers; `None` for a gRPC-Web trailers frame).
pub(crate) fn classify_grpc(
    op: AuthOp,
    code: Result<u16, Malformed>,
    headers: Option<&HeaderMap>,
) -> (Outcome, Option<u16>) {
    let Ok(code) = code else {
        return (Outcome::Error, None);
    };
    let outcome = match code {
        0 => Outcome::Success,
        16 if op == AuthOp::TokenValidation
            || headers.is_some_and(www_authenticate_invalid_token) =>
        {
            Outcome::Failure(FailureReason::InvalidToken)
        }
        16 => Outcome::Failure(FailureReason::InvalidCredentials),
        7 => Outcome::Failure(FailureReason::Forbidden),
        3 => Outcome::Failure(FailureReason::BadRequest),
        6 => Outcome::Failure(FailureReason::Conflict),
        8 => Outcome::RateLimited,
        _ => Outcome::Error,
    };
    (outcome, Some(code))
}

/// A `grpc-status` that is not a decimal number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// Reads `grpc-status`: `None` when absent, `Err` when it is not 1–3 ASCII digits.
pub(crate) fn grpc_status(headers: &HeaderMap) -> Option<Result<u16, Malformed>> {
    let v = headers.get(GRPC_STATUS)?;
    Some(parse_grpc_status(v.as_bytes()))
}

pub(crate) fn parse_grpc_status(b: &[u8]) -> Result<u16, Malformed> {
    if b.is_empty() || b.len() > 3 || !b.iter().all(u8::is_ascii_digit) {
        return Err(Malformed);
    }
    Ok(b.iter().fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0')))
}

/// True when a `WWW-Authenticate` challenge says `error="invalid_token"` (RFC 6750 §3.1).
pub(crate) fn www_authenticate_invalid_token(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .any(|v| challenge_says_invalid_token(v.as_bytes()))
}

/// Scans a challenge such as `Bearer realm="x", error="invalid_token", error_description="…"`.
/// Linear in the header's length; never allocates.
pub(crate) fn challenge_says_invalid_token(value: &[u8]) -> bool {
    value.split(|b| *b == b',').any(|param| {
        let Some(eq) = param.iter().position(|b| *b == b'=') else {
            return false;
        };
        let (key, val) = (param[..eq].trim_ascii(), param[eq + 1..].trim_ascii());
        // The first parameter follows the scheme: "Bearer error".
        let key = key
            .rsplit(|b| b.is_ascii_whitespace())
            .next()
            .unwrap_or(key);
        let val = val
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(val);
        key.eq_ignore_ascii_case(b"error") && val.eq_ignore_ascii_case(b"invalid_token")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lockout_header_on_a_refusal_is_a_lockout() {
        let h = HeaderMap::new();
        assert_eq!(
            classify_http(AuthOp::Login, StatusCode::UNAUTHORIZED, &h, true),
            Outcome::Failure(FailureReason::LockedOut)
        );
        assert_eq!(
            classify_http(AuthOp::Login, StatusCode::FORBIDDEN, &h, true),
            Outcome::Failure(FailureReason::LockedOut)
        );
        // Only refusals: a success with the header is a success.
        assert_eq!(
            classify_http(AuthOp::Login, StatusCode::OK, &h, true),
            Outcome::Success
        );
    }
    use http::HeaderValue;

    fn res(status: u16) -> Response<()> {
        Response::builder().status(status).body(()).unwrap()
    }

    /// A 200 with this content type and, if given, a `grpc-status` in the head.
    fn grpc_res(content_type: &'static str, status: Option<&'static str>) -> Response<()> {
        let mut r = res(200);
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(s) = status {
            r.headers_mut()
                .insert("grpc-status", HeaderValue::from_static(s));
        }
        r
    }

    fn ready(c: Classified) -> Outcome {
        match c {
            Classified::Ready { outcome, .. } => outcome,
            other => panic!("expected a ready outcome, got {other:?}"),
        }
    }

    #[test]
    fn http_table() {
        use FailureReason::*;
        let cases: &[(u16, AuthOp, Outcome)] = &[
            (200, AuthOp::Login, Outcome::Success),
            (204, AuthOp::Logout, Outcome::Success),
            (302, AuthOp::Login, Outcome::Success),
            (401, AuthOp::Login, Outcome::Failure(InvalidCredentials)),
            (401, AuthOp::TokenValidation, Outcome::Failure(InvalidToken)),
            (403, AuthOp::Login, Outcome::Failure(Forbidden)),
            (400, AuthOp::Registration, Outcome::Failure(BadRequest)),
            (422, AuthOp::Registration, Outcome::Failure(BadRequest)),
            (409, AuthOp::Registration, Outcome::Failure(Conflict)),
            (423, AuthOp::Login, Outcome::Failure(LockedOut)),
            (404, AuthOp::PasswordReset, Outcome::Failure(NotFound)),
            (405, AuthOp::Login, Outcome::Failure(NotFound)),
            (413, AuthOp::Login, Outcome::Failure(ClientError)),
            (429, AuthOp::Login, Outcome::RateLimited),
            (500, AuthOp::Login, Outcome::Error),
            (503, AuthOp::TokenRefresh, Outcome::Error),
            (101, AuthOp::Login, Outcome::Error),
        ];
        for (status, op, want) in cases {
            assert_eq!(
                ready(classify_head(*op, &res(*status), true, false)),
                *want,
                "{status} {op}"
            );
        }
    }

    #[test]
    fn www_authenticate_marks_invalid_token() {
        let mut r = res(401);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                r#"Bearer realm="api", error="invalid_token", error_description="expired""#,
            ),
        );
        assert_eq!(
            ready(classify_head(AuthOp::Login, &r, true, false)),
            Outcome::Failure(FailureReason::InvalidToken)
        );
        for (v, want) in [
            (&b"Bearer error=invalid_token"[..], true),
            (b"Bearer ERROR=\"INVALID_TOKEN\"", true),
            (b"Bearer error=\"insufficient_scope\"", false),
            (b"Basic realm=\"invalid_token\"", false),
            (b"Bearer error_description=\"invalid_token\"", false),
            (b"", false),
            (b"=,=,,\"", false),
            (&[0xff, 0xfe, b'=', 0x80][..], false),
        ] {
            assert_eq!(
                challenge_says_invalid_token(v),
                want,
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
        let huge = vec![b'a'; 64 * 1024];
        assert!(!challenge_says_invalid_token(&huge));
    }

    #[test]
    fn grpc_status_in_headers_and_trailers() {
        let grpc = |status| grpc_res("application/grpc+proto", status);
        assert_eq!(
            ready(classify_head(AuthOp::Login, &grpc(Some("0")), true, false)),
            Outcome::Success
        );
        assert_eq!(
            ready(classify_head(AuthOp::Login, &grpc(Some("16")), true, false)),
            Outcome::Failure(FailureReason::InvalidCredentials)
        );
        assert_eq!(
            ready(classify_head(
                AuthOp::TokenValidation,
                &grpc(Some("16")),
                true,
                false
            )),
            Outcome::Failure(FailureReason::InvalidToken)
        );
        assert_eq!(
            ready(classify_head(AuthOp::Login, &grpc(Some("8")), true, false)),
            Outcome::RateLimited
        );
        assert_eq!(
            ready(classify_head(AuthOp::Login, &grpc(Some("13")), true, false)),
            Outcome::Error
        );
        assert_eq!(
            ready(classify_head(AuthOp::Login, &grpc(Some("x1")), true, false)),
            Outcome::Error
        );
        assert_eq!(
            ready(classify_head(
                AuthOp::Login,
                &grpc(Some("99999")),
                true,
                false
            )),
            Outcome::Error
        );
        assert_eq!(
            classify_head(AuthOp::Login, &grpc(None), true, false),
            Classified::RequiresTrailers
        );
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("6"));
        assert_eq!(
            classify_trailers(AuthOp::Registration, Some(&t)),
            (Outcome::Failure(FailureReason::Conflict), Some(6))
        );
        assert_eq!(
            classify_trailers(AuthOp::Login, None),
            (Outcome::Error, None)
        );
        assert_eq!(
            classify_trailers(AuthOp::Login, Some(&HeaderMap::new())),
            (Outcome::Error, None)
        );
    }

    #[test]
    fn grpc_web_is_not_waiting_for_trailers() {
        let web = |status| grpc_res("application/grpc-web+proto", status);
        // Its status comes in the body; a body without a trailers frame leaves a success.
        let scan = classify_head(AuthOp::Login, &web(None), true, false);
        assert!(matches!(scan, Classified::GrpcWeb(_)), "{scan:?}");
        assert_eq!(scan.at_end(), (Outcome::Success, None));
        // A trailers-only answer has it in the head.
        assert_eq!(
            ready(classify_head(AuthOp::Login, &web(Some("16")), true, false)),
            Outcome::Failure(FailureReason::InvalidCredentials)
        );
        // Not gRPC-Web framing after all: decided from the head.
        assert_eq!(
            ready(classify_head(
                AuthOp::Login,
                &grpc_res("application/grpcx", None),
                true,
                false
            )),
            Outcome::Success
        );
        let mut h = HeaderMap::new();
        for (ct, encoding) in [
            ("application/grpc-web", Some(Encoding::Binary)),
            ("application/grpc-web+proto", Some(Encoding::Binary)),
            ("application/grpc-web;charset=utf-8", Some(Encoding::Binary)),
            ("application/grpc-web-text", Some(Encoding::Text)),
            ("application/grpc-web-text+proto", Some(Encoding::Text)),
            ("application/grpc-web-textx", None),
            ("application/grpc-webx", None),
            ("application/grpc", None),
            ("application/grpc+proto", None),
            ("application/json", None),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(grpc_web_encoding(&h), encoding, "{ct}");
        }
        for (ct, native) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc;charset=utf-8", true),
            ("application/grpc-web", false),
            ("application/grpc-web-text", false),
            ("application/grpcx", false),
            ("application/json", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_native_grpc(&h), native, "{ct}");
        }
    }

    #[test]
    fn override_wins() {
        let mut r = res(200);
        r.extensions_mut()
            .insert(Outcome::Failure(FailureReason::LockedOut));
        assert_eq!(
            ready(classify_head(AuthOp::Login, &r, true, false)),
            Outcome::Failure(FailureReason::LockedOut)
        );
        let mut r = res(500);
        r.extensions_mut().insert(Outcome::Cancelled);
        assert_eq!(
            ready(classify_head(AuthOp::Login, &r, true, false)),
            Outcome::Error
        );
    }

    #[test]
    fn the_lockout_header_is_taken_off_with_every_value_and_nothing_else() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert("x-other", HeaderValue::from_static("1"));
        assert!(!take_lockout(&mut h));
        assert_eq!(h.len(), 2);
        h.append(LOCKOUT_HEADER, HeaderValue::from_static("1"));
        h.append(LOCKOUT_HEADER, HeaderValue::from_static("2"));
        assert!(take_lockout(&mut h));
        assert!(!h.contains_key(LOCKOUT_HEADER));
        assert_eq!(h.len(), 2);
        assert!(!take_lockout(&mut h));
    }
}
