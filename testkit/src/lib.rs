//! Shared test support for Trellis: real upstream servers (HTTP/1.1, h2c, WebSocket, gRPC)
//! on 127.0.0.1:0, and deadline-bound waiting.

pub mod grpc;
pub mod pki;
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
