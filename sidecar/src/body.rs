//! The one body type the proxy moves: a streamed hyper body, a small in-memory body for
//! answers the proxy makes itself, or either side of a mirror's tee. No boxing per request.

use crate::errors::BoxError;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use tokio::sync::mpsc;

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
}

#[derive(Debug, thiserror::Error)]
#[error("the mirrored request fell behind the original and was abandoned")]
struct MirrorAbandoned;

impl Body {
    pub fn empty() -> Body {
        Body::Full(None)
    }

    pub fn full(b: impl Into<Bytes>) -> Body {
        Body::Full(Some(b.into()))
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
            Body::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
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
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
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
            Body::Incoming(b) | Body::Tee { inner: b, .. } => b.is_end_stream(),
            Body::Full(b) => b.is_none(),
            Body::Mirror { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Incoming(b) | Body::Tee { inner: b, .. } => b.size_hint(),
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Mirror { .. } => SizeHint::default(),
        }
    }
}
