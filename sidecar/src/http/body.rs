//! The one body type the proxy moves: a streamed hyper body, a small in-memory body for
//! answers the proxy makes itself or for replaying a retried request, either side of a
//! mirror's tee, or a streamed body recorded for a retry. No boxing per request.

use crate::http::errors::BoxError;
use crate::http::idle::Lease;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use tokio::sync::{mpsc, oneshot};

/// Frames a mirror may lag behind the main request before its copy is abandoned.
const MIRROR_BUFFER: usize = 16;

pub enum Body {
    Incoming(Incoming),
    Full(Option<Bytes>),
    /// The main request's body, copying each frame to a mirror until the mirror falls behind.
    Tee {
        inner: Incoming,
        tx: Option<mpsc::Sender<Frame<Bytes>>>,
        abandoned: Arc<AtomicBool>,
    },
    /// The mirror's copy of a body.
    Mirror {
        rx: mpsc::Receiver<Frame<Bytes>>,
        abandoned: Arc<AtomicBool>,
    },
    /// A streamed body that keeps a copy of what it sends, up to a cap, so that a retry can
    /// send it again. Streaming is never held up: the copy is a by-product.
    Recording {
        inner: Incoming,
        recorder: Option<Recorder>,
    },
    /// An upstream's response on a pooled HTTP/1.1 connection, which goes back to its
    /// endpoint's idle list once this body has been read to its end.
    Leased {
        inner: Incoming,
        lease: Lease<Body>,
    },
}

/// The copy a `Body::Recording` keeps. It hands the whole body over when the stream ends
/// within the cap; past the cap, on trailers or on an error it gives up, and the receiver
/// learns that the body cannot be replayed.
pub struct Recorder {
    chunks: Vec<Bytes>,
    size: usize,
    cap: usize,
    done: oneshot::Sender<Bytes>,
}

impl Recorder {
    fn finish(self) {
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.into_iter().next().unwrap_or_default(),
            _ => {
                let mut all = Vec::with_capacity(self.size);
                for c in &self.chunks {
                    all.extend_from_slice(c);
                }
                Bytes::from(all)
            }
        };
        let _ = self.done.send(body);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the mirrored request fell behind the original and was abandoned")]
struct MirrorAbandoned;

/// A body this proxy was receiving failed: bad chunked framing, a length that does not
/// match, a reset stream. The only body the upstream client reads is the request's, so when
/// the client reports this error, the request failed by the downstream's fault.
#[derive(Debug, thiserror::Error)]
#[error("{}", with_causes(.0))]
pub struct IncomingBodyError(#[source] hyper::Error);

/// hyper's message and what caused it ("invalid chunk size line: ..."), which hyper's own
/// message leaves out.
fn with_causes(e: &hyper::Error) -> String {
    let mut out = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

fn incoming_err(e: hyper::Error) -> BoxError {
    Box::new(IncomingBodyError(e))
}

impl Body {
    pub fn empty() -> Body {
        Body::Full(None)
    }

    pub fn full(b: impl Into<Bytes>) -> Body {
        Body::Full(Some(b.into()))
    }

    /// Wraps `inner` to record up to `cap` bytes of it; the receiver gets the whole body if
    /// it ends within the cap.
    pub fn recording(inner: Incoming, cap: usize) -> (Body, oneshot::Receiver<Bytes>) {
        let (done, rx) = oneshot::channel();
        let recorder = Recorder {
            chunks: Vec::new(),
            size: 0,
            cap,
            done,
        };
        (
            Body::Recording {
                inner,
                recorder: Some(recorder),
            },
            rx,
        )
    }

    /// Whether the body is in memory, so that `try_clone` succeeds.
    pub fn in_memory(&self) -> bool {
        matches!(self, Body::Full(_))
    }

    /// A copy of the body, when it is in memory.
    pub fn try_clone(&self) -> Option<Body> {
        match self {
            Body::Full(b) => Some(Body::Full(b.clone())),
            _ => None,
        }
    }

    /// Splits an incoming body into the one that goes upstream and a copy for a mirror.
    pub fn tee(inner: Incoming) -> (Body, Body) {
        let (tx, rx) = mpsc::channel(MIRROR_BUFFER);
        let abandoned = Arc::new(AtomicBool::new(false));
        (
            Body::Tee {
                inner,
                tx: Some(tx),
                abandoned: abandoned.clone(),
            },
            Body::Mirror { rx, abandoned },
        )
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Every variant is Unpin (Incoming, Bytes, channels), so plain `get_mut` is sound.
        match self.get_mut() {
            Body::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(incoming_err),
            Body::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
            Body::Tee {
                inner,
                tx,
                abandoned,
            } => {
                let frame = ready!(Pin::new(inner).poll_frame(cx));
                if let (Some(Ok(f)), Some(sender)) = (&frame, tx.as_ref()) {
                    let copy = if let Some(d) = f.data_ref() {
                        Some(Frame::data(d.clone()))
                    } else {
                        f.trailers_ref().map(|t| Frame::trailers(t.clone()))
                    };
                    if let Some(copy) = copy
                        && sender.try_send(copy).is_err()
                    {
                        abandoned.store(true, Ordering::Relaxed);
                        *tx = None;
                    }
                }
                if !matches!(frame, Some(Ok(_))) {
                    if matches!(frame, Some(Err(_))) {
                        abandoned.store(true, Ordering::Relaxed);
                    }
                    *tx = None;
                }
                Poll::Ready(frame.map(|r| r.map_err(incoming_err)))
            }
            Body::Recording { inner, recorder } => {
                let frame = ready!(Pin::new(&mut *inner).poll_frame(cx));
                match &frame {
                    Some(Ok(f)) => match (f.data_ref(), recorder.as_mut()) {
                        (Some(d), Some(r)) if r.size + d.len() <= r.cap => {
                            r.size += d.len();
                            r.chunks.push(d.clone());
                        }
                        // Over the cap, or trailers (which a replay could not carry).
                        (_, Some(_)) => *recorder = None,
                        (_, None) => {}
                    },
                    None => {}
                    Some(Err(_)) => *recorder = None,
                }
                let ended = frame.is_none() || inner.is_end_stream();
                if ended && let Some(r) = recorder.take() {
                    r.finish();
                }
                Poll::Ready(frame.map(|r| r.map_err(incoming_err)))
            }
            Body::Leased { inner, lease } => {
                let frame = ready!(Pin::new(&mut *inner).poll_frame(cx));
                match &frame {
                    None => lease.end(),
                    Some(Ok(_)) if inner.is_end_stream() => lease.end(),
                    _ => {}
                }
                Poll::Ready(frame.map(|r| r.map_err(incoming_err)))
            }
            Body::Mirror { rx, abandoned } => match ready!(rx.poll_recv(cx)) {
                Some(f) => Poll::Ready(Some(Ok(f))),
                None if abandoned.load(Ordering::Relaxed) => {
                    Poll::Ready(Some(Err(Box::new(MirrorAbandoned))))
                }
                None => Poll::Ready(None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Incoming(b)
            | Body::Tee { inner: b, .. }
            | Body::Recording { inner: b, .. }
            | Body::Leased { inner: b, .. } => b.is_end_stream(),
            Body::Full(b) => b.is_none(),
            Body::Mirror { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Incoming(b)
            | Body::Tee { inner: b, .. }
            | Body::Recording { inner: b, .. }
            | Body::Leased { inner: b, .. } => b.size_hint(),
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Mirror { .. } => SizeHint::default(),
        }
    }
}
