//! Writing statuses: each wanted patch to the object's `status` subresource, and `Accepted`
//! on the `trellis` GatewayClass.

use super::condition::{Condition, now};
use super::patches::StatusPatch;
use crate::kubernetes::kinds::{
    CONTROLLER, GATEWAY_CLASS, gateway_class_resource, gateway_resource, grpc_route_resource,
    http_route_resource,
};
use kube::Api;
use kube::Client;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

fn resource(kind: &str) -> ApiResource {
    match kind {
        "HTTPRoute" => http_route_resource(),
        "GRPCRoute" => grpc_route_resource(),
        _ => gateway_resource(),
    }
}

/// Marks the `trellis` GatewayClass `Accepted`, if it names Trellis' controller and is not
/// marked yet. `true` once there is nothing left to do (accepted, or another controller's).
async fn accept_class(client: &Client, now: &str) -> bool {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &gateway_class_resource());
    let class = match api.get_opt(GATEWAY_CLASS).await {
        Ok(Some(c)) => c,
        Ok(None) => return false, // not created yet; tried again on the next change
        Err(e) => {
            tracing::debug!("GatewayClass {GATEWAY_CLASS} not read: {e}");
            return false;
        }
    };
    if class.data["spec"]["controllerName"].as_str() != Some(CONTROLLER) {
        tracing::warn!(
            "GatewayClass {GATEWAY_CLASS} names controller {}, not {CONTROLLER}; Trellis serves its Gateways but leaves its status alone",
            class.data["spec"]["controllerName"]
        );
        return true;
    }
    let accepted = Condition::new(
        "Accepted",
        true,
        "Accepted",
        "handled by the Trellis control plane",
    );
    let old = &class.data["status"]["conditions"];
    let conditions = json!([accepted.to_json(class.metadata.generation, Some(old), now)]);
    if *old == conditions {
        return true;
    }
    let body = json!({"metadata": {"resourceVersion": class.metadata.resource_version}, "status": {"conditions": conditions}});
    api.patch_status(GATEWAY_CLASS, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .is_ok()
}

/// Writes the latest set of status patches, forever. A newer set replaces one not yet
/// written; each write is independent, and a failed one waits for the next change. Each
/// write carries the object's resourceVersion: a write that raced a change is refused (409)
/// and the change's own watch event computes the status again.
pub async fn write(client: Client, mut wanted: watch::Receiver<Vec<StatusPatch>>) {
    static FORBIDDEN_LOGGED: AtomicBool = AtomicBool::new(false);
    let mut class_done = false;
    loop {
        if !class_done {
            class_done = accept_class(&client, &now()).await;
        }
        if wanted.changed().await.is_err() {
            return;
        }
        let batch = wanted.borrow_and_update().clone();
        for p in batch {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &p.namespace, &resource(p.kind));
            match api
                .patch_status(&p.name, &PatchParams::default(), &Patch::Merge(&p.body))
                .await
            {
                Ok(_) => {
                    tracing::debug!(kind = p.kind, namespace = %p.namespace, name = %p.name, "status written")
                }
                // Changed meanwhile (409) or deleted (404): its watch event brings a new pass.
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
                Err(kube::Error::Api(e)) if e.code == 403 => {
                    if !FORBIDDEN_LOGGED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            kind = p.kind,
                            "may not write status ({}); the ClusterRole in k8s/install/rbac.yaml grants patch on httproutes/status, grpcroutes/status and gateways/status",
                            e.message
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(kind = p.kind, namespace = %p.namespace, name = %p.name, "status not written: {e}")
                }
            }
        }
    }
}
