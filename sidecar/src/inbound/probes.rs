//! `/app-health/<container>/<kind>` on the admin port: kubelet's probes, replayed to the app
//! by the proxy, which answers with the app's status so that kubelet's 200–399 rule applies
//! unchanged.

// The injector moved the probes here because under STRICT mTLS kubelet (plaintext, no mesh
// identity) cannot reach the app port. The replay goes over loopback, or the pod IP for an app
// that binds only that.

use crate::config::bootstrap::AppProbe;
use crate::http::respond::TRELLIS_ERROR;
use crate::shared::Shared;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::error::Error as _;
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

/// Why a replayed probe did not get an answer from the app; the text goes to kubelet.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Every address refused; each entry is `addr: error`.
    #[error("cannot connect: {}", .0.join("; "))]
    Refused(Vec<String>),
    #[error("TLS client: {0}")]
    TlsClient(rustls::Error),
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    #[error("probe path {path:?}: {source}")]
    Path { path: String, source: http::Error },
    #[error("probe header {name:?}: {source}")]
    HeaderName {
        name: String,
        source: http::header::InvalidHeaderName,
    },
    #[error("probe header {name:?} value: {source}")]
    HeaderValue {
        name: String,
        source: http::header::InvalidHeaderValue,
    },
    #[error("HTTP: {0}")]
    Http(hyper::Error),
    #[error("{0}")]
    GrpcEndpoint(tonic::transport::Error),
    /// tonic's transport error says little on its own; its source says what failed.
    #[error("{}: {}", .0, .0.source().map(ToString::to_string).unwrap_or_default())]
    GrpcConnect(tonic::transport::Error),
    #[error("gRPC: {0}")]
    GrpcReady(tonic::transport::Error),
    #[error("health check: {:?}: {}", .0.code(), .0.message())]
    GrpcStatus(tonic::Status),
    #[error("health check of {service:?}: {status} (kubelet passes only SERVING)")]
    NotServing {
        service: String,
        status: &'static str,
    },
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

async fn probe_once(addrs: &[SocketAddr], probe: &AppProbe) -> Result<StatusCode, ProbeError> {
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
            .map_err(ProbeError::Handshake)?;
        send(tls, req).await
    } else {
        send(tcp, req).await
    }
}

/// The first of `addrs` that accepts; an address that refuses passes to the next.
async fn connect(addrs: &[SocketAddr]) -> Result<(TcpStream, SocketAddr), ProbeError> {
    let mut refused = Vec::new();
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok((tcp, addr)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused.push(format!("{addr}: {e}"));
            }
            Err(source) => return Err(ProbeError::Connect { addr, source }),
        }
    }
    Err(ProbeError::Refused(refused))
}

/// The request kubelet would have sent: its User-Agent and Accept, then the probe's headers.
fn request(addr: SocketAddr, probe: &AppProbe) -> Result<Request<Empty<Bytes>>, ProbeError> {
    let mut req = Request::get(probe.path.as_str())
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, "kube-probe/trellis")
        .header(header::ACCEPT, "*/*")
        .body(Empty::new())
        .map_err(|source| ProbeError::Path {
            path: probe.path.clone(),
            source,
        })?;
    for h in &probe.http_headers {
        let name =
            HeaderName::try_from(h.name.as_str()).map_err(|source| ProbeError::HeaderName {
                name: h.name.clone(),
                source,
            })?;
        let value =
            HeaderValue::try_from(h.value.as_str()).map_err(|source| ProbeError::HeaderValue {
                name: h.name.clone(),
                source,
            })?;
        req.headers_mut().insert(name, value);
    }
    Ok(req)
}

async fn send<S>(io: S, req: Request<Empty<Bytes>>) -> Result<StatusCode, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(ProbeError::Http)?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(ProbeError::Http)?;
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
async fn grpc_health(addrs: &[SocketAddr], service: &str) -> Result<StatusCode, ProbeError> {
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
        .map_err(ProbeError::GrpcEndpoint)?
        .connect_with_connector(connector)
        .await
        .map_err(ProbeError::GrpcConnect)?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(ProbeError::GrpcReady)?;
    let answer = grpc
        .unary(
            tonic::Request::new(HealthCheckRequest {
                service: service.to_string(),
            }),
            http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
            tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default(),
        )
        .await
        .map_err(ProbeError::GrpcStatus)?;
    match answer.into_inner().status {
        1 => Ok(StatusCode::OK),
        other => Err(ProbeError::NotServing {
            service: service.to_string(),
            status: match other {
                0 => "UNKNOWN",
                2 => "NOT_SERVING",
                3 => "SERVICE_UNKNOWN",
                _ => "an unknown status",
            },
        }),
    }
}

/// kubelet does not verify the certificate of an HTTPS probe, so neither does the replay.
fn unverified_client() -> Result<Arc<rustls::ClientConfig>, ProbeError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, rustls::Error>> = OnceLock::new();
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
        })
        .clone()
        .map_err(ProbeError::TlsClient)
}
