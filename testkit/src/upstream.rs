//! A real hyper upstream (HTTP/1.1 and h2c on one port) whose answers show what it received.

// Paths: `/status/N` answers N; `/echo` streams the request body back; `/sleep/MS` waits;
// `/reset` drops the connection without answering; `/ws` is a WebSocket echo; `/bytes/N`
// streams N bytes; anything else answers 200. Every answer carries `x-upstream: NAME`,
// `x-seen-path`, `x-seen-host`, and a JSON body of the request headers.
//
// `Upstream::set_mode` makes every path fail, hang or reset on command, for tests of how
// callers cope with a sick upstream; `Mode::Normal` heals it.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, protocol::Role};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// A running upstream. It stops when the test's runtime ends.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    hits: Arc<AtomicUsize>,
    /// Connections accepted, and connections still open.
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    mode: Arc<Mutex<Mode>>,
}

/// How an upstream answers every request, whatever its path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Answer by path, as the module docs describe.
    #[default]
    Normal,
    /// Answer this status to everything.
    Status(u16),
    /// Wait this long, then answer by path.
    Sleep(Duration),
    /// Drop the connection without answering.
    Reset,
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        Self::start_on("127.0.0.1:0", name).await
    }

    pub async fn start_on(bind: &str, name: &str) -> Upstream {
        let listener = TcpListener::bind(bind).await.expect("bind upstream");
        let up = Upstream {
            addr: listener.local_addr().expect("addr"),
            name: name.to_string(),
            hits: Default::default(),
            accepted: Default::default(),
            open: Default::default(),
            mode: Default::default(),
        };
        let state = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                state.accepted.fetch_add(1, Ordering::Relaxed);
                state.open.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let open = state.open.clone();
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                    open.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        up
    }

    /// Requests this upstream has received.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    /// Connections this upstream has accepted.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections open now: accepted, and not yet closed by either side.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Changes how every later request is answered.
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

async fn handle(up: Upstream, req: Request<Incoming>) -> Result<Response<Body>, BoxError> {
    up.hits.fetch_add(1, Ordering::Relaxed);
    match up.mode() {
        Mode::Normal => {}
        Mode::Status(code) => {
            let mut res = Response::new(full(format!("{} answers {code} on command", up.name)));
            *res.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
            res.headers_mut().insert("x-upstream", up.name.parse()?);
            return Ok(res);
        }
        Mode::Sleep(d) => tokio::time::sleep(d).await,
        Mode::Reset => return Err("reset on command".into()),
    }
    if req.uri().path() == "/ws" {
        return Ok(websocket(req));
    }
    let (req, incoming) = req.into_parts();
    let path = req.uri.path().to_string();
    let mut status = StatusCode::OK;
    let body = if let Some(code) = path.strip_prefix("/status/") {
        status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        None
    } else if path == "/echo" {
        Some(incoming.map_err(|e| -> BoxError { Box::new(e) }).boxed())
    } else if let Some(ms) = path.strip_prefix("/sleep/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        None
    } else if path == "/reset" {
        return Err("reset requested".into());
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = (0..n.div_ceil(chunk.len())).map(move |i| {
            let len = (n - i * chunk.len()).min(chunk.len());
            Ok::<_, BoxError>(Frame::data(chunk.slice(..len)))
        });
        Some(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
            chunks,
        ))))
    } else {
        None
    };
    // Repeated headers are joined with ", ", as RFC 9110 allows for list-valued fields.
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &req.headers {
        let v = v.to_str().unwrap_or("");
        headers
            .entry(k.to_string())
            .and_modify(|e| *e = format!("{e}, {v}"))
            .or_insert_with(|| v.to_string());
    }
    let seen_host = req
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(String::from)
        })
        .unwrap_or_default();
    let body = match body {
        Some(b) => b,
        None => full(json_object(&headers)),
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert("x-upstream", up.name.parse()?);
    h.insert(
        "x-seen-path",
        req.uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse()?,
    );
    h.insert("x-seen-host", seen_host.parse()?);
    h.insert("x-seen-version", format!("{:?}", req.version).parse()?);
    Ok(res)
}

/// A minimal JSON object of string pairs; keeps the testkit free of a JSON dependency.
fn json_object(m: &BTreeMap<String, String>) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let fields: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("\"{}\":\"{}\"", esc(k), esc(v)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        let mut r = Response::new(full("not a websocket request"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut res = Response::new(full(""));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert("connection", "upgrade".parse().expect("static"));
    h.insert("upgrade", "websocket".parse().expect("static"));
    h.insert(
        "sec-websocket-accept",
        key.parse().expect("base64 is a valid header"),
    );
    res
}
