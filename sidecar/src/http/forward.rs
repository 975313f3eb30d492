//! The last leg shared by inbound and outbound: hop-by-hop headers, protocol upgrades
//! (WebSocket), sending to the cluster, and cleaning the response.

use crate::http::body::Body;
use crate::http::errors::ProxyError;
use crate::http::exchange::{Exchange, Reply};
use crate::http::headers::{is_upgrade, strip_hop_by_hop};
use http::{Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use tower::{Service, ServiceExt};

/// What came back, and from where.
pub struct Forwarded {
    pub response: Response<Body>,
    pub endpoint: SocketAddr,
}

/// Sends `ex` through `svc`: a cluster's resilience stack, or a bare endpoint call. For an
/// HTTP/1.1 Upgrade that the upstream accepts with 101, the two upgraded connections are
/// joined and bytes copied both ways until either closes.
pub async fn forward<S>(
    svc: S,
    mut ex: Exchange,
    downstream: Option<OnUpgrade>,
) -> Result<Forwarded, ProxyError>
where
    S: Service<Exchange, Response = Reply, Error = ProxyError>,
{
    let req = &mut ex.request;
    let upgrade =
        req.version() == Version::HTTP_11 && is_upgrade(req.headers()) && downstream.is_some();
    strip_hop_by_hop(req.headers_mut(), upgrade);
    let Reply {
        response: mut res,
        endpoint,
    } = svc.oneshot(ex).await?;
    let switching = upgrade && res.status() == StatusCode::SWITCHING_PROTOCOLS;
    strip_hop_by_hop(res.headers_mut(), switching);
    if switching && let Some(down) = downstream {
        let up = hyper::upgrade::on(&mut res);
        tokio::spawn(async move {
            match tokio::try_join!(down, up) {
                Ok((down, up)) => {
                    let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
                        tracing::debug!(error = %e, "upgraded connection ended with an error");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "protocol upgrade failed"),
            }
        });
    }
    Ok(Forwarded {
        response: res,
        endpoint,
    })
}
