//! A tonic echo service: unary (with chosen failures) and bidirectional streaming.

use std::net::SocketAddr;
use std::pin::Pin;
use tokio_stream::{Stream, StreamExt, wrappers::TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

pub mod pb {
    tonic::include_proto!("trellis.test.v1");
}

use pb::echo_server::{Echo, EchoServer};
pub use pb::{EchoMessage, echo_client::EchoClient};

struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, req: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        let text = req.into_inner().text;
        if let Some(code) = text.strip_prefix("fail:") {
            let code = tonic::Code::from_i32(code.parse().unwrap_or(2));
            return Err(Status::new(code, format!("asked to fail with {code:?}")));
        }
        Ok(Response::new(EchoMessage { text }))
    }

    type BidiStream = Pin<Box<dyn Stream<Item = Result<EchoMessage, Status>> + Send>>;

    async fn bidi(
        &self,
        req: Request<Streaming<EchoMessage>>,
    ) -> Result<Response<Self::BidiStream>, Status> {
        let mut inbound = req.into_inner();
        let out = async_stream(move |tx| async move {
            while let Some(msg) = inbound.next().await {
                if tx
                    .send(msg.map(|m| EchoMessage {
                        text: format!("echo:{}", m.text),
                    }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(out)))
    }
}

/// A stream fed by a spawned task through a channel.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<EchoMessage, Status>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<EchoMessage, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Starts the echo service on 127.0.0.1:0 (h2c) and returns its address.
pub async fn start_echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    addr
}
