//! The dashboard: a page served on its own listener (`--dashboard-addr`, loopback by
//! default), with its assets built into the binary, and the JSON it draws
//! (`view.rs`), pushed every two seconds as server-sent events. docs/dashboard.md.
//!
//! It is read-only unless the operator passes `--dashboard-shift`. Then `POST /api/shift`
//! goes through the same `shift` as the Admin API, and is taken only from the page itself:
//! its `Host` must name this listener (so that a rebound DNS name cannot reach it), its
//! `Origin` must be that same host, and it must carry the token the page was served with.
//! Every request, reads included, must name this listener in `Host`.

mod view;

use crate::state::ControlPlane;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// Browsers open a handful of connections, and each event stream holds one.
const MAX_CONNECTIONS: usize = 64;
/// How often the page is sent the state.
const PUSH_EVERY: Duration = Duration::from_secs(2);
/// The window the page shows unless it asks for another.
const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

struct Dashboard {
    cp: Arc<ControlPlane>,
    /// The page's anti-CSRF token, made at start.
    token: String,
    shift: bool,
}

/// Serves the dashboard on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, cp: Arc<ControlPlane>, shift: bool) {
    let token: String = {
        use rand::Rng;
        let bytes: [u8; 16] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    let d = Arc::new(Dashboard { cp, token, shift });
    crate::http::serve_http1(listener, "dashboard", MAX_CONNECTIONS, move |req| {
        let d = d.clone();
        async move { d.handle(req).await }
    })
    .await
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The page loads only its own script and style and talks only to this listener, and no
    // other site may frame it.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// A refusal: `code` in the `trellis-error` header, `why` in the body.
fn refuse(status: StatusCode, code: &'static str, why: &str) -> Response<Body> {
    let mut r = reply(status, "text/plain; charset=utf-8", format!("{why}\n"));
    r.headers_mut()
        .insert("trellis-error", HeaderValue::from_static(code));
    r
}

/// What the page asks for: the window (`window`, in seconds) and the Service whose page it
/// shows (`service`), whose 15-minute series alone is sent: a series for every Service of a
/// large mesh, every 2 s, would be most of the document.
#[derive(Clone)]
struct Ask {
    window: Duration,
    service: Option<String>,
}

fn ask(query: Option<&str>) -> Ask {
    let param = |name| crate::http::query_param(query, name);
    Ask {
        window: (param("window").and_then(|v| v.parse::<u64>().ok()))
            .map_or(DEFAULT_WINDOW, |s| Duration::from_secs(s.clamp(10, 900))),
        service: param("service")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    }
}

impl Dashboard {
    /// Whether `Host` is an IP address or `localhost`, at any port (`kubectl port-forward`
    /// may pick another). A DNS name is refused whatever it resolves to: that is what
    /// defeats DNS rebinding, where a hostile page's own name is pointed at this address.
    fn host_ok(&self, req: &Request<Incoming>) -> bool {
        let Some(host) = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
        else {
            return false;
        };
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        name.parse::<std::net::IpAddr>().is_ok()
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if !self.host_ok(&req) {
            return refuse(
                StatusCode::MISDIRECTED_REQUEST,
                "dashboard-host",
                "the dashboard answers only to its own address in Host (a DNS name pointed at it is refused); open the URL `trellis dashboard` prints",
            );
        }
        let query = req.uri().query().map(str::to_string);
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/") => {
                let page = INDEX
                    .replace("{{TOKEN}}", &self.token)
                    .replace("{{SHIFT}}", if self.shift { "on" } else { "off" });
                reply(StatusCode::OK, "text/html; charset=utf-8", page)
            }
            (&Method::GET, "/app.js") => {
                reply(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT)
            }
            (&Method::GET, "/app.css") => reply(StatusCode::OK, "text/css; charset=utf-8", STYLE),
            (&Method::GET, "/api/state") => {
                let a = ask(query.as_deref());
                let v = view::build(&self.cp, a.window, a.service.as_deref()).await;
                reply(StatusCode::OK, "application/json", v.to_string())
            }
            (&Method::GET, "/api/events") => self.events(ask(query.as_deref())),
            (&Method::POST, "/api/shift") => self.shift(req).await,
            (_, "/api/shift") => refuse(StatusCode::METHOD_NOT_ALLOWED, "method", "use POST"),
            _ => refuse(
                StatusCode::NOT_FOUND,
                "not-found",
                "not found; the dashboard is at /, its data at /api/state and /api/events",
            ),
        }
    }

    /// The state every `PUSH_EVERY`, as server-sent events, until the page goes away.
    fn events(&self, a: Ask) -> Response<Body> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        let cp = self.cp.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let v = view::build(&cp, a.window, a.service.as_deref()).await;
                let event = format!("data: {v}\n\n");
                if tx.send(Ok(Frame::data(Bytes::from(event)))).await.is_err() {
                    return;
                }
            }
        });
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut r = reply(StatusCode::OK, "text/event-stream", Bytes::new());
        *r.body_mut() = BodyExt::boxed(body);
        r
    }

    /// `POST /api/shift` with `{"route": "ns/name", "weights": {"backend": 10, ...}}`.
    async fn shift(&self, req: Request<Incoming>) -> Response<Body> {
        if !self.shift {
            return refuse(
                StatusCode::FORBIDDEN,
                "dashboard-read-only",
                "the dashboard is read-only; start trellis-control with --dashboard-shift to shift traffic from it, or use `trellis shift`",
            );
        }
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        if origin.is_none() || origin != host.map(|h| format!("http://{h}")).as_deref() {
            return refuse(
                StatusCode::FORBIDDEN,
                "dashboard-origin",
                "cross-origin request refused: Origin must be the dashboard itself",
            );
        }
        let token = req
            .headers()
            .get("x-trellis-csrf")
            .and_then(|v| v.to_str().ok());
        if token != Some(self.token.as_str()) {
            return refuse(
                StatusCode::FORBIDDEN,
                "dashboard-csrf",
                "missing or wrong CSRF token: reload the dashboard",
            );
        }
        let limited = http_body_util::Limited::new(req.into_body(), 64 * 1024);
        let body = match limited.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    "the request body is over 64 KiB",
                );
            }
        };
        #[derive(serde::Deserialize)]
        struct Shift {
            route: String,
            weights: std::collections::HashMap<String, u32>,
        }
        let s: Shift = match serde_json::from_slice(&body) {
            Ok(s) => s,
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    &format!(
                        "the body must be {{\"route\": \"ns/name\", \"weights\": {{\"backend\": weight}}}}: {e}"
                    ),
                );
            }
        };
        tracing::info!(route = %s.route, weights = ?s.weights, "shift from the dashboard");
        match crate::shift::shift(&self.cp, &s.route, &s.weights, Duration::from_secs(30)).await {
            Ok(r) => reply(
                StatusCode::OK,
                "application/json",
                serde_json::json!({
                    "file": r.file,
                    "proxiesUpdated": r.proxies_updated,
                    "convergedMs": r.converged_ms,
                    "failures": r.failures,
                })
                .to_string(),
            ),
            Err(status) => {
                let code = match status.code() {
                    tonic::Code::NotFound => StatusCode::NOT_FOUND,
                    tonic::Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
                    tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
                        StatusCode::BAD_REQUEST
                    }
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                refuse(code, "shift-refused", status.message())
            }
        }
    }
}
