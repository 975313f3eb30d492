//! What moves down a cluster's stack: the request with its deadline and per-try bound, the
//! answer with the endpoint that gave it, and how an answer counts for the cluster.

use crate::http::body::Body;
use crate::http::errors::ProxyError;
use http::{HeaderMap, Request, Response};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// One request on its way down a cluster's stack.
pub struct Exchange {
    pub request: Request<Body>,
    /// The request's overall budget, across retries (policy `timeout`, route `timeouts.request`).
    pub deadline: Option<Deadline>,
    /// The bound on each attempt (policy `retry.perTryTimeout`, route `timeouts.backendRequest`).
    pub per_try: Option<Duration>,
    /// Endpoints that earlier attempts used; the balancer picks another one where it can.
    pub avoid: Vec<SocketAddr>,
    /// What the stack did to a traced request (retries, rejections, ejections): the span's
    /// events. `None` for a request that is not traced, which is the common case.
    pub notes: Option<Notes>,
}

/// Events of one traced request, written by the layers that saw them. The lock is the
/// request's own: only its tries write it, one at a time.
#[derive(Clone, Default)]
pub struct Notes(std::sync::Arc<std::sync::Mutex<Vec<Note>>>);

pub struct Note {
    pub at: std::time::SystemTime,
    pub name: &'static str,
    pub attrs: Vec<(&'static str, String)>,
}

impl Notes {
    pub fn add(&self, name: &'static str, attrs: Vec<(&'static str, String)>) {
        let note = Note {
            at: std::time::SystemTime::now(),
            name,
            attrs,
        };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(note);
    }

    pub fn take(&self) -> Vec<Note> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Notes on `ex` when it is traced.
pub fn note(
    notes: &Option<Notes>,
    name: &'static str,
    attrs: impl FnOnce() -> Vec<(&'static str, String)>,
) {
    if let Some(n) = notes {
        n.add(name, attrs());
    }
}

/// When a request runs out of time, and the budget that set it, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    pub budget: Duration,
}

impl Deadline {
    pub fn after(budget: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + budget,
            budget,
        }
    }
}

impl Exchange {
    pub fn new(request: Request<Body>) -> Exchange {
        Exchange {
            request,
            deadline: None,
            per_try: None,
            avoid: Vec::new(),
            notes: None,
        }
    }
}

/// The upstream's answer (response headers; the body streams on) and who gave it.
pub struct Reply {
    pub response: Response<Body>,
    pub endpoint: SocketAddr,
}

pub type Outcome = Result<Reply, ProxyError>;

/// The `grpc-status` of a trailers-only gRPC response, which carries it in the headers.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|v| v.parse().ok())
}

/// Whether an answer says the upstream itself failed: a 5xx, or a trailers-only gRPC answer
/// with a server-side code (UNKNOWN 2, DEADLINE_EXCEEDED 4, INTERNAL 13, UNAVAILABLE 14,
/// DATA_LOSS 15). Everything else, 4xx included, is the upstream doing its job.
pub fn is_server_error<B>(res: &Response<B>) -> bool {
    res.status().is_server_error()
        || grpc_status(res.headers()).is_some_and(|c| matches!(c, 2 | 4 | 13 | 14 | 15))
}

/// Whether a finished call counts as a failure of the cluster, as the circuit breaker and
/// outlier detection see it. `None`: the call says nothing about the cluster.
pub fn failed(outcome: &Outcome) -> Option<bool> {
    match outcome {
        Ok(r) => Some(is_server_error(&r.response)),
        Err(e) if e.is_upstream_failure() => Some(true),
        Err(_) => None,
    }
}
