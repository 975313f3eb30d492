//! `Scope`: the Services a namespace's workloads call, so that their proxies hold, and are
//! sent, only those (as Istio's `Sidecar` egress hosts and Kuma's reachable services do).

use super::small_map::SmallMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(
    feature = "kube",
    derive(serde::Serialize, schemars::JsonSchema, kube::CustomResource),
    kube(
        group = "trellis.dev",
        version = "v1alpha1",
        kind = "Scope",
        namespaced
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScopeSpec {
    /// The workloads of the Scope's namespace it applies to, by label. Absent: every workload
    /// of the namespace that no Scope with a selector selects.
    #[serde(default)]
    #[cfg_attr(
        feature = "kube",
        schemars(with = "Option<std::collections::BTreeMap<String, String>>")
    )]
    pub selector: Option<SmallMap<String, String>>,
    /// The Services those workloads call: `name` (in the Scope's namespace),
    /// `namespace/name`, or `namespace/*` (every Service of a namespace).
    #[cfg_attr(feature = "kube", schemars(with = "Vec<String>"))]
    pub calls: Vec<Spanned<String>>,
}

/// One entry of `calls`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call<'a> {
    Service { namespace: &'a str, name: &'a str },
    Namespace(&'a str),
}

impl ScopeSpec {
    /// The entries of `calls`, read in the Scope's namespace `ns`; `None` for an entry that
    /// is not one of the three forms (validation reports it).
    pub fn calls<'a>(&'a self, ns: &'a str) -> impl Iterator<Item = Option<Call<'a>>> + 'a {
        self.calls.iter().map(move |c| parse_call(ns, &c.value))
    }
}

pub fn parse_call<'a>(ns: &'a str, entry: &'a str) -> Option<Call<'a>> {
    let (namespace, name) = entry.split_once('/').unwrap_or((ns, entry));
    if namespace.is_empty() || name.is_empty() || name.contains('/') || namespace == "*" {
        return None;
    }
    Some(match name {
        "*" => Call::Namespace(namespace),
        _ => Call::Service { namespace, name },
    })
}
