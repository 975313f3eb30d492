//! The pooled upstream clients, one for HTTP/1.1 and one for HTTP/2, plain or mTLS by
//! endpoint. Pools are keyed by endpoint address, so they outlive config swaps.

use crate::http::body::Body;
use crate::tls::MeshTls;
use http::Uri;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct Upstreams {
    pub(super) http1: Client<Connector, Body>,
    pub(super) http2: Client<Connector, Body>,
}

/// Plain TCP for `http://` endpoints; mTLS for `https://` ones, which are sidecars with a mesh
/// identity (see `EndpointState::tls`).
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The TLS server name of every mTLS endpoint, by address: hyper's pool hands the connector
/// only the URI, so the name the endpoint's identity must prove is looked up here.
pub type TlsNames = Arc<ServerNames>;

type ServerName = rustls_pki_types::ServerName<'static>;
/// A server name, shared by every endpoint whose sidecar runs as the same identity.
pub type SharedName = Arc<ServerName>;
type Shard = arc_swap::ArcSwap<HashMap<SocketAddr, SharedName>>;

/// Addresses to server names, in shards that are each swapped whole: a connection reads one
/// without a lock, and a config change that moves one endpoint copies one shard of a few
/// hundred entries, not a map of every endpoint.
pub struct ServerNames {
    shards: Box<[Shard]>,
}

const SHARDS: usize = 64;

impl Default for ServerNames {
    fn default() -> ServerNames {
        ServerNames {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

impl ServerNames {
    fn shard(addr: &SocketAddr) -> usize {
        let ip = match addr.ip() {
            std::net::IpAddr::V4(v4) => u64::from(u32::from(v4)),
            std::net::IpAddr::V6(v6) => {
                let n = u128::from(v6);
                (n as u64) ^ ((n >> 64) as u64)
            }
        };
        let h = (ip ^ u64::from(addr.port()).rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 58) as usize % SHARDS
    }

    pub fn get(&self, addr: &SocketAddr) -> Option<SharedName> {
        self.shards[Self::shard(addr)].load().get(addr).cloned()
    }

    /// Sets (`Some`) or clears (`None`) the name of each address; copies only the shards
    /// that change.
    pub fn update(&self, changes: impl IntoIterator<Item = (SocketAddr, Option<SharedName>)>) {
        let mut by_shard: HashMap<usize, Vec<(SocketAddr, Option<SharedName>)>> = HashMap::new();
        for (addr, name) in changes {
            by_shard
                .entry(Self::shard(&addr))
                .or_default()
                .push((addr, name));
        }
        for (i, changes) in by_shard {
            let mut next = HashMap::clone(&self.shards[i].load());
            for (addr, name) in changes {
                match name {
                    Some(n) => next.insert(addr, n),
                    None => next.remove(&addr),
                };
            }
            self.shards[i].store(Arc::new(next));
        }
    }

    /// Replaces every name with `all`.
    pub fn replace(&self, all: impl IntoIterator<Item = (SocketAddr, SharedName)>) {
        let mut shards: Vec<HashMap<SocketAddr, SharedName>> = vec![HashMap::new(); SHARDS];
        for (addr, name) in all {
            shards[Self::shard(&addr)].insert(addr, name);
        }
        for (shard, map) in self.shards.iter().zip(shards) {
            shard.store(Arc::new(map));
        }
    }
}

impl Upstreams {
    /// `tls` is the proxy's identity, if it has one; `names` maps each mTLS endpoint to the
    /// server name encoding the identity it must prove.
    pub fn new(connect_timeout: Duration, tls: Option<&MeshTls>, names: TlsNames) -> Upstreams {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(connect_timeout));
        conn.enforce_http(false);
        let placeholder;
        let tls = match tls {
            Some(t) => t,
            None => {
                // Never used: without an identity no endpoint is https.
                placeholder = MeshTls::new();
                &placeholder
            }
        };
        let connector = |config: &Arc<rustls::ClientConfig>, h2: bool| {
            let names = names.clone();
            let resolve = move |uri: &Uri| {
                let addr: SocketAddr = uri
                    .authority()
                    .and_then(|a| a.as_str().parse().ok())
                    .ok_or("an mTLS endpoint URI names an IP address and port")?;
                names
                    .get(&addr)
                    .map(|n| (*n).clone())
                    .ok_or("no mesh identity is known for this endpoint any more")
            };
            // hyper-rustls sets the ALPN itself from the protocols enabled below.
            let mut config = (**config).clone();
            config.alpn_protocols.clear();
            let b = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_or_http()
                .with_server_name_resolver(resolve);
            if h2 {
                b.enable_http2().wrap_connector(conn.clone())
            } else {
                b.enable_http1().wrap_connector(conn.clone())
            }
        };
        let mut b = Client::builder(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            // A request that fails on a pooled connection the server already closed, before
            // any of it was written, is sent again on a fresh connection (the keep-alive race).
            .retry_canceled_requests(true)
            .set_host(false);
        let http1 = b.build(connector(&tls.client_http1, false));
        b.http2_only(true)
            .http2_adaptive_window(true)
            .http2_keep_alive_interval(Some(Duration::from_secs(30)));
        let http2 = b.build(connector(&tls.client_http2, true));
        Upstreams { http1, http2 }
    }
}
