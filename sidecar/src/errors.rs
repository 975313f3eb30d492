//! Every way the proxy can fail a request, as one typed error with its context.
//! `respond.rs` is the one place where these become HTTP and gRPC answers.

use std::net::SocketAddr;
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "no Service matches host {host:?}; use a Service name like billing, billing.rides or billing.rides.svc.cluster.local"
    )]
    NoService { host: String },
    #[error("Service {service} has no port {port}")]
    NoServicePort { service: String, port: u16 },
    #[error("no rule of route {route} matches {method} {path}")]
    NoMatchingRule {
        route: String,
        method: String,
        path: String,
    },
    #[error("route {route} has no backend with a non-zero weight")]
    NoBackend { route: String },
    #[error("cluster {cluster} has no healthy endpoints")]
    NoHealthyEndpoints { cluster: String },
    #[error("cannot connect to {endpoint} of cluster {cluster}: {source}")]
    Connect {
        cluster: String,
        endpoint: SocketAddr,
        source: BoxError,
    },
    #[error("upstream {endpoint} of cluster {cluster} reset the request: {source}")]
    UpstreamReset {
        cluster: String,
        endpoint: SocketAddr,
        source: BoxError,
    },
    #[error("cluster {cluster} did not answer within {after:?}")]
    Timeout { cluster: String, after: Duration },
    #[error("request headers are {size} bytes; the limit is {limit}")]
    HeadersTooLarge { size: usize, limit: usize },
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("no config loaded yet; check /config_dump on the admin port for the load error")]
    NotReady,
    #[error("the local app at {addr} refused the connection: {source}")]
    AppUnavailable { addr: SocketAddr, source: BoxError },
}

/// What a failure looks like on the wire.
pub struct Answer {
    pub status: http::StatusCode,
    /// The `trellis-error` header value.
    pub code: &'static str,
    /// The gRPC status code for gRPC requests.
    pub grpc: u8,
    /// Whether the downstream connection should be closed after answering.
    pub close: bool,
}

impl ProxyError {
    pub fn answer(&self) -> Answer {
        use http::StatusCode as S;
        // gRPC codes: 4 DEADLINE_EXCEEDED, 8 RESOURCE_EXHAUSTED, 12 UNIMPLEMENTED, 13 INTERNAL,
        // 14 UNAVAILABLE.
        let (status, code, grpc, close) = match self {
            ProxyError::NoService { .. }
            | ProxyError::NoServicePort { .. }
            | ProxyError::NoMatchingRule { .. } => (S::NOT_FOUND, "no-route", 12, false),
            ProxyError::NoBackend { .. } => (S::INTERNAL_SERVER_ERROR, "no-backend", 13, false),
            ProxyError::NoHealthyEndpoints { .. } | ProxyError::Connect { .. } => {
                (S::SERVICE_UNAVAILABLE, "no-healthy-endpoints", 14, false)
            }
            ProxyError::UpstreamReset { .. } => (S::BAD_GATEWAY, "upstream-reset", 14, false),
            ProxyError::Timeout { .. } => (S::GATEWAY_TIMEOUT, "timeout", 4, false),
            ProxyError::HeadersTooLarge { .. } => (
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
                8,
                true,
            ),
            ProxyError::BadRequest(_) => (S::BAD_REQUEST, "bad-request", 13, true),
            ProxyError::NotReady => (S::SERVICE_UNAVAILABLE, "not-ready", 14, false),
            ProxyError::AppUnavailable { .. } => {
                (S::SERVICE_UNAVAILABLE, "app-unavailable", 14, false)
            }
        };
        Answer {
            status,
            code,
            grpc,
            close,
        }
    }
}
