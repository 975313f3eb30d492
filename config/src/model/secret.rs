//! `v1` `Secret` of type `kubernetes.io/tls`: a Gateway listener's certificate and key, in
//! the shape Kubernetes keeps them, so `kubectl get secret -o yaml` output loads as it is.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// The Secret as the mesh keeps it: its type and its entries, decoded. Debug prints the
/// entry names only, so that no log or error ever carries a key.
#[derive(Clone, Default)]
pub struct SecretSpec {
    pub type_: Option<String>,
    pub data: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSpec")
            .field("type", &self.type_)
            .field("data", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The `type` a Gateway certificate's Secret has.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Gateway API `ReferenceGrant` (v1beta1): lets objects of `from` refer to objects of `to`
/// in the grant's own namespace. A Gateway listener needs one to use a Secret of another
/// namespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceGrantSpec {
    pub from: Vec<GrantFrom>,
    pub to: Vec<GrantTo>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantFrom {
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantTo {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    /// Only this object; all of its kind when absent.
    #[serde(default)]
    pub name: Option<String>,
}
