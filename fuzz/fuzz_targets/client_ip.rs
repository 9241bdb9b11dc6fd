//! Client-address parsing of `X-Forwarded-For`, `Forwarded` and `X-Real-IP`: any header bytes
//! and hop counts give an address or none, never a panic.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use authwatch_layer::ClientIp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&hops, rest)) = data.split_first() else {
        return;
    };
    let Ok(value) = http::HeaderValue::from_bytes(rest) else {
        return;
    };
    let mut req = http::Request::new(());
    for name in ["x-forwarded-for", "forwarded", "x-real-ip"] {
        req.headers_mut().append(name, value.clone());
    }
    // Twice, as a proxy chain appends a second header line.
    req.headers_mut().append("x-forwarded-for", value);
    req.extensions_mut()
        .insert(std::net::SocketAddr::from((IpAddr::V4(Ipv4Addr::LOCALHOST), 1)));
    let n = usize::from(hops % 40);
    for rule in [
        ClientIp::peer(),
        ClientIp::x_forwarded_for(n),
        ClientIp::forwarded(n),
        ClientIp::x_real_ip(),
    ] {
        let _ = rule.resolve(&req);
    }
});
