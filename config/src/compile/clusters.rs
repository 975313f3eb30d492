//! Clusters: one per Service port and effective ResiliencePolicy, with the endpoints its
//! selector picks or the DNS name an ExternalName Service resolves.

use super::context::Ctx;
use crate::mesh_config::Doc;
use crate::model::*;
use crate::snapshot::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

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
pub(super) fn ensure_cluster(
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
    // The endpoints of a Service mostly run as a few service accounts: one copy of each
    // account's name and identity, shared, as the proxy holds them.
    type Names<'a> = HashMap<(&'a str, &'a str, bool), (Arc<str>, Option<Arc<str>>)>;
    let mut names: Names<'_> = HashMap::new();
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
            let (service_account, identity) = match &w.object.spec.service_account {
                None => (None, None),
                Some(sa) => {
                    let (ns, mtls) = (&w.object.metadata.namespace, w.object.spec.sidecar_mtls);
                    let key = (ns.as_str(), sa.as_str(), mtls);
                    let (sa, id) = names.entry(key).or_insert_with(|| {
                        let id = mtls.then(|| {
                            let td = cx.trust_domain();
                            Arc::from(format!("spiffe://{td}/ns/{ns}/sa/{sa}"))
                        });
                        (Arc::from(sa.as_str()), id)
                    });
                    (Some(sa.clone()), id.clone())
                }
            };
            out.insert(Endpoint {
                address: SocketAddr::new(ip, port),
                workload: w.key().into(),
                service_account,
                identity,
                sidecar: w.object.spec.sidecar_inbound.is_some(),
            });
        }
    }
    out.into_iter().collect()
}
