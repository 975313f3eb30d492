//! HTTPRoute filters: each has its settings, valid header names, path rewrites that fit the
//! rule's matches, and allowed redirect codes, schemes and mirror percents.

use super::origin::Origin;
use super::references::check_backend;
use crate::error::ConfigErrors;
use crate::mesh_config::MeshConfig;
use crate::model::*;

pub(super) fn http_header_name_invalid(name: &str) -> bool {
    name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn check_filter(
    cfg: &MeshConfig,
    c: &Origin<'_>,
    ns: &str,
    parent_port: u16,
    f: &str,
    flt: &HttpRouteFilter,
    prefix_match: bool,
    errs: &mut ConfigErrors,
) {
    let (field, present) = match flt.kind {
        FilterType::RequestHeaderModifier => (
            "requestHeaderModifier",
            flt.request_header_modifier.is_some(),
        ),
        FilterType::ResponseHeaderModifier => (
            "responseHeaderModifier",
            flt.response_header_modifier.is_some(),
        ),
        FilterType::URLRewrite => ("urlRewrite", flt.url_rewrite.is_some()),
        FilterType::RequestRedirect => ("requestRedirect", flt.request_redirect.is_some()),
        FilterType::RequestMirror => ("requestMirror", flt.request_mirror.is_some()),
        FilterType::CORS => ("cors", flt.cors.is_some()),
        FilterType::ExtensionRef => ("extensionRef", flt.extension_ref.is_some()),
    };
    if !present {
        c.doc(
            errs,
            format!("{f}.{field}"),
            format!("type {:?} needs its {field} field", flt.kind),
        );
        return;
    }
    for m in [&flt.request_header_modifier, &flt.response_header_modifier]
        .into_iter()
        .flatten()
    {
        for h in m.set.iter().chain(&m.add).map(|h| &h.name).chain(&m.remove) {
            if http_header_name_invalid(h) {
                c.doc(
                    errs,
                    format!("{f}.{field}"),
                    format!("{h:?} is not a valid header name"),
                );
            }
        }
    }
    if let Some(cors) = &flt.cors {
        check_cors(c, f, cors, errs);
    }
    if let Some(x) = &flt.extension_ref {
        let known = x.group == "trellis.dev" && x.kind == "ClientRateLimit";
        if !known {
            c.at(errs, &x.name, format!("{f}.extensionRef"), format!("group {:?} kind {:?} is not a filter Trellis knows; allowed: group trellis.dev, kind ClientRateLimit", x.group, x.kind));
        } else if !cfg
            .client_rate_limits
            .iter()
            .any(|l| l.object.metadata.namespace == ns && l.object.metadata.name == x.name.value)
        {
            c.at(errs, &x.name, format!("{f}.extensionRef.name"), format!("no ClientRateLimit {:?} in namespace {ns:?} (an ExtensionRef names an object of the route's own namespace)", x.name.value));
        }
    }
    let path = flt
        .url_rewrite
        .as_ref()
        .and_then(|r| r.path.as_ref())
        .or(flt.request_redirect.as_ref().and_then(|r| r.path.as_ref()));
    if let Some(p) = path {
        let ok = match p.kind {
            PathModifierType::ReplaceFullPath => p.replace_full_path.is_some(),
            PathModifierType::ReplacePrefixMatch => p.replace_prefix_match.is_some(),
        };
        if !ok {
            c.doc(
                errs,
                format!("{f}.{field}.path"),
                format!(
                    "type {:?} needs its value field (replaceFullPath or replacePrefixMatch)",
                    p.kind
                ),
            );
        }
        if p.kind == PathModifierType::ReplacePrefixMatch && !prefix_match {
            c.doc(
                errs,
                format!("{f}.{field}.path"),
                "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match",
            );
        }
    }
    if let Some(r) = &flt.request_redirect {
        if let Some(code) = r.status_code
            && ![301, 302, 303, 307, 308].contains(&code)
        {
            c.doc(
                errs,
                format!("{f}.requestRedirect.statusCode"),
                format!("{code} is not allowed; allowed: 301, 302, 303, 307, 308"),
            );
        }
        if let Some(s) = &r.scheme
            && s != "http"
            && s != "https"
        {
            c.doc(
                errs,
                format!("{f}.requestRedirect.scheme"),
                format!("{s:?} is not allowed; allowed: http, https"),
            );
        }
    }
    if let Some(m) = &flt.request_mirror {
        check_backend(
            cfg,
            c,
            ns,
            parent_port,
            &format!("{f}.requestMirror.backendRef"),
            &m.backend_ref,
            errs,
        );
        if m.percent.is_some_and(|p| p > 100) {
            c.doc(errs, format!("{f}.requestMirror.percent"), "must be 0-100");
        }
    }
}

/// A CORS filter's origins, methods and header names, in the forms the Gateway API allows.
fn check_cors(c: &Origin<'_>, f: &str, cors: &CorsFilter, errs: &mut ConfigErrors) {
    if cors.allow_origins.is_empty() {
        c.doc(
            errs,
            format!("{f}.cors.allowOrigins"),
            "list at least one origin, e.g. https://app.example.com, https://*.example.com or *",
        );
    }
    for o in &cors.allow_origins {
        if o != "*" && !cors_origin_valid(o) {
            c.doc(errs, format!("{f}.cors.allowOrigins"), format!("{o:?} is not an origin: scheme://host[:port] with no path, the host optionally starting with *. (e.g. https://*.example.com), or *"));
        }
    }
    for m in &cors.allow_methods {
        // The methods a route's `matches[].method` takes, read the same way.
        use serde::Deserialize;
        use serde::de::IntoDeserializer;
        let method: Result<HttpMethod, serde::de::value::Error> =
            HttpMethod::deserialize(m.as_str().into_deserializer());
        if m != "*" && method.is_err() {
            c.doc(errs, format!("{f}.cors.allowMethods"), format!("{m:?} is not a method; allowed: GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH, or *"));
        }
    }
    for (field, names) in [
        ("allowHeaders", &cors.allow_headers),
        ("exposeHeaders", &cors.expose_headers),
    ] {
        for h in names.iter().filter(|h| *h != "*") {
            if http_header_name_invalid(h) {
                c.doc(
                    errs,
                    format!("{f}.cors.{field}"),
                    format!("{h:?} is not a valid header name"),
                );
            }
        }
    }
}

/// `scheme://host[:port]`: a scheme of letters, a host of DNS labels (the first may be `*`),
/// an optional port, nothing after.
fn cors_origin_valid(o: &str) -> bool {
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let label =
        |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    !scheme.is_empty()
        && scheme.bytes().all(|b| b.is_ascii_alphabetic())
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
        && host
            .split('.')
            .enumerate()
            .all(|(i, l)| label(l) || (i == 0 && l == "*"))
        && host.contains(|ch: char| ch != '*' && ch != '.')
}
