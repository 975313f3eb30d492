//! Sending a request again: its head, kept as it was, and its body, kept in memory up to
//! `REPLAY_CAP` so that a retry can send the same bytes. A body is never held back from the
//! first try to be copied, and a larger body is never copied.

use crate::http::body::Body;
use crate::http::errors::ProxyError;
use crate::http::exchange::Exchange;
use crate::http::headers::same_head;
use bytes::Bytes;
use http::Request;
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::sync::oneshot;

/// The largest request body kept for replay: 64 KiB. Larger bodies are sent once.
pub const REPLAY_CAP: usize = 64 * 1024;

/// The request line and headers, kept to build the next try.
pub struct Head(Request<()>);

impl Head {
    pub fn of(req: &Request<Body>) -> Head {
        Head(same_head(req, ()))
    }

    /// A new request with this head and `body`.
    pub fn with(&self, body: Body) -> Request<Body> {
        same_head(&self.0, body)
    }
}

/// How a request's body can be sent again.
pub enum Replay {
    Empty,
    Buffered(Bytes),
    /// Recording during the first try; ready if that try sent it all within the cap.
    Recording(oneshot::Receiver<Bytes>),
    Never,
}

impl Replay {
    /// Arranges for the body of `ex` to be replayable, if it can be.
    pub async fn prepare(ex: &mut Exchange) -> Result<Replay, ProxyError> {
        let body = ex.request.body_mut();
        if body.is_end_stream() {
            return Ok(Replay::Empty);
        }
        if let Body::Full(b) = body {
            return Ok(b.clone().map_or(Replay::Empty, Replay::Buffered));
        }
        let hint = body.size_hint();
        let known_small = hint.upper().is_some_and(|n| n <= REPLAY_CAP as u64);
        let unknown = hint.upper().is_none();
        let taken = std::mem::replace(body, Body::empty());
        match taken {
            // The client promised a small body: read it now, so every try, the first included,
            // can be sent on another endpoint after a failed connect.
            incoming @ Body::Incoming(_) if known_small => {
                let read = incoming.collect();
                let collected = match ex.deadline {
                    Some(d) => tokio::time::timeout_at(d.at, read).await.map_err(|_| {
                        ProxyError::BadRequest("request body did not arrive in time")
                    })?,
                    None => read.await,
                };
                let bytes = collected
                    .map_err(|_| ProxyError::BadRequest("request body could not be read"))?
                    .to_bytes();
                *ex.request.body_mut() = Body::full(bytes.clone());
                Ok(Replay::Buffered(bytes))
            }
            // Length unknown (chunked, or HTTP/2 such as gRPC): record while streaming, never
            // wait for the whole body first, which could deadlock a streaming client.
            Body::Incoming(inner) if unknown => {
                let (recording, rx) = Body::recording(inner, REPLAY_CAP);
                *ex.request.body_mut() = recording;
                Ok(Replay::Recording(rx))
            }
            other => {
                *ex.request.body_mut() = other;
                Ok(Replay::Never)
            }
        }
    }

    /// The body for another try, if there can be one.
    pub fn body(&mut self) -> Option<Body> {
        if let Replay::Recording(rx) = self {
            *self = rx.try_recv().map_or(Replay::Never, Replay::Buffered);
        }
        match self {
            Replay::Empty => Some(Body::empty()),
            Replay::Buffered(b) => Some(Body::full(b.clone())),
            Replay::Recording(_) | Replay::Never => None,
        }
    }
}
