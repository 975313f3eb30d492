//! The HTTP port (15014): `/ready` once a valid config is loaded, and `/metrics`.

use crate::ControlPlane;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpListener;

pub async fn serve(listener: TcpListener, cp: Arc<ControlPlane>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let cp = cp.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let cp = cp.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&cp, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
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
