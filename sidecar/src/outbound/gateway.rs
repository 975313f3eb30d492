//! Gateway mode: listeners that take plain requests from clients outside the mesh, match
//! them against the HTTPRoutes attached to this proxy's Gateway (host, then path, method,
//! headers, query), and send them on to mesh Services like any outbound request.

use crate::config::runtime::{RtGatewayRoute, Runtime};
use crate::http::body::Body;
use crate::http::errors::ProxyError;
use crate::http::headers::check_size;
use crate::http::respond::is_grpc;
use crate::outbound::handler::{Scheme, Upstream, destination, dispatch};
use crate::shared::Shared;
use crate::telemetry::observe::Observation;
use http::{Request, Response};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

/// Which Gateway listener a connection arrived on.
#[derive(Clone)]
pub struct ListenerId {
    /// `namespace/name` of the Gateway.
    pub gateway: Arc<str>,
    pub listener: Arc<str>,
}

pub async fn handle(
    shared: Arc<Shared>,
    id: ListenerId,
    peer: SocketAddr,
    scheme: Scheme,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut obs = Observation::start(&shared.labels, shared.bootstrap.access_log, "gateway", &req);
    let grpc = is_grpc(&req);
    let res = match shared.config.current_full() {
        None => Err(ProxyError::NotReady),
        Some(rt) => route(&shared, &rt, &id, peer, scheme, req, &mut obs).await,
    };
    let res = res.unwrap_or_else(|e| obs.failed(e, grpc));
    Ok(shared.finish(obs, res))
}

async fn route(
    shared: &Shared,
    rt: &Runtime,
    id: &ListenerId,
    peer: SocketAddr,
    scheme: Scheme,
    mut req: Request<Incoming>,
    obs: &mut Observation,
) -> Result<Response<Body>, ProxyError> {
    // Phase 1: limits the hyper codec does not enforce itself.
    check_size(req.headers(), shared.bootstrap.limits.max_header_bytes)?;
    // One path from here on: routing matches what the next hop receives.
    obs.trace(
        &mut req,
        shared.sample_percent(rt, Some(&id.gateway)),
        peer,
        || shared.identity(),
    );
    // The edge says who the client is; what the client said about that is not believed.
    let trusted = (shared.bootstrap.gateway.as_ref()).map_or(0, |g| g.trusted_proxies);
    let client = super::forwarded::set(
        req.headers_mut(),
        peer.ip().to_canonical(),
        trusted,
        scheme.as_str(),
    );
    crate::http::normalize::normalize_uri(req.uri_mut(), &rt.snapshot.mesh.path_normalization)?;

    // Phase 2: the listener's routes, then the first whose hostname and match fit.
    let routes = rt
        .gateways
        .get(&*id.gateway)
        .and_then(|g| g.get(&*id.listener))
        .map(|l| &l.routes)
        .ok_or_else(|| ProxyError::NoGateway {
            gateway: format!("{} (listener {})", id.gateway, id.listener),
        })?;
    let authority = destination(&req)?;
    let host = authority
        .host()
        .strip_suffix('.')
        .unwrap_or(authority.host());
    let chosen = routes
        .iter()
        .find(|r| {
            host_fits(r, host)
                && r.rule
                    .matcher
                    .matches(req.method(), req.uri(), req.headers())
        })
        .ok_or_else(|| ProxyError::NoMatchingRule {
            route: format!("of Gateway {}", id.gateway),
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
        })?;
    obs.route = chosen.rule.route.clone();

    // Phase 3 on: as outbound, with the backend Service as the upstream host.
    dispatch(
        shared,
        rt,
        peer,
        req,
        &chosen.rule,
        &authority,
        obs,
        Upstream::Gateway { scheme, client },
    )
    .await
}

/// Gateway API hostname matching, case-insensitive and without allocating: exact, or
/// `*.suffix` with at least one label in place of the `*`.
fn host_fits(r: &RtGatewayRoute, host: &str) -> bool {
    let Some(want) = &r.hostname else {
        return true;
    };
    match want.strip_prefix('*') {
        Some(suffix) => {
            host.len() > suffix.len()
                && host.is_char_boundary(host.len() - suffix.len())
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => host.eq_ignore_ascii_case(want),
    }
}
