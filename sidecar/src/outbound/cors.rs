//! Gateway API's CORS filter (`HTTPCORSFilter`): a browser's preflight for an allowed origin
//! is answered here, without the backend; an allowed origin's actual request goes on, and its
//! response gets the `Access-Control-Allow-*` headers. A request from an origin the filter
//! does not allow passes through untouched, so the browser refuses it for want of the
//! headers, and a backend that does CORS itself still can.

use crate::http::body::Body;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use trellis_config::snapshot::CorsPolicy;

/// What the filter makes of one request.
pub enum Cors {
    /// No filter, no `Origin`, or an origin it does not allow: nothing to do.
    Pass,
    /// A preflight for an allowed origin: this is the answer.
    Preflight(Response<Body>),
    /// An allowed origin's request: its response gets the headers (`decorate`).
    Allowed(HeaderValue),
}

pub fn check(policy: &CorsPolicy, method: &Method, headers: &HeaderMap) -> Cors {
    let Some(origin) = headers.get(ORIGIN) else {
        return Cors::Pass;
    };
    let Ok(o) = origin.to_str() else {
        return Cors::Pass;
    };
    if !policy.allow_origins.iter().any(|p| origin_fits(p, o)) {
        return Cors::Pass;
    }
    let Some(requested) = headers.get(ACCESS_CONTROL_REQUEST_METHOD) else {
        return Cors::Allowed(origin.clone());
    };
    if method != Method::OPTIONS {
        return Cors::Allowed(origin.clone());
    }
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::OK;
    let h = res.headers_mut();
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin(policy, origin));
    if policy.allow_credentials {
        h.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    let asked_headers = headers.get(ACCESS_CONTROL_REQUEST_HEADERS);
    if let Some(v) = listed(policy, &policy.allow_methods, Some(requested)) {
        h.insert(ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    if let Some(v) = listed(policy, &policy.allow_headers, asked_headers) {
        h.insert(ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from(policy.max_age));
    h.append(VARY, HeaderValue::from_static("origin"));
    Cors::Preflight(res)
}

/// The headers an allowed origin's response carries.
pub fn decorate(policy: &CorsPolicy, origin: &HeaderValue, h: &mut HeaderMap) {
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin(policy, origin));
    if policy.allow_credentials {
        h.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(v) = listed(policy, &policy.expose_headers, None) {
        h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
    h.append(VARY, HeaderValue::from_static("origin"));
}

/// `*` only where the spec lets a browser take it: any origin allowed, and no credentials.
/// Otherwise the request's own origin, which is what a credentialed request needs.
fn allow_origin(policy: &CorsPolicy, origin: &HeaderValue) -> HeaderValue {
    if !policy.allow_credentials && policy.allow_origins.iter().any(|o| o == "*") {
        HeaderValue::from_static("*")
    } else {
        origin.clone()
    }
}

/// A list as one header value. `*` with credentials means "what was asked", since browsers
/// read a literal `*` as a name then; without credentials it stays `*`.
fn listed(
    policy: &CorsPolicy,
    list: &[String],
    asked: Option<&HeaderValue>,
) -> Option<HeaderValue> {
    if list.iter().any(|m| m == "*") {
        return match (policy.allow_credentials, asked) {
            (true, Some(a)) => Some(a.clone()),
            _ => Some(HeaderValue::from_static("*")),
        };
    }
    if list.is_empty() {
        return None;
    }
    HeaderValue::try_from(list.join(", ")).ok()
}

/// Whether origin `o` (as the browser sent it) fits pattern `p` (lowercase): `*`, an exact
/// origin, or `scheme://*.domain[:port]` with one or more labels in place of the `*`.
fn origin_fits(p: &str, o: &str) -> bool {
    if p == "*" {
        return true;
    }
    let Some((scheme, host)) = p.split_once("://*.") else {
        return p.eq_ignore_ascii_case(o);
    };
    let Some((o_scheme, o_host)) = o.split_once("://") else {
        return false;
    };
    // `label.` then `host`: the dot sits just before the suffix, with a label before it.
    let Some(dot) = o_host.len().checked_sub(host.len() + 1) else {
        return false;
    };
    o_scheme.eq_ignore_ascii_case(scheme)
        && dot > 0
        && o_host.is_char_boundary(dot)
        && o_host.as_bytes()[dot] == b'.'
        && o_host[dot + 1..].eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str], credentials: bool) -> CorsPolicy {
        CorsPolicy {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_credentials: credentials,
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["*".into()],
            expose_headers: vec!["x-trace".into()],
            max_age: 600,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn origins_fit_exactly_or_by_wildcard_of_at_least_one_label() {
        assert!(origin_fits(
            "https://app.example.com",
            "https://APP.example.com"
        ));
        assert!(origin_fits(
            "https://*.example.com",
            "https://a.b.example.com"
        ));
        assert!(!origin_fits("https://*.example.com", "https://example.com"));
        assert!(!origin_fits(
            "https://*.example.com",
            "http://a.example.com"
        ));
        assert!(!origin_fits(
            "https://*.example.com",
            "https://evilexample.com"
        ));
        assert!(!origin_fits(
            "https://app.example.com",
            "https://app.example.com.evil.org"
        ));
        assert!(origin_fits("*", "null"));
    }

    #[test]
    fn a_preflight_is_answered_and_a_request_decorated() {
        let p = policy(&["https://*.example.com"], true);
        let pre = headers(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-ride, content-type"),
        ]);
        let Cors::Preflight(res) = check(&p, &Method::OPTIONS, &pre) else {
            panic!("a preflight");
        };
        let h = res.headers();
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        // `*` with credentials: the headers that were asked for.
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "x-ride, content-type");
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "600");

        let get = headers(&[("origin", "https://app.example.com")]);
        let Cors::Allowed(o) = check(&p, &Method::GET, &get) else {
            panic!("allowed");
        };
        let mut out = HeaderMap::new();
        decorate(&p, &o, &mut out);
        assert_eq!(out[ACCESS_CONTROL_EXPOSE_HEADERS], "x-trace");
        assert_eq!(out[VARY], "origin");

        let other = headers(&[
            ("origin", "https://evil.org"),
            ("access-control-request-method", "POST"),
        ]);
        assert!(matches!(check(&p, &Method::OPTIONS, &other), Cors::Pass));
        assert!(matches!(
            check(&p, &Method::GET, &HeaderMap::new()),
            Cors::Pass
        ));
    }

    #[test]
    fn any_origin_without_credentials_is_a_literal_star() {
        let p = policy(&["*"], false);
        let Cors::Allowed(o) = check(&p, &Method::GET, &headers(&[("origin", "https://x.org")]))
        else {
            panic!("allowed");
        };
        let mut out = HeaderMap::new();
        decorate(&p, &o, &mut out);
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(out.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
    }
}
