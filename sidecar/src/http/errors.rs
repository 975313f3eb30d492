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
    #[error(
        "the config has no Gateway {gateway}; add it to the mesh YAML or fix gateway.name in the bootstrap"
    )]
    NoGateway { gateway: String },
    #[error("route {route} has no backend with a non-zero weight")]
    NoBackend { route: String },
    #[error("cluster {cluster} has no healthy endpoints{}", ejected_note(*ejected))]
    NoHealthyEndpoints { cluster: String, ejected: usize },
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
    #[error(
        "upstream {endpoint} of cluster {cluster} refused the HTTP/2 stream without processing it"
    )]
    RefusedStream {
        cluster: String,
        endpoint: SocketAddr,
    },
    #[error("cluster {cluster} did not answer within {after:?}")]
    Timeout {
        cluster: String,
        after: Duration,
        /// The endpoint that was too slow, when one attempt timed out.
        endpoint: Option<SocketAddr>,
    },
    #[error(
        "the circuit breaker of cluster {cluster} is {state}, so the proxy fails fast without calling it; see /clusters on the admin port"
    )]
    CircuitOpen {
        cluster: String,
        state: &'static str,
    },
    #[error(
        "cluster {cluster} is over its rate limit of {per_second} requests per second; retry after {retry_after:?}"
    )]
    RateLimited {
        cluster: String,
        per_second: f64,
        retry_after: Duration,
    },
    #[error(
        "client {client} is over the ClientRateLimit {limit} of route {route} ({per_second} requests per second); retry after {retry_after:?}"
    )]
    ClientRateLimited {
        route: String,
        limit: String,
        client: std::net::IpAddr,
        per_second: f64,
        retry_after: Duration,
    },
    #[error(
        "cluster {cluster} has {limit} requests in flight and no room to wait for one to finish (bulkhead)"
    )]
    Overloaded { cluster: String, limit: u32 },
    #[error("the ResiliencePolicy of cluster {cluster} injected a fault: abort with {status}")]
    FaultInjected {
        cluster: String,
        status: http::StatusCode,
    },
    #[error("request headers are {size} bytes; the limit is {limit}")]
    HeadersTooLarge { size: usize, limit: usize },
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request body broke off or was malformed while it was being sent on. The
    /// downstream's fault: the endpoint's health and the breaker do not count it.
    #[error(
        "bad request: the request body is malformed or was cut off ({source}); the upstream connection was closed, not reused"
    )]
    DownstreamBody { source: BoxError },
    #[error(
        "this proxy holds no config yet: it is waiting for the control plane (or a valid mesh file), and passes no traffic until then; /config_dump on the admin port shows the load error"
    )]
    NotReady,
    #[error(
        "Service {service} port {port} targets an app port this workload does not have; list the app's ports in the bootstrap's app.ports (TRELLIS_APP_PORTS in Kubernetes)"
    )]
    NoAppPort { service: String, port: u16 },
    #[error("the bootstrap lists no app port to deliver to; set app.ports")]
    NoAppPorts,
    #[error("the local app at {addr} refused the connection: {source}")]
    AppUnavailable { addr: SocketAddr, source: BoxError },
    #[error("{source_identity} may not call {service}: {reason}")]
    Unauthorized {
        source_identity: String,
        service: String,
        reason: String,
    },
    #[error(
        "{destination} is not a Service of the mesh and outboundTrafficPolicy is REGISTRY_ONLY; add a Service for it (an ExternalName Service for a name outside the mesh) or set mode ALLOW_ANY"
    )]
    RegistryOnly { destination: SocketAddr },
    #[error(
        "{service} is a mesh Service outside this workload's Scope ({scopes}); add it to the Scope's spec.calls to call it"
    )]
    NotInScope { service: String, scopes: String },
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
    /// The `retry-after` header value, in whole seconds.
    pub retry_after: Option<u64>,
}

fn ejected_note(ejected: usize) -> String {
    match ejected {
        0 => String::new(),
        n => format!(" ({n} ejected by outlier detection until they serve again; see /clusters)"),
    }
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
            ProxyError::NoGateway { .. } => (S::SERVICE_UNAVAILABLE, "no-route", 14, false),
            ProxyError::NoBackend { .. } => (S::INTERNAL_SERVER_ERROR, "no-backend", 13, false),
            ProxyError::NoHealthyEndpoints { .. } | ProxyError::Connect { .. } => {
                (S::SERVICE_UNAVAILABLE, "no-healthy-endpoints", 14, false)
            }
            ProxyError::UpstreamReset { .. } | ProxyError::RefusedStream { .. } => {
                (S::BAD_GATEWAY, "upstream-reset", 14, false)
            }
            ProxyError::Timeout { .. } => (S::GATEWAY_TIMEOUT, "timeout", 4, false),
            ProxyError::CircuitOpen { .. } => (S::SERVICE_UNAVAILABLE, "circuit-open", 14, false),
            ProxyError::RateLimited { .. } | ProxyError::ClientRateLimited { .. } => {
                (S::TOO_MANY_REQUESTS, "rate-limited", 8, false)
            }
            ProxyError::Overloaded { .. } => (S::SERVICE_UNAVAILABLE, "overloaded", 14, false),
            ProxyError::FaultInjected { status, .. } => {
                (*status, "fault-injected", grpc_code_for(*status), false)
            }
            ProxyError::HeadersTooLarge { .. } => (
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
                8,
                true,
            ),
            ProxyError::BadRequest(_) | ProxyError::DownstreamBody { .. } => {
                (S::BAD_REQUEST, "bad-request", 13, true)
            }
            ProxyError::NotReady => (S::SERVICE_UNAVAILABLE, "not-ready", 14, false),
            ProxyError::AppUnavailable { .. }
            | ProxyError::NoAppPort { .. }
            | ProxyError::NoAppPorts => (S::SERVICE_UNAVAILABLE, "app-unavailable", 14, false),
            // gRPC 7 PERMISSION_DENIED.
            ProxyError::Unauthorized { .. } => (S::FORBIDDEN, "unauthorized", 7, false),
            // As Istio's BlackHoleCluster answers: 502. gRPC 14 UNAVAILABLE.
            ProxyError::RegistryOnly { .. } => (S::BAD_GATEWAY, "registry-only", 14, true),
            // Refused by config, as an authorization denial is: 403, gRPC 7 PERMISSION_DENIED.
            ProxyError::NotInScope { .. } => (S::FORBIDDEN, "not-in-scope", 7, false),
        };
        let retry_after = match self {
            // Whole seconds, rounded up: retrying earlier would be refused again.
            ProxyError::RateLimited { retry_after, .. }
            | ProxyError::ClientRateLimited { retry_after, .. } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
            }
            _ => None,
        };
        Answer {
            status,
            code,
            grpc,
            close,
            retry_after,
        }
    }

    /// The endpoint this failure happened on, if it got that far.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        match self {
            ProxyError::Connect { endpoint, .. }
            | ProxyError::UpstreamReset { endpoint, .. }
            | ProxyError::RefusedStream { endpoint, .. } => Some(*endpoint),
            ProxyError::Timeout { endpoint, .. } => *endpoint,
            _ => None,
        }
    }

    /// Whether this error says the cluster is unwell, as a circuit breaker counts failures:
    /// it could not be reached, it dropped the request, or it did not answer in time.
    pub fn is_upstream_failure(&self) -> bool {
        matches!(
            self,
            ProxyError::NoHealthyEndpoints { .. }
                | ProxyError::Connect { .. }
                | ProxyError::UpstreamReset { .. }
                | ProxyError::RefusedStream { .. }
                | ProxyError::Timeout { .. }
        )
    }
}

/// The gRPC code for an HTTP status, as gRPC's "HTTP to gRPC Status Code Mapping" table has
/// it, for answers (such as injected faults) that are chosen as HTTP statuses.
fn grpc_code_for(status: http::StatusCode) -> u8 {
    match status.as_u16() {
        200 => 0,
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}
