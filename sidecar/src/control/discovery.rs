//! The proxy's side of the discovery protocol: subscribe, apply each update whole or not at
//! all, answer ACK or NACK, and keep serving the last good snapshot while the control plane
//! is away, reconnecting with jittered backoff.

use crate::shared::Shared;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use trellis_config::resources::{ResourceSet, Update, from_wire, held_hashes};
use trellis_proto::v1::discovery_client::DiscoveryClient;
use trellis_proto::v1::discovery_request::Kind;
use trellis_proto::v1::{Ack, DiscoveryRequest, DiscoveryResponse, Nack, Node, Subscribe};

const BACKOFF_START: Duration = Duration::from_millis(100);
/// With jitter a retry comes at most 1.5 × this apart, which must stay under the control
/// plane's registration grace (default 10s) for a restart to lose no endpoints.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Runs until the proxy drains.
pub async fn run(shared: Arc<Shared>, endpoint: tonic::transport::Endpoint, mut node: Node) {
    let address = endpoint.uri().to_string();
    // The resources behind the served snapshot; deltas apply on top of them.
    let mut held = ResourceSet::default();
    let mut backoff = BACKOFF_START;
    loop {
        let started = Instant::now();
        // Callers send mTLS to endpoints registered with `mtls`, so a proxy claims it only once
        // its certificate is installed; it then subscribes again to say so.
        node.mtls = shared.tls.as_ref().is_some_and(|t| t.is_ready());
        let certified = async {
            match &shared.tls {
                Some(t) if !node.mtls => t.installed.notified().await,
                _ => std::future::pending().await,
            }
        };
        let endpoint = match gateway_endpoint(&shared, &node) {
            Some(e) => e,
            None => endpoint.clone(),
        };
        tokio::select! {
            res = session(&shared, &endpoint, &address, &node, &mut held) => match res {
                Ok(()) => tracing::warn!(%address, "the control plane closed the stream; reconnecting"),
                // An operator must upgrade one side; the message says which. Retried with the
                // same backoff, since the upgrade may be under way.
                Err(e) if e.is::<Incompatible>() => tracing::error!(%address, error = %e, "the control plane and this proxy speak no common discovery protocol; serving the last good config and retrying"),
                Err(e) => tracing::warn!(%address, error = %e, "control plane unavailable; serving the last good config and retrying"),
            },
            _ = certified => {
                tracing::info!("mesh certificate installed; registering as an mTLS endpoint");
                continue;
            }
            _ = shared.drain.wait() => return,
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = BACKOFF_START;
        }
        // Full jitter around the backoff, so a restarted control plane is not stampeded.
        let wait = backoff.mul_f64(rand::rng().random_range(0.5..1.5));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.drain.wait() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A gateway proxy's endpoint once it holds its mesh certificate: the same control plane,
/// with that certificate as the client's. The control plane sends a Gateway's keys only to a
/// stream that proves an identity in the Gateway's namespace (docs/gateway.md).
fn gateway_endpoint(shared: &Shared, node: &Node) -> Option<tonic::transport::Endpoint> {
    if node.gateway.is_empty() || !node.mtls {
        return None;
    }
    let pem = shared.tls.as_ref()?.pem.load_full()?;
    let cp = shared.bootstrap.control_plane.as_ref()?;
    let ca = cp.ca_pem().ok()?;
    let e = trellis_proto::connect::endpoint_with_identity(&cp.address, &ca, &pem.0, &pem.1)
        .inspect_err(|e| tracing::warn!(error = %e, "cannot present the mesh certificate to the control plane"))
        .ok()?;
    Some(e.connect_timeout(Duration::from_secs(3)).tcp_nodelay(true))
}

async fn session(
    shared: &Shared,
    endpoint: &tonic::transport::Endpoint,
    address: &str,
    node: &Node,
    held: &mut ResourceSet,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let channel = endpoint.connect().await?;
    let mut client = DiscoveryClient::new(channel);
    let (tx, rx) = mpsc::channel(8);
    let version = shared
        .config
        .current_full()
        .map(|rt| rt.snapshot.version.clone())
        .unwrap_or_default();
    tx.send(request(Kind::Subscribe(Subscribe {
        node: Some(node.clone()),
        version,
        protocol: trellis_proto::PROTOCOL,
        release: RELEASE.to_string(),
        // So that a control plane whose snapshot differs sends only the difference.
        held: held_hashes(held.hashes()),
    })))
    .await?;
    let response = match client.stream(ReceiverStream::new(rx)).await {
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            return Err(Incompatible(s.message().to_string()).into());
        }
        res => res?,
    };
    check_control_plane(response.metadata())?;
    let interval = summary_interval(response.metadata());
    let mut updates = response.into_inner();
    tracing::info!(%address, "subscribed to the control plane");
    if node.mtls
        && let Some(tls) = &shared.tls
    {
        tls.registered
            .store(true, std::sync::atomic::Ordering::Release);
    }
    // Parts of a split update, gathered until the last one arrives.
    let mut pending: Option<DiscoveryResponse> = None;
    let mut summaries = interval.map(|i| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + i, i);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut sent = super::summary::Sent::default();
    loop {
        let tick = async {
            match &mut summaries {
                Some(t) => t.tick().await,
                None => std::future::pending().await,
            }
        };
        let part = tokio::select! {
            part = updates.message() => match part? {
                Some(part) => part,
                None => break,
            },
            _ = tick => {
                // Counts are cumulative, so a Summary skipped while the queue is full loses
                // nothing: the next one carries it.
                let s = super::summary::summary(shared, &mut sent);
                let _ = tx.try_send(request(Kind::Summary(s)));
                continue;
            }
        };
        let update = match pending.take() {
            Some(mut acc) if acc.nonce == part.nonce => {
                acc.upserted.extend(part.upserted);
                acc.removed.extend(part.removed);
                acc.more = part.more;
                acc
            }
            _ => part,
        };
        if update.more {
            pending = Some(update);
            continue;
        }
        let started = Instant::now();
        let version = update.version.clone();
        let nonce = update.nonce.clone();
        let answer = match apply(shared, held, update, started) {
            Ok(()) => Kind::Ack(Ack { version, nonce }),
            Err(error) => {
                tracing::error!(%version, %error, "refused an update; still serving the previous config");
                shared.metrics.config_rejected(started.elapsed());
                Kind::Nack(Nack {
                    version,
                    nonce,
                    error: error.to_string(),
                })
            }
        };
        tx.send(request(answer)).await?;
    }
    Ok(())
}

fn request(kind: Kind) -> DiscoveryRequest {
    DiscoveryRequest { kind: Some(kind) }
}

/// How often the control plane asks for a `Summary`, from its response headers; `None` when
/// it does not (a control plane from before summaries, or one that turned them off).
fn summary_interval(headers: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let secs: f64 = headers
        .get(trellis_proto::SUMMARY_INTERVAL_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    // At most one a second, whatever the header says.
    (secs > 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs.max(1.0)))
}

/// This proxy's release.
const RELEASE: &str = env!("CARGO_PKG_VERSION");

/// The control plane and this proxy speak no common discovery protocol. The message names
/// the side to upgrade.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Incompatible(String);

/// A control plane refuses a proxy whose protocol it does not serve, so the proxy checks only
/// what such a refusal cannot cover: a control plane older than protocol negotiation, which
/// names no protocol in its response headers and speaks protocol 1 (JSON resources this
/// proxy cannot read). Upgrades go control plane first, so a control plane older than the
/// proxy is the one to upgrade.
fn check_control_plane(headers: &tonic::metadata::MetadataMap) -> Result<(), Incompatible> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let protocol = header(trellis_proto::PROTOCOL_HEADER)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    if protocol >= trellis_proto::PROTOCOL {
        return Ok(());
    }
    let release = header(trellis_proto::RELEASE_HEADER).map_or_else(
        || "a release that does not say".to_string(),
        |r| format!("release {r}"),
    );
    Err(Incompatible(format!(
        "the control plane ({release}) speaks discovery protocol {protocol}; this proxy \
         (release {RELEASE}) speaks {}: upgrade the control plane to release {RELEASE} or \
         later first, then the proxies",
        trellis_proto::PROTOCOL
    )))
}

/// Why an update was refused; its text goes back to the control plane in the NACK.
#[derive(Debug, thiserror::Error)]
enum UpdateError {
    #[error(transparent)]
    Assemble(#[from] trellis_config::resources::AssembleError),
    #[error(transparent)]
    Build(#[from] crate::config::registry::BuildError),
}

/// Applies one update atomically: the new snapshot is staged aside, checked, built into a
/// runtime and swapped in; only then does the held set change. Only the upserted resources
/// are decoded, and the runtime is rebuilt only where they changed it.
fn apply(
    shared: &Shared,
    held: &mut ResourceSet,
    update: DiscoveryResponse,
    started: Instant,
) -> Result<(), UpdateError> {
    let upserted = (update.upserted.iter())
        .map(from_wire)
        .collect::<Result<Vec<_>, _>>()?;
    let (snapshot, staged) = held.stage(Update {
        replace: update.replace,
        upserted,
        removed: (update.removed.into_iter())
            .map(|k| (k.kind, k.name))
            .collect(),
        version: update.version,
    })?;
    let version = snapshot.version.clone();
    if shared.config.apply(snapshot, &shared.metrics)? {
        shared.metrics.config_applied(&version, started.elapsed());
        tracing::info!(%version, "config applied");
    }
    held.commit(staged);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataMap;

    #[test]
    fn a_control_plane_that_names_no_protocol_is_one_to_upgrade() {
        let err = check_control_plane(&MetadataMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("speaks discovery protocol 1;"), "{err}");
        assert!(
            err.contains(&format!("upgrade the control plane to release {RELEASE}")),
            "{err}"
        );
        let mut current = MetadataMap::new();
        current.insert(
            trellis_proto::PROTOCOL_HEADER,
            trellis_proto::PROTOCOL.into(),
        );
        assert!(check_control_plane(&current).is_ok());
    }
}
