//! The destination a connection had before iptables redirected it to the proxy
//! (`SO_ORIGINAL_DST`, or `IP6T_SO_ORIGINAL_DST` for IPv6), read through socket2.

use socket2::SockRef;
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// The connection's original destination when NAT redirected it; `None` when it came to
/// the listener directly (its original destination is the listener itself) or the kernel
/// has no NAT entry for it.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    // A dual-stack listener sees IPv4 peers as v4-mapped IPv6; their NAT entry is IPv4.
    let local = canonical(stream.local_addr().ok()?);
    let sock = SockRef::from(stream);
    let orig = match local {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6(),
    }
    .ok()?
    .as_socket()
    .map(canonical)?;
    (orig != local).then_some(orig)
}

fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}
