//! Property tests: the parsers and the route table take any input without panicking, and
//! what they return is consistent with what they were given.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use proptest::prelude::*;

use crate::classify::{challenge_says_invalid_token, classify_http, parse_grpc_status};
use crate::client_ip::parse_addr;
use crate::grpc_web::tests::base64;
use crate::grpc_web::{Encoding, GrpcWebScan};
use crate::{AuthOp, ClientIp, FailureReason, Outcome, Routes};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn addresses_round_trip(ip in any::<IpAddr>(), port in proptest::option::of(any::<u16>())) {
        let text = match (ip, port) {
            (IpAddr::V4(v4), Some(p)) => format!("{v4}:{p}"),
            (IpAddr::V6(v6), Some(p)) => format!("[{v6}]:{p}"),
            (ip, None) => ip.to_string(),
        };
        let want = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        prop_assert_eq!(parse_addr(text.as_bytes()), Some(want));
    }

    #[test]
    fn any_bytes_parse_without_panicking(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_addr(&b);
        let _ = challenge_says_invalid_token(&b);
        if let Ok(code) = parse_grpc_status(&b) {
            prop_assert!(code <= 999);
        }
    }

    #[test]
    fn forwarding_headers_never_panic_and_never_invent(
        value in "[0-9a-fA-F:.,\\[\\]% \"=;_a-z]{0,200}",
        hops in 0usize..40,
    ) {
        let Ok(v) = HeaderValue::from_str(&value) else { return Ok(()) };
        let mut req = Request::new(());
        req.headers_mut().insert("x-forwarded-for", v.clone());
        req.headers_mut().insert("forwarded", v);
        req.extensions_mut().insert("10.9.9.9:1".parse::<std::net::SocketAddr>().unwrap());
        for rules in [ClientIp::x_forwarded_for(hops), ClientIp::forwarded(hops)] {
            if let Some(ip) = rules.resolve(&req) {
                // Either the peer or an address that was in the header.
                let peer: IpAddr = "10.9.9.9".parse().unwrap();
                let in_header = value.split([',', ';', '=', '"', '[', ']', ' '])
                    .filter_map(|part| parse_addr(part.as_bytes()))
                    .any(|a| a == ip)
                    || value.split(',').filter_map(|e| parse_addr(e.trim().as_bytes())).any(|a| a == ip);
                prop_assert!(ip == peer || in_header, "{ip} from {value:?}");
            }
        }
    }

    #[test]
    fn a_grpc_web_body_reads_the_same_however_it_is_chunked(
        // Frames of any flag (mostly messages and trailers), with payloads that are mostly
        // header lines; their lengths true or not.
        frames in proptest::collection::vec(
            (
                prop_oneof![3 => Just(0u8), 1 => Just(1u8), 3 => Just(0x80u8), 1 => any::<u8>()],
                "(grpc-status|grpc-message|Grpc-Status|x)[:]? ?[0-9a-z ]{0,4}(\r\n)?",
                prop_oneof![4 => Just(0i8), 1 => -3i8..3],
            ),
            0..5,
        ),
        trailing in proptest::collection::vec(any::<u8>(), 0..4),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        text in any::<bool>(),
    ) {
        let mut body = Vec::new();
        for (flag, payload, skew) in &frames {
            let len = u32::try_from(payload.len()).unwrap().wrapping_add_signed(i32::from(*skew));
            let mut frame = vec![*flag];
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(payload.as_bytes());
            if text {
                frame = base64(&frame);
            }
            body.extend(frame);
        }
        body.extend(trailing);
        let encoding = if text { Encoding::Text } else { Encoding::Binary };
        let mut whole = GrpcWebScan::new(AuthOp::Login, encoding);
        whole.feed(&body);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunked = GrpcWebScan::new(AuthOp::Login, encoding);
        let mut from = 0;
        for to in cuts.into_iter().chain([body.len()]) {
            chunked.feed(&body[from..to]);
            from = to;
        }
        prop_assert_eq!(chunked.at_end(), whole.at_end());
    }

    #[test]
    fn any_path_is_looked_up_without_panicking(
        path in "/[a-zA-Z0-9/_.%{}*-]{0,120}",
        m in prop::sample::select(vec!["GET", "POST", "HEAD", "OPTIONS", "BREW"]),
    ) {
        let table = Routes::default().build().unwrap();
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        if let Some(r) = table.lookup(&method, &path, &HeaderMap::new()) {
            // Always one of the table's templates: the label set stays bounded.
            prop_assert!(table.routes().iter().any(|x| x.template == r.template), "unknown template");
        }
    }
}

#[test]
fn every_status_has_exactly_one_outcome() {
    for code in 100..=999u16 {
        let status = StatusCode::from_u16(code).unwrap();
        for op in AuthOp::ALL {
            let o = classify_http(op, status, &HeaderMap::new(), false);
            match code {
                200..=399 => assert_eq!(o, Outcome::Success, "{code}"),
                429 => assert_eq!(o, Outcome::RateLimited),
                400..=499 => assert!(matches!(o, Outcome::Failure(_)), "{code}"),
                _ => assert_eq!(o, Outcome::Error, "{code}"),
            }
            if code == 401 && op == AuthOp::TokenValidation {
                assert_eq!(o, Outcome::Failure(FailureReason::InvalidToken));
            }
        }
    }
}
