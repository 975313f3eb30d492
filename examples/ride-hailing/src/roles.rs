//! What each role answers, and how it calls the next service through its sidecar.

// passenger `/rides` → trip `/trips` → driver `/assign`, then billing `/charge` and
// notification `/notify` together. A trip without a driver fails; a trip whose charge fails
// is still booked, with the charge deferred, so a sick billing service degrades rides
// instead of failing them. passenger `/call?service=S&path=P` calls any service directly,
// which is how the demo shows the mesh refusing passenger → billing.

use crate::fault::Fault;
use crate::instance::{AppConfig, Role};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

struct App {
    cfg: AppConfig,
    fault: Fault,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// The trace context of the request being served, which every call made to serve it
/// carries on, as an app instrumented with OpenTelemetry would: without it, no trace crosses
/// the app, and the hops of one booking would not share a trace id.
struct TraceContext(Vec<(http::HeaderName, http::HeaderValue)>);

impl TraceContext {
    const HEADERS: [&'static str; 8] = [
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-sampled",
        "x-b3-flags",
        "x-request-id",
    ];

    fn of(headers: &http::HeaderMap) -> TraceContext {
        TraceContext(
            (Self::HEADERS.iter())
                .filter_map(|&n| Some((http::HeaderName::from_static(n), headers.get(n)?.clone())))
                .collect(),
        )
    }
}

/// What a call through the sidecar came back with.
struct Reply {
    status: StatusCode,
    trellis_error: Option<String>,
    served_by: String,
    /// The Service whose call failed first down the chain (`x-failed-call`), when the callee
    /// failed because of a call of its own.
    failed_call: Option<String>,
}

impl Reply {
    /// An answer that passes on why `service`'s call failed: the deepest failed call
    /// (`x-failed-call`) and what the mesh said about it (`trellis-error`), so that a client
    /// at the gateway (the soak, docs/reliability.md) can tell a mesh's answer deep in the
    /// chain from an app's own failure.
    fn failed(
        &self,
        service: &str,
        status: StatusCode,
        name: &str,
        body: String,
    ) -> Response<Full<Bytes>> {
        let mut res = answer(status, name, body);
        let cause = self.failed_call.as_deref().unwrap_or(service);
        if let Ok(v) = cause.parse() {
            res.headers_mut().insert("x-failed-call", v);
        }
        if let Some(v) = self.trellis_error.as_deref().and_then(|e| e.parse().ok()) {
            res.headers_mut().insert("trellis-error", v);
        }
        res
    }
}

/// Serves `cfg.role` on `cfg.listen` until the process ends.
pub async fn serve(cfg: AppConfig) -> std::io::Result<()> {
    let listener = TcpListener::bind(cfg.listen).await?;
    let app = Arc::new(App {
        cfg,
        fault: Fault::default(),
        client: Client::builder(TokioExecutor::new()).build_http(),
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(app.handle(req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn answer(status: StatusCode, name: &str, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    if let Ok(v) = name.parse() {
        res.headers_mut().insert("x-served-by", v);
    }
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    res
}

impl App {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let name = &self.cfg.name;
        let path = req.uri().path().to_string();
        let cx = TraceContext::of(req.headers());
        if path == "/fault" && req.method() == Method::POST {
            let set = self.fault.set(req.uri().query().unwrap_or(""));
            return answer(StatusCode::OK, name, set);
        }
        if path == "/health" {
            return answer(StatusCode::OK, name, "{\"ok\":true}\n".into());
        }
        if self.fault.apply().await {
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                name,
                format!("{{\"error\":\"{name} fails on command (/fault)\"}}\n"),
            );
        }
        let ok = |body: String| answer(StatusCode::OK, name, body);
        match (self.cfg.role, path.as_str()) {
            (Role::Passenger, p) if p.starts_with("/rides") => {
                let trip = self.call(&cx, "trip", Method::POST, "/trips").await;
                if trip.status.is_success() {
                    ok(format!(
                        "{{\"ride\":\"booked\",\"trip\":\"{}\"}}\n",
                        trip.served_by
                    ))
                } else {
                    trip.failed(
                        "trip",
                        StatusCode::BAD_GATEWAY,
                        name,
                        format!("{{\"error\":\"trip answered {}\"}}\n", trip.status.as_u16()),
                    )
                }
            }
            (Role::Passenger, "/call") => {
                let q = req.uri().query().unwrap_or("");
                let get = |k: &str| {
                    q.split('&')
                        .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                        .unwrap_or("")
                        .to_string()
                };
                let r = (self.call(&cx, &get("service"), Method::POST, &get("path"))).await;
                let mut res = answer(
                    r.status,
                    name,
                    format!(
                        "{{\"calledFrom\":\"{name}\",\"status\":{}}}\n",
                        r.status.as_u16()
                    ),
                );
                if let Some(e) = r.trellis_error.and_then(|e| e.parse().ok()) {
                    res.headers_mut().insert("trellis-error", e);
                }
                res
            }
            (Role::Trip, p) if p.starts_with("/trips") => self.trip(&cx).await,
            (Role::Driver, "/assign" | "/drivers") => ok(format!("{{\"driver\":\"{name}\"}}\n")),
            (Role::Billing, "/charge") => ok(format!(
                "{{\"chargedBy\":\"{name}\",\"version\":\"{}\"}}\n",
                self.cfg.version
            )),
            (Role::Notification, "/notify") => ok("{\"sent\":true}\n".into()),
            _ => answer(
                StatusCode::NOT_FOUND,
                name,
                format!("{{\"error\":\"{name} has no {path}\"}}\n"),
            ),
        }
    }

    /// Books a trip: a driver first, then the charge and the notifications together.
    async fn trip(&self, cx: &TraceContext) -> Response<Full<Bytes>> {
        let name = &self.cfg.name;
        // GET, so that the mesh may retry it on another driver instance.
        let driver = self.call(cx, "driver", Method::GET, "/assign").await;
        if !driver.status.is_success() {
            return driver.failed(
                "driver",
                StatusCode::SERVICE_UNAVAILABLE,
                name,
                format!("{{\"error\":\"no driver: {}\"}}\n", driver.status.as_u16()),
            );
        }
        let (bill, _notified) = tokio::join!(
            self.call(cx, "billing", Method::POST, "/charge"),
            self.call(cx, "notification", Method::POST, "/notify"),
        );
        let charge = if bill.status.is_success() {
            format!("charged by {}", bill.served_by)
        } else {
            "deferred".to_string()
        };
        answer(
            StatusCode::OK,
            name,
            format!(
                "{{\"driver\":\"{}\",\"billing\":\"{charge}\"}}\n",
                driver.served_by
            ),
        )
    }

    /// Calls `service` through this instance's sidecar, naming it in `Host`, with the trace
    /// context of the request being served.
    async fn call(&self, cx: &TraceContext, service: &str, method: Method, path: &str) -> Reply {
        let failed = |status| Reply {
            status,
            trellis_error: None,
            served_by: String::new(),
            failed_call: None,
        };
        let Ok(mut req) = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.cfg.sidecar))
            .header(http::header::HOST, service)
            .body(Full::new(Bytes::new()))
        else {
            return failed(StatusCode::BAD_REQUEST);
        };
        for (name, value) in &cx.0 {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        let res = match tokio::time::timeout(CALL_TIMEOUT, self.client.request(req)).await {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => return failed(StatusCode::BAD_GATEWAY),
            Err(_) => return failed(StatusCode::GATEWAY_TIMEOUT),
        };
        let header = |n: &str| {
            res.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let reply = Reply {
            status: res.status(),
            trellis_error: header("trellis-error"),
            served_by: header("x-served-by").unwrap_or_default(),
            failed_call: header("x-failed-call"),
        };
        // Read the body so the pooled connection can be reused.
        let _ = res.into_body().collect().await;
        reply
    }
}
