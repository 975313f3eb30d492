//! `trellis shift` against the cluster: a JSON patch that sets the weights of an HTTPRoute's
//! (or GRPCRoute's) backendRefs, guarded by `test` operations so that a route edited meanwhile is refused
//! rather than mis-weighted.

use super::kinds::{grpc_route_resource, http_route_resource};
use json_patch::jsonptr::PointerBuf;
use json_patch::{Patch, PatchOperation, ReplaceOperation, TestOperation};
use kube::api::{DynamicObject, Patch as KubePatch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Why a shift could not be written to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ShiftError {
    #[error("the route has no spec.rules")]
    NoRules,
    #[error("none of the given backends is in the route")]
    NoBackend,
    /// `route`: `<kind> <namespace>/<name>`.
    #[error("cannot read {route}: {source}")]
    Read { route: String, source: kube::Error },
    #[error(
        "cannot patch {route}: {source}; does trellis-control's ClusterRole allow patch on {plural}?"
    )]
    Patch {
        route: String,
        plural: &'static str,
        source: kube::Error,
    },
}

/// The patch that gives each named backend its new weight, in every rule it appears in.
/// Each replaced weight is preceded by a `test` of the backend's name at that index.
pub fn weights_patch(route: &Value, weights: &HashMap<String, u32>) -> Result<Patch, ShiftError> {
    let rules = route["spec"]["rules"]
        .as_array()
        .ok_or(ShiftError::NoRules)?;
    let mut ops = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        for (j, b) in rule["backendRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let Some(name) = b["name"].as_str() else {
                continue;
            };
            let Some(w) = weights.get(name) else { continue };
            let at = |leaf: &str| {
                PointerBuf::from_tokens([
                    "spec",
                    "rules",
                    &i.to_string(),
                    "backendRefs",
                    &j.to_string(),
                    leaf,
                ])
            };
            ops.push(PatchOperation::Test(TestOperation {
                path: at("name"),
                value: json!(name),
            }));
            // `replace` needs the member to exist; the API server defaults weight to 1,
            // but a route read from elsewhere may lack it, and `add` sets it either way.
            ops.push(if b.get("weight").is_some() {
                PatchOperation::Replace(ReplaceOperation {
                    path: at("weight"),
                    value: json!(w),
                })
            } else {
                PatchOperation::Add(json_patch::AddOperation {
                    path: at("weight"),
                    value: json!(w),
                })
            });
        }
    }
    if ops.is_empty() {
        return Err(ShiftError::NoBackend);
    }
    Ok(Patch(ops))
}

/// Reads the route (`kind`: `HTTPRoute` or `GRPCRoute`; their backendRefs have one shape),
/// patches its weights, and returns the route as the API server stored it.
pub async fn shift(
    client: Client,
    kind: &str,
    namespace: &str,
    name: &str,
    weights: &HashMap<String, u32>,
) -> Result<DynamicObject, ShiftError> {
    let (resource, plural) = match kind {
        "GRPCRoute" => (grpc_route_resource(), "grpcroutes"),
        _ => (http_route_resource(), "httproutes"),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &resource);
    let route = || format!("{kind} {namespace}/{name}");
    let current = api.get(name).await.map_err(|source| ShiftError::Read {
        route: route(),
        source,
    })?;
    let patch = weights_patch(&serde_json::to_value(&current).unwrap_or_default(), weights)?;
    api.patch(name, &PatchParams::default(), &KubePatch::Json::<()>(patch))
        .await
        .map_err(|source| ShiftError::Patch {
            route: route(),
            plural,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_tests_each_name_and_sets_each_weight() {
        let route = json!({"spec": {"rules": [
            {"backendRefs": [{"name": "billing-v1", "port": 80, "weight": 90},
                             {"name": "billing-v2", "port": 80, "weight": 10}]},
            {"backendRefs": [{"name": "billing-v2", "port": 80}]}
        ]}});
        let weights = HashMap::from([
            ("billing-v1".to_string(), 50),
            ("billing-v2".to_string(), 50),
        ]);
        let patch = weights_patch(&route, &weights).unwrap();
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!([
                {"op": "test", "path": "/spec/rules/0/backendRefs/0/name", "value": "billing-v1"},
                {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 50},
                {"op": "test", "path": "/spec/rules/0/backendRefs/1/name", "value": "billing-v2"},
                {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 50},
                {"op": "test", "path": "/spec/rules/1/backendRefs/0/name", "value": "billing-v2"},
                {"op": "add", "path": "/spec/rules/1/backendRefs/0/weight", "value": 50},
            ])
        );
        let mut applied = route.clone();
        json_patch::patch(&mut applied, &patch).unwrap();
        assert_eq!(applied["spec"]["rules"][0]["backendRefs"][0]["weight"], 50);
        assert_eq!(applied["spec"]["rules"][1]["backendRefs"][0]["weight"], 50);
        assert_eq!(applied["spec"]["rules"][0]["backendRefs"][1]["port"], 80);
    }

    #[test]
    fn a_route_reordered_meanwhile_fails_the_test_operation() {
        let route = json!({"spec": {"rules": [{"backendRefs": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]}]}});
        let patch = weights_patch(&route, &HashMap::from([("a".to_string(), 7)])).unwrap();
        let mut reordered = json!({"spec": {"rules": [{"backendRefs": [{"name": "b", "weight": 1}, {"name": "a", "weight": 1}]}]}});
        assert!(json_patch::patch(&mut reordered, &patch).is_err());
    }

    #[test]
    fn unknown_backends_are_refused() {
        let route = json!({"spec": {"rules": [{"backendRefs": [{"name": "a"}]}]}});
        let err = weights_patch(&route, &HashMap::from([("z".to_string(), 1)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("none of the given backends"), "{err}");
    }
}
