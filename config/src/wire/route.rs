//! A route rule as Services and gateway listeners carry it: match, filters, backends, timeouts.

use super::enums::{FromWire, method_from_wire, method_to_wire};
use super::{
    Problem, WireError, duration_from_wire, duration_to_wire, each, enum_i32, list, required,
    u16_of,
};
use crate::model::{PathMatchType, ValueMatchType};
use crate::snapshot::{
    CorsPolicy, Filter, HeaderModifier, PathRewrite, RouteMatch, RouteRule, Timeouts, ValueMatch,
    WeightedBackend,
};
use trellis_proto::v1 as pb;
use trellis_proto::v1::filter::Kind as WireFilter;
use trellis_proto::v1::path_rewrite::Kind as WireRewrite;

// === To the wire ===

impl From<&RouteRule> for pb::RouteRule {
    fn from(r: &RouteRule) -> Self {
        pb::RouteRule {
            route: r.route.clone(),
            // A rule index is a position in one HTTPRoute's YAML list.
            rule_index: u32::try_from(r.rule_index).unwrap_or(u32::MAX),
            r#match: Some(pb::RouteMatch::from(&r.matches)),
            filters: list(&r.filters),
            backends: list(&r.backends),
            timeouts: Some(pb::Timeouts {
                request: duration_to_wire(&r.timeouts.request),
                backend_request: duration_to_wire(&r.timeouts.backend_request),
            }),
            consumer_namespace: r.consumer_namespace.clone(),
        }
    }
}

impl From<&RouteMatch> for pb::RouteMatch {
    fn from(m: &RouteMatch) -> Self {
        pb::RouteMatch {
            path_type: enum_i32::<_, pb::PathMatchType>(m.path_type),
            path: m.path.clone(),
            headers: list(&m.headers),
            query_params: list(&m.query_params),
            method: method_to_wire(m.method),
        }
    }
}

impl From<&ValueMatch> for pb::ValueMatch {
    fn from(v: &ValueMatch) -> Self {
        pb::ValueMatch {
            name: v.name.clone(),
            r#type: enum_i32::<_, pb::ValueMatchType>(v.kind),
            value: v.value.clone(),
        }
    }
}

impl From<&WeightedBackend> for pb::WeightedBackend {
    fn from(b: &WeightedBackend) -> Self {
        pb::WeightedBackend {
            cluster: b.cluster.clone(),
            weight: b.weight,
            filters: list(&b.filters),
        }
    }
}

impl From<&Filter> for pb::Filter {
    fn from(f: &Filter) -> Self {
        let kind = match f {
            Filter::RequestHeaderModifier(m) => WireFilter::RequestHeaderModifier(m.into()),
            Filter::ResponseHeaderModifier(m) => WireFilter::ResponseHeaderModifier(m.into()),
            Filter::UrlRewrite { hostname, path } => WireFilter::UrlRewrite(pb::UrlRewrite {
                hostname: hostname.clone(),
                path: path.as_ref().map(pb::PathRewrite::from),
            }),
            Filter::RequestRedirect {
                scheme,
                hostname,
                path,
                port,
                status_code,
            } => WireFilter::RequestRedirect(pb::RequestRedirect {
                scheme: scheme.clone(),
                hostname: hostname.clone(),
                path: path.as_ref().map(pb::PathRewrite::from),
                port: port.map(u32::from),
                status_code: (*status_code).into(),
            }),
            Filter::RequestMirror { cluster, percent } => {
                WireFilter::RequestMirror(pb::RequestMirror {
                    cluster: cluster.clone(),
                    percent: *percent,
                })
            }
            Filter::ClientRateLimit {
                name,
                requests_per_second,
                burst,
            } => WireFilter::ClientRateLimit(pb::ClientRateLimit {
                name: name.clone(),
                requests_per_second: *requests_per_second,
                burst: *burst,
            }),
            Filter::Cors(c) => WireFilter::Cors(pb::Cors {
                allow_origins: c.allow_origins.clone(),
                allow_credentials: c.allow_credentials,
                allow_methods: c.allow_methods.clone(),
                allow_headers: c.allow_headers.clone(),
                expose_headers: c.expose_headers.clone(),
                max_age: c.max_age,
            }),
        };
        pb::Filter { kind: Some(kind) }
    }
}

impl From<&HeaderModifier> for pb::HeaderModifier {
    fn from(m: &HeaderModifier) -> Self {
        let headers = |pairs: &[(String, String)]| {
            pairs
                .iter()
                .map(|(name, value)| pb::Header {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect()
        };
        pb::HeaderModifier {
            set: headers(&m.set),
            add: headers(&m.add),
            remove: m.remove.clone(),
        }
    }
}

impl From<&PathRewrite> for pb::PathRewrite {
    fn from(p: &PathRewrite) -> Self {
        let kind = match p {
            PathRewrite::ReplaceFullPath(s) => WireRewrite::ReplaceFullPath(s.clone()),
            PathRewrite::ReplacePrefixMatch(s) => WireRewrite::ReplacePrefixMatch(s.clone()),
        };
        pb::PathRewrite { kind: Some(kind) }
    }
}

// === From the wire ===

impl TryFrom<pb::RouteRule> for RouteRule {
    type Error = WireError;

    fn try_from(r: pb::RouteRule) -> Result<Self, WireError> {
        let m = required(r.r#match, "match")?;
        let timeouts = required(r.timeouts, "timeouts")?;
        Ok(RouteRule {
            consumer_namespace: r.consumer_namespace,
            rule_index: usize::try_from(r.rule_index).unwrap_or(usize::MAX),
            matches: RouteMatch::try_from(m).map_err(|e| e.at("match"))?,
            filters: each(r.filters, "filter")?,
            backends: each(r.backends, "backend")?,
            timeouts: Timeouts {
                request: duration_from_wire(timeouts.request, "request")
                    .map_err(|e| e.at("timeouts"))?,
                backend_request: duration_from_wire(timeouts.backend_request, "backend_request")
                    .map_err(|e| e.at("timeouts"))?,
            },
            route: r.route,
        })
    }
}

impl TryFrom<pb::RouteMatch> for RouteMatch {
    type Error = WireError;

    fn try_from(m: pb::RouteMatch) -> Result<Self, WireError> {
        Ok(RouteMatch {
            path_type: PathMatchType::from_wire(m.path_type, "path_type")?,
            path: m.path,
            headers: each(m.headers, "header")?,
            query_params: each(m.query_params, "query parameter")?,
            method: method_from_wire(m.method)?,
        })
    }
}

impl TryFrom<pb::ValueMatch> for ValueMatch {
    type Error = WireError;

    fn try_from(v: pb::ValueMatch) -> Result<Self, WireError> {
        Ok(ValueMatch {
            kind: ValueMatchType::from_wire(v.r#type, "type")?,
            name: v.name,
            value: v.value,
        })
    }
}

impl TryFrom<pb::WeightedBackend> for WeightedBackend {
    type Error = WireError;

    fn try_from(b: pb::WeightedBackend) -> Result<Self, WireError> {
        Ok(WeightedBackend {
            filters: each(b.filters, "filter")?,
            cluster: b.cluster,
            weight: b.weight,
        })
    }
}

impl TryFrom<pb::Filter> for Filter {
    type Error = WireError;

    fn try_from(f: pb::Filter) -> Result<Self, WireError> {
        Ok(match required(f.kind, "kind")? {
            WireFilter::RequestHeaderModifier(m) => Filter::RequestHeaderModifier(m.into()),
            WireFilter::ResponseHeaderModifier(m) => Filter::ResponseHeaderModifier(m.into()),
            WireFilter::UrlRewrite(u) => Filter::UrlRewrite {
                hostname: u.hostname,
                path: u.path.map(PathRewrite::try_from).transpose()?,
            },
            WireFilter::RequestRedirect(r) => Filter::RequestRedirect {
                scheme: r.scheme,
                hostname: r.hostname,
                path: r.path.map(PathRewrite::try_from).transpose()?,
                port: r.port.map(|p| u16_of(p, "port")).transpose()?,
                status_code: u16_of(r.status_code, "status_code")?,
            },
            WireFilter::RequestMirror(m) => Filter::RequestMirror {
                cluster: m.cluster,
                percent: m.percent,
            },
            WireFilter::ClientRateLimit(l) => Filter::ClientRateLimit {
                name: l.name,
                // A rate the proxy could not divide by is not a rate.
                requests_per_second: if l.requests_per_second.is_finite()
                    && l.requests_per_second > 0.0
                {
                    l.requests_per_second
                } else {
                    return Err(WireError::new(
                        "requests_per_second",
                        Problem::OutOfRange {
                            value: 0,
                            max: u64::MAX,
                        },
                    ));
                },
                burst: l.burst.max(1),
            },
            WireFilter::Cors(c) => Filter::Cors(CorsPolicy {
                allow_origins: c.allow_origins,
                allow_credentials: c.allow_credentials,
                allow_methods: c.allow_methods,
                allow_headers: c.allow_headers,
                expose_headers: c.expose_headers,
                max_age: c.max_age,
            }),
        })
    }
}

impl From<pb::HeaderModifier> for HeaderModifier {
    fn from(m: pb::HeaderModifier) -> Self {
        let pairs = |headers: Vec<pb::Header>| {
            headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect::<Vec<_>>()
        };
        HeaderModifier {
            set: pairs(m.set),
            add: pairs(m.add),
            remove: m.remove,
        }
    }
}

impl TryFrom<pb::PathRewrite> for PathRewrite {
    type Error = WireError;

    fn try_from(p: pb::PathRewrite) -> Result<Self, WireError> {
        Ok(match required(p.kind, "kind").map_err(|e| e.at("path"))? {
            WireRewrite::ReplaceFullPath(s) => PathRewrite::ReplaceFullPath(s),
            WireRewrite::ReplacePrefixMatch(s) => PathRewrite::ReplacePrefixMatch(s),
        })
    }
}
