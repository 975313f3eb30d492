//! The HTTP port (15014): `/ready` once a valid config is loaded, and `/metrics`.

use crate::state::ControlPlane;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use trellis_proto::listen::Listener;

/// Open connections at once: probes and Prometheus need a handful; the cap keeps a flood from
/// taking the descriptors the gRPC port needs.
const MAX_CONNECTIONS: usize = 256;

/// How long a client may take to send a request head before it is disconnected (slowloris).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `/ready`, `/live` and `/metrics` until the task is dropped.
pub async fn serve(listener: TcpListener, cp: Arc<ControlPlane>) {
    let mut listener = Listener::new(listener, "http", MAX_CONNECTIONS);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let (stream, _, permit) = listener.accept().await;
        let (cp, http) = (cp.clone(), http.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req| {
                let cp = cp.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&cp, &req)) }
            });
            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn handle(cp: &ControlPlane, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body) = match req.uri().path() {
        "/ready" if cp.is_ready() => (StatusCode::OK, "ready\n".to_string()),
        "/ready" => {
            let why = cp
                .config_errors()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "no config loaded yet".into());
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            )
        }
        // Liveness: the process answers. Readiness (a valid config) is `/ready`.
        "/live" => (StatusCode::OK, "live\n".to_string()),
        "/metrics" => (StatusCode::OK, cp.metrics.render()),
        _ => (
            StatusCode::NOT_FOUND,
            "not found; try /ready, /live or /metrics\n".to_string(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}
