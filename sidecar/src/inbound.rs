//! The inbound listener: requests from other sidecars to this workload, authorized against
//! the workload's AuthorizationPolicies and delivered to the local app. (mTLS is terminated
//! before this, in `server::serve_inbound`.)

use crate::authz::{self, PeerIdentity};
use crate::balance::{Balancer, EndpointState};
use crate::body::Body;
use crate::errors::ProxyError;
use crate::forward::forward;
use crate::headers::check_size;
use crate::observe::Observation;
use crate::resilience::{ClusterResilience, Exchange};
use crate::respond::is_grpc;
use crate::runtime::RtCluster;
use crate::upstream::Call;
use crate::{Shared, trace};
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use trellis_config::model::{LbPolicy, Resilience};
use trellis_config::snapshot::{Cluster, TargetPort};

/// One single-endpoint cluster per app port.
pub struct AppClusters {
    by_port: Vec<(u16, Arc<RtCluster>)>,
    default: Option<Arc<RtCluster>>,
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
        // With several app ports and no port in the Host, the one named `http` takes the request.
        let default = b
            .app
            .ports
            .get("http")
            .and_then(|p| by_port.iter().find(|(q, _)| q == p))
            .or(by_port.first())
            .map(|(_, c)| c.clone());
        AppClusters { by_port, default }
    }

    /// Where opaque TCP and Host-less requests go: the app port named `http`, else the first.
    pub fn default_cluster(&self) -> Option<&Arc<RtCluster>> {
        self.default.as_ref()
    }

    /// The cluster of app port `port`, if the app listens there.
    pub fn for_exact_port(&self, port: u16) -> Option<&Arc<RtCluster>> {
        self.by_port
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, c)| c)
    }

    /// The app port a request is for: the Host's port if the app listens there, else the default.
    fn for_port(&self, port: Option<u16>) -> Option<&Arc<RtCluster>> {
        port.and_then(|p| self.by_port.iter().find(|(q, _)| *q == p).map(|(_, c)| c))
            .or(self.default.as_ref())
    }
}

/// Where on the app a request goes. When the Host names a Service this proxy serves, that
/// Service port's targetPort decides (a number, or a name looked up in the bootstrap's app
/// ports); otherwise the Host's port if the app listens there, else the app's default port.
pub(crate) fn app_cluster<'a>(
    shared: &'a Shared,
    authority: Option<&Authority>,
) -> Option<&'a Arc<RtCluster>> {
    let target = authority.and_then(|a| {
        let rt = shared.config.current_full()?;
        let port = rt.service(a.host())?.port(a.port_u16())?;
        match port.target_port.as_ref()? {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Name(name) => shared.bootstrap.app.ports.get(name).copied(),
        }
    });
    target
        .and_then(|n| {
            shared
                .app
                .by_port
                .iter()
                .find(|(p, _)| *p == n)
                .map(|(_, c)| c)
        })
        .or_else(|| shared.app.for_port(authority.and_then(Authority::port_u16)))
}

/// Applies the workload's AuthorizationPolicies; a denial is counted and logged with the
/// caller's identity and the policy, and the app never sees the request.
fn authorize(
    shared: &Shared,
    req: &Request<Incoming>,
    authority: Option<&Authority>,
) -> Result<(), ProxyError> {
    let Some(rt) = shared.config.current_full() else {
        return Ok(());
    };
    let policies = &rt.snapshot.mesh.authorization;
    if policies.is_empty() {
        return Ok(());
    }
    let peer = req
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|p| p.0.as_deref());
    // The Service the Host names, when this workload serves it; otherwise every policy of
    // the workload applies.
    let service = authority
        .and_then(|a| rt.service(a.host()))
        .and_then(|s| s.label.split_once('.'))
        .map(|(name, ns)| format!("{ns}/{name}"))
        .filter(|key| rt.snapshot.inbound_services.contains(key));
    let call = authz::Call::Http {
        method: req.method(),
        path: req.uri().path(),
        headers: req.headers(),
    };
    authz::check(policies, service.as_deref(), peer, &call)
        .map_err(|denied| denial(shared, service.as_deref(), peer, &denied))
}

/// Counts and logs a denial, and builds the error the caller sees.
pub fn denial(
    shared: &Shared,
    service: Option<&str>,
    peer: Option<&trellis_identity::SpiffeId>,
    denied: &authz::Denied,
) -> ProxyError {
    let source_identity = peer.map_or_else(|| "a plaintext caller".to_string(), |p| p.to_string());
    let service = service
        .unwrap_or(shared.labels.inbound_service.as_str())
        .to_string();
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
        let authority = req.uri().authority().cloned().or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        });
        authorize(&shared, &req, authority.as_ref())?;
        forwarded_client_cert(&shared, &mut req);
        // A connection iptables redirected was sent to an app port: that port, when the app
        // listens there, whatever the Host says (a client outside the mesh may send any).
        let cluster = redirected
            .and_then(|d| shared.app.for_exact_port(d.port()))
            .or_else(|| app_cluster(&shared, authority.as_ref()))
            .ok_or(ProxyError::NotReady)?
            .clone();
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
