//! The one accept loop behind every listener of trellis-proxy and trellis-control: a cap on
//! open connections, backoff instead of a busy loop when the process runs out of file
//! descriptors, and `TCP_NODELAY` on every accepted stream.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The first pause after a failed accept; each further failure doubles it up to
/// `MAX_BACKOFF`. Short, because a closing connection frees a descriptor at any moment.
const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// At EMFILE every accept fails, so one warning per interval, with a count of the rest.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// A bound listener that accepts at most `max_connections` connections at a time.
///
/// At the cap it stops calling `accept(2)`: new clients wait in the kernel's backlog (and
/// time out there if it stays full) rather than being accepted only to be closed.
pub struct Listener {
    inner: TcpListener,
    name: &'static str,
    max_connections: usize,
    permits: Arc<Semaphore>,
    /// The last pause, `None` after a successful accept.
    backoff: Option<Duration>,
    /// Kept on `self`, not in the future, so an `accept` cancelled by a `select!` during its
    /// pause does not let the next call skip it.
    retry_at: Option<Instant>,
    warned: Warned,
}

/// Held by the task that serves a connection: the connection counts against its listener's
/// cap until this drops.
#[derive(Debug)]
#[must_use = "the connection stops counting against the cap once the permit drops"]
pub struct ConnectionPermit {
    _permit: OwnedSemaphorePermit,
}

/// What a failed `accept(2)` means for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptFailure {
    /// Out of descriptors or socket memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): retrying at
    /// once fails again, so back off.
    Resource,
    /// One connection failed before it was accepted (ECONNABORTED, ECONNRESET, EINTR,
    /// EPROTO, EPERM from a firewall): the next one may be fine, so go on at once.
    Transient,
    /// Anything else: back off as for `Resource`, since it may well repeat.
    Other,
}

/// Rate limit for warnings: when the last one was logged and how many were skipped since.
#[derive(Default)]
struct Warned {
    at: Option<Instant>,
    suppressed: u64,
}

// === impl Listener ===

impl Listener {
    /// Wraps `inner`; `name` labels its log lines ("admin", "inbound"). A cap of 0 is taken as 1.
    pub fn new(inner: TcpListener, name: &'static str, max_connections: usize) -> Self {
        let max_connections = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Listener {
            inner,
            name,
            max_connections,
            permits: Arc::new(Semaphore::new(max_connections)),
            backoff: None,
            retry_at: None,
            warned: Warned::default(),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The next connection, with the permit its task must hold. Never fails: errors are
    /// logged and retried here. Cancel-safe: dropping the future loses no connection and no
    /// pending backoff, so it can be raced against a drain in `tokio::select!`.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, ConnectionPermit) {
        loop {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
                self.retry_at = None;
            }
            let permit = match self.permits.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    if self.warned.due() {
                        tracing::warn!(
                            listener = self.name,
                            max = self.max_connections,
                            "listener at its connection cap; new connections wait in the kernel backlog until one closes"
                        );
                    }
                    self.permits
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("the listener never closes its semaphore")
                }
            };
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    self.backoff = None;
                    // Small writes (HTTP heads, gRPC frames, forwarded bytes) go out now,
                    // not after Nagle's delay.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(listener = self.name, %peer, error = %e, "cannot set TCP_NODELAY");
                    }
                    return (stream, peer, ConnectionPermit { _permit: permit });
                }
                Err(e) => self.failed(&e),
            }
        }
    }

    fn failed(&mut self, e: &io::Error) {
        let failure = classify(e);
        if failure == AcceptFailure::Transient {
            tracing::debug!(listener = self.name, error = %e, "a connection failed before it was accepted");
            return;
        }
        let pause = next_backoff(self.backoff);
        self.backoff = Some(pause);
        self.retry_at = Some(Instant::now() + pause);
        if !self.warned.due() {
            return;
        }
        let suppressed = std::mem::take(&mut self.warned.suppressed);
        if failure == AcceptFailure::Resource {
            tracing::warn!(
                listener = self.name, error = %e, ?pause, suppressed,
                "accept failed: out of file descriptors or socket memory; raise the file descriptor limit (ulimit -n, or LimitNOFILE under systemd) or lower the connection cap"
            );
        } else {
            tracing::warn!(listener = self.name, error = %e, ?pause, suppressed, "accept failed; retrying");
        }
    }
}

impl Warned {
    /// Whether to log now; a `false` counts a suppressed line.
    fn due(&mut self) -> bool {
        let now = Instant::now();
        if self
            .at
            .is_some_and(|at| now.duration_since(at) < WARN_EVERY)
        {
            self.suppressed += 1;
            return false;
        }
        self.at = Some(now);
        true
    }
}

/// Sorts a failed `accept(2)` by what the loop should do next.
pub fn classify(e: &io::Error) -> AcceptFailure {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => AcceptFailure::Resource,
        Some(libc::ECONNABORTED | libc::ECONNRESET | libc::EINTR | libc::EPROTO | libc::EPERM) => {
            AcceptFailure::Transient
        }
        _ => AcceptFailure::Other,
    }
}

/// The pause after a failure that followed a pause of `prev` (`None`: the first failure).
pub fn next_backoff(prev: Option<Duration>) -> Duration {
    match prev {
        None => MIN_BACKOFF,
        Some(d) => (d * 2).clamp(MIN_BACKOFF, MAX_BACKOFF),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_small_doubles_and_stops_at_a_second() {
        let mut pauses = Vec::new();
        let mut prev = None;
        for _ in 0..12 {
            let d = next_backoff(prev);
            pauses.push(d.as_millis());
            prev = Some(d);
        }
        assert_eq!(
            pauses,
            [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000]
        );
    }

    #[test]
    fn out_of_descriptors_backs_off_and_a_lost_connection_does_not() {
        let os = io::Error::from_raw_os_error;
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert_eq!(
                classify(&os(errno)),
                AcceptFailure::Resource,
                "errno {errno}"
            );
        }
        for errno in [
            libc::ECONNABORTED,
            libc::ECONNRESET,
            libc::EINTR,
            libc::EPROTO,
            libc::EPERM,
        ] {
            assert_eq!(
                classify(&os(errno)),
                AcceptFailure::Transient,
                "errno {errno}"
            );
        }
        assert_eq!(classify(&os(libc::EBADF)), AcceptFailure::Other);
        assert_eq!(
            classify(&io::Error::other("no errno")),
            AcceptFailure::Other
        );
    }

    #[tokio::test]
    async fn at_the_cap_the_next_client_waits_until_a_permit_drops() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let mut listener = Listener::new(inner, "test", 1);

        let first = TcpStream::connect(addr).await.unwrap();
        let (stream, peer, permit) = listener.accept().await;
        assert_eq!(peer, first.local_addr().unwrap());
        assert!(
            stream.nodelay().unwrap(),
            "accepted streams have TCP_NODELAY"
        );

        // The kernel completes the handshake from its backlog, but the loop must not take it.
        let second = TcpStream::connect(addr).await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(
            early.is_err(),
            "a second connection was accepted at a cap of 1"
        );

        // Closing the first connection's stream is not enough: the permit is what counts.
        drop(stream);
        let still = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(
            still.is_err(),
            "accepted while the first permit was still held"
        );

        drop(permit);
        let (_s, peer, _p) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("the waiting client is accepted once the permit drops");
        assert_eq!(peer, second.local_addr().unwrap());
    }

    #[tokio::test]
    async fn a_cancelled_accept_keeps_its_pause() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut listener = Listener::new(inner, "test", 1);
        for _ in 0..9 {
            listener.failed(&io::Error::from_raw_os_error(libc::EMFILE));
        }
        assert_eq!(listener.backoff, Some(MAX_BACKOFF));
        let due = listener.retry_at.expect("a pause is pending");
        // Cancelled mid-pause, as by a `select!` arm that won.
        let _ = tokio::time::timeout(Duration::from_millis(10), listener.accept()).await;
        assert_eq!(
            listener.retry_at,
            Some(due),
            "the pause survives cancellation"
        );
        // A transient failure neither adds a pause nor resets the backoff.
        listener.failed(&io::Error::from_raw_os_error(libc::ECONNABORTED));
        assert_eq!(listener.backoff, Some(MAX_BACKOFF));
        assert_eq!(listener.retry_at, Some(due));
    }
}
