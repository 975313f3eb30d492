//! The inbound listener: requests from other sidecars to this workload, authorized against
//! the workload's AuthorizationPolicies and delivered to the local app. (mTLS is terminated
//! before this, in `server::serve_inbound`.)

use crate::authz::{self, PeerIdentity};
use crate::balance::{Balancer, EndpointState};
use crate::body::Body;
use crate::delivery::AppPorts;
use crate::errors::ProxyError;
use crate::forward::forward;
use crate::headers::check_size;
use crate::normalize::normalize_uri;
use crate::observe::Observation;
use crate::resilience::{ClusterResilience, Exchange};
use crate::respond::is_grpc;
use crate::runtime::{RtCluster, Runtime};
use crate::upstream::Call;
use crate::{Shared, trace};
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use trellis_config::model::{LbPolicy, Resilience};
use trellis_config::snapshot::Cluster;

/// One single-endpoint cluster per app port.
pub struct AppClusters {
    by_port: Vec<(u16, Arc<RtCluster>)>,
    /// The app's ports by name, and its default port.
    pub ports: AppPorts,
}

impl AppClusters {
    pub fn new(b: &crate::bootstrap::Bootstrap) -> AppClusters {
        let by_port: Vec<(u16, Arc<RtCluster>)> = b
            .app
            .ports
            .values()
            .map(|&port| {
                let addr = SocketAddr::new(b.app.address, port);
                let name = format!("inbound|{port}");
                let ep = Arc::new(EndpointState::new(addr, b.workload.name.clone()));
                let config = Cluster {
                    name: name.clone(),
                    service: format!("{}/{}", b.workload.namespace, b.workload.name),
                    port,
                    protocol: Default::default(),
                    endpoints: vec![trellis_config::snapshot::Endpoint {
                        address: addr,
                        workload: b.workload.name.clone(),
                        service_account: b.workload.service_account.clone(),
                        identity: None,
                        sidecar: false,
                    }],
                    resilience: Resilience::default(),
                    dns: None,
                };
                let balancer = Balancer {
                    policy: LbPolicy::RoundRobin,
                    endpoints: vec![ep],
                    cursor: Default::default(),
                    ring: None,
                };
                (
                    port,
                    Arc::new(RtCluster {
                        name: Arc::new(name),
                        service_label: Arc::new(format!(
                            "{}.{}",
                            b.workload.name, b.workload.namespace
                        )),
                        config,
                        balancer,
                        hash_key: None,
                        resilience: ClusterResilience::default(),
                    }),
                )
            })
            .collect();
        AppClusters {
            by_port,
            ports: AppPorts::new(&b.app.ports),
        }
    }

    /// The cluster of app port `port`, if the app listens there.
    pub fn for_exact_port(&self, port: u16) -> Option<&Arc<RtCluster>> {
        self.by_port
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, c)| c)
    }

    /// The cluster of `port`, which `app_port` chose among the app's ports.
    pub(crate) fn cluster(&self, port: u16) -> Result<Arc<RtCluster>, ProxyError> {
        self.for_exact_port(port)
            .cloned()
            .ok_or(ProxyError::NoAppPorts)
    }
}

/// The app port an inbound request goes to.
/// - A connection iptables redirected was sent to an app port: that port, when the app
///   listens there, whatever the Host says (a client outside the mesh may send any).
/// - A Host naming a Service this workload serves: that Service port's target. A port the
///   Service lacks, or a target the app lacks, is refused; the Host never picks another port.
/// - Any other Host: its port when the app listens there, else the default port.
pub(crate) fn app_port(
    rt: &Runtime,
    app: &AppPorts,
    redirected: Option<u16>,
    authority: Option<&Authority>,
) -> Result<u16, ProxyError> {
    if let Some(p) = redirected.filter(|&p| app.has(p)) {
        return Ok(p);
    }
    let named = authority.and_then(|a| Some((rt.service(a.host())?, a.port_u16())));
    if let Some((svc, port)) = named.filter(|(svc, _)| svc.serves) {
        let sp = svc.port(port).ok_or_else(|| ProxyError::NoServicePort {
            service: svc.label.to_string(),
            port: port.unwrap_or(80),
        })?;
        return app
            .target(sp.port, sp.target_port.as_ref())
            .ok_or_else(|| ProxyError::NoAppPort {
                service: svc.label.to_string(),
                port: sp.port,
            });
    }
    authority
        .and_then(Authority::port_u16)
        .filter(|&p| app.has(p))
        .or(app.default)
        .ok_or(ProxyError::NoAppPorts)
}

/// Applies the AuthorizationPolicies that protect app port `port`; a denial is counted and
/// logged with the caller's identity and the policy, and the app never sees the request.
pub(crate) fn authorize(
    shared: &Shared,
    rt: &Runtime,
    port: u16,
    peer: Option<&trellis_identity::SpiffeId>,
    call: &authz::Call<'_>,
) -> Result<(), ProxyError> {
    let policies = &rt.snapshot.mesh.authorization;
    // The common case, no policy at all, costs one length check.
    if policies.is_empty() {
        return Ok(());
    }
    authz::check(rt.port_policies.for_port(policies, port), peer, call)
        .map_err(|denied| denial(shared, port, peer, &denied))
}

/// Counts and logs a denial, and builds the error the caller sees.
fn denial(
    shared: &Shared,
    port: u16,
    peer: Option<&trellis_identity::SpiffeId>,
    denied: &authz::Denied,
) -> ProxyError {
    let source_identity = peer.map_or_else(|| "a plaintext caller".to_string(), |p| p.to_string());
    let service = format!("{} (app port {port})", shared.labels.inbound_service);
    shared
        .metrics
        .security
        .denied
        .get_or_create(&crate::tls::metrics::DenyLabels {
            destination_service: shared.labels.inbound_service.clone(),
            policy: Arc::new(denied.policy_label().to_string()),
        })
        .inc();
    tracing::warn!(source = %source_identity, %service, policy = denied.policy_label(), "request denied by authorization");
    ProxyError::Unauthorized {
        source_identity,
        service,
        reason: denied.reason(),
    }
}

/// `x-forwarded-client-cert` for the app, as Envoy writes it: who terminated mTLS (`By`) and
/// who the caller proved to be (`URI`). A value the caller sent is never passed on.
fn forwarded_client_cert(shared: &Shared, req: &mut Request<Incoming>) {
    const XFCC: &str = "x-forwarded-client-cert";
    req.headers_mut().remove(XFCC);
    let Some(peer) = req
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|p| p.0.clone())
    else {
        return;
    };
    let by = shared
        .tls
        .as_ref()
        .and_then(|t| t.info.load_full())
        .map(|i| format!("By={};", i.id))
        .unwrap_or_default();
    if let Ok(v) = http::HeaderValue::try_from(format!("{by}URI={peer}")) {
        req.headers_mut().insert(XFCC, v);
    }
}

/// Serves one inbound request. `redirected` is the original destination of a connection
/// iptables redirected here (an app port), `None` for one made to the listener itself.
pub async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    redirected: Option<SocketAddr>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut obs = Observation::start(&shared, "inbound", &req);
    let grpc = is_grpc(&req);
    obs.destination = shared.labels.inbound_service.clone();
    let res = async {
        check_size(req.headers(), shared.bootstrap.limits.max_header_bytes)?;
        // Fail closed: without a config there is no policy to check, so nothing reaches the app.
        let rt = shared.config.current_full().ok_or(ProxyError::NotReady)?;
        // One path from here on: what authorization checks is what the app receives.
        normalize_uri(req.uri_mut(), &rt.snapshot.mesh.path_normalization)?;
        let authority = req.uri().authority().cloned().or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        });
        let port = app_port(
            &rt,
            &shared.app.ports,
            redirected.map(|d| d.port()),
            authority.as_ref(),
        )?;
        let peer_id = req
            .extensions()
            .get::<PeerIdentity>()
            .and_then(|p| p.0.as_deref());
        let call = authz::Call::Http {
            method: req.method(),
            path: req.uri().path(),
            headers: req.headers(),
        };
        authorize(&shared, &rt, port, peer_id, &call)?;
        forwarded_client_cert(&shared, &mut req);
        let cluster = shared.app.cluster(port)?;
        obs.cluster = Some(cluster.name.clone());
        obs.trace = Some(trace::propagate(req.headers_mut()));
        let upgrade = hyper::upgrade::on(&mut req);
        let version = req.version();
        let call = Call {
            upstreams: &shared.upstreams,
            cluster: &cluster,
            downstream_version: version,
            peer: peer.ip(),
        };
        let ex = Exchange::new(req.map(Body::Incoming));
        let fwd = forward(call, ex, Some(upgrade))
            .await
            .map_err(|e| match e {
                ProxyError::Connect {
                    endpoint, source, ..
                } => ProxyError::AppUnavailable {
                    addr: endpoint,
                    source,
                },
                other => other,
            })?;
        obs.endpoint = Some(fwd.endpoint);
        Ok(fwd.response)
    }
    .await;
    let res = res.unwrap_or_else(|e| obs.failed(e, grpc));
    Ok(obs.finish(&shared, res))
}
