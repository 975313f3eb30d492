//! The HTTP port (15014): `/ready` once a valid config is loaded, `/metrics`, and `/golden`
//! (this replica's golden-metrics window, for its peers).

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

/// Serves `/ready`, `/live`, `/metrics` and `/golden` until the task is dropped.
pub async fn serve(listener: TcpListener, cp: Arc<ControlPlane>) {
    serve_http1(listener, "http", MAX_CONNECTIONS, move |req| {
        let cp = cp.clone();
        async move { handle(&cp, &req) }
    })
    .await
}

/// Serves HTTP/1.1 on `listener` with `handle` until the task is dropped: at most `cap`
/// connections at once, and a request head must arrive within `HEADER_READ_TIMEOUT`.
pub(crate) async fn serve_http1<F, Fut, B>(
    listener: TcpListener,
    name: &'static str,
    cap: usize,
    handle: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut listener = Listener::new(listener, name, cap);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let (stream, _, permit) = listener.accept().await;
        let (handle, http) = (handle.clone(), http.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req| {
                let answer = handle(req);
                async move { Ok::<_, std::convert::Infallible>(answer.await) }
            });
            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn handle(cp: &ControlPlane, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/golden" {
        return golden(cp, req.uri().query());
    }
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
            "not found; try /ready, /live, /metrics or /golden\n".to_string(),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

/// `/golden?window=SECONDS`: this replica's golden-metrics window as a protobuf
/// `StatResponse`, for its peers to merge (`golden/peers.rs`).
fn golden(cp: &ControlPlane, query: Option<&str>) -> Response<Full<Bytes>> {
    let secs = (query_param(query, "window"))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(60);
    let stat = cp
        .golden
        .stat(crate::golden::unix_now(), Duration::from_secs(secs));
    let mut r = Response::new(Full::new(Bytes::from(prost::Message::encode_to_vec(&stat))));
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&cp.golden.replica) {
        h.insert(crate::golden::peers::REPLICA_HEADER, v);
    }
    r
}

/// The value of parameter `name` in a request's query string (no percent-decoding: the
/// control plane's parameters are numbers and Service names).
pub(crate) fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    (query.unwrap_or(""))
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}
