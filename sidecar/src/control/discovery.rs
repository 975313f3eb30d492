//! The proxy's side of the discovery protocol: subscribe, apply each update whole or not at
//! all, answer ACK or NACK, and keep serving the last good snapshot while the control plane
//! is away, reconnecting with jittered backoff.

use crate::shared::Shared;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use trellis_config::resources::{ResourceSet, Update, from_wire};
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
        tokio::select! {
            res = session(&shared, &endpoint, &address, &node, &mut held) => match res {
                Ok(()) => tracing::warn!(%address, "the control plane closed the stream; reconnecting"),
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
    })))
    .await?;
    let mut updates = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    tracing::info!(%address, "subscribed to the control plane");
    if node.mtls
        && let Some(tls) = &shared.tls
    {
        tls.registered
            .store(true, std::sync::atomic::Ordering::Release);
    }
    // Parts of a split update, gathered until the last one arrives.
    let mut pending: Option<DiscoveryResponse> = None;
    while let Some(part) = updates.message().await? {
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
