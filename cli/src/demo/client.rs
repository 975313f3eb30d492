//! The demo's own HTTP client: the load generator's requests, the scrapes of the proxies'
//! admin ports, and the `/fault` switches, each with a deadline.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

pub struct Answer {
    pub status: StatusCode,
    pub trellis_error: Option<String>,
    /// The demo apps' `x-failed-call`: the deepest call that failed down the chain.
    pub failed_call: Option<String>,
    pub body: String,
}

impl Http {
    pub fn new() -> Http {
        Http {
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(64)
                .build_http(),
        }
    }

    /// One request; `Err` when there is no answer within `timeout`.
    pub async fn send(
        &self,
        method: Method,
        addr: SocketAddr,
        host: &str,
        path: &str,
        timeout: Duration,
    ) -> anyhow::Result<Answer> {
        self.send_with(method, addr, host, path, &[], timeout).await
    }

    /// `send`, with `headers` added.
    pub async fn send_with(
        &self,
        method: Method,
        addr: SocketAddr,
        host: &str,
        path: &str,
        headers: &[(&'static str, String)],
        timeout: Duration,
    ) -> anyhow::Result<Answer> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header(http::header::HOST, host);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let req = req.body(Full::new(Bytes::new()))?;
        let res = tokio::time::timeout(timeout, async {
            let res = self.client.request(req).await?;
            let status = res.status();
            let header = |name: &str| {
                (res.headers().get(name))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let (trellis_error, failed_call) = (header("trellis-error"), header("x-failed-call"));
            let body = res.into_body().collect().await?.to_bytes();
            anyhow::Ok(Answer {
                status,
                trellis_error,
                failed_call,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        })
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {addr}{path} within {timeout:?}"))??;
        Ok(res)
    }

    pub async fn get(&self, addr: SocketAddr, path: &str) -> anyhow::Result<Answer> {
        self.send(Method::GET, addr, "localhost", path, Duration::from_secs(3))
            .await
    }

    pub async fn post(&self, addr: SocketAddr, path: &str) -> anyhow::Result<Answer> {
        self.send(
            Method::POST,
            addr,
            "localhost",
            path,
            Duration::from_secs(3),
        )
        .await
    }
}
