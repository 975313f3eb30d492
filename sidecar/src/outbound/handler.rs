//! The outbound listener: the app's own requests to other Services. Plain async code in
//! phases: check the request, resolve the Service, route, apply filters, forward.

use crate::config::runtime::{RtRule, Runtime};
use crate::http::body::Body;
use crate::http::errors::ProxyError;
use crate::http::exchange::Exchange;
use crate::http::forward::forward;
use crate::http::headers::{check_size, same_head};
use crate::http::respond::is_grpc;
use crate::outbound::filters::{Redirect, rewrite_path, with_path};
use crate::resilience::stack;
use crate::shared::Shared;
use crate::telemetry::observe::Observation;
use crate::upstream::call::Call;
use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use rand::Rng;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;
use trellis_config::snapshot::Filter;

/// Handles one request. `original_dst` is the connection's destination before iptables
/// redirected it; when it is a Service's `clusterIP:port`, that Service port takes the
/// request whatever its `Host` says.
pub async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    original_dst: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let mut obs = Observation::start(
        &shared.labels,
        shared.bootstrap.access_log,
        "outbound",
        &req,
    );
    let grpc = is_grpc(&req);
    let res = match shared.config.current_full() {
        None => Err(ProxyError::NotReady),
        Some(rt) => route(&shared, &rt, peer, original_dst, req, &mut obs).await,
    };
    let res = res.unwrap_or_else(|e| obs.failed(e, grpc));
    Ok(shared.finish(obs, res))
}

async fn route(
    shared: &Shared,
    rt: &Runtime,
    peer: SocketAddr,
    original_dst: Option<SocketAddr>,
    mut req: Request<Incoming>,
    obs: &mut Observation,
) -> Result<Response<Body>, ProxyError> {
    // Phase 1: limits the hyper codec does not enforce itself.
    check_size(req.headers(), shared.bootstrap.limits.max_header_bytes)?;
    // One path from here on: routing matches what the next hop receives.
    crate::http::normalize::normalize_uri(req.uri_mut(), &rt.snapshot.mesh.path_normalization)?;

    // Phase 2: which Service, which port: the original destination under interception,
    // else the Host.
    let authority = destination(&req)?;
    let (svc, port) = match original_dst.and_then(|d| rt.by_original_dst(d)) {
        Some(found) => found,
        None => {
            let host = authority.host();
            let Some(svc) = rt.service(host) else {
                if let Some(label) = rt.outside_scope(Some(host), original_dst.map(|d| d.ip())) {
                    obs.destination = label.clone();
                    return Err(rt.not_in_scope(label));
                }
                return Err(ProxyError::NoService {
                    host: host.to_string(),
                });
            };
            let port = svc
                .port(authority.port_u16())
                .ok_or_else(|| ProxyError::NoServicePort {
                    service: svc.label.to_string(),
                    port: authority.port_u16().unwrap_or(80),
                })?;
            (svc, port)
        }
    };
    obs.destination = svc.label.clone();

    // Phase 3: the route rule and the backend.
    let rule = port
        .route(req.method(), req.uri(), req.headers())
        .ok_or_else(|| ProxyError::NoMatchingRule {
            route: svc.label.to_string(),
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
        })?;
    obs.route = rule.route.clone();
    obs.use_series(&rule.series, &shared.metrics, &shared.labels);
    dispatch(shared, rt, peer, req, rule, &authority, obs, Upstream::Mesh).await
}

/// How the client reached the listener: what `X-Forwarded-Proto` says, and the scheme a
/// redirect keeps when it names none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Who is sending, which decides the `Host` the backend sees.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upstream {
    /// A mesh app named the Service in `Host`; it goes upstream unchanged.
    Mesh,
    /// A client outside the mesh named the gateway's host; upstream sees the backend Service
    /// (`name.namespace`) and the original host in `x-forwarded-host`. With the scheme the
    /// client reached the listener with, and the client address the edge believes
    /// (`forwarded::set`), which a ClientRateLimit counts by.
    Gateway {
        scheme: Scheme,
        client: std::net::IpAddr,
    },
}

/// From a chosen rule to the response: redirect or pick a backend, apply request filters,
/// mirror, forward through the cluster's resilience stack, apply response filters.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn dispatch(
    shared: &Shared,
    rt: &Runtime,
    peer: SocketAddr,
    mut req: Request<Incoming>,
    rule: &RtRule,
    authority: &Authority,
    obs: &mut Observation,
    upstream: Upstream,
) -> Result<Response<Body>, ProxyError> {
    let scheme = match upstream {
        Upstream::Gateway { scheme, .. } => scheme.as_str(),
        Upstream::Mesh => "http",
    };
    // CORS before anything else: a preflight is answered here, whatever the rule does next.
    let cors = rule.filters.iter().find_map(|f| match f {
        Filter::Cors(c) => Some(c),
        _ => None,
    });
    let cors_origin = match cors.map(|c| super::cors::check(c, req.method(), req.headers())) {
        Some(super::cors::Cors::Preflight(res)) => return Ok(res),
        Some(super::cors::Cors::Allowed(origin)) => Some(origin),
        Some(super::cors::Cors::Pass) | None => None,
    };
    // For an allowed origin, the answers the proxy makes itself (429, 503, 504) carry the CORS
    // headers too, so that browser code can read why its call failed.
    let grpc = is_grpc(&req);
    let fail = |obs: &mut Observation, e: ProxyError| match (cors, &cors_origin) {
        (Some(c), Some(o)) => {
            let mut res = obs.failed(e, grpc);
            super::cors::decorate(c, o, res.headers_mut());
            Ok(res)
        }
        _ => Err(e),
    };
    // The client's own budget on this rule, before any work is done for it.
    if let Some(limit) = &rule.client_limit {
        // At a gateway, the client the edge believes; on a mesh route, the calling app.
        let client = match upstream {
            Upstream::Gateway { client, .. } => client,
            Upstream::Mesh => peer.ip().to_canonical(),
        };
        if let Err(retry_after) = limit.check(client) {
            let e = ProxyError::ClientRateLimited {
                route: rule.route.to_string(),
                limit: limit.name.clone(),
                client,
                per_second: limit.per_second,
                retry_after,
            };
            return fail(obs, e);
        }
    }
    if let Some(mut res) = redirect(rule, &req, authority, scheme) {
        if let (Some(c), Some(o)) = (cors, &cors_origin) {
            super::cors::decorate(c, o, res.headers_mut());
        }
        return Ok(res);
    }
    let backend = rule.pick_backend().ok_or_else(|| ProxyError::NoBackend {
        route: rule.route.to_string(),
    })?;
    obs.cluster = Some(backend.cluster.upstream.name.clone());
    obs.mtls = backend.cluster.mtls;

    // Phase 4: request filters, rule first, then the backend's own.
    let mut host_header = match upstream {
        Upstream::Mesh => HeaderValue::from_str(authority.as_str()),
        Upstream::Gateway { .. } => {
            obs.destination = backend.cluster.service_label.clone();
            obs.use_series(&backend.series, &shared.metrics, &shared.labels);
            if let Some(h) = req.headers_mut().remove(header::HOST) {
                req.headers_mut().insert("x-forwarded-host", h);
            }
            HeaderValue::from_str(&backend.cluster.service_label)
        }
    }
    .map_err(|_| ProxyError::BadRequest("invalid host"))?;
    obs.use_golden(&backend.golden, &shared.metrics, &shared.labels);
    for edit in [&rule.headers.request, &backend.headers.request]
        .into_iter()
        .flatten()
    {
        edit.apply(req.headers_mut());
    }
    for f in rule.filters.iter().chain(&backend.filters) {
        if let Filter::UrlRewrite { hostname, path } = f {
            if let Some(h) = hostname {
                host_header = HeaderValue::from_str(h)
                    .map_err(|_| ProxyError::BadRequest("invalid rewrite host"))?;
            }
            if let Some(p) = path {
                let new = rewrite_path(req.uri().path(), p, rule.matcher.prefix());
                *req.uri_mut() = with_path(req.uri(), &new)
                    .ok_or(ProxyError::BadRequest("invalid rewritten path"))?;
            }
        }
    }
    req.headers_mut().insert(header::HOST, host_header);
    // At a gateway the trace began when the request arrived (`gateway.rs`).
    if obs.trace.is_none() {
        obs.trace(&mut req, shared.sample_percent(rt, None), peer, || {
            shared.identity()
        });
    }
    if let Some(prefix) = rule.matcher.prefix()
        && obs.traced()
    {
        // `PathPrefix: /` is kept as the empty prefix.
        obs.http_route = Some(Arc::from(if prefix.is_empty() { "/" } else { prefix }));
    }

    // Phase 5: mirrors get a copy of the request; the original goes to the backend.
    let downstream_upgrade = hyper::upgrade::on(&mut req);
    let mut req = req.map(Body::Incoming);
    for f in &rule.filters {
        if let Filter::RequestMirror { cluster, percent } = f
            && rand::rng().random_range(0..100) < *percent
            && let Some(target) = rt.clusters.get(cluster.as_str())
        {
            let body = std::mem::replace(req.body_mut(), Body::empty());
            *req.body_mut() = mirror(shared, target.clone(), &req, body, peer);
        }
    }

    // Phase 6: forward through the cluster's resilience stack, then response filters.
    let call = Call {
        upstreams: &shared.upstreams,
        cluster: &backend.cluster.upstream,
        protocol: backend.cluster.upstream.protocol,
        peer: peer.ip(),
    };
    let mut ex = stack::exchange(&backend.cluster.resilience, &rule.timeouts, req);
    ex.notes = obs.notes();
    if obs.logging() {
        obs.timeout = ex.deadline.map(|d| d.budget);
    }
    let stack = stack::stack(&backend.cluster.resilience, call);
    let fwd = match forward(stack, ex, Some(downstream_upgrade)).await {
        Ok(fwd) => fwd,
        Err(e) => return fail(obs, e),
    };
    obs.endpoint = Some(fwd.endpoint);
    // Only for a traced request: a scan of the cluster's endpoints. An endpoint proves its
    // identity only when this proxy originates mTLS, which takes a mesh identity.
    obs.endpoint_identity(|| {
        shared.tls.as_ref()?;
        let c = rt
            .snapshot
            .clusters
            .get(backend.cluster.upstream.name.as_str())?;
        let e = c.endpoints.iter().find(|e| e.address == fwd.endpoint)?;
        e.identity.clone()
    });
    let mut res = fwd.response;
    for edit in [&rule.headers.response, &backend.headers.response]
        .into_iter()
        .flatten()
    {
        edit.apply(res.headers_mut());
    }
    if let (Some(c), Some(o)) = (cors, &cors_origin) {
        super::cors::decorate(c, o, res.headers_mut());
    }
    Ok(res)
}

/// The Service a request names: the URI's authority (HTTP/2, absolute-form), else `Host`.
pub(crate) fn destination<B>(req: &Request<B>) -> Result<Authority, ProxyError> {
    if let Some(a) = req.uri().authority() {
        return Ok(a.clone());
    }
    let host = req
        .headers()
        .get(header::HOST)
        .ok_or(ProxyError::BadRequest("no Host header or :authority"))?;
    Authority::try_from(host.as_bytes()).map_err(|_| ProxyError::BadRequest("invalid Host header"))
}

/// The rule's `RequestRedirect` answer, if it has one. `scheme` is how the client came, the
/// one a redirect keeps when it sets none.
fn redirect<B>(
    rule: &RtRule,
    req: &Request<B>,
    authority: &Authority,
    req_scheme: &str,
) -> Option<Response<Body>> {
    rule.filters.iter().find_map(|f| match f {
        Filter::RequestRedirect {
            scheme,
            hostname,
            path,
            port,
            status_code,
        } => Some(
            Redirect {
                scheme: scheme.as_deref(),
                hostname: hostname.as_deref(),
                port: *port,
                path: path
                    .as_ref()
                    .map(|p| rewrite_path(req.uri().path(), p, rule.matcher.prefix())),
                status: *status_code,
            }
            .respond(
                req.uri(),
                req_scheme,
                authority.host(),
                authority.port_u16(),
            ),
        ),
        _ => None,
    })
}

/// Starts a copy of the request to `target` and returns the body for the original.
/// The mirror's answer is read and dropped; its failures never touch the original. The copy
/// goes straight to the balancer: fire and forget, without the target's resilience layers.
fn mirror(
    shared: &Shared,
    target: Arc<crate::config::runtime::RtCluster>,
    original: &Request<Body>,
    body: Body,
    peer: SocketAddr,
) -> Body {
    let (main, copy) = match body {
        Body::Incoming(b) => Body::tee(b),
        other => (other, Body::empty()),
    };
    let mut req = same_head(original, copy);
    crate::http::headers::strip_hop_by_hop(req.headers_mut(), false);
    let upstreams = shared.upstreams.clone();
    tokio::spawn(async move {
        let call = Call {
            upstreams: &upstreams,
            cluster: &target.upstream,
            protocol: target.upstream.protocol,
            peer: peer.ip(),
        };
        match call.oneshot(Exchange::new(req)).await {
            Ok(reply) => {
                let _ = http_body_util::BodyExt::collect(reply.response.into_body()).await;
            }
            Err(e) => {
                tracing::debug!(cluster = %target.upstream.name, error = %e, "mirror request failed")
            }
        }
    });
    main
}
