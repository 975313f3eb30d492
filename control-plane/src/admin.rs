//! The admin gRPC API behind the `trellis` CLI: status, proxy config, routes and shift.

use crate::state::ControlPlane;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tonic::{Request, Response, Status};
use trellis_config::NodeIdentity;
use trellis_config::snapshot::{RouteMatch, Snapshot};
use trellis_proto::v1::admin_server::Admin;
use trellis_proto::v1::*;

pub struct AdminService(pub Arc<ControlPlane>);

/// The admin API's gate: with `loopback_only`, calls from other addresses are refused. In
/// Kubernetes the gRPC Service is reachable from every pod (proxies need discovery and
/// Certify), but only operators may read the mesh's config or shift traffic, and
/// `kubectl port-forward` (which the cluster's RBAC guards) arrives on loopback.
pub fn admit(
    loopback_only: bool,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let local = req
            .remote_addr()
            .is_some_and(|a| a.ip().to_canonical().is_loopback());
        if loopback_only && !local {
            return Err(Status::permission_denied(
                "the admin API answers only on loopback in Kubernetes mode: run `kubectl -n trellis-system port-forward deploy/trellis-control 15010` and use --control-plane https://127.0.0.1:15010",
            ));
        }
        Ok(req)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let cp = &self.0;
        let proxies = cp
            .registry
            .snapshot()
            .into_iter()
            .map(|e| {
                let (nack_version, nack_error) = e.last_nack.unwrap_or_default();
                ProxyStatus {
                    workload: e.node.workload,
                    namespace: e.node.namespace,
                    connected: e.connected,
                    connected_since_unix: e
                        .connected_since
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64),
                    latest_version: e.latest_version,
                    acked_version: e.acked_version,
                    last_nack_version: nack_version,
                    last_nack_error: nack_error,
                    inbound: e.node.inbound,
                }
            })
            .collect();
        Ok(Response::new(StatusResponse {
            proxies,
            config_errors: cp
                .config_errors()
                .map(|e| e.0.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            config_source: if cp.kube.get().is_some() {
                "kubernetes".to_string()
            } else {
                cp.opts.config.display().to_string()
            },
            config_partial: cp.config_partial(),
            dashboard_url: (cp.dashboard.get())
                .map(|a| format!("http://{a}/"))
                .unwrap_or_default(),
        }))
    }

    async fn stat(&self, req: Request<StatRequest>) -> Result<Response<StatResponse>, Status> {
        let secs = match req.into_inner().window_seconds {
            0 => 60,
            s => s,
        };
        let window = Duration::from_secs(u64::from(secs));
        Ok(Response::new(
            crate::golden::peers::gather(&self.0.golden, &self.0.opts.peers, window).await,
        ))
    }

    async fn proxy_config(
        &self,
        req: Request<ProxyConfigRequest>,
    ) -> Result<Response<ProxyConfigResponse>, Status> {
        let cp = &self.0;
        let want = req.into_inner().workload;
        let (ns, name) = match want.split_once('/') {
            Some((ns, n)) => (Some(ns.to_string()), n.to_string()),
            None => (None, want.clone()),
        };
        let entry = cp
            .registry
            .snapshot()
            .into_iter()
            .filter(|e| {
                e.node.workload == name && ns.as_ref().is_none_or(|ns| *ns == e.node.namespace)
            })
            .max_by_key(|e| e.connected)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no proxy named {want:?} is registered; see trellis status"
                ))
            })?;
        let world = cp.world().ok_or_else(|| {
            Status::failed_precondition(
                "no valid config is loaded yet; see trellis status for the errors",
            )
        })?;
        let c = world.compiled_for_proxy(
            &cp.serving_identity(&entry.identity),
            entry.gateway.as_deref(),
            entry.protocol,
            &cp.metrics.compilations,
        );
        Ok(Response::new(ProxyConfigResponse {
            version: c.version.clone(),
            snapshot_json: serde_json::to_string(&world.snapshot(&c)).unwrap_or_default(),
        }))
    }

    async fn routes(
        &self,
        req: Request<RoutesRequest>,
    ) -> Result<Response<RoutesResponse>, Status> {
        let filter = req.into_inner().service;
        let routes = routes(&self.0, &filter)?;
        if routes.is_empty() && !filter.is_empty() {
            return Err(Status::not_found(format!(
                "no Service matches {filter:?}; use name, name.namespace or namespace/name"
            )));
        }
        Ok(Response::new(RoutesResponse { routes }))
    }

    async fn shift(&self, req: Request<ShiftRequest>) -> Result<Response<ShiftResponse>, Status> {
        let r = req.into_inner();
        let timeout = if r.timeout_ms == 0 {
            Duration::from_secs(30)
        } else {
            Duration::from_millis(r.timeout_ms)
        };
        let weights = r.weights.into_iter().collect();
        crate::shift::shift(&self.0, &r.route, &weights, timeout)
            .await
            .map(Response::new)
    }
}

/// The effective routes of the Services `filter` names (all when empty), as `trellis routes`
/// and the dashboard show them.
pub(crate) fn routes(cp: &ControlPlane, filter: &str) -> Result<Vec<RouteLine>, Status> {
    let world = cp.world().ok_or_else(|| {
        Status::failed_precondition(
            "no valid config is loaded yet; see trellis status for the errors",
        )
    })?;
    // Routes do not depend on who asks; any node's view lists them all.
    let c = world.compiled_for(
        &NodeIdentity {
            namespace: "default".into(),
            ..Default::default()
        },
        &cp.metrics.compilations,
    );
    Ok(route_lines(&world.snapshot(&c), filter))
}

fn route_lines(snap: &Snapshot, filter: &str) -> Vec<RouteLine> {
    let mut out = Vec::new();
    for (key, svc) in &snap.services {
        let dotted = format!("{}.{}", svc.name, svc.namespace);
        if !filter.is_empty() && filter != key && filter != dotted && filter != svc.name {
            continue;
        }
        for port in &svc.ports {
            for rule in &port.routes {
                // A consumer route (GEP-1426) serves only its own namespace's clients.
                let mut r#match = describe(&rule.matches);
                if let Some(ns) = &rule.consumer_namespace {
                    r#match.push_str(&format!(" (clients in {ns} only)"));
                }
                out.push(RouteLine {
                    service: key.clone(),
                    port: u32::from(port.port),
                    route: rule.route.clone(),
                    r#match,
                    backends: rule
                        .backends
                        .iter()
                        .map(|b| format!("{}={}", b.cluster, b.weight))
                        .collect(),
                });
            }
        }
    }
    out
}

fn describe(m: &RouteMatch) -> String {
    let mut s = format!("{:?} {}", m.path_type, m.path);
    if let Some(method) = m.method {
        s.push_str(&format!(" method={}", method.as_str()));
    }
    for h in &m.headers {
        s.push_str(&format!(" header:{}={}", h.name, h.value));
    }
    for q in &m.query_params {
        s.push_str(&format!(" query:{}={}", q.name, q.value));
    }
    s
}
