//! The window of every replica, merged: this replica's own `Stat`, and each peer's, fetched
//! from the peers' HTTP port (`GET /golden`, the same counts in protobuf) and summed by
//! `merge`. `--peer` names the peers: an address, or a DNS name that resolves to each of
//! them (a headless Service), resolved on every read. An answer from this replica itself
//! (its own address among a name's) is recognised by its replica id and left out.
//!
//! The counts are what every proxy's `/metrics` already shows to whoever can reach it, and
//! the HTTP port serves `/metrics` on the same terms, so `/golden` adds no exposure.

use super::{Golden, merge, unix_now};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use prost::Message;
use std::net::SocketAddr;
use std::time::Duration;
use trellis_proto::v1::StatResponse;

/// The response header that names the replica that answered `/golden`.
pub const REPLICA_HEADER: &str = "trellis-replica";

/// How long a peer may take to answer before its share is left out (and named).
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// This replica's window (`golden`) over `window`, merged with those of `peers`. A peer
/// that does not answer is named in `unreachable`; the rest is still shown.
pub async fn gather(golden: &Golden, peers: &[String], window: Duration) -> StatResponse {
    let own = golden.stat(unix_now(), window);
    if peers.is_empty() {
        return own;
    }
    let mut addrs: Vec<(String, SocketAddr)> = Vec::new();
    let mut unreachable = Vec::new();
    for peer in peers {
        match tokio::time::timeout(PEER_TIMEOUT, tokio::net::lookup_host(peer.as_str())).await {
            Ok(Ok(found)) => addrs.extend(found.map(|a| (peer.clone(), a))),
            _ => unreachable.push(format!("{peer}: does not resolve")),
        }
    }
    let asks = addrs.iter().map(|(name, addr)| async move {
        let r = tokio::time::timeout(PEER_TIMEOUT, fetch(*addr, window)).await;
        (name, addr, r)
    });
    let mut parts = vec![own];
    for (name, addr, r) in futures_util::future::join_all(asks).await {
        match r {
            Ok(Ok((replica, _))) if replica == golden.replica => {}
            Ok(Ok((_, stat))) => parts.push(stat),
            Ok(Err(e)) => unreachable.push(format!("{name} ({addr}): {e}")),
            Err(_) => unreachable.push(format!(
                "{name} ({addr}): no answer within {PEER_TIMEOUT:?}"
            )),
        }
    }
    let mut merged = merge(parts);
    merged.unreachable = unreachable;
    merged
}

/// One peer's `/golden`: its replica id and its counts.
async fn fetch(addr: SocketAddr, window: Duration) -> Result<(String, StatResponse), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(format!("/golden?window={}", window.as_secs()))
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let res = tx.send_request(req).await.map_err(|e| e.to_string())?;
    if !res.status().is_success() {
        return Err(format!(
            "answered {} (is it a Trellis control plane of this release?)",
            res.status()
        ));
    }
    let replica = (res.headers().get(REPLICA_HEADER))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let limited = http_body_util::Limited::new(res.into_body(), 64 << 20);
    let body = limited.collect().await.map_err(|e| e.to_string())?;
    let stat =
        StatResponse::decode(body.to_bytes()).map_err(|e| format!("not a StatResponse: {e}"))?;
    Ok((replica, stat))
}
