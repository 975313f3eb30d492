//! Carrying one opaque connection once both ends are open: bytes both ways with half-close,
//! counted as they pass; closed when idle past the Service's `tcp.idleTimeout`; on the inbound
//! side, closed as soon as a config change makes AuthorizationPolicy deny it; and counted as
//! open, so that a drain waits for it (`drain.rs`).

// A config change that leaves the connection's Service alone never touches it: the copy holds
// only the two sockets, never the snapshot it started under. Kafka's request headers are read
// as they pass, without holding a byte back (`kafka.rs`).

use crate::clock;
use crate::inbound::authz;
use crate::l4::kafka::KafkaWatch;
use crate::shared::Shared;
use crate::telemetry::metrics::TcpSeries;
use prometheus_client::metrics::counter::Counter;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use trellis_config::model::AppProtocol;
use trellis_identity::SpiffeId;

/// How one opaque connection is carried.
pub struct Carry {
    pub series: TcpSeries,
    /// Close after this long with no byte either way; `None`: never.
    pub idle: Option<Duration>,
    /// What the port carries, as its Service declares it (`tcp` when undeclared).
    pub protocol: AppProtocol,
    /// Inbound: the app port and the caller, authorized again after every config change.
    pub recheck: Option<Recheck>,
}

/// An inbound connection's authorization, to be checked again when the config changes.
pub struct Recheck {
    pub port: u16,
    /// `None`: a plaintext caller.
    pub identity: Option<Arc<SpiffeId>>,
}

/// Why a carried connection ended, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Both sides finished (or one failed).
    Closed,
    Idle,
    Denied,
}

/// Copies both ways until both directions are done. When one side finishes sending, the
/// other side's write half is shut down (a TCP half-close) and the other direction carries
/// on until it finishes too.
pub async fn carry<D, U>(shared: &Shared, down: D, mut up: U, how: Carry) -> Ended
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let _open = shared.drain.opaque_open();
    let Carry {
        series,
        idle,
        protocol,
        recheck,
    } = how;
    series.opened.inc();
    let last = AtomicU64::new(clock::nanos(clock::now()));
    let mut down = Counted {
        inner: down,
        read: series.sent.clone(),
        written: series.received.clone(),
        last: &last,
        kafka: (protocol == AppProtocol::Kafka)
            .then(|| KafkaWatch::new(&shared.metrics.kafka, &series.labels)),
    };
    let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
    let ended = tokio::select! {
        r = copy => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "tcp connection ended with an error");
            }
            Ended::Closed
        }
        _ = idle_for(idle, &last) => Ended::Idle,
        _ = denied(shared, recheck.as_ref()) => Ended::Denied,
    };
    if let Some(k) = down.kafka.take() {
        k.closed();
    }
    match ended {
        Ended::Idle => shared.metrics.tcp_cut(&series.labels, "idle"),
        Ended::Denied => shared.metrics.tcp_cut(&series.labels, "denied"),
        Ended::Closed => {}
    }
    series.closed.inc();
    ended
}

/// Resolves once no byte has passed for `idle`; never when `idle` is `None`.
async fn idle_for(idle: Option<Duration>, last: &AtomicU64) {
    let Some(idle) = idle else {
        return std::future::pending().await;
    };
    loop {
        let seen = Duration::from_nanos(last.load(Ordering::Relaxed));
        let quiet = clock::now().saturating_sub(seen);
        if quiet >= idle {
            tracing::debug!(?idle, "closing an idle opaque connection");
            return;
        }
        tokio::time::sleep(idle - quiet).await;
    }
}

/// Resolves when a config change makes AuthorizationPolicy deny the connection; never
/// without a `recheck`. The denial is counted and logged as any other.
async fn denied(shared: &Shared, recheck: Option<&Recheck>) {
    let Some(r) = recheck else {
        return std::future::pending().await;
    };
    let mut changes = shared.config.subscribe();
    changes.mark_unchanged();
    while changes.changed().await.is_ok() {
        let Some(rt) = shared.config.current_full() else {
            continue;
        };
        let id = r.identity.as_deref();
        if authz::authorize(shared, &rt, r.port, id, &authz::Call::Tcp).is_err() {
            tracing::info!(
                port = r.port,
                "closing an open opaque connection: AuthorizationPolicy now denies it"
            );
            return;
        }
    }
    std::future::pending().await
}

/// The downstream side of the copy: counts bytes as they pass, so long-lived connections
/// show up in the byte counters before they close; notes the time of the last byte; and
/// shows Kafka's bytes to the decoder.
struct Counted<'a, S> {
    inner: S,
    read: Counter,
    written: Counter,
    last: &'a AtomicU64,
    kafka: Option<KafkaWatch<'a>>,
}

impl<S> Counted<'_, S> {
    fn passed(&self) -> u64 {
        let now = clock::nanos(clock::now());
        self.last.store(now, Ordering::Relaxed);
        now
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read.inc_by(n as u64);
            let now = self.passed();
            if let Some(k) = self.kafka.as_mut() {
                k.client_bytes(&buf.filled()[before..], now);
            }
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            self.written.inc_by(n as u64);
            if n > 0 {
                let now = self.passed();
                if let Some(k) = self.kafka.as_mut() {
                    k.broker_bytes(&buf[..n], now);
                }
            }
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
