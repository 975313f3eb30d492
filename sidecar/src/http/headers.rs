//! Hop-by-hop header handling (RFC 9110 §7.6.1), request size checks, and the one copy of a
//! request's head that retries, connection resends and mirrors all make.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection and never travel past it.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
];

/// Whether an HTTP/1.1 request asks to switch protocols (WebSocket and other Upgrades).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers, including any that `Connection` names. With `upgrade`, the
/// `Upgrade` header and `Connection: upgrade` are kept, since they are what the next hop needs.
/// `TE: trailers` is kept: gRPC servers require it and it is the one value HTTP/2 allows.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .filter(|n| !(upgrade && n == header::UPGRADE))
            .collect();
        for n in named {
            if n != header::TE {
                headers.remove(n);
            }
        }
    }
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in HOP_BY_HOP {
        if upgrade && name == "upgrade" {
            continue;
        }
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The request's header section against the bootstrap's `limits.maxHeaderBytes`, a limit the
/// hyper codec does not enforce itself (431 `headers-too-large` when over).
pub fn check_size(
    headers: &HeaderMap,
    limit: usize,
) -> Result<(), crate::http::errors::ProxyError> {
    let size = header_bytes(headers);
    if size > limit {
        return Err(crate::http::errors::ProxyError::HeadersTooLarge { size, limit });
    }
    Ok(())
}

/// Bytes the header section takes on the wire (name, value, `: ` and CRLF per field).
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

/// A new request with `from`'s method, URI, version and headers, and `body`. Extensions are
/// not copied: they hold facts about the downstream connection (the peer's identity) that
/// stay with the original.
pub(crate) fn same_head<B, C>(from: &http::Request<B>, body: C) -> http::Request<C> {
    let mut r = http::Request::new(body);
    *r.method_mut() = from.method().clone();
    *r.uri_mut() = from.uri().clone();
    *r.version_mut() = from.version();
    *r.headers_mut() = from.headers().clone();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_named_and_standard_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("x-app", "kept".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert!(
            h.get("x-secret").is_none()
                && h.get("keep-alive").is_none()
                && h.get("connection").is_none()
        );
        assert!(h.get("transfer-encoding").is_none());
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-app"], "kept");
    }

    #[test]
    fn keeps_upgrade_headers_for_upgrades() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }
}

/// An HTTPRoute header modifier, parsed once when the config is built, so that a request
/// only clones the names and values it applies (reference-counted, no parse, no copy).
/// Names or values that are not valid HTTP are left out, as validation already refuses them.
#[derive(Debug, Default, Clone)]
pub struct HeaderEdit {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderEdit {
    pub fn compile(m: &trellis_config::snapshot::HeaderModifier) -> HeaderEdit {
        let pairs = |list: &[(String, String)]| {
            list.iter()
                .filter_map(|(n, v)| {
                    Some((
                        HeaderName::from_bytes(n.as_bytes()).ok()?,
                        HeaderValue::from_str(v).ok()?,
                    ))
                })
                .collect()
        };
        HeaderEdit {
            set: pairs(&m.set),
            add: pairs(&m.add),
            remove: (m.remove.iter())
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
        }
    }

    /// Gateway API order: set, then add, then remove.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
        for n in &self.remove {
            headers.remove(n);
        }
    }
}

/// A rule's or a backend's header modifiers, compiled (`HeaderEdit`).
#[derive(Debug, Default, Clone)]
pub struct HeaderEdits {
    pub request: Option<HeaderEdit>,
    pub response: Option<HeaderEdit>,
}

impl HeaderEdits {
    pub fn compile(filters: &[trellis_config::snapshot::Filter]) -> HeaderEdits {
        use trellis_config::snapshot::Filter;
        let mut e = HeaderEdits::default();
        for f in filters {
            match f {
                Filter::RequestHeaderModifier(m) => e.request = Some(HeaderEdit::compile(m)),
                Filter::ResponseHeaderModifier(m) => e.response = Some(HeaderEdit::compile(m)),
                _ => {}
            }
        }
        e
    }
}

#[cfg(test)]
mod edit_tests {
    use super::*;
    use trellis_config::snapshot::HeaderModifier;

    #[test]
    fn a_compiled_edit_sets_adds_and_removes_in_gateway_api_order() {
        let edit = HeaderEdit::compile(&HeaderModifier {
            set: vec![
                ("X-Tenant".into(), "acme".into()),
                ("bad name".into(), "x".into()),
            ],
            add: vec![
                ("x-tenant".into(), "second".into()),
                ("x-via".into(), "trellis".into()),
            ],
            remove: vec!["x-secret".into()],
        });
        let mut h = HeaderMap::new();
        h.insert("x-tenant", HeaderValue::from_static("old"));
        h.insert("x-secret", HeaderValue::from_static("s"));
        edit.apply(&mut h);
        let tenants: Vec<_> = h.get_all("x-tenant").iter().collect();
        assert_eq!(
            tenants,
            ["acme", "second"],
            "set replaces, then add appends"
        );
        assert_eq!(h["x-via"], "trellis");
        assert!(h.get("x-secret").is_none());
        assert_eq!(h.len(), 3, "the invalid name was left out: {h:?}");
    }
}
