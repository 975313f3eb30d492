//! HTTPRoute matching with Gateway API semantics. Rules arrive sorted by precedence from
//! the compiler, so the first rule that matches wins.

use http::{HeaderMap, HeaderName, Method, Uri};
use regex::Regex;
use trellis_config::model::{PathMatchType, ValueMatchType};
use trellis_config::snapshot::RouteMatch;

pub struct Matcher {
    path: PathMatch,
    headers: Vec<(HeaderName, ValueMatch)>,
    query: Vec<(String, ValueMatch)>,
    method: Option<Method>,
}

enum PathMatch {
    Exact(String),
    /// Stored without its trailing `/`; empty matches every path.
    Prefix(String),
    Regex(Regex),
}

enum ValueMatch {
    Exact(String),
    Regex(Regex),
}

/// Gateway API regular expressions must match the whole value.
fn full_regex(pattern: &str) -> Result<Regex, MatchError> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|source| MatchError::Regex {
        pattern: pattern.to_string(),
        source,
    })
}

/// A route match that cannot be compiled. Validation catches these in the mesh file; a
/// snapshot from elsewhere is refused whole.
#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    #[error("invalid regular expression {pattern:?}: {source}")]
    Regex {
        pattern: String,
        source: regex::Error,
    },
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    /// The method as the config spelled it (its `Debug` form).
    #[error("invalid method {0}")]
    Method(String),
}

impl ValueMatch {
    fn new(kind: ValueMatchType, v: &str) -> Result<ValueMatch, MatchError> {
        Ok(match kind {
            ValueMatchType::Exact => ValueMatch::Exact(v.to_string()),
            ValueMatchType::RegularExpression => ValueMatch::Regex(full_regex(v)?),
        })
    }

    fn is_match(&self, v: &str) -> bool {
        match self {
            ValueMatch::Exact(e) => e == v,
            ValueMatch::Regex(r) => r.is_match(v),
        }
    }
}

impl Matcher {
    /// Compiles a match; a pattern that does not compile is an error, never a silent miss.
    pub fn new(m: &RouteMatch) -> Result<Matcher, MatchError> {
        let path = match m.path_type {
            PathMatchType::Exact => PathMatch::Exact(m.path.clone()),
            PathMatchType::PathPrefix => {
                PathMatch::Prefix(m.path.trim_end_matches('/').to_string())
            }
            PathMatchType::RegularExpression => PathMatch::Regex(full_regex(&m.path)?),
        };
        let mut headers = Vec::with_capacity(m.headers.len());
        for h in &m.headers {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| MatchError::HeaderName(h.name.clone()))?;
            headers.push((name, ValueMatch::new(h.kind, &h.value)?));
        }
        let mut query = Vec::with_capacity(m.query_params.len());
        for q in &m.query_params {
            query.push((q.name.clone(), ValueMatch::new(q.kind, &q.value)?));
        }
        let method = match m.method {
            Some(x) => Some(
                Method::from_bytes(x.as_str().as_bytes())
                    .map_err(|_| MatchError::Method(format!("{x:?}")))?,
            ),
            None => None,
        };
        Ok(Matcher {
            path,
            headers,
            query,
            method,
        })
    }

    pub fn matches(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> bool {
        let path = uri.path();
        let path_ok = match &self.path {
            PathMatch::Exact(p) => path == p,
            // Prefixes match whole path segments: /foo matches /foo and /foo/bar, not /foobar.
            PathMatch::Prefix(p) => {
                p.is_empty()
                    || (path.starts_with(p.as_str())
                        && matches!(path.as_bytes().get(p.len()), None | Some(b'/')))
            }
            PathMatch::Regex(r) => r.is_match(path),
        };
        path_ok
            && self.method.as_ref().is_none_or(|m| m == method)
            && self.headers.iter().all(|(name, want)| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| want.is_match(v))
            })
            && self
                .query
                .iter()
                .all(|(name, want)| query_value(uri, name).is_some_and(|v| want.is_match(v)))
    }

    /// The literal prefix this matcher matched, for `ReplacePrefixMatch`.
    pub fn prefix(&self) -> Option<&str> {
        match &self.path {
            PathMatch::Prefix(p) => Some(p),
            _ => None,
        }
    }
}

/// The first value of query parameter `name`, compared raw (not percent-decoded).
fn query_value<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_config::snapshot::ValueMatch as V;

    fn m(kind: PathMatchType, path: &str) -> RouteMatch {
        RouteMatch {
            path_type: kind,
            path: path.into(),
            headers: vec![],
            query_params: vec![],
            method: None,
        }
    }

    fn hit(m: &Matcher, uri: &str) -> bool {
        m.matches(&Method::GET, &uri.parse().unwrap(), &HeaderMap::new())
    }

    #[test]
    fn prefix_matches_whole_segments() {
        let p = Matcher::new(&m(PathMatchType::PathPrefix, "/foo/")).unwrap();
        assert!(hit(&p, "/foo"));
        assert!(hit(&p, "/foo/bar"));
        assert!(!hit(&p, "/foobar"));
        assert!(hit(
            &Matcher::new(&m(PathMatchType::PathPrefix, "/")).unwrap(),
            "/anything"
        ));
    }

    #[test]
    fn exact_regex_query_and_headers() {
        assert!(hit(
            &Matcher::new(&m(PathMatchType::Exact, "/a")).unwrap(),
            "/a?x=1"
        ));
        assert!(!hit(
            &Matcher::new(&m(PathMatchType::Exact, "/a")).unwrap(),
            "/a/"
        ));
        let r = Matcher::new(&m(PathMatchType::RegularExpression, "/users/[0-9]+")).unwrap();
        assert!(hit(&r, "/users/42"));
        assert!(!hit(&r, "/users/42/x"));
        let mut q = m(PathMatchType::PathPrefix, "/");
        q.query_params.push(V {
            name: "debug".into(),
            kind: ValueMatchType::Exact,
            value: "1".into(),
        });
        q.headers.push(V {
            name: "x-canary".into(),
            kind: ValueMatchType::RegularExpression,
            value: "y.*".into(),
        });
        let q = Matcher::new(&q).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-canary", "yes".parse().unwrap());
        assert!(q.matches(&Method::GET, &"/x?a=2&debug=1".parse().unwrap(), &h));
        assert!(!q.matches(&Method::GET, &"/x?debug=2".parse().unwrap(), &h));
        assert!(!q.matches(
            &Method::GET,
            &"/x?debug=1".parse().unwrap(),
            &HeaderMap::new()
        ));
    }
}
