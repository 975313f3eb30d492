//! `/app-health/<container>/<kind>` on the admin port: kubelet's HTTP probes, which the
//! injector moved here because under STRICT mTLS kubelet (plaintext, no mesh identity)
//! cannot reach the app port. The proxy replays the original probe to the app over loopback
//! (or the pod IP, for an app that binds only that) and answers with the app's status, so
//! kubelet's 200–399 rule applies unchanged.

use crate::config::bootstrap::AppProbe;
use crate::http::respond::TRELLIS_ERROR;
use crate::shared::Shared;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The prefix of the admin paths the injector rewrites probes to.
pub const PREFIX: &str = "/app-health/";
/// kubelet gives up sooner (its `timeoutSeconds`, 1 s by default); this only bounds the work
/// a probe can leave behind.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers one rewritten probe. `key` is `<container>/<kind>`.
pub async fn check(shared: &Shared, key: &str) -> Response<Full<Bytes>> {
    let Some(probe) = shared.bootstrap.app_probes.get(key) else {
        let known: Vec<&str> = shared
            .bootstrap
            .app_probes
            .keys()
            .map(String::as_str)
            .collect();
        return answer(
            StatusCode::NOT_FOUND,
            Some("unknown-probe"),
            format!(
                "no app probe {key:?}; this pod's trellis.dev/app-probes annotation has {known:?}\n"
            ),
        );
    };
    // Loopback first, then the pod IP: an app that binds only the pod IP (as kubelet, which
    // probes the pod IP, allows) refuses loopback.
    let mut addrs = vec![SocketAddr::new(shared.bootstrap.app.address, probe.port)];
    if let Some(ip) = shared.bootstrap.advertise_address
        && ip != shared.bootstrap.app.address
        && !ip.is_unspecified()
    {
        addrs.push(SocketAddr::new(ip, probe.port));
    }
    let addr = addrs[0];
    match tokio::time::timeout(PROBE_TIMEOUT, probe_once(&addrs, probe)).await {
        Ok(Ok(status)) => answer(status, None, format!("app answered {}\n", status.as_u16())),
        Ok(Err(e)) => {
            tracing::debug!(probe = key, %addr, "app probe failed: {e}");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                Some("app-probe-failed"),
                format!("probe {key} to {addr}: {e}\n"),
            )
        }
        Err(_) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("app-probe-failed"),
            format!("probe {key} to {addr}: no answer in {PROBE_TIMEOUT:?}\n"),
        ),
    }
}

fn answer(status: StatusCode, error: Option<&'static str>, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if let Some(code) = error {
        r.headers_mut()
            .insert(TRELLIS_ERROR, HeaderValue::from_static(code));
    }
    r
}

async fn probe_once(addrs: &[SocketAddr], probe: &AppProbe) -> Result<StatusCode, String> {
    if probe.scheme == "GRPC" {
        return grpc_health(addrs, &probe.service).await;
    }
    let (tcp, addr) = connect(addrs).await?;
    let _ = tcp.set_nodelay(true);
    let req = request(addr, probe)?;
    if probe.scheme == "HTTPS" {
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = tokio_rustls::TlsConnector::from(unverified_client()?)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        send(tls, req).await
    } else {
        send(tcp, req).await
    }
}

/// The first of `addrs` that accepts; an address that refuses passes to the next.
async fn connect(addrs: &[SocketAddr]) -> Result<(TcpStream, SocketAddr), String> {
    let mut refused = Vec::new();
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok((tcp, addr)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused.push(format!("{addr}: {e}"));
            }
            Err(e) => return Err(format!("cannot connect to {addr}: {e}")),
        }
    }
    Err(format!("cannot connect: {}", refused.join("; ")))
}

/// The request kubelet would have sent: its User-Agent and Accept, then the probe's headers.
fn request(addr: SocketAddr, probe: &AppProbe) -> Result<Request<Empty<Bytes>>, String> {
    let mut req = Request::get(probe.path.as_str())
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, "kube-probe/trellis")
        .header(header::ACCEPT, "*/*")
        .body(Empty::new())
        .map_err(|e| format!("probe path {:?}: {e}", probe.path))?;
    for h in &probe.http_headers {
        let name = HeaderName::try_from(h.name.as_str())
            .map_err(|e| format!("probe header {:?}: {e}", h.name))?;
        let value = HeaderValue::try_from(h.value.as_str())
            .map_err(|e| format!("probe header {:?} value: {e}", h.name))?;
        req.headers_mut().insert(name, value);
    }
    Ok(req)
}

async fn send<S>(io: S, req: Request<Empty<Bytes>>) -> Result<StatusCode, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = resp.status();
    // Read (and drop) the body so the app sees a complete exchange; bounded by the timeout.
    let _ = resp.into_body().collect().await;
    Ok(status)
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`; `status` 1 is SERVING.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// kubelet's gRPC probe: `grpc.health.v1.Health/Check` over plaintext HTTP/2; it passes only
/// for SERVING. Passing is 200; anything else is an error the caller turns into 503.
async fn grpc_health(addrs: &[SocketAddr], service: &str) -> Result<StatusCode, String> {
    let addrs = addrs.to_vec();
    let connector = tower::service_fn(move |_: http::Uri| {
        let addrs = addrs.clone();
        async move {
            connect(&addrs)
                .await
                .map(|(tcp, _)| TokioIo::new(tcp))
                .map_err(std::io::Error::other)
        }
    });
    let channel = tonic::transport::Endpoint::from_static("http://app")
        .user_agent("kube-probe/trellis")
        .map_err(|e| e.to_string())?
        .connect_with_connector(connector)
        .await
        .map_err(|e| {
            format!(
                "{e}: {}",
                std::error::Error::source(&e)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            )
        })?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| format!("gRPC: {e}"))?;
    let answer = grpc
        .unary(
            tonic::Request::new(HealthCheckRequest {
                service: service.to_string(),
            }),
            http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
            tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default(),
        )
        .await
        .map_err(|s| format!("health check: {:?}: {}", s.code(), s.message()))?;
    match answer.into_inner().status {
        1 => Ok(StatusCode::OK),
        other => Err(format!(
            "health check of {service:?}: {} (kubelet passes only SERVING)",
            match other {
                0 => "UNKNOWN",
                2 => "NOT_SERVING",
                3 => "SERVICE_UNKNOWN",
                _ => "an unknown status",
            }
        )),
    }
}

/// kubelet does not verify the certificate of an HTTPS probe, so neither does the replay.
fn unverified_client() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            rustls::ClientConfig::builder_with_provider(trellis_identity::provider())
                .with_safe_default_protocol_versions()
                .map(|b| {
                    Arc::new(
                        b.dangerous()
                            .with_custom_certificate_verifier(Arc::new(
                                trellis_identity::AnyServerCertificate,
                            ))
                            .with_no_client_auth(),
                    )
                })
                .map_err(|e| format!("TLS client: {e}"))
        })
        .clone()
}
