//! Probe rewriting: kubelet's HTTP probes would reach the app port, which under STRICT mTLS
//! only accepts mTLS. They are moved onto the proxy's admin port (never redirected), at
//! `/app-health/<container>/<kind>`; the original probe goes into an annotation that the proxy
//! reads to call the app over loopback.

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;
use std::collections::BTreeMap;

use super::sidecar::ADMIN_PORT;

/// Rewrites every app container's HTTP probes and returns the originals as a JSON object
/// keyed `<container>/<liveness|readiness|startup>`, or "" when there were none.
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
            let Some(get) = probe.as_mut().and_then(|p: &mut Probe| p.http_get.as_mut()) else {
                continue;
            };
            // A probe with `host` set checks another address, not this pod: leave it.
            if get.host.is_some() {
                continue;
            }
            let port = match &get.port {
                IntOrString::Int(p) => *p,
                IntOrString::String(n) => {
                    match ports.iter().find(|p| p.name.as_deref() == Some(n.as_str())) {
                        Some(p) => p.container_port,
                        // kubelet would fail this probe too; keep it as the user wrote it.
                        None => continue,
                    }
                }
            };
            if port == ADMIN_PORT {
                continue; // already rewritten, or the app probes the proxy itself
            }
            originals.insert(
                format!("{name}/{kind}"),
                json!({
                    "port": port,
                    "path": get.path.clone().unwrap_or_else(|| "/".into()),
                    "scheme": get.scheme.clone().unwrap_or_else(|| "HTTP".into()),
                    "httpHeaders": get.http_headers.clone().unwrap_or_default(),
                }),
            );
            *get = HTTPGetAction {
                path: Some(format!("/app-health/{name}/{kind}")),
                port: IntOrString::Int(ADMIN_PORT),
                scheme: Some("HTTP".into()),
                ..Default::default()
            };
        }
    }
    if originals.is_empty() {
        String::new()
    } else {
        serde_json::Value::from(serde_json::Map::from_iter(originals)).to_string()
    }
}
