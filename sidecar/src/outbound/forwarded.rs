//! What the gateway tells the app about the client: `X-Forwarded-For`, `X-Forwarded-Proto`
//! and `Forwarded` (RFC 7239), written by the edge and never taken on trust from a client.
//!
//! The gateway believes the last `trusted` entries of an incoming `X-Forwarded-For`, the ones
//! the proxies in front of it (a load balancer, a CDN) appended, and drops the rest: anything
//! further left was written by the client and can say anything. It then appends the address
//! the connection came from. So the first entry the app sees is the client as the first
//! trusted proxy saw it, or the peer itself when nothing is trusted.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Rewrites the three headers of a request that reached a gateway listener from `peer`, and
/// returns the client address the gateway believes. `scheme` is the listener's. It runs on
/// every gateway request, so it reads what it needs first and then writes two strings.
pub fn set(headers: &mut HeaderMap, peer: IpAddr, trusted: u8, scheme: &'static str) -> IpAddr {
    use std::fmt::Write;
    let mut chain: Vec<IpAddr> = Vec::new();
    if trusted > 0 {
        let incoming: Vec<&str> = (headers.get_all(&XFF).iter())
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        let from = incoming.len().saturating_sub(usize::from(trusted));
        // An entry that is not an address is not from a proxy we trust: believe none of them.
        chain = (incoming[from..].iter())
            .map(|e| address(e))
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
    }
    chain.push(peer);
    // The scheme the client used is the first trusted proxy's to say, if there is one.
    let proto = match headers.get(&XFP).map(HeaderValue::as_bytes) {
        Some(b"https") if trusted > 0 => "https",
        Some(b"http") if trusted > 0 => "http",
        _ => scheme,
    };
    let mut xff = String::new();
    let mut forwarded = String::new();
    for (i, ip) in chain.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(xff, "{sep}{ip}");
        // RFC 7239's `node`: an IPv6 address is bracketed and quoted.
        let _ = match ip {
            IpAddr::V4(v4) => write!(forwarded, "{sep}for={v4}"),
            IpAddr::V6(v6) => write!(forwarded, "{sep}for=\"[{v6}]\""),
        };
    }
    let _ = write!(forwarded, ";proto={proto}");
    if let Some(h) = (headers.get(http::header::HOST))
        .map(HeaderValue::as_bytes)
        .filter(|h| h.iter().all(|b| b.is_ascii_graphic() && *b != b'"'))
    {
        // Graphic ASCII, so valid UTF-8.
        let _ = write!(forwarded, ";host=\"{}\"", String::from_utf8_lossy(h));
    }
    if let Ok(v) = HeaderValue::try_from(xff) {
        headers.insert(XFF, v);
    }
    headers.insert(XFP, HeaderValue::from_static(proto));
    headers.remove(&FORWARDED);
    if let Ok(v) = HeaderValue::try_from(forwarded) {
        headers.insert(FORWARDED, v);
    }
    chain[0]
}

/// An `X-Forwarded-For` entry as an address: an IP, or an IP with a port as some proxies
/// write it (`1.2.3.4:5678`, `[2001:db8::1]:443`).
fn address(e: &str) -> Option<IpAddr> {
    e.parse::<IpAddr>()
        .ok()
        .or_else(|| e.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    const PEER: &str = "203.0.113.9";

    #[test]
    fn with_nothing_trusted_a_client_cannot_name_itself() {
        let mut h = headers(&[
            ("x-forwarded-for", "10.0.0.1, 1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=10.0.0.1;proto=https"),
            ("host", "rides.example.com"),
        ]);
        let client = set(&mut h, PEER.parse().unwrap(), 0, "http");
        assert_eq!(client.to_string(), PEER);
        assert_eq!(h["x-forwarded-for"], PEER);
        assert_eq!(
            h["x-forwarded-proto"], "http",
            "the listener's scheme, not the client's say"
        );
        assert_eq!(
            h["forwarded"],
            "for=203.0.113.9;proto=http;host=\"rides.example.com\""
        );
    }

    #[test]
    fn behind_one_trusted_proxy_the_client_is_what_it_saw() {
        // A client forged 10.0.0.1; the load balancer appended the real 198.51.100.7.
        let mut h = headers(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-proto", "https"),
        ]);
        let client = set(&mut h, PEER.parse().unwrap(), 1, "http");
        assert_eq!(client.to_string(), "198.51.100.7");
        assert_eq!(h["x-forwarded-for"], "198.51.100.7, 203.0.113.9");
        assert_eq!(
            h["x-forwarded-proto"], "https",
            "the load balancer terminated TLS"
        );
        assert_eq!(
            h["forwarded"],
            "for=198.51.100.7, for=203.0.113.9;proto=https"
        );
    }

    #[test]
    fn a_trusted_entry_that_is_not_an_address_believes_none() {
        let mut h = headers(&[("x-forwarded-for", "1.2.3.4, unknown")]);
        let client = set(&mut h, "2001:db8::5".parse().unwrap(), 2, "http");
        assert_eq!(client.to_string(), "2001:db8::5");
        assert_eq!(h["x-forwarded-for"], "2001:db8::5");
        assert_eq!(h["forwarded"], "for=\"[2001:db8::5]\";proto=http");
        // Fewer entries than trusted proxies: all of them are believed; ports are dropped.
        let mut h = headers(&[("x-forwarded-for", "198.51.100.7:4711")]);
        let client = set(&mut h, PEER.parse().unwrap(), 2, "http");
        assert_eq!(client.to_string(), "198.51.100.7");
        assert_eq!(h["x-forwarded-for"], "198.51.100.7, 203.0.113.9");
    }
}
