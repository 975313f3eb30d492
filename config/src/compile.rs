//! Compiling a validated `MeshConfig` into the `Snapshot` of one proxy.
//!
//! Validation has already run, so lookups that fail here are skipped, never panicked on.

use crate::mesh_config::{Doc, MeshConfig, backend_port, find_service};
use crate::model::*;
use crate::snapshot::{self, *};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

/// Who the snapshot is for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
}

/// Builds the snapshot for `node`. Deterministic: equal inputs give equal versions.
pub fn compile(cfg: &MeshConfig, node: &NodeIdentity) -> Snapshot {
    Common::new(cfg).into_snapshot(cfg, node)
}

/// What every proxy's snapshot shares: all Services with their routes, and all clusters.
/// Compiled once per config; only the node-specific part differs between proxies.
pub struct Common {
    pub services: BTreeMap<String, ServiceEntry>,
    pub clusters: BTreeMap<String, Cluster>,
    pub gateways: BTreeMap<String, GatewayEntry>,
}

/// Indexes built once per compile, so endpoint selection is not services × workloads.
pub(crate) struct Ctx<'a> {
    pub(crate) cfg: &'a MeshConfig,
    /// `(namespace, label key, label value)` to the workloads carrying that label.
    by_label: HashMap<(&'a str, &'a str, &'a str), Vec<usize>>,
}

impl<'a> Ctx<'a> {
    fn new(cfg: &'a MeshConfig) -> Ctx<'a> {
        let mut by_label: HashMap<(&str, &str, &str), Vec<usize>> = HashMap::new();
        for (i, w) in cfg.workloads.iter().enumerate() {
            let ns = w.object.metadata.namespace.as_str();
            for (k, v) in &w.object.metadata.labels {
                by_label
                    .entry((ns, k.as_str(), v.as_str()))
                    .or_default()
                    .push(i);
            }
        }
        Ctx { cfg, by_label }
    }

    fn trust_domain(&self) -> &'a str {
        self.cfg
            .mesh
            .as_ref()
            .map_or("trellis.local", |m| m.object.spec.trust_domain.as_str())
    }

    /// Workloads in `ns` whose labels satisfy `selector`, found through its rarest label.
    fn selected(
        &self,
        ns: &str,
        selector: &BTreeMap<String, String>,
    ) -> Vec<&'a Doc<WorkloadSpec>> {
        let rarest = selector
            .iter()
            .map(|(k, v)| {
                self.by_label
                    .get(&(ns, k.as_str(), v.as_str()))
                    .map_or(&[][..], Vec::as_slice)
            })
            .min_by_key(|c| c.len())
            .unwrap_or(&[]);
        let cfg = self.cfg;
        rarest
            .iter()
            .map(|&i| &cfg.workloads[i])
            .filter(|w| selects(selector, &w.object.metadata.labels))
            .collect()
    }
}

impl Common {
    pub fn new(cfg: &MeshConfig) -> Common {
        let cx = &Ctx::new(cfg);
        let mut clusters = BTreeMap::new();
        let mut services = BTreeMap::new();
        for svc in &cfg.services {
            let entry = compile_service(cx, svc, &mut clusters);
            services.insert(svc.key(), entry);
        }
        let gateways = crate::gateway::compile_all(cx, &mut clusters);
        Common {
            services,
            clusters,
            gateways,
        }
    }

    /// The node-specific part of a snapshot: its namespace, the mesh settings, and the
    /// Services it serves.
    pub fn mesh_resource(cfg: &MeshConfig, node: &NodeIdentity) -> crate::resources::MeshResource {
        let serving: Vec<&Doc<ServiceSpec>> = cfg
            .services
            .iter()
            .filter(|s| {
                s.object.metadata.namespace == node.namespace
                    && selects(&s.object.spec.selector, &node.labels)
            })
            .collect();
        let inbound_services: Vec<String> = serving.iter().map(|s| s.key()).collect();
        let mesh = cfg
            .mesh
            .as_ref()
            .map(|m| m.object.spec.clone())
            .unwrap_or_default();
        let inbound_mtls_mode = match serving.as_slice() {
            [] => mesh.mtls.mode,
            some => some
                .iter()
                .map(|s| service_mtls_mode(cfg, s))
                .fold(MtlsMode::Disabled, MtlsMode::strictest),
        };
        let authorization = cfg
            .authorization_policies
            .iter()
            .filter_map(|p| {
                let ns = &p.object.metadata.namespace;
                let service = format!("{ns}/{}", p.object.spec.target_ref.name.value);
                inbound_services.contains(&service).then(|| InboundPolicy {
                    name: p.key(),
                    service,
                    action: p.object.spec.action,
                    rules: p.object.spec.rules.clone(),
                })
            })
            .collect();
        crate::resources::MeshResource {
            node: NodeInfo {
                namespace: node.namespace.clone(),
            },
            mesh: MeshInfo {
                trust_domain: mesh.trust_domain,
                mtls_mode: mesh.mtls.mode,
                inbound_mtls_mode,
                authorization,
                outbound_traffic_policy: mesh.outbound_traffic_policy.mode,
                path_normalization: mesh.path_normalization,
            },
            inbound_services,
        }
    }

    /// The whole snapshot for `node`, taking the shared parts rather than copying them.
    pub fn into_snapshot(self, cfg: &MeshConfig, node: &NodeIdentity) -> Snapshot {
        let m = Self::mesh_resource(cfg, node);
        let mut snap = Snapshot {
            version: String::new(),
            node: m.node,
            mesh: m.mesh,
            services: self.services,
            clusters: self.clusters,
            inbound_services: m.inbound_services,
            gateways: self.gateways,
        };
        snap.version = content_version(&snap);
        snap
    }
}

/// The snapshot's version: a hash over its resources' keys and content hashes, so the
/// control plane can version a snapshot from shared, already-hashed parts.
pub fn content_version(snap: &Snapshot) -> String {
    let split = crate::resources::split(snap);
    crate::resources::version_of(split.iter().map(|(k, e)| (k, e.hash.as_str())))
}

pub use crate::resources::fnv_hex;

/// A Service's `trellis.dev/mtls-mode` annotation (checked by validation), else the Mesh's mode.
fn service_mtls_mode(cfg: &MeshConfig, svc: &Doc<ServiceSpec>) -> MtlsMode {
    svc.object
        .metadata
        .annotations
        .get(MTLS_MODE_ANNOTATION)
        .and_then(|v| MtlsMode::parse(v))
        .unwrap_or_else(|| {
            cfg.mesh
                .as_ref()
                .map(|m| m.object.spec.mtls.mode)
                .unwrap_or_default()
        })
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn compile_service(
    cx: &Ctx<'_>,
    svc: &Doc<ServiceSpec>,
    clusters: &mut BTreeMap<String, Cluster>,
) -> ServiceEntry {
    let cfg = cx.cfg;
    let meta = &svc.object.metadata;
    let mut ports = Vec::new();
    for p in &svc.object.spec.ports {
        let protocol = p.app_protocol.unwrap_or_default();
        let attached: Vec<&Doc<HttpRouteSpec>> = cfg
            .http_routes
            .iter()
            .filter(|r| {
                r.object.spec.parent_refs.iter().any(|pr| {
                    pr.name.value == meta.name
                        && pr
                            .namespace
                            .as_deref()
                            .unwrap_or(&r.object.metadata.namespace)
                            == meta.namespace
                        && pr.port.is_none_or(|port| port == p.port)
                })
            })
            .collect();
        let mut routes = Vec::new();
        if attached.is_empty() || protocol == AppProtocol::Tcp {
            // A Service with no HTTPRoute routes to itself.
            let cluster = ensure_cluster(cx, svc, p.port, None, clusters);
            routes.push(RouteRule {
                route: format!("{}/{}", meta.namespace, meta.name),
                rule_index: 0,
                matches: RouteMatch {
                    path_type: PathMatchType::PathPrefix,
                    path: "/".into(),
                    headers: vec![],
                    query_params: vec![],
                    method: None,
                },
                filters: vec![],
                backends: cluster
                    .into_iter()
                    .map(|c| WeightedBackend {
                        cluster: c,
                        weight: 1,
                        filters: vec![],
                    })
                    .collect(),
                timeouts: Timeouts::default(),
            });
        } else {
            let mut sorted = attached.clone();
            // Gateway API breaks ties by creation time, then by namespace/name; files have no
            // creation time, so namespace/name decides.
            sorted.sort_by_key(|r| r.key());
            for r in sorted {
                compile_route(cx, Some(svc), p.port, r, clusters, &mut routes);
            }
            routes.sort_by_key(|r| std::cmp::Reverse(precedence(&r.matches)));
        }
        ports.push(PortEntry {
            port: p.port,
            name: p.name.clone(),
            protocol,
            target_port: p.target_port.as_ref().map(|t| match &t.value {
                IntOrString::Int(n) => TargetPort::Number(*n),
                IntOrString::Str(s) => TargetPort::Name(s.clone()),
            }),
            routes,
            has_http_route: !attached.is_empty() && protocol != AppProtocol::Tcp,
        });
    }
    ServiceEntry {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        mtls_mode: service_mtls_mode(cfg, svc),
        ports,
        cluster_ip: svc.object.spec.cluster_ip(),
    }
}

/// The Gateway API order of precedence, as a key that sorts the winner last.
/// Exact paths beat regular expressions, which beat prefixes; a longer value beats a shorter
/// one; then a method match; then more header matches; then more query matches.
pub(crate) fn precedence(m: &RouteMatch) -> (u8, usize, bool, usize, usize) {
    let kind = match m.path_type {
        PathMatchType::Exact => 2,
        PathMatchType::RegularExpression => 1,
        PathMatchType::PathPrefix => 0,
    };
    (
        kind,
        m.path.len(),
        m.method.is_some(),
        m.headers.len(),
        m.query_params.len(),
    )
}

/// Appends one `RouteRule` per (rule, match) of `route`. `parent` is the Service the route
/// attaches to, or `None` for a Gateway, whose backends keep their own policies.
pub(crate) fn compile_route(
    cx: &Ctx<'_>,
    parent: Option<&Doc<ServiceSpec>>,
    parent_port: u16,
    route: &Doc<HttpRouteSpec>,
    clusters: &mut BTreeMap<String, Cluster>,
    out: &mut Vec<RouteRule>,
) {
    let cfg = cx.cfg;
    let ns = &route.object.metadata.namespace;
    for (i, rule) in route.object.spec.rules.iter().enumerate() {
        let backends = rule
            .backend_refs
            .iter()
            .filter_map(|b| {
                let svc = find_service(cfg, b.namespace.as_deref().unwrap_or(ns), &b.name.value)?;
                let port = backend_port(svc, b.port, parent_port)?;
                let cluster = ensure_cluster(cx, svc, port, parent, clusters)?;
                let filters = b
                    .filters
                    .iter()
                    .filter_map(|f| compile_filter(cx, ns, parent_port, parent, f, clusters))
                    .collect();
                Some(WeightedBackend {
                    cluster,
                    weight: b.weight.unwrap_or(1),
                    filters,
                })
            })
            .collect::<Vec<_>>();
        let filters: Vec<Filter> = rule
            .filters
            .iter()
            .filter_map(|f| compile_filter(cx, ns, parent_port, parent, f, clusters))
            .collect();
        let timeouts = rule
            .timeouts
            .as_ref()
            // Gateway API: a zero duration disables the timeout.
            .map(|t| Timeouts {
                request: t.request.filter(|d| !d.is_zero()),
                backend_request: t.backend_request.filter(|d| !d.is_zero()),
            })
            .unwrap_or_default();
        let default_match = [HttpRouteMatch::default()];
        let matches = rule
            .matches
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or(&default_match);
        for m in matches {
            out.push(RouteRule {
                route: route.key(),
                rule_index: i,
                matches: compile_match(m),
                filters: filters.clone(),
                backends: backends.clone(),
                timeouts: timeouts.clone(),
            });
        }
    }
}

fn compile_match(m: &HttpRouteMatch) -> RouteMatch {
    let (path_type, path) = match &m.path {
        Some(p) => (p.kind, p.value.value.clone()),
        None => (PathMatchType::PathPrefix, "/".to_string()),
    };
    let values = |v: &[crate::model::ValueMatch], lower: bool| {
        v.iter()
            .map(|h| snapshot::ValueMatch {
                name: if lower {
                    h.name.to_ascii_lowercase()
                } else {
                    h.name.clone()
                },
                kind: h.kind,
                value: h.value.value.clone(),
            })
            .collect()
    };
    RouteMatch {
        path_type,
        path,
        headers: values(&m.headers, true),
        query_params: values(&m.query_params, false),
        method: m.method,
    }
}

fn compile_filter(
    cx: &Ctx<'_>,
    ns: &str,
    parent_port: u16,
    parent: Option<&Doc<ServiceSpec>>,
    f: &HttpRouteFilter,
    clusters: &mut BTreeMap<String, Cluster>,
) -> Option<Filter> {
    let cfg = cx.cfg;
    let modifier = |m: &crate::model::HeaderModifier| snapshot::HeaderModifier {
        set: m
            .set
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect(),
        add: m
            .add
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect(),
        remove: m.remove.iter().map(|h| h.to_ascii_lowercase()).collect(),
    };
    let path = |p: &PathModifier| match p.kind {
        PathModifierType::ReplaceFullPath => {
            PathRewrite::ReplaceFullPath(p.replace_full_path.clone().unwrap_or_default())
        }
        PathModifierType::ReplacePrefixMatch => {
            PathRewrite::ReplacePrefixMatch(p.replace_prefix_match.clone().unwrap_or_default())
        }
    };
    Some(match f.kind {
        FilterType::RequestHeaderModifier => {
            Filter::RequestHeaderModifier(modifier(f.request_header_modifier.as_ref()?))
        }
        FilterType::ResponseHeaderModifier => {
            Filter::ResponseHeaderModifier(modifier(f.response_header_modifier.as_ref()?))
        }
        FilterType::URLRewrite => {
            let r = f.url_rewrite.as_ref()?;
            Filter::UrlRewrite {
                hostname: r.hostname.clone(),
                path: r.path.as_ref().map(path),
            }
        }
        FilterType::RequestRedirect => {
            let r = f.request_redirect.as_ref()?;
            Filter::RequestRedirect {
                scheme: r.scheme.clone(),
                hostname: r.hostname.clone(),
                path: r.path.as_ref().map(path),
                port: r.port,
                status_code: r.status_code.unwrap_or(302),
            }
        }
        FilterType::RequestMirror => {
            let m = f.request_mirror.as_ref()?;
            let b = &m.backend_ref;
            let svc = find_service(cfg, b.namespace.as_deref().unwrap_or(ns), &b.name.value)?;
            let port = backend_port(svc, b.port, parent_port)?;
            let cluster = ensure_cluster(cx, svc, port, parent, clusters)?;
            Filter::RequestMirror {
                cluster,
                percent: m.percent.unwrap_or(100),
            }
        }
    })
}

fn find_policy<'a>(cx: &'a Ctx<'a>, svc: &Doc<ServiceSpec>) -> Option<&'a Resilience> {
    let cfg = cx.cfg;
    let meta = &svc.object.metadata;
    cfg.resilience_policies
        .iter()
        .find(|p| {
            p.object.spec.target_ref.as_ref().is_some_and(|t| {
                t.kind == "Service"
                    && t.name.value == meta.name
                    && t.namespace
                        .as_deref()
                        .unwrap_or(&p.object.metadata.namespace)
                        == meta.namespace
            })
        })
        .map(|p| &p.object.spec)
}

/// Makes sure the cluster for `svc:port` exists and returns its name.
///
/// A backend with its own ResiliencePolicy uses it. One without takes the policy of the parent
/// Service it is reached through, so a canary split of `billing` into `billing-v1` and
/// `billing-v2` runs under billing's policy; that cluster's name says `via` the parent.
fn ensure_cluster(
    cx: &Ctx<'_>,
    svc: &Doc<ServiceSpec>,
    port: u16,
    parent: Option<&Doc<ServiceSpec>>,
    clusters: &mut BTreeMap<String, Cluster>,
) -> Option<String> {
    let meta = &svc.object.metadata;
    let sp = svc.object.spec.ports.iter().find(|p| p.port == port)?;
    let base = format!("{}.{}:{}", meta.name, meta.namespace, port);
    let (name, resilience) = match (
        find_policy(cx, svc),
        parent.and_then(|p| find_policy(cx, p).map(|r| (p, r))),
    ) {
        (Some(own), _) => (base, own.clone()),
        (None, Some((p, inherited))) if p.key() != svc.key() => (
            format!(
                "{base} via {}.{}",
                p.object.metadata.name, p.object.metadata.namespace
            ),
            inherited.clone(),
        ),
        _ => (base, Resilience::default()),
    };
    // The policy's own reference is not part of the cluster's settings.
    let resilience = Resilience {
        target_ref: None,
        ..resilience
    };
    if !clusters.contains_key(&name) {
        let spec = &svc.object.spec;
        let dns = match (&spec.kind, &spec.external_name) {
            (ServiceType::ExternalName, Some(n)) => Some(DnsTarget {
                name: n.value.trim_end_matches('.').to_ascii_lowercase(),
                port: match sp.target_port.as_ref().map(|t| &t.value) {
                    Some(IntOrString::Int(n)) => *n,
                    _ => port,
                },
            }),
            _ => None,
        };
        let endpoints = if dns.is_some() {
            Vec::new()
        } else {
            endpoints(cx, svc, sp)
        };
        clusters.insert(
            name.clone(),
            Cluster {
                name: name.clone(),
                service: svc.key(),
                port,
                protocol: sp.app_protocol.unwrap_or_default(),
                endpoints,
                resilience,
                dns,
            },
        );
    }
    Some(name)
}

fn endpoints(cx: &Ctx<'_>, svc: &Doc<ServiceSpec>, sp: &ServicePort) -> Vec<Endpoint> {
    let meta = &svc.object.metadata;
    let mut out = BTreeSet::new();
    for w in cx.selected(&meta.namespace, &svc.object.spec.selector) {
        let Ok(ip) = w.object.spec.address.value.parse::<IpAddr>() else {
            continue;
        };
        let port = match sp.target_port.as_ref().map(|t| &t.value) {
            _ if w.object.spec.sidecar_inbound.is_some() => w.object.spec.sidecar_inbound,
            None => Some(sp.port),
            Some(IntOrString::Int(n)) => Some(*n),
            // A named targetPort is looked up on each endpoint; one without that port is skipped.
            Some(IntOrString::Str(name)) => w.object.spec.ports.get(name).copied(),
        };
        if let Some(port) = port {
            let identity = match &w.object.spec.service_account {
                Some(sa) if w.object.spec.sidecar_mtls => Some(format!(
                    "spiffe://{}/ns/{}/sa/{sa}",
                    cx.trust_domain(),
                    w.object.metadata.namespace
                )),
                _ => None,
            };
            out.insert(Endpoint {
                address: SocketAddr::new(ip, port),
                workload: w.key(),
                service_account: w.object.spec.service_account.clone(),
                identity,
                sidecar: w.object.spec.sidecar_inbound.is_some(),
            });
        }
    }
    out.into_iter().collect()
}
