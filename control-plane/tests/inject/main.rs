//! The injector fed real AdmissionReview v1 JSON (a Pod, a Deployment's pod and a Job's pod,
//! as the API server sends them after its own defaulting): what the patch adds, that it is
//! idempotent, that opted-out pods are untouched, and that bad pods are denied clearly.

#[path = "../k8s/mod.rs"]
mod k8s;

mod denials;
mod patch;
mod proxy_contract;

use serde_json::Value;

fn container<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {list}"))
}
