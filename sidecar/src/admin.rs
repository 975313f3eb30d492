//! The admin port: `/ready`, `/live`, `/metrics`, `/config_dump`, `/clusters`, `POST /drain`.

use crate::Shared;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;

/// Serves the admin API until the process exits (it stays up during a drain, for `/ready`).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&shared, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn json(v: &serde_json::Value) -> Response<Full<Bytes>> {
    reply(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec_pretty(v).unwrap_or_default(),
    )
}

fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let rt = shared.config.current_full();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => reply(StatusCode::OK, "text/plain", "live\n"),
        (&Method::GET, "/ready") => match (&rt, shared.drain.is_draining()) {
            (_, true) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n"),
            (None, _) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "no config loaded yet; see /config_dump\n",
            ),
            (Some(rt), _) => reply(
                StatusCode::OK,
                "text/plain",
                format!("ready {}\n", rt.snapshot.version),
            ),
        },
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            shared.metrics.render(),
        ),
        (&Method::GET, "/config_dump") => json(&serde_json::json!({
            "version": rt.as_ref().map(|r| r.snapshot.version.clone()),
            "source": shared.source.clone(),
            "lastError": shared.config.last_error().map(|e| serde_json::json!({
                "at": e.at_unix_secs,
                "errors": e.errors.0.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
            })),
            "snapshot": rt.as_ref().map(|r| r.snapshot.as_ref()),
        })),
        (&Method::GET, "/clusters") => {
            let clusters: Vec<serde_json::Value> = rt
                .iter()
                .flat_map(|rt| rt.clusters.values())
                .map(|c| {
                    serde_json::json!({
                        "name": c.name.as_str(),
                        "service": c.config.service,
                        "policy": c.balancer.policy,
                        "endpoints": c.balancer.endpoints.iter().map(|e| serde_json::json!({
                            "address": e.addr.to_string(),
                            "workload": e.workload,
                            "health": "healthy",
                            "activeRequests": e.active.load(Ordering::Relaxed),
                            "ewmaMillis": e.ewma.rtt().as_secs_f64() * 1000.0,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json(&serde_json::json!({ "clusters": clusters }))
        }
        (&Method::POST, "/drain") => {
            tracing::info!("drain requested on the admin port");
            shared.drain.start();
            reply(StatusCode::ACCEPTED, "text/plain", "draining\n")
        }
        (_, "/drain") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use POST /drain\n",
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /ready, /live, /metrics, /config_dump, /clusters or POST /drain\n",
        ),
    }
}
