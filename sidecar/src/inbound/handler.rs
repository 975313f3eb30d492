//! One inbound request, in phases: normalize the path, pick the app port (`app_port.rs`),
//! authorize against the policies of that port (`authz.rs`), and deliver it to the local
//! app. mTLS and protocol detection happened before this, in `listen/`.

use super::app_port::app_port;
use super::authz::{self, PeerIdentity, authorize};
use crate::http::body::Body;
use crate::http::errors::ProxyError;
use crate::http::exchange::Exchange;
use crate::http::forward::forward;
use crate::http::headers::check_size;
use crate::http::normalize::normalize_uri;
use crate::http::respond::is_grpc;
use crate::shared::Shared;
use crate::telemetry::observe::Observation;
use crate::upstream::call::Call;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

/// `x-forwarded-client-cert` for the app, as Envoy writes it: who terminated mTLS (`By`) and
/// who the caller proved to be (`URI`). A value the caller sent is never passed on. Both
/// identities are fixed for a connection (rotation renews the certificate, not the SPIFFE
/// ID), so the value is made by the connection's first request and shared by the rest.
fn forwarded_client_cert(
    shared: &Shared,
    caller: Option<&PeerIdentity>,
    req: &mut Request<Incoming>,
) {
    const XFCC: &str = "x-forwarded-client-cert";
    req.headers_mut().remove(XFCC);
    let Some(caller) = caller else {
        return;
    };
    let value = caller.xfcc.get_or_init(|| {
        let peer = caller.id.as_ref()?;
        let by = shared
            .tls
            .as_ref()
            .and_then(|t| t.info.load_full())
            .map(|i| format!("By={};", i.id))
            .unwrap_or_default();
        http::HeaderValue::try_from(format!("{by}URI={peer}")).ok()
    });
    if let Some(v) = value {
        req.headers_mut().insert(XFCC, v.clone());
    }
}

/// Serves one inbound request. `redirected` is the original destination of a connection
/// iptables redirected here (an app port), `None` for one made to the listener itself;
/// `caller` is what the connection's TLS front door learnt (none for plaintext taken by
/// protocol detection).
pub async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    redirected: Option<SocketAddr>,
    caller: Option<Arc<PeerIdentity>>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut obs = Observation::start(&shared.labels, shared.bootstrap.access_log, "inbound", &req);
    let grpc = is_grpc(&req);
    obs.destination = shared.labels.inbound_service.clone();
    let caller = caller.as_deref();
    obs.source = caller.and_then(|p| p.labels.clone());
    if let Some(p) = caller {
        obs.use_series(&p.series, &shared.metrics, &shared.labels);
        obs.mtls = p.id.is_some();
        obs.use_golden(&p.golden, &shared.metrics, &shared.labels);
    }
    let res = async {
        check_size(req.headers(), shared.bootstrap.limits.max_header_bytes)?;
        // Fail closed: without a config there is no policy to check, so nothing reaches the app.
        let rt = shared.config.current_full().ok_or(ProxyError::NotReady)?;
        // Traced from here, so that a refused request is a span too.
        obs.trace(&mut req, shared.sample_percent(&rt, None), peer, || {
            shared.identity()
        });
        obs.peer_identity(|| caller?.id.as_ref().map(|id| id.to_string()));
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
        let peer_id = caller.and_then(|p| p.id.as_deref());
        let call = authz::Call::Http {
            method: req.method(),
            path: req.uri().path(),
            headers: req.headers(),
        };
        authorize(&shared, &rt, port, peer_id, &call)?;
        forwarded_client_cert(&shared, caller, &mut req);
        let cluster = shared.app.cluster(port)?;
        obs.cluster = Some(cluster.upstream.name.clone());
        let upgrade = hyper::upgrade::on(&mut req);
        let call = Call {
            upstreams: &shared.upstreams,
            cluster: &cluster.upstream,
            protocol: rt.port_policies.protocol(port),
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
    Ok(shared.finish(obs, res))
}
