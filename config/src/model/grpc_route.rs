//! Gateway API `GRPCRoute` (v1), in mesh files and from Kubernetes alike. A gRPC call is an
//! HTTP/2 `POST /<service>/<method>`, so a GRPCRoute is an HTTPRoute whose matches name a
//! method: it is read as itself (so its errors name its own fields) and becomes the HTTPRoute
//! it means before validation and compiling.

use super::route::{
    BackendRef, FilterType, HttpRouteFilter, HttpRouteMatch, HttpRouteRule, HttpRouteSpec,
    ParentRef, PathMatch, PathMatchType, ValueMatch,
};
use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteSpec {
    pub parent_refs: Vec<ParentRef>,
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Option<Vec<GrpcRouteRule>>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteRule {
    #[serde(default)]
    pub name: Option<String>,
    /// Absent matches every call, as in the Gateway API.
    #[serde(default)]
    pub matches: Option<Vec<GrpcRouteMatch>>,
    #[serde(default)]
    pub filters: Vec<HttpRouteFilter>,
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteMatch {
    #[serde(default)]
    pub method: Option<Spanned<GrpcMethodMatch>>,
    #[serde(default)]
    pub headers: Vec<ValueMatch>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcMethodMatch {
    #[serde(default, rename = "type")]
    pub kind: GrpcMethodMatchType,
    #[serde(default)]
    pub service: Option<Spanned<String>>,
    #[serde(default)]
    pub method: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
pub enum GrpcMethodMatchType {
    #[default]
    Exact,
    RegularExpression,
}

/// A GRPCRoute that cannot mean an HTTPRoute: the field (under `spec.`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcRouteError {
    pub field: String,
    pub message: String,
    /// Where in the document, when the field's own position is known.
    pub at: Option<serde_saphyr::Location>,
}

/// The filters a GRPCRoute may carry (Gateway API v1: core and extended).
const GRPC_FILTERS: [FilterType; 3] = [
    FilterType::RequestHeaderModifier,
    FilterType::ResponseHeaderModifier,
    FilterType::RequestMirror,
];

impl GrpcRouteSpec {
    /// The HTTPRoute this GRPCRoute means. A method match becomes a path match: both names
    /// exact → `Exact /S/M`; one name, or `type: RegularExpression` → a full-match regular
    /// expression where a missing name is any one path segment. Header matches, filters and
    /// backendRefs have the same shape in both kinds.
    pub fn to_http(&self) -> Result<HttpRouteSpec, GrpcRouteError> {
        let mut rules = Vec::new();
        for (i, r) in self.rules.iter().flatten().enumerate() {
            let at = |rest: String| format!("spec.rules[{i}].{rest}");
            let filters = |fs: &[HttpRouteFilter], path: &dyn Fn(usize) -> String| {
                for (j, f) in fs.iter().enumerate() {
                    if !GRPC_FILTERS.contains(&f.kind) {
                        return Err(GrpcRouteError {
                            at: None,
                            field: path(j),
                            message: format!(
                                "{:?} is not a GRPCRoute filter; allowed: RequestHeaderModifier, ResponseHeaderModifier, RequestMirror",
                                f.kind
                            ),
                        });
                    }
                }
                Ok(())
            };
            filters(&r.filters, &|j| at(format!("filters[{j}].type")))?;
            for (b, backend) in r.backend_refs.iter().enumerate() {
                filters(&backend.filters, &|j| {
                    at(format!("backendRefs[{b}].filters[{j}].type"))
                })?;
            }
            let mut matches = None;
            for (j, m) in r.matches.iter().flatten().enumerate() {
                let m = to_http_match(m).ok_or_else(|| GrpcRouteError {
                    at: m.method.as_ref().map(|s| s.referenced),
                    field: at(format!("matches[{j}].method")),
                    message: "names neither a service nor a method; give one or both".to_string(),
                })?;
                matches.get_or_insert_with(Vec::new).push(m);
            }
            rules.push(HttpRouteRule {
                name: r.name.clone(),
                matches,
                filters: r.filters.clone(),
                backend_refs: r.backend_refs.clone(),
                timeouts: None,
            });
        }
        if rules.is_empty() {
            rules.push(HttpRouteRule::default());
        }
        Ok(HttpRouteSpec {
            parent_refs: self.parent_refs.clone(),
            hostnames: self.hostnames.clone(),
            rules,
        })
    }
}

/// One match; `None` for a method match that names nothing.
fn to_http_match(m: &GrpcRouteMatch) -> Option<HttpRouteMatch> {
    let path = match &m.method {
        None => None,
        Some(mm) => {
            let mm = &mm.value;
            let (service, method) = (mm.service.as_ref(), mm.method.as_ref());
            // The value's position is the first name's, so a bad regular expression is
            // reported at the line that holds it.
            let first = service.or(method)?;
            let (kind, value) = match (mm.kind, service, method) {
                (GrpcMethodMatchType::Exact, Some(s), Some(n)) => {
                    (PathMatchType::Exact, format!("/{}/{}", s.value, n.value))
                }
                (GrpcMethodMatchType::Exact, s, n) => {
                    let part = |v: Option<&Spanned<String>>| {
                        v.map_or_else(|| "[^/]+".to_string(), |v| escape(&v.value))
                    };
                    let value = format!("/{}/{}", part(s), part(n));
                    (PathMatchType::RegularExpression, value)
                }
                (GrpcMethodMatchType::RegularExpression, s, n) => {
                    let part = |v: Option<&Spanned<String>>| {
                        v.map_or_else(|| "[^/]+".to_string(), |v| format!("(?:{})", v.value))
                    };
                    let value = format!("/{}/{}", part(s), part(n));
                    (PathMatchType::RegularExpression, value)
                }
            };
            Some(PathMatch {
                kind,
                value: Spanned::new(value, first.referenced, first.defined),
            })
        }
    };
    Some(HttpRouteMatch {
        path,
        headers: m.headers.clone(),
        query_params: Vec::new(),
        method: None,
    })
}

/// `s` as a literal inside a regular expression.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
