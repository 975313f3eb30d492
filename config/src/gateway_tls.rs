//! A Gateway listener's certificates: its `certificateRefs` resolved to Secrets (across
//! namespaces only with a ReferenceGrant), each checked: PEM, key against certificate,
//! validity. A bad certificate is the listener's problem alone, as Gateway API makes it a
//! listener condition (`ResolvedRefs: False`): the config still loads, the listener serves
//! the certificates that are good (or fails its handshakes when none is), and every other
//! listener serves on. `trellis check` reports each problem as an error with its file:line,
//! the control plane logs it, and in Kubernetes it is the listener's status.

use crate::mesh_config::{Doc, MeshConfig};
use crate::model::*;
use crate::snapshot::TlsCertificate;
use crate::yaml::abs_line;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a certificateRef does not serve: Gateway API's listener condition reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertReason {
    /// No such Secret, not a TLS Secret, or its certificate or key cannot serve.
    InvalidCertificateRef,
    /// A Secret of another namespace that no ReferenceGrant there allows.
    RefNotPermitted,
}

impl CertReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CertReason::InvalidCertificateRef => "InvalidCertificateRef",
            CertReason::RefNotPermitted => "RefNotPermitted",
        }
    }
}

/// One certificateRef that does not serve, and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertProblem {
    /// `namespace/name` of the Gateway, and its listener.
    pub gateway: String,
    pub listener: String,
    pub reason: CertReason,
    pub error: crate::error::ConfigError,
}

/// Every HTTPS listener's usable certificates, and the problems of the others.
#[derive(Debug, Default)]
pub struct ResolvedCertificates {
    /// By Secret `namespace/name`.
    pub certificates: BTreeMap<String, Arc<TlsCertificate>>,
    /// By Gateway `namespace/name`, then listener name: the usable Secrets, in ref order.
    pub listeners: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    pub problems: Vec<CertProblem>,
}

impl ResolvedCertificates {
    /// The certificates a proxy serving Gateway `gateway` holds.
    pub fn of_gateway(&self, gateway: &str) -> BTreeMap<String, Arc<TlsCertificate>> {
        (self.listeners.get(gateway).into_iter())
            .flat_map(|l| l.values().flatten())
            .filter_map(|k| Some((k.clone(), self.certificates.get(k)?.clone())))
            .collect()
    }
}

/// Resolves every Gateway's HTTPS listeners at `now` (unix seconds).
pub fn resolve(cfg: &MeshConfig, now: i64) -> ResolvedCertificates {
    let mut out = ResolvedCertificates::default();
    // A Secret is parsed once, however many listeners use it.
    let mut checked: BTreeMap<String, Result<Arc<TlsCertificate>, String>> = BTreeMap::new();
    for g in &cfg.gateways {
        let gns = &g.object.metadata.namespace;
        for l in &g.object.spec.listeners {
            let Some(tls) = &l.tls else { continue };
            let mut usable = Vec::new();
            for (i, r) in tls.certificate_refs.iter().enumerate() {
                let ns = r.namespace.as_deref().unwrap_or(gns);
                let key = format!("{ns}/{}", r.name.value);
                let problem = |reason, message: String| CertProblem {
                    gateway: g.key(),
                    listener: l.name.value.clone(),
                    reason,
                    error: crate::error::ConfigError {
                        file: g.file.to_string(),
                        line: abs_line(g.line, &r.name.referenced),
                        field: format!(
                            "spec.listeners[{}].tls.certificateRefs[{i}]",
                            listener_index(g, &l.name.value)
                        ),
                        message,
                    },
                };
                if ns != gns && !granted(cfg, gns, ns, &r.name.value) {
                    out.problems.push(problem(
                        CertReason::RefNotPermitted,
                        format!("Secret {key:?} is in another namespace than the Gateway, and no ReferenceGrant in {ns:?} lets Gateways of {gns:?} use it"),
                    ));
                    continue;
                }
                let result = checked
                    .entry(key.clone())
                    .or_insert_with(|| check_secret(cfg, ns, &r.name.value, now));
                match result {
                    Ok(c) => {
                        out.certificates.insert(key.clone(), c.clone());
                        usable.push(key);
                    }
                    Err(m) => out
                        .problems
                        .push(problem(CertReason::InvalidCertificateRef, m.clone())),
                }
            }
            (out.listeners.entry(g.key()).or_default()).insert(l.name.value.clone(), usable);
        }
    }
    out
}

fn listener_index(g: &Doc<GatewaySpec>, name: &str) -> usize {
    (g.object.spec.listeners.iter())
        .position(|l| l.name.value == name)
        .unwrap_or(0)
}

/// Whether a ReferenceGrant in `to_ns` lets Gateways of `from_ns` use Secret `name`.
fn granted(cfg: &MeshConfig, from_ns: &str, to_ns: &str, name: &str) -> bool {
    (cfg.reference_grants.iter())
        .filter(|g| g.object.metadata.namespace == to_ns)
        .any(|g| {
            let s = &g.object.spec;
            s.from.iter().any(|f| {
                f.group == "gateway.networking.k8s.io"
                    && f.kind == "Gateway"
                    && f.namespace == from_ns
            }) && s.to.iter().any(|t| {
                t.group.is_empty()
                    && t.kind == "Secret"
                    && t.name.as_deref().is_none_or(|n| n == name)
            })
        })
}

fn check_secret(
    cfg: &MeshConfig,
    ns: &str,
    name: &str,
    now: i64,
) -> Result<Arc<TlsCertificate>, String> {
    let Some(s) = (cfg.secrets.iter())
        .find(|s| s.object.metadata.namespace == ns && s.object.metadata.name == name)
    else {
        return Err(format!(
            "no Secret {name:?} in namespace {ns:?}; add one of type {TLS_SECRET_TYPE} with tls.crt and tls.key"
        ));
    };
    let spec = &s.object.spec;
    let at = format!("Secret {ns}/{name} ({}:{})", s.file, s.line);
    if spec.type_.as_deref() != Some(TLS_SECRET_TYPE) {
        return Err(format!(
            "{at} has type {:?}; a listener's certificate needs type {TLS_SECRET_TYPE}",
            spec.type_.as_deref().unwrap_or("Opaque")
        ));
    }
    let (Some(crt), Some(key)) = (spec.data.get("tls.crt"), spec.data.get("tls.key")) else {
        return Err(format!("{at} needs both tls.crt and tls.key"));
    };
    let (_, info) = trellis_identity::serving::load_serving_pair(crt, key, now)
        .map_err(|e| format!("{at}: {e}"))?;
    Ok(Arc::new(TlsCertificate {
        chain_pem: String::from_utf8_lossy(crt).into_owned(),
        key_pem: String::from_utf8_lossy(key).into_owned(),
        dns_names: info.dns_names,
        not_before: info.not_before,
        not_after: info.not_after,
        serial: info.serial,
    }))
}
