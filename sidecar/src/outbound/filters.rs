//! Gateway API HTTPRoute filters: header modifiers, URL rewrite and request redirect.
//! Mirrors are started by the outbound handler, which owns the body.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Uri, uri::PathAndQuery};
use trellis_config::snapshot::PathRewrite;

use crate::http::body::Body;

/// The new path for `path` under `rewrite`; `prefix` is what the rule's PathPrefix matched.
pub fn rewrite_path(path: &str, rewrite: &PathRewrite, prefix: Option<&str>) -> String {
    match rewrite {
        PathRewrite::ReplaceFullPath(p) => p.clone(),
        PathRewrite::ReplacePrefixMatch(with) => {
            let rest = prefix.and_then(|p| path.get(p.len()..)).unwrap_or("");
            let mut out = with.trim_end_matches('/').to_string();
            if !rest.is_empty() {
                out.push_str(rest);
            }
            if out.is_empty() { "/".to_string() } else { out }
        }
    }
}

/// Replaces the path of `uri`, keeping its query.
pub fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

/// The redirect answer: `Location` built from the request with the filter's replacements.
pub struct Redirect<'a> {
    pub scheme: Option<&'a str>,
    pub hostname: Option<&'a str>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub status: u16,
}

impl Redirect<'_> {
    /// `req_scheme` is how the request came (`http`, or `https` at a TLS listener).
    pub fn respond(
        &self,
        uri: &Uri,
        req_scheme: &str,
        host: &str,
        req_port: Option<u16>,
    ) -> Response<Body> {
        let scheme = self.scheme.unwrap_or(req_scheme);
        let hostname = self.hostname.unwrap_or(host);
        // Gateway API: with no port set, keep the request's port unless the scheme changed,
        // and leave out a port that is the scheme's default.
        let port = self.port.or(if self.scheme.is_none() {
            req_port
        } else {
            None
        });
        let port = port.filter(|p| !matches!((scheme, p), ("http", 80) | ("https", 443)));
        let path = self.path.as_deref().unwrap_or(uri.path());
        let mut loc = format!("{scheme}://{hostname}");
        if let Some(p) = port {
            loc.push_str(&format!(":{p}"));
        }
        loc.push_str(path);
        if let Some(q) = uri.query() {
            loc.push('?');
            loc.push_str(q);
        }
        let mut res = Response::new(Body::empty());
        *res.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::FOUND);
        if let Ok(v) = HeaderValue::try_from(loc) {
            res.headers_mut().insert(header::LOCATION, v);
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_prefix_match_keeps_the_rest() {
        let r = PathRewrite::ReplacePrefixMatch("/v2".into());
        assert_eq!(rewrite_path("/api/users", &r, Some("/api")), "/v2/users");
        assert_eq!(rewrite_path("/api", &r, Some("/api")), "/v2");
        let root = PathRewrite::ReplacePrefixMatch("/".into());
        assert_eq!(rewrite_path("/api/users", &root, Some("/api")), "/users");
        assert_eq!(rewrite_path("/api", &root, Some("/api")), "/");
        assert_eq!(
            rewrite_path("/x", &PathRewrite::ReplaceFullPath("/y".into()), None),
            "/y"
        );
    }
}
