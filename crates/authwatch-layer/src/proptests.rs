//! Property tests: the parsers and the route table take any input without panicking, and
//! what they return is consistent with what they were given.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use proptest::prelude::*;

use crate::classify::{challenge_says_invalid_token, classify_http, parse_grpc_status};
use crate::client_ip::parse_addr;
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
