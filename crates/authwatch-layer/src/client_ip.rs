//! Which address a request came from, under explicit proxy-trust rules.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::{HeaderMap, HeaderName, Request};

// Header names as constants: a lookup by `&str` parses and validates the name on every call.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The most proxy hops that can be trusted. Nobody runs more than a handful; the cap keeps a
/// misconfiguration from turning into a long scan.
pub const MAX_TRUSTED_HOPS: usize = 32;

/// The longest single address entry that is parsed (`[ffff:…:ffff%zone]:65535` fits easily);
/// longer entries are garbage and give no address.
const MAX_ENTRY_LEN: usize = 96;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Peer,
    XForwardedFor,
    Forwarded,
    XRealIp,
}

/// How the layer finds the client's IP address.
///
/// The default, [`ClientIp::peer`], trusts no header: `Forwarded`, `X-Forwarded-For` and
/// `X-Real-IP` are set by whoever sends the request, so reading them without a proxy in front
/// would let an attacker pick the address that brute-force detection sees. Say how many proxies
/// you run with [`x_forwarded_for`](Self::x_forwarded_for) or [`forwarded`](Self::forwarded).
///
/// The peer address comes from a [`SocketAddr`] request extension, or (feature `axum`) from
/// `axum::extract::ConnectInfo<SocketAddr>` (serve with
/// `into_make_service_with_connect_info::<SocketAddr>()`).
///
/// The address is used by the sinks that need it (brute-force detection, the audit log); it is
/// never a metric attribute.
///
/// Hostile headers are safe: parsing is linear in the header's size, allocates nothing, and at
/// worst yields no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp {
    source: Source,
    hops: usize,
}

impl Default for ClientIp {
    fn default() -> Self {
        Self::peer()
    }
}

impl ClientIp {
    /// The TCP peer address; no header is read. The default.
    #[must_use]
    pub const fn peer() -> Self {
        Self {
            source: Source::Peer,
            hops: 0,
        }
    }

    /// `X-Forwarded-For` behind `trusted_hops` proxies that each append the address they saw.
    ///
    /// The client is the `trusted_hops`-th entry from the right (with one proxy, the last entry).
    /// If the header has fewer entries, the leftmost one is used; if it is absent, the peer
    /// address; if the chosen entry is not an address, none. `0` means [`peer`](Self::peer).
    /// Values above [`MAX_TRUSTED_HOPS`] are capped.
    #[must_use]
    pub const fn x_forwarded_for(trusted_hops: usize) -> Self {
        Self::hops(Source::XForwardedFor, trusted_hops)
    }

    /// The RFC 7239 `Forwarded` header's `for=` parameters, with the same rules as
    /// [`x_forwarded_for`](Self::x_forwarded_for).
    #[must_use]
    pub const fn forwarded(trusted_hops: usize) -> Self {
        Self::hops(Source::Forwarded, trusted_hops)
    }

    /// `X-Real-IP`, as set by one trusted proxy (nginx's `proxy_set_header X-Real-IP`). Absent:
    /// the peer address.
    #[must_use]
    pub const fn x_real_ip() -> Self {
        Self {
            source: Source::XRealIp,
            hops: 1,
        }
    }

    const fn hops(source: Source, trusted_hops: usize) -> Self {
        if trusted_hops == 0 {
            return Self::peer();
        }
        let hops = if trusted_hops > MAX_TRUSTED_HOPS {
            MAX_TRUSTED_HOPS
        } else {
            trusted_hops
        };
        Self { source, hops }
    }

    /// The client address of `req` under these rules.
    #[must_use]
    pub fn resolve<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        let headers = req.headers();
        let from_header = match self.source {
            Source::Peer => None,
            Source::XForwardedFor => from_list(headers, &X_FORWARDED_FOR, self.hops, parse_addr),
            Source::Forwarded => {
                from_list(headers, &http::header::FORWARDED, self.hops, forwarded_for)
            }
            Source::XRealIp => headers.get(X_REAL_IP).map(|v| parse_addr(v.as_bytes())),
        };
        match from_header {
            Some(found) => found,
            None => peer_addr(req),
        }
    }
}

/// The peer address from the request extensions.
#[must_use]
pub fn peer_addr<B>(req: &Request<B>) -> Option<IpAddr> {
    let ext = req.extensions();
    // axum's `ConnectInfo` first when axum is on: it is what an axum server carries, and each
    // lookup that misses costs a hash-map probe on every request.
    #[cfg(feature = "axum")]
    if let Some(info) = ext.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(canonical(info.0.ip()));
    }
    ext.get::<SocketAddr>().map(|addr| canonical(addr.ip()))
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`, what a dual-stack socket reports) as plain IPv4, so one
/// client is one key.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Walks a comma-separated list header from the right (across repeated header lines, last line
/// first) and parses the `hops`-th entry, or the leftmost if there are fewer.
///
/// `None`: the header is absent. `Some(None)`: present, but the entry is no address.
fn from_list(
    headers: &HeaderMap,
    name: &HeaderName,
    hops: usize,
    parse: fn(&[u8]) -> Option<IpAddr>,
) -> Option<Option<IpAddr>> {
    let mut seen = 0usize;
    let mut last: Option<&[u8]> = None;
    let mut present = false;
    for value in headers.get_all(name).iter().rev() {
        present = true;
        for entry in value.as_bytes().rsplit(|b| *b == b',') {
            let entry = entry.trim_ascii();
            if entry.is_empty() {
                continue;
            }
            seen += 1;
            last = Some(entry);
            if seen == hops {
                return Some(parse(entry));
            }
        }
    }
    // Fewer entries than trusted hops: every entry was appended by one of our proxies, so the
    // leftmost is the address the first of them saw. Present but empty: no address (falling
    // back to the peer would blame the proxy for every client).
    match last {
        Some(entry) => Some(parse(entry)),
        None if present => Some(None),
        None => None,
    }
}

/// One `Forwarded` element (`for=…;proto=…;by=…`): its `for` parameter as an address.
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    element.split(|b| *b == b';').find_map(|pair| {
        let eq = pair.iter().position(|b| *b == b'=')?;
        let (k, v) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
        k.eq_ignore_ascii_case(b"for").then(|| parse_addr(v))?
    })
}

/// Parses `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:443`, `"[…]"`, `fe80::1%eth0`.
/// Anything else (`unknown`, `_hidden`, garbage, an overlong entry) is `None`.
pub(crate) fn parse_addr(raw: &[u8]) -> Option<IpAddr> {
    if raw.len() > MAX_ENTRY_LEN {
        return None;
    }
    let mut s = std::str::from_utf8(raw).ok()?.trim();
    if let Some(inner) = s.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        s = inner;
    }
    if let Some(rest) = s.strip_prefix('[') {
        // [v6] or [v6]:port
        let end = rest.find(']')?;
        let after = &rest[end + 1..];
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return parse_v6_with_zone(&rest[..end]).map(canonical);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    // v4:port (a v6 address without brackets never carries a port)
    if let Some((host, port)) = s.rsplit_once(':') {
        if is_port(port) {
            if let Ok(v4) = host.parse::<std::net::Ipv4Addr>() {
                return Some(IpAddr::V4(v4));
            }
        }
    }
    parse_v6_with_zone(s).map(canonical)
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// An IPv6 address with an optional `%zone`, which is dropped: it names a local interface and
/// says nothing about who the client is.
fn parse_v6_with_zone(s: &str) -> Option<IpAddr> {
    let addr = s.split_once('%').map_or(s, |(a, _zone)| a);
    addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn req(headers: &[(&str, &[u8])], peer: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        for (k, v) in headers {
            r.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        if let Some(p) = peer {
            r.extensions_mut().insert(p.parse::<SocketAddr>().unwrap());
        }
        r
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    const PEER: &str = "10.0.0.9:5555";

    #[test]
    fn peer_is_default_and_ignores_spoofed_headers() {
        let r = req(
            &[
                ("x-forwarded-for", b"6.6.6.6"),
                ("x-real-ip", b"7.7.7.7"),
                ("forwarded", b"for=8.8.8.8"),
            ],
            Some(PEER),
        );
        assert_eq!(ClientIp::default().resolve(&r), ip("10.0.0.9"));
        assert_eq!(ClientIp::x_forwarded_for(0).resolve(&r), ip("10.0.0.9"));
        assert_eq!(ClientIp::peer().resolve(&req(&[], None)), None);
    }

    #[test]
    fn x_forwarded_for_counts_hops_from_the_right() {
        let r = req(
            &[("x-forwarded-for", b"6.6.6.6, 1.1.1.1, 2.2.2.2")],
            Some(PEER),
        );
        assert_eq!(ClientIp::x_forwarded_for(1).resolve(&r), ip("2.2.2.2"));
        assert_eq!(ClientIp::x_forwarded_for(2).resolve(&r), ip("1.1.1.1"));
        assert_eq!(ClientIp::x_forwarded_for(3).resolve(&r), ip("6.6.6.6"));
        // Fewer entries than hops: the leftmost.
        assert_eq!(ClientIp::x_forwarded_for(9).resolve(&r), ip("6.6.6.6"));
        // Repeated header lines are one list, in order.
        let r = req(
            &[
                ("x-forwarded-for", b"6.6.6.6"),
                ("x-forwarded-for", b"1.1.1.1, 2.2.2.2"),
            ],
            Some(PEER),
        );
        assert_eq!(ClientIp::x_forwarded_for(3).resolve(&r), ip("6.6.6.6"));
        assert_eq!(ClientIp::x_forwarded_for(2).resolve(&r), ip("1.1.1.1"));
        // Absent header: the peer.
        assert_eq!(
            ClientIp::x_forwarded_for(1).resolve(&req(&[], Some(PEER))),
            ip("10.0.0.9")
        );
    }

    #[test]
    fn garbage_entries_give_no_address_not_the_proxy() {
        for bad in [
            &b"unknown"[..],
            b"not an ip",
            b"999.1.1.1",
            b"",
            b" , ,",
            &[0xff, 0xfe][..],
        ] {
            let r = req(&[("x-forwarded-for", bad)], Some(PEER));
            assert_eq!(ClientIp::x_forwarded_for(1).resolve(&r), None, "{bad:?}");
            let r = req(&[("forwarded", bad)], Some(PEER));
            assert_eq!(ClientIp::forwarded(1).resolve(&r), None, "{bad:?}");
        }
        let r = req(&[("x-real-ip", b"garbage")], Some(PEER));
        assert_eq!(ClientIp::x_real_ip().resolve(&r), None);
    }

    #[test]
    fn address_forms() {
        for (raw, want) in [
            ("1.2.3.4", "1.2.3.4"),
            ("1.2.3.4:8080", "1.2.3.4"),
            ("2001:db8::1", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("\"[2001:db8::1]:443\"", "2001:db8::1"),
            ("fe80::1%eth0", "fe80::1"),
            ("[fe80::1%25eth0]:80", "fe80::1"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
        ] {
            assert_eq!(parse_addr(raw.as_bytes()), ip(want), "{raw}");
        }
        for raw in [
            "[2001:db8::1",
            "[::1]x",
            "1.2.3.4:99999999",
            "_hidden",
            "unknown",
            "1.2.3",
        ] {
            assert_eq!(parse_addr(raw.as_bytes()), None, "{raw}");
        }
        assert_eq!(parse_addr(&vec![b'1'; 10_000]), None);
    }

    #[test]
    fn forwarded_header() {
        let r = req(
            &[(
                "forwarded",
                br#"for=6.6.6.6;proto=http, For="[2001:db8:cafe::17]:4711";by=10.0.0.1"#,
            )],
            Some(PEER),
        );
        assert_eq!(ClientIp::forwarded(1).resolve(&r), ip("2001:db8:cafe::17"));
        assert_eq!(ClientIp::forwarded(2).resolve(&r), ip("6.6.6.6"));
        let r = req(&[("forwarded", b"proto=https;by=1.1.1.1")], Some(PEER));
        assert_eq!(ClientIp::forwarded(1).resolve(&r), None);
    }

    #[test]
    fn x_real_ip() {
        let r = req(&[("x-real-ip", b"203.0.113.7")], Some(PEER));
        assert_eq!(ClientIp::x_real_ip().resolve(&r), ip("203.0.113.7"));
        assert_eq!(
            ClientIp::x_real_ip().resolve(&req(&[], Some(PEER))),
            ip("10.0.0.9")
        );
    }

    #[test]
    fn hostile_sizes_are_bounded() {
        // 64 KiB of one entry, and ten thousand hops.
        let big = vec![b'9'; 64 * 1024];
        let r = req(&[("x-forwarded-for", &big)], Some(PEER));
        assert_eq!(ClientIp::x_forwarded_for(1).resolve(&r), None);
        let many: Vec<u8> = std::iter::repeat_n(&b"1.1.1.1,"[..], 10_000)
            .flatten()
            .copied()
            .chain(*b"2.2.2.2")
            .collect();
        let r = req(&[("x-forwarded-for", &many)], Some(PEER));
        assert_eq!(ClientIp::x_forwarded_for(1).resolve(&r), ip("2.2.2.2"));
        assert_eq!(
            ClientIp::x_forwarded_for(usize::MAX).resolve(&r),
            ip("1.1.1.1")
        );
        assert_eq!(
            ClientIp::x_forwarded_for(usize::MAX),
            ClientIp::x_forwarded_for(MAX_TRUSTED_HOPS)
        );
    }

    #[test]
    fn mapped_peer_is_canonical() {
        let r = req(&[], Some("[::ffff:192.0.2.1]:80"));
        assert_eq!(ClientIp::peer().resolve(&r), ip("192.0.2.1"));
    }
}
