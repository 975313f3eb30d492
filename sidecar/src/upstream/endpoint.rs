//! One endpoint's live state: its address and TLS name, connection pool, in-flight count,
//! latency estimate and health. It outlives config swaps while the endpoint stays in its
//! cluster, so a reload forgets neither latency, nor ejections, nor open connections.

use super::ewma::Ewma;
use crate::clock;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Live state of one endpoint. It outlives config swaps while the endpoint stays in its cluster.
#[derive(Debug)]
pub struct EndpointState {
    pub addr: SocketAddr,
    /// Precomputed so that building the upstream URI does not allocate.
    pub authority: http::uri::Authority,
    /// The TLS server name encoding the SPIFFE ID this endpoint's sidecar must prove, when
    /// calls to it originate mTLS (see `SpiffeId::server_name`).
    pub tls: Option<super::pool::SharedName>,
    /// The endpoint is another Trellis sidecar, so opaque TCP to it opens with a preface.
    pub sidecar: bool,
    /// Its connections: they live and die with this state (see `pool.rs`).
    pub pool: super::pool::Pool,
    pub active: AtomicUsize,
    pub ewma: Ewma,
    pub health: EndpointHealth,
}

impl EndpointState {
    pub fn new(addr: SocketAddr) -> EndpointState {
        let authority = addr
            .to_string()
            .parse()
            .expect("a socket address is a valid authority");
        EndpointState {
            addr,
            authority,
            tls: None,
            sidecar: false,
            pool: Default::default(),
            active: AtomicUsize::new(0),
            ewma: Ewma::default(),
            health: EndpointHealth::default(),
        }
    }
}

/// Counts one in-flight request on an endpoint until dropped.
pub struct InFlight(Arc<EndpointState>);

impl InFlight {
    pub fn new(ep: Arc<EndpointState>) -> InFlight {
        ep.active.fetch_add(1, Ordering::Relaxed);
        InFlight(ep)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An endpoint's health as outlier detection sees it. Lives in `EndpointState`, so it
/// survives config swaps with the endpoint.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    pub(super) consecutive: AtomicU32,
    /// Envoy's ejection multiplier: times ejected, less one per `interval` spent healthy.
    pub(super) ejections: AtomicU32,
    /// Clock nanos when the current or last ejection ends; 0 if never ejected.
    pub(super) until_ns: AtomicU64,
}

impl EndpointHealth {
    pub fn is_ejected(&self, now_ns: u64) -> bool {
        self.until_ns.load(Ordering::Acquire) > now_ns
    }

    /// When the current ejection ends, if the endpoint is ejected at `now`.
    pub fn ejected_until(&self, now: Duration) -> Option<Duration> {
        let until = self.until_ns.load(Ordering::Acquire);
        (until > clock::nanos(now)).then(|| Duration::from_nanos(until))
    }

    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Forgets everything: outlier detection was turned off or reconfigured.
    pub fn reset(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
        self.ejections.store(0, Ordering::Relaxed);
        self.until_ns.store(0, Ordering::Release);
    }
}
