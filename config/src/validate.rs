//! Cross-document checks: every reference resolves, every value is in range. Each error
//! names the file, the line, the field and what is allowed.

use crate::error::ConfigErrors;
use crate::mesh_config::{Doc, MeshConfig, backend_port, find_service};
use crate::model::*;
use crate::yaml::abs_line;
use serde_saphyr::Spanned;
use std::collections::HashSet;
use trellis_identity::{SpiffeId, SpiffeIdError};

const RETRY_ON: &[&str] = &[
    "connect-failure",
    "refused-stream",
    "reset",
    "unavailable",
    "cancelled",
    "gateway-error",
    "5xx",
];

/// Checks a loaded config; `Ok` means it can be compiled for any proxy.
pub fn validate(cfg: &MeshConfig) -> Result<(), ConfigErrors> {
    let mut errs = ConfigErrors::default();
    check_unique(cfg, &mut errs);
    let mut cluster_ips = std::collections::HashMap::new();
    for s in &cfg.services {
        check_service(s, &mut errs);
        if let (Some(ip), Some(span)) = (s.object.spec.cluster_ip(), &s.object.spec.cluster_ip)
            && let Some(first) = cluster_ips.insert(ip, s)
        {
            Ctx::new(s).at(
                &mut errs,
                span,
                "spec.clusterIP",
                format!(
                    "{ip} is already the clusterIP of Service {} ({}:{}); each Service needs its own",
                    first.key(),
                    first.file,
                    first.line
                ),
            );
        }
    }
    if let Some(m) = &cfg.mesh
        && let Err(e) = SpiffeId::new(&m.object.spec.trust_domain, "ns", "sa")
    {
        Ctx::new(m).doc(&mut errs, "spec.trustDomain", e.to_string());
    }
    for w in &cfg.workloads {
        if let Some(sa) = &w.object.spec.service_account
            && let Err(e) = kube_service_account(&w.object.metadata.namespace, sa)
        {
            // The endpoint's identity is built from both, so say which one Kubernetes refuses.
            let field = match &e {
                SpiffeIdError::Name {
                    what: "namespace", ..
                } => "metadata.namespace",
                _ => "spec.serviceAccount",
            };
            Ctx::new(w).doc(&mut errs, field, e.to_string());
        }
        if w.object
            .spec
            .address
            .value
            .parse::<std::net::IpAddr>()
            .is_err()
        {
            let e = Ctx::new(w);
            e.at(
                &mut errs,
                &w.object.spec.address,
                "spec.address",
                "must be an IP address, e.g. 127.0.0.1",
            );
        }
    }
    for r in &cfg.http_routes {
        check_route(cfg, r, &mut errs);
    }
    let mut targeted = std::collections::HashMap::new();
    for p in &cfg.resilience_policies {
        check_resilience(cfg, p, &mut errs);
        if let Some(t) = &p.object.spec.target_ref {
            let ns = t
                .namespace
                .as_deref()
                .unwrap_or(&p.object.metadata.namespace);
            let key = format!("{ns}/{}", t.name.value);
            if let Some(first) = targeted.insert(key.clone(), p) {
                let msg = format!(
                    "Service {key} already has ResiliencePolicy {} ({}:{}); merge them into one",
                    first.key(),
                    first.file,
                    first.line
                );
                Ctx::new(p).at(&mut errs, &t.name, "spec.targetRef", msg);
            }
        }
    }
    for p in &cfg.authorization_policies {
        let c = Ctx::new(p);
        check_target(
            cfg,
            &c,
            &p.object.metadata.namespace,
            Some(&p.object.spec.target_ref),
            &mut errs,
        );
        for (i, rule) in p.object.spec.rules.iter().enumerate() {
            for (j, to) in rule.to.iter().enumerate() {
                let patterns = to
                    .paths
                    .iter()
                    .map(|p| (format!("spec.rules[{i}].to[{j}].paths"), p))
                    .chain(to.headers.iter().enumerate().flat_map(|(k, h)| {
                        h.values.iter().map(move |v| {
                            (format!("spec.rules[{i}].to[{j}].headers[{k}].values"), v)
                        })
                    }));
                for (field, pat) in patterns {
                    if pat.len() > 1 && pat[1..pat.len() - 1].contains('*') {
                        c.doc(
                            &mut errs,
                            field,
                            format!("{pat:?}: '*' may only start or end a pattern (\"/charge*\", \"*.json\")"),
                        );
                    }
                }
            }
            for (j, from) in rule.from.iter().enumerate() {
                for sa in &from.service_accounts {
                    let field = || format!("spec.rules[{i}].from[{j}].serviceAccounts");
                    match sa.split_once('/') {
                        Some((ns, name)) if !name.contains('/') => {
                            // A name Kubernetes refuses can never be a peer's, so the entry
                            // would silently match nobody.
                            if let Err(e) = kube_service_account(ns, name) {
                                c.doc(&mut errs, field(), format!("in {sa:?}: {e}"));
                            }
                        }
                        _ => c.doc(
                            &mut errs,
                            field(),
                            format!("{sa:?} must be namespace/serviceAccount, e.g. rides/trip"),
                        ),
                    }
                }
            }
        }
    }
    crate::gateway::validate(cfg, &mut errs);
    errs.into_result()
}

/// Whether Kubernetes would accept `namespace` and service account `name`: the rule
/// [`SpiffeId::new`] applies, so config the validator passes never fails there later. The
/// trust domain is a stand-in; the Mesh document's own is checked on its own.
fn kube_service_account(namespace: &str, name: &str) -> Result<(), SpiffeIdError> {
    SpiffeId::new("trellis.local", namespace, name).map(drop)
}

/// Where a document came from, for error messages.
struct Ctx<'a> {
    file: &'a str,
    line: u64,
}

impl<'a> Ctx<'a> {
    fn new<S>(d: &'a Doc<S>) -> Self {
        Ctx {
            file: &d.file,
            line: d.line,
        }
    }

    fn at<T>(
        &self,
        errs: &mut ConfigErrors,
        span: &Spanned<T>,
        field: impl Into<String>,
        msg: impl Into<String>,
    ) {
        errs.push(self.file, abs_line(self.line, &span.referenced), field, msg);
    }

    fn doc(&self, errs: &mut ConfigErrors, field: impl Into<String>, msg: impl Into<String>) {
        errs.push(self.file, self.line, field, msg);
    }
}

fn check_unique(cfg: &MeshConfig, errs: &mut ConfigErrors) {
    fn dupes<S>(kind: &str, docs: &[Doc<S>], errs: &mut ConfigErrors) {
        let mut seen = HashSet::new();
        for d in docs {
            if !seen.insert(d.key()) {
                Ctx::new(d).doc(
                    errs,
                    "metadata.name",
                    format!(
                        "duplicate {kind} {}; names are unique per namespace",
                        d.key()
                    ),
                );
            }
            let name = &d.object.metadata.name;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            {
                Ctx::new(d).doc(
                    errs,
                    "metadata.name",
                    format!("{name:?} must be a DNS name: lowercase letters, digits, '-' and '.'"),
                );
            }
        }
    }
    dupes("Service", &cfg.services, errs);
    dupes("Workload", &cfg.workloads, errs);
    dupes("HTTPRoute", &cfg.http_routes, errs);
    dupes("ResiliencePolicy", &cfg.resilience_policies, errs);
    dupes("AuthorizationPolicy", &cfg.authorization_policies, errs);
    dupes("Gateway", &cfg.gateways, errs);
}

fn check_service(s: &Doc<ServiceSpec>, errs: &mut ConfigErrors) {
    let c = Ctx::new(s);
    if s.object.spec.ports.is_empty() {
        c.doc(errs, "spec.ports", "a Service needs at least one port");
    }
    let mut seen = HashSet::new();
    for (i, p) in s.object.spec.ports.iter().enumerate() {
        if !seen.insert(p.port) {
            c.doc(
                errs,
                format!("spec.ports[{i}].port"),
                format!("port {} is listed twice", p.port),
            );
        }
        if let Some(proto) = &p.protocol
            && proto != "TCP"
        {
            c.doc(
                errs,
                format!("spec.ports[{i}].protocol"),
                format!("{proto:?} is not supported; allowed: TCP"),
            );
        }
        if p.port == 0 {
            c.doc(errs, format!("spec.ports[{i}].port"), "must be 1-65535");
        }
    }
    if let Some(mode) = s.object.metadata.annotations.get(MTLS_MODE_ANNOTATION)
        && MtlsMode::parse(mode).is_none()
    {
        c.doc(
            errs,
            format!("metadata.annotations.{MTLS_MODE_ANNOTATION}"),
            format!("{mode:?} is not an mTLS mode; allowed: STRICT, PERMISSIVE, DISABLED"),
        );
    }
    check_service_addressing(&c, &s.object.spec, errs);
}

/// `clusterIP`, `type` and `externalName` agree with each other.
fn check_service_addressing(c: &Ctx<'_>, spec: &ServiceSpec, errs: &mut ConfigErrors) {
    if let Some(ip) = &spec.cluster_ip
        && ip.value != "None"
        && ip.value.parse::<std::net::IpAddr>().is_err()
    {
        c.at(
            errs,
            ip,
            "spec.clusterIP",
            format!(
                "{:?} is not an IP address; use e.g. 10.96.0.10, or None",
                ip.value
            ),
        );
    }
    match (spec.kind, &spec.external_name) {
        (ServiceType::ExternalName, None) => c.doc(
            errs,
            "spec.externalName",
            "required for type: ExternalName: the DNS name to resolve, e.g. db.example.com",
        ),
        (ServiceType::ExternalName, Some(n)) => {
            let name = n.value.trim_end_matches('.');
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            };
            if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
                c.at(
                    errs,
                    n,
                    "spec.externalName",
                    format!(
                        "{:?} is not a DNS name: letters, digits, '-' and '.'",
                        n.value
                    ),
                );
            }
            if !spec.selector.is_empty() {
                c.doc(
                    errs,
                    "spec.selector",
                    "an ExternalName Service has no selector: its endpoints come from DNS",
                );
            }
        }
        (ServiceType::ClusterIP, Some(n)) => c.at(
            errs,
            n,
            "spec.externalName",
            "set only with type: ExternalName",
        ),
        (ServiceType::ClusterIP, None) => {}
    }
}

fn check_target(
    cfg: &MeshConfig,
    c: &Ctx<'_>,
    ns: &str,
    t: Option<&TargetRef>,
    errs: &mut ConfigErrors,
) {
    let Some(t) = t else {
        c.doc(
            errs,
            "spec.targetRef",
            "required: the Service this policy applies to, e.g. {kind: Service, name: billing}",
        );
        return;
    };
    if t.kind != "Service" {
        c.at(
            errs,
            &t.name,
            "spec.targetRef.kind",
            format!("{:?} is not supported; allowed: Service", t.kind),
        );
    } else if find_service(cfg, t.namespace.as_deref().unwrap_or(ns), &t.name.value).is_none() {
        c.at(
            errs,
            &t.name,
            "spec.targetRef.name",
            format!("no Service {:?} in namespace {ns:?}", t.name.value),
        );
    }
}

fn check_route(cfg: &MeshConfig, r: &Doc<HttpRouteSpec>, errs: &mut ConfigErrors) {
    let c = Ctx::new(r);
    let ns = r.object.metadata.namespace.as_str();
    if r.object.spec.parent_refs.is_empty() {
        c.doc(
            errs,
            "spec.parentRefs",
            "an HTTPRoute needs a parent: a Service, e.g. [{kind: Service, name: billing}], or a Gateway, e.g. [{kind: Gateway, name: ride-gateway}]",
        );
    }
    let mut parent_port = 80;
    for (i, p) in r.object.spec.parent_refs.iter().enumerate() {
        let f = format!("spec.parentRefs[{i}]");
        if crate::gateway::is_gateway_ref(p) {
            // Checked with the Gateways (gateway.rs).
            continue;
        }
        if p.kind.as_deref().unwrap_or("Service") != "Service"
            || !p.group.as_deref().unwrap_or("").is_empty()
        {
            c.at(
                errs,
                &p.name,
                format!("{f}.kind"),
                "allowed: {group: \"\", kind: Service} or {group: gateway.networking.k8s.io, kind: Gateway}",
            );
            continue;
        }
        let pns = p.namespace.as_deref().unwrap_or(ns);
        let Some(svc) = find_service(cfg, pns, &p.name.value) else {
            c.at(
                errs,
                &p.name,
                format!("{f}.name"),
                format!("no Service {:?} in namespace {pns:?}", p.name.value),
            );
            continue;
        };
        let ports: Vec<u16> = svc.object.spec.ports.iter().map(|p| p.port).collect();
        if let Some(port) = p.port {
            parent_port = port;
            match svc.object.spec.ports.iter().find(|sp| sp.port == port) {
                None => c.at(errs, &p.name, format!("{f}.port"), format!("Service {:?} has no port {port}; it has {ports:?}", p.name.value)),
                Some(sp) if sp.app_protocol == Some(AppProtocol::Tcp) => c.at(errs, &p.name, format!("{f}.port"),
                    format!("port {port} has appProtocol tcp; HTTP routes cannot attach to an opaque TCP port")),
                Some(_) => {}
            }
        } else if let Some(first) = ports.first() {
            parent_port = if ports.contains(&80) { 80 } else { *first };
        }
    }
    for (i, rule) in r.object.spec.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        for (j, m) in rule.matches.iter().flatten().enumerate() {
            check_match(&c, &format!("{f}.matches[{j}]"), m, errs);
        }
        let prefix_match = rule.matches.as_deref().is_none_or(|ms| {
            ms.is_empty()
                || ms.iter().all(|m| {
                    m.path
                        .as_ref()
                        .is_none_or(|p| p.kind == PathMatchType::PathPrefix)
                })
        });
        for (j, flt) in rule.filters.iter().enumerate() {
            check_filter(
                cfg,
                &c,
                ns,
                parent_port,
                &format!("{f}.filters[{j}]"),
                flt,
                prefix_match,
                errs,
            );
        }
        let has_redirect = rule
            .filters
            .iter()
            .any(|f| f.kind == FilterType::RequestRedirect);
        if rule.backend_refs.is_empty() && !has_redirect {
            c.doc(
                errs,
                format!("{f}.backendRefs"),
                "a rule needs backendRefs or a RequestRedirect filter",
            );
        }
        for (j, b) in rule.backend_refs.iter().enumerate() {
            let bf = format!("{f}.backendRefs[{j}]");
            check_backend(cfg, &c, ns, parent_port, &bf, b, errs);
            if b.weight.is_some_and(|w| w > 1_000_000) {
                c.at(errs, &b.name, format!("{bf}.weight"), "must be 0-1000000");
            }
            for (k, flt) in b.filters.iter().enumerate() {
                if matches!(
                    flt.kind,
                    FilterType::RequestRedirect | FilterType::RequestMirror
                ) {
                    let msg = format!(
                        "{:?} is only supported on a rule, not on a backendRef; allowed here: \
                         RequestHeaderModifier, ResponseHeaderModifier, URLRewrite",
                        flt.kind
                    );
                    c.at(errs, &b.name, format!("{bf}.filters[{k}].type"), msg);
                    continue;
                }
                check_filter(
                    cfg,
                    &c,
                    ns,
                    parent_port,
                    &format!("{bf}.filters[{k}]"),
                    flt,
                    prefix_match,
                    errs,
                );
            }
        }
    }
}

fn check_backend(
    cfg: &MeshConfig,
    c: &Ctx<'_>,
    ns: &str,
    parent_port: u16,
    f: &str,
    b: &BackendRef,
    errs: &mut ConfigErrors,
) {
    if b.kind.as_deref().unwrap_or("Service") != "Service"
        || !b.group.as_deref().unwrap_or("").is_empty()
    {
        c.at(
            errs,
            &b.name,
            format!("{f}.kind"),
            "allowed: {group: \"\", kind: Service}",
        );
        return;
    }
    let bns = b.namespace.as_deref().unwrap_or(ns);
    match find_service(cfg, bns, &b.name.value) {
        None => c.at(
            errs,
            &b.name,
            format!("{f}.name"),
            format!("no Service {:?} in namespace {bns:?}", b.name.value),
        ),
        Some(svc) if backend_port(svc, b.port, parent_port).is_none() => {
            let ports: Vec<u16> = svc.object.spec.ports.iter().map(|p| p.port).collect();
            c.at(
                errs,
                &b.name,
                format!("{f}.port"),
                format!(
                    "Service {:?} has no such port; set port to one of {ports:?}",
                    b.name.value
                ),
            );
        }
        Some(_) => {}
    }
}

fn check_match(c: &Ctx<'_>, f: &str, m: &HttpRouteMatch, errs: &mut ConfigErrors) {
    if let Some(p) = &m.path {
        match p.kind {
            PathMatchType::RegularExpression => {
                if let Err(e) = regex::Regex::new(&p.value.value) {
                    c.at(
                        errs,
                        &p.value,
                        format!("{f}.path.value"),
                        format!("invalid regular expression: {e}"),
                    );
                }
            }
            _ if !p.value.value.starts_with('/') => c.at(
                errs,
                &p.value,
                format!("{f}.path.value"),
                "must start with '/'",
            ),
            _ => {}
        }
    }
    for (kind, list) in [("headers", &m.headers), ("queryParams", &m.query_params)] {
        for (i, v) in list.iter().enumerate() {
            if v.kind == ValueMatchType::RegularExpression
                && let Err(e) = regex::Regex::new(&v.value.value)
            {
                c.at(
                    errs,
                    &v.value,
                    format!("{f}.{kind}[{i}].value"),
                    format!("invalid regular expression: {e}"),
                );
            }
            if kind == "headers" && http_header_name_invalid(&v.name) {
                c.at(
                    errs,
                    &v.value,
                    format!("{f}.{kind}[{i}].name"),
                    format!("{:?} is not a valid header name", v.name),
                );
            }
        }
    }
}

fn http_header_name_invalid(name: &str) -> bool {
    name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[allow(clippy::too_many_arguments)]
fn check_filter(
    cfg: &MeshConfig,
    c: &Ctx<'_>,
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

fn check_resilience(cfg: &MeshConfig, p: &Doc<ResiliencePolicySpec>, errs: &mut ConfigErrors) {
    let c = Ctx::new(p);
    let s = &p.object.spec;
    check_target(
        cfg,
        &c,
        &p.object.metadata.namespace,
        s.target_ref.as_ref(),
        errs,
    );
    let pct = |errs: &mut ConfigErrors, field: &str, v: f64| {
        if !(0.0..=100.0).contains(&v) {
            c.doc(
                errs,
                field.to_string(),
                format!("{v} must be a percent, 0-100"),
            );
        }
    };
    if s.load_balancer.policy != LbPolicy::RingHash && s.load_balancer.hash_key.is_some() {
        let msg = format!(
            "hashKey only applies to RING_HASH, but the policy is {:?}; remove it or set policy: RING_HASH",
            s.load_balancer.policy
        );
        c.doc(errs, "spec.loadBalancer.hashKey", msg);
    }
    if s.load_balancer.policy == LbPolicy::RingHash {
        let n = s.load_balancer.hash_key.as_ref().map_or(0, |k| {
            usize::from(k.header.is_some())
                + usize::from(k.cookie.is_some())
                + usize::from(k.source_ip)
        });
        if n != 1 {
            c.doc(
                errs,
                "spec.loadBalancer.hashKey",
                "RING_HASH needs exactly one of {header: NAME}, {cookie: NAME}, {sourceIp: true}",
            );
        }
    }
    if let Some(cb) = &s.circuit_breaker {
        pct(
            errs,
            "spec.circuitBreaker.failureRateThreshold",
            cb.failure_rate_threshold,
        );
        pct(
            errs,
            "spec.circuitBreaker.slowCallRateThreshold",
            cb.slow_call_rate_threshold,
        );
        if cb.sliding_window.size == 0 {
            c.doc(
                errs,
                "spec.circuitBreaker.slidingWindow.size",
                "must be at least 1",
            );
        }
        if cb.permitted_calls_in_half_open == 0 {
            c.doc(
                errs,
                "spec.circuitBreaker.permittedCallsInHalfOpen",
                "must be at least 1",
            );
        }
    }
    if let Some(od) = &s.outlier_detection {
        pct(
            errs,
            "spec.outlierDetection.maxEjectionPercent",
            od.max_ejection_percent,
        );
        if od.consecutive5xx == 0 {
            c.doc(
                errs,
                "spec.outlierDetection.consecutive5xx",
                "must be at least 1",
            );
        }
    }
    if let Some(r) = &s.retry {
        for on in &r.retry_on {
            let is_code = on.len() == 3 && on.parse::<u16>().is_ok_and(|c| (100..600).contains(&c));
            if !is_code && !RETRY_ON.contains(&on.as_str()) {
                c.doc(
                    errs,
                    "spec.retry.retryOn",
                    format!(
                        "{on:?} is not allowed; allowed: {} or a status code like \"503\"",
                        RETRY_ON.join(", ")
                    ),
                );
            }
        }
        if let Some(b) = &r.budget {
            pct(errs, "spec.retry.budget.percent", b.percent);
        }
    }
    if let Some(rl) = &s.rate_limit
        && (rl.requests_per_second.is_nan() || rl.requests_per_second <= 0.0)
    {
        c.doc(
            errs,
            "spec.rateLimit.requestsPerSecond",
            "must be greater than 0",
        );
    }
    if let Some(b) = &s.bulkhead
        && b.max_concurrent_requests == 0
    {
        c.doc(
            errs,
            "spec.bulkhead.maxConcurrentRequests",
            "must be at least 1",
        );
    }
    if let Some(fi) = &s.fault_injection {
        if let Some(d) = &fi.delay {
            pct(errs, "spec.faultInjection.delay.percent", d.percent);
        }
        if let Some(a) = &fi.abort {
            pct(errs, "spec.faultInjection.abort.percent", a.percent);
            if !(200..=599).contains(&a.status) {
                c.doc(
                    errs,
                    "spec.faultInjection.abort.status",
                    "must be an HTTP status, 200-599",
                );
            }
        }
    }
}
