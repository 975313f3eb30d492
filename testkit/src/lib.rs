//! Shared test support for Trellis: real upstream servers (HTTP/1.1, h2c, WebSocket, gRPC)
//! on 127.0.0.1:0, and deadline-bound waiting.

pub mod grpc;
pub mod pki;
pub mod tls;
pub mod upstream;

pub use upstream::{Mode, Upstream};

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A non-loopback address of this machine, to call a listener as another host would (its
/// peer address is then not loopback). No packet is sent: connecting a UDP socket only picks
/// a route. `None` on a machine with only loopback.
pub fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.254:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}
