//! The discovery stream's gRPC framing, in place of tonic's generated server for it.
//!
//! tonic encodes every message of a response stream into one buffer per stream, and decodes
//! every request into another, and neither buffer ever gives back what it grew to. A proxy's
//! first snapshot (64 KB parts, several encoded per poll) left about 185 KB of send buffer
//! behind on every stream, for the stream's life: a heaptrack profile of 500 unscoped proxies
//! found half the control plane's live heap there. By tonic's code, a Subscribe that lists
//! the resources a reconnecting proxy holds (tens of KB at 1,000 Services) would do the same
//! to the receive side.
//!
//! Here each response is framed into a buffer of exactly its size (by the session, from
//! resources encoded once for every proxy), which h2 frees once it has written it, and a
//! request's bytes are kept only until the request is decoded: an idle stream holds
//! neither. The messages, the framing and the status trailers are gRPC's, so a gRPC client
//! talks to this as to any other server; the proxies' tonic client does in every test.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body as _, Frame};
use prost::Message;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::{Code, Status};
use trellis_proto::v1::DiscoveryRequest;

/// The one method this service has.
const STREAM_PATH: &str = "/trellis.v1.Discovery/Stream";

/// The largest request accepted, as tonic's default: a Subscribe names at most a few
/// thousand held resources.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Bytes of receive buffer a stream may keep between requests; an ACK is a few dozen.
const KEEP_RECEIVE_BUFFER: usize = 1024;

/// What serves the streams: opens one for a proxy that reads its requests from `requests`,
/// answering with the response headers and the queue of its responses, or a refusal.
pub trait Streams: Send + Sync + 'static {
    fn open(
        &self,
        peer: Option<std::net::SocketAddr>,
        certs: Option<std::sync::Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>,
        requests: Requests,
    ) -> impl Future<Output = Result<(MetadataMap, Queue), Status>> + Send;
}

/// The receiving end of one stream's responses, each a gRPC message already framed
/// ([`frame`]).
pub type Queue = mpsc::Receiver<Result<Bytes, Status>>;

/// `trellis.v1.Discovery`, served by `S`.
pub struct DiscoveryServer<S>(std::sync::Arc<S>);

impl<S> Clone for DiscoveryServer<S> {
    fn clone(&self) -> Self {
        DiscoveryServer(self.0.clone())
    }
}

impl<S: Streams> DiscoveryServer<S> {
    pub fn new(streams: S) -> DiscoveryServer<S> {
        DiscoveryServer(std::sync::Arc::new(streams))
    }
}

impl<S> NamedService for DiscoveryServer<S> {
    const NAME: &'static str = trellis_proto::v1::discovery_server::SERVICE_NAME;
}

impl<S: Streams> Service<http::Request<Body>> for DiscoveryServer<S> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            if req.uri().path() != STREAM_PATH {
                let status = Status::unimplemented(format!(
                    "{} has no method {}",
                    Self::NAME,
                    req.uri().path()
                ));
                return Ok(status.into_http());
            }
            let (parts, body) = req.into_parts();
            let request = tonic::Request::from_http(http::Request::from_parts(parts, ()));
            let peer = request.remote_addr();
            let certs = request.peer_certs();
            Ok(match service.open(peer, certs, Requests::new(body)).await {
                Ok((headers, outbox)) => {
                    let mut res = http::Response::new(Body::new(Responses {
                        outbox,
                        done: false,
                    }));
                    *res.headers_mut() = headers.into_headers();
                    res.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    res
                }
                Err(status) => status.into_http(),
            })
        })
    }
}

/// The request side of one stream: gRPC messages decoded from the HTTP/2 body as they arrive.
pub struct Requests {
    body: Body,
    pending: BytesMut,
    ended: bool,
}

impl Requests {
    fn new(body: Body) -> Requests {
        Requests {
            body,
            pending: BytesMut::new(),
            ended: false,
        }
    }

    /// The next request; `None` once the proxy has closed its side.
    pub async fn message(&mut self) -> Result<Option<DiscoveryRequest>, Status> {
        loop {
            if let Some(bytes) = self.complete()? {
                return DiscoveryRequest::decode(bytes)
                    .map(Some)
                    .map_err(|e| Status::internal(format!("not a DiscoveryRequest: {e}")));
            }
            if self.ended {
                if self.pending.is_empty() {
                    return Ok(None);
                }
                return Err(Status::internal(
                    "the stream ended in the middle of a message",
                ));
            }
            match std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await {
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        self.pending.reserve(data.remaining());
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.pending.put_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
                Some(Err(e)) => return Err(Status::from_error(e.into())),
                None => self.ended = true,
            }
        }
    }

    /// Takes one whole message off the front of what has arrived, if there is one.
    fn complete(&mut self) -> Result<Option<Bytes>, Status> {
        if self.pending.len() < 5 {
            return Ok(None);
        }
        if self.pending[0] != 0 {
            return Err(Status::unimplemented(
                "compressed requests are not accepted on the discovery stream",
            ));
        }
        let len = u32::from_be_bytes([
            self.pending[1],
            self.pending[2],
            self.pending[3],
            self.pending[4],
        ]) as usize;
        if len > MAX_REQUEST_BYTES {
            return Err(Status::resource_exhausted(format!(
                "a request of {len} bytes is over the limit of {MAX_REQUEST_BYTES}"
            )));
        }
        if self.pending.len() < 5 + len {
            // Room for the rest at once, rather than growing by halves.
            self.pending.reserve(5 + len - self.pending.len());
            return Ok(None);
        }
        self.pending.advance(5);
        let message = self.pending.split_to(len).freeze();
        if self.pending.is_empty() && self.pending.capacity() > KEEP_RECEIVE_BUFFER {
            self.pending = BytesMut::new();
        }
        Ok(Some(message))
    }
}

/// The response side of one stream: each message framed on its own, then the status.
struct Responses {
    outbox: Queue,
    done: bool,
}

impl http_body::Body for Responses {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let status = match ready!(self.outbox.poll_recv(cx)) {
            Some(Ok(message)) => return Poll::Ready(Some(Ok(Frame::data(message)))),
            Some(Err(status)) => status,
            None => Status::new(Code::Ok, ""),
        };
        self.done = true;
        let mut trailers = http::HeaderMap::new();
        if let Err(e) = status.add_header(&mut trailers) {
            return Poll::Ready(Some(Err(e)));
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// One gRPC message, in a buffer of exactly its size: not compressed, its length `len`, then
/// what `write` puts, which must be `len` bytes.
pub fn frame(len: usize, write: impl FnOnce(&mut Vec<u8>)) -> Result<Bytes, Status> {
    let wrong = |what: &str| Status::internal(format!("a response of {len} bytes {what}"));
    let mut buf = Vec::with_capacity(5 + len);
    buf.push(0);
    buf.put_u32(u32::try_from(len).map_err(|_| wrong("cannot be framed"))?);
    write(&mut buf);
    if buf.len() != 5 + len {
        return Err(wrong(&format!("was written as {}", buf.len() - 5)));
    }
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_proto::v1::DiscoveryResponse;

    fn body_of(chunks: Vec<Vec<u8>>) -> Body {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, Status>(Frame::data(Bytes::from(c))));
        Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    }

    fn framed(m: &DiscoveryRequest) -> Vec<u8> {
        let mut v = vec![0];
        v.extend((m.encoded_len() as u32).to_be_bytes());
        m.encode(&mut v).unwrap();
        v
    }

    fn ack(version: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            kind: Some(trellis_proto::v1::discovery_request::Kind::Ack(
                trellis_proto::v1::Ack {
                    version: version.into(),
                    nonce: "1".into(),
                },
            )),
        }
    }

    #[tokio::test]
    async fn requests_split_across_frames_and_packed_into_one_decode_in_order() {
        let (a, b, c) = (framed(&ack("a")), framed(&ack("b")), framed(&ack("c")));
        // a arrives in three pieces; b and c together in one frame.
        let chunks = vec![
            a[..2].to_vec(),
            a[2..7].to_vec(),
            a[7..].to_vec(),
            [b, c].concat(),
        ];
        let mut r = Requests::new(body_of(chunks));
        for v in ["a", "b", "c"] {
            assert_eq!(r.message().await.unwrap(), Some(ack(v)));
        }
        assert_eq!(r.message().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_large_request_leaves_no_receive_buffer_behind() {
        let big = DiscoveryRequest {
            kind: Some(trellis_proto::v1::discovery_request::Kind::Ack(
                trellis_proto::v1::Ack {
                    version: "v".repeat(100_000),
                    nonce: String::new(),
                },
            )),
        };
        let mut r = Requests::new(body_of(vec![framed(&big), framed(&ack("small"))]));
        assert_eq!(r.message().await.unwrap(), Some(big));
        assert!(
            r.pending.capacity() <= KEEP_RECEIVE_BUFFER,
            "kept {} bytes",
            r.pending.capacity()
        );
        assert_eq!(r.message().await.unwrap(), Some(ack("small")));
    }

    #[tokio::test]
    async fn bad_frames_are_named_errors() {
        let mut compressed = framed(&ack("a"));
        compressed[0] = 1;
        let err = Requests::new(body_of(vec![compressed]))
            .message()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);

        let huge = vec![0, 0xff, 0xff, 0xff, 0xff];
        let err = Requests::new(body_of(vec![huge]))
            .message()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");

        let cut = framed(&ack("a"))[..6].to_vec();
        let err = Requests::new(body_of(vec![cut]))
            .message()
            .await
            .unwrap_err();
        assert!(err.message().contains("middle of a message"), "{err}");
    }

    async fn next(b: &mut Responses) -> Option<Result<Frame<Bytes>, Status>> {
        std::future::poll_fn(|cx| Pin::new(&mut *b).poll_frame(cx)).await
    }

    #[tokio::test]
    async fn responses_are_framed_whole_then_the_status_trailer() {
        let (tx, rx) = mpsc::channel(4);
        let msg = DiscoveryResponse {
            version: "v1".into(),
            nonce: "1".into(),
            ..Default::default()
        };
        let framed = frame(msg.encoded_len(), |b| msg.encode(b).unwrap()).unwrap();
        tx.send(Ok(framed)).await.unwrap();
        tx.send(Err(Status::unavailable("going away")))
            .await
            .unwrap();
        let mut body = Responses {
            outbox: rx,
            done: false,
        };
        let data = next(&mut body).await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(data[0], 0);
        assert_eq!(
            u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize,
            data.len() - 5
        );
        assert_eq!(data.len(), 5 + msg.encoded_len());
        assert_eq!(DiscoveryResponse::decode(&data[5..]).unwrap(), msg);
        let short = frame(3, |b| b.push(1)).unwrap_err();
        assert!(short.message().contains("written as 1"), "{short}");
        let trailers = next(&mut body)
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();
        assert_eq!(trailers["grpc-status"], "14");
        assert!(next(&mut body).await.is_none());
        assert!(body.is_end_stream());
    }
}
