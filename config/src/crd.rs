//! The trellis.dev CustomResourceDefinitions, generated from the same model types the
//! loader parses (kube's `CustomResource` derive plus schemars), so the cluster's schema
//! and the control plane's parser cannot disagree. `k8s/crds/` holds the rendered files.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use crate::model::{
    AuthorizationPolicy, ClientRateLimit, Mesh, ResiliencePolicy, Scope, Workload,
};

/// Every trellis.dev CRD, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        Mesh::crd(),
        Workload::crd(),
        ResiliencePolicy::crd(),
        AuthorizationPolicy::crd(),
        Scope::crd(),
        ClientRateLimit::crd(),
    ]
}

/// Each CRD as `(file name, YAML text)`: `<plural>.trellis.dev.yaml`, with a header that says
/// how the file is made.
pub fn render_all() -> Vec<(String, String)> {
    all()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            (format!("{name}.yaml"), render(&crd))
        })
        .collect()
}

/// One CRD as a YAML document.
pub fn render(crd: &CustomResourceDefinition) -> String {
    // A CRD is plain data (strings, maps, lists), so serializing it cannot fail.
    let body = serde_saphyr::to_string(crd).unwrap_or_else(|e| format!("# cannot render: {e}\n"));
    format!(
        "# Generated from config/src/model by `trellis crds`; do not edit.\n\
         # Regenerate: TRELLIS_BLESS=1 cargo test -p trellis-config --features kube --test crds\n\
         {body}"
    )
}
