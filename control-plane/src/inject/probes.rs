//! Probe rewriting: kubelet's HTTP and gRPC probes move onto the proxy's admin port (never
//! redirected) at `/app-health/<container>/<kind>`; the original probe goes into an annotation
//! that the proxy reads to call the app over loopback.

// Under STRICT mTLS the app port accepts only mTLS, which kubelet's probes do not speak.

use k8s_openapi::api::core::v1::{Container, ContainerPort, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};
use std::collections::BTreeMap;

use super::sidecar::ADMIN_PORT;

/// Rewrites every app container's HTTP and gRPC probes and returns the originals as a JSON
/// object keyed `<container>/<liveness|readiness|startup>`, or "" when there were none. A
/// gRPC probe becomes an HTTP one on the admin port too: the proxy runs the gRPC health check
/// (`grpc.health.v1.Health/Check`) and answers 200 for SERVING.
pub fn rewrite(containers: &mut [Container]) -> String {
    let mut originals = BTreeMap::new();
    for c in containers {
        let ports = c.ports.clone().unwrap_or_default();
        let name = c.name.clone();
        for (kind, probe) in [
            ("liveness", &mut c.liveness_probe),
            ("readiness", &mut c.readiness_probe),
            ("startup", &mut c.startup_probe),
        ] {
            let Some(probe) = probe.as_mut() else {
                continue;
            };
            let Some((port, original)) = original(probe, &ports) else {
                continue;
            };
            if port == ADMIN_PORT {
                continue; // already rewritten, or the app probes the proxy itself
            }
            originals.insert(format!("{name}/{kind}"), original);
            // A probe has exactly one handler.
            probe.grpc = None;
            probe.http_get = Some(HTTPGetAction {
                path: Some(format!("/app-health/{name}/{kind}")),
                port: IntOrString::Int(ADMIN_PORT),
                scheme: Some("HTTP".into()),
                ..Default::default()
            });
        }
    }
    if originals.is_empty() {
        String::new()
    } else {
        serde_json::Value::from(serde_json::Map::from_iter(originals)).to_string()
    }
}

/// The port a probe checks and what the proxy needs to replay it, or `None` for a probe
/// left as written: TCP and exec probes, an HTTP probe with `host` set (it checks another
/// address, not this pod) or naming a port no container has (kubelet would fail it too).
fn original(probe: &Probe, ports: &[ContainerPort]) -> Option<(i32, Value)> {
    if let Some(get) = &probe.http_get {
        if get.host.is_some() {
            return None;
        }
        let port = match &get.port {
            IntOrString::Int(p) => *p,
            IntOrString::String(n) => {
                ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(n.as_str()))?
                    .container_port
            }
        };
        let original = json!({
            "port": port,
            "path": get.path.clone().unwrap_or_else(|| "/".into()),
            "scheme": get.scheme.clone().unwrap_or_else(|| "HTTP".into()),
            "httpHeaders": get.http_headers.clone().unwrap_or_default(),
        });
        return Some((port, original));
    }
    let grpc = probe.grpc.as_ref()?;
    let original = json!({
        "port": grpc.port,
        "scheme": "GRPC",
        "service": grpc.service.clone().unwrap_or_default(),
    });
    Some((grpc.port, original))
}
