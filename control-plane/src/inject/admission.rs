//! AdmissionReview v1 in, AdmissionReview v1 out: a JSONPatch that injects the pod, or a
//! denial whose message `kubectl` shows.

use super::{InjectConfig, Outcome, inject_pod};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde_json::Value;

/// Answers one AdmissionReview request body. Never fails: a body that is not an
/// AdmissionReview gets an `invalid` review, as the API server expects.
pub fn review(body: &[u8], cfg: &InjectConfig) -> Vec<u8> {
    let response = match serde_json::from_slice::<AdmissionReview<Pod>>(body) {
        Err(e) => AdmissionResponse::invalid(format!("not an AdmissionReview v1 of a Pod: {e}")),
        Ok(review) => match TryInto::<AdmissionRequest<Pod>>::try_into(review) {
            Err(e) => AdmissionResponse::invalid(e),
            Ok(req) => respond(&req, cfg),
        },
    };
    // An AdmissionReview is plain data; serializing it cannot fail.
    let mut review = serde_json::to_value(response.into_review()).unwrap_or_default();
    // kube writes `patch` (Go `[]byte`) as an array of numbers, which Go's decoder accepts;
    // the API's schema says a base64 string (`format: byte`), so send that.
    if let Some(patch) = review.pointer_mut("/response/patch")
        && let Ok(bytes) = serde_json::from_value::<Vec<u8>>(patch.clone())
    {
        *patch = serde_json::to_value(k8s_openapi::ByteString(bytes)).unwrap_or_default();
    }
    serde_json::to_vec(&review).unwrap_or_default()
}

/// The decision for one request.
pub(crate) fn respond(req: &AdmissionRequest<Pod>, cfg: &InjectConfig) -> AdmissionResponse {
    let allow = AdmissionResponse::from(req);
    let Some(pod) = &req.object else {
        return allow; // a DELETE, or a kind we were not asked about
    };
    let mut patched = pod.clone();
    let spec = patched.spec.get_or_insert_with(Default::default);
    match inject_pod(&mut patched.metadata, spec, cfg) {
        Ok(Outcome::Injected) => match allow.clone().with_patch(pod_patch(pod, &patched)) {
            Ok(r) => r,
            Err(e) => deny(
                allow,
                &format!("trellis injector: cannot encode the patch: {e}"),
            ),
        },
        Ok(Outcome::AlreadyInjected | Outcome::OptedOut) => allow,
        Err(e) => deny(allow, &format!("trellis injector: {e}")),
    }
}

fn deny(resp: AdmissionResponse, message: &str) -> AdmissionResponse {
    let mut resp = resp.deny(message);
    resp.result.code = 403;
    resp.result.reason = "Forbidden".into();
    resp
}

/// The JSONPatch from `before` to `after`, written as the few inserts and replaces the
/// injector makes, so fields of the user's objects this build does not know are kept.
pub(crate) fn pod_patch(before: &Pod, after: &Pod) -> Patch {
    let mut ops = Vec::new();
    let ptr = |tokens: &[&str]| PointerBuf::from_tokens(tokens.iter().copied());
    let add = |path: PointerBuf, value: Value| PatchOperation::Add(AddOperation { path, value });

    // Annotations: one `add` per new or changed key.
    let old_ann = before.metadata.annotations.clone().unwrap_or_default();
    let new_ann = after.metadata.annotations.clone().unwrap_or_default();
    if before.metadata.annotations.is_none() && !new_ann.is_empty() {
        ops.push(add(ptr(&["metadata", "annotations"]), json(&new_ann)));
    } else {
        for (k, v) in &new_ann {
            if old_ann.get(k) != Some(v) {
                ops.push(add(
                    ptr(&["metadata", "annotations", k]),
                    Value::from(v.clone()),
                ));
            }
        }
    }

    let (Some(b), Some(a)) = (&before.spec, &after.spec) else {
        return Patch(ops);
    };
    // Init containers: ours are inserted at the front, the user's keep their order.
    let old_init = b.init_containers.as_deref().unwrap_or_default();
    let new_init = a.init_containers.as_deref().unwrap_or_default();
    let added = new_init.len().saturating_sub(old_init.len());
    if b.init_containers.is_none() {
        ops.push(add(ptr(&["spec", "initContainers"]), json(&new_init)));
    } else {
        for (i, c) in new_init.iter().take(added).enumerate() {
            ops.push(add(
                ptr(&["spec", "initContainers", &i.to_string()]),
                json(c),
            ));
        }
    }
    // Volumes: appended.
    let old_vol = b.volumes.as_deref().unwrap_or_default();
    let new_vol = a.volumes.as_deref().unwrap_or_default();
    if b.volumes.is_none() && !new_vol.is_empty() {
        ops.push(add(ptr(&["spec", "volumes"]), json(&new_vol)));
    } else {
        for v in new_vol.iter().skip(old_vol.len()) {
            ops.push(add(ptr(&["spec", "volumes", "-"]), json(v)));
        }
    }
    // Probes: the rewritten httpGet replaces the original one; a rewritten gRPC probe loses
    // its `grpc` handler and gains the httpGet (a probe has exactly one handler).
    for (i, (old, new)) in b.containers.iter().zip(&a.containers).enumerate() {
        for (field, o, n) in [
            ("livenessProbe", &old.liveness_probe, &new.liveness_probe),
            ("readinessProbe", &old.readiness_probe, &new.readiness_probe),
            ("startupProbe", &old.startup_probe, &new.startup_probe),
        ] {
            let (Some(o), Some(n)) = (o, n) else { continue };
            if o.http_get == n.http_get {
                continue;
            }
            let at = |handler: &str| ptr(&["spec", "containers", &i.to_string(), field, handler]);
            if o.grpc.is_some() && n.grpc.is_none() {
                ops.push(PatchOperation::Remove(json_patch::RemoveOperation {
                    path: at("grpc"),
                }));
                ops.push(add(at("httpGet"), json(&n.http_get)));
            } else {
                ops.push(PatchOperation::Replace(ReplaceOperation {
                    path: at("httpGet"),
                    value: json(&n.http_get),
                }));
            }
        }
    }
    Patch(ops)
}

fn json<T: serde::Serialize + ?Sized>(v: &T) -> Value {
    // k8s-openapi types and string maps always serialize.
    serde_json::to_value(v).unwrap_or_default()
}
