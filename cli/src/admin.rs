//! The connection to trellis-control's Admin gRPC API, and errors that say what to do
//! when the control plane cannot be reached or refuses a call.

use anyhow::anyhow;
use std::future::Future;
use std::time::Duration;
use tonic::transport::Channel;
use trellis_proto::v1::admin_client::AdminClient;
use trellis_proto::v1::{
    ProxyConfigRequest, ProxyConfigResponse, RoutesRequest, RoutesResponse, ShiftRequest,
    ShiftResponse, StatRequest, StatResponse, StatusRequest, StatusResponse,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Status, Routes and ProxyConfig only read the control plane's state.
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Shift waits for ACKs on the server for up to its own timeout; leave room for the answer.
const SHIFT_MARGIN: Duration = Duration::from_secs(10);
/// What the control plane waits for ACKs when ShiftRequest.timeout_ms is 0.
pub const SHIFT_DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected Admin client.
pub struct Admin {
    client: AdminClient<Channel>,
    addr: String,
}

impl Admin {
    /// Connects to `addr` (already normalised to a URL) over TLS, trusting `ca_bundle`,
    /// failing fast when nobody listens.
    pub async fn connect(addr: &str, ca_bundle: &std::path::Path) -> anyhow::Result<Admin> {
        let pem = std::fs::read(ca_bundle).map_err(|e| {
            anyhow!(
                "cannot read the mesh CA bundle {}: {e}; pass --ca-bundle (the ca.pem in trellis-control's --state-dir)",
                ca_bundle.display()
            )
        })?;
        let channel = trellis_proto::connect::endpoint(addr, &pem)
            .map_err(|e| anyhow!("invalid --control-plane address: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot reach the control plane at {addr}: {}; is trellis-control running? \
                     set --control-plane",
                    chain(&e)
                )
            })?;
        Ok(Admin {
            client: AdminClient::new(channel),
            addr: addr.to_string(),
        })
    }

    pub async fn status(&mut self) -> anyhow::Result<StatusResponse> {
        let call = self.client.status(StatusRequest {});
        finish(&self.addr, "Status", READ_TIMEOUT, call).await
    }

    pub async fn routes(&mut self, service: String) -> anyhow::Result<RoutesResponse> {
        let call = self.client.routes(RoutesRequest { service });
        finish(&self.addr, "Routes", READ_TIMEOUT, call).await
    }

    pub async fn proxy_config(&mut self, workload: String) -> anyhow::Result<ProxyConfigResponse> {
        let call = self.client.proxy_config(ProxyConfigRequest { workload });
        finish(&self.addr, "ProxyConfig", READ_TIMEOUT, call).await
    }

    pub async fn stat(&mut self, window_seconds: u32) -> anyhow::Result<StatResponse> {
        let call = self.client.stat(StatRequest { window_seconds });
        finish(&self.addr, "Stat", READ_TIMEOUT, call).await
    }

    pub async fn shift(&mut self, req: ShiftRequest) -> anyhow::Result<ShiftResponse> {
        let wait = match req.timeout_ms {
            0 => SHIFT_DEFAULT_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let call = self.client.shift(req);
        finish(&self.addr, "Shift", wait + SHIFT_MARGIN, call).await
    }
}

/// Awaits one unary call with a deadline and turns a gRPC status into a message for people.
async fn finish<T>(
    addr: &str,
    rpc: &str,
    deadline: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(status_error(addr, rpc, &status)),
        Err(_) => Err(anyhow!(
            "the control plane at {addr} did not answer Admin.{rpc} within {}s; \
             check its logs, or try again",
            deadline.as_secs()
        )),
    }
}

/// The status message is the control plane's own explanation; the code only adds a hint
/// where the message cannot know the cause.
fn status_error(addr: &str, rpc: &str, status: &tonic::Status) -> anyhow::Error {
    let message = if status.message().is_empty() {
        status.code().description()
    } else {
        status.message()
    };
    match status.code() {
        tonic::Code::Unimplemented => anyhow!(
            "the server at {addr} does not implement Admin.{rpc} ({message}); \
             is --control-plane pointing at trellis-control, and is it as new as this trellis?"
        ),
        tonic::Code::Unavailable => anyhow!(
            "the control plane at {addr} is unavailable: {message}; \
             is trellis-control running? set --control-plane"
        ),
        _ => anyhow!("{message}"),
    }
}

/// An error and its sources, `a: b: c`, skipping a source that repeats its parent.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut last = out.clone();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !last.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_control_plane_says_what_to_do() {
        // Bind then drop a listener to get a port that nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("https://127.0.0.1:{port}");
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("ca.pem");
        std::fs::write(&bundle, testkit::pki::TestCa::new("ca").root_pem).unwrap();
        let e = Admin::connect(&addr, &bundle)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with(&format!("cannot reach the control plane at {addr}: ")),
            "{e}"
        );
        assert!(
            e.ends_with("is trellis-control running? set --control-plane"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_missing_ca_bundle_says_which_flag_to_set() {
        let e = Admin::connect(
            "https://127.0.0.1:1",
            std::path::Path::new("/nonexistent/ca.pem"),
        )
        .await
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("pass --ca-bundle"), "{e}");
    }

    #[test]
    fn a_status_message_is_shown_as_is() {
        let s = tonic::Status::not_found("no proxy named rides/trip-9; see trellis status");
        assert_eq!(
            status_error("http://x:1", "ProxyConfig", &s).to_string(),
            "no proxy named rides/trip-9; see trellis status"
        );
    }
}
