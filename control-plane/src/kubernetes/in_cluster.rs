//! Kubernetes mode's start, before the control plane's own: the CA from the shared Secret
//! (written to the state dir for the identity module), the caBundle and CA root published,
//! and the injector webhook listening with a certificate from that CA.

use super::ca::{self as cluster_ca, ClusterCaError};
use crate::identity::ca::CaSource;
use crate::inject::InjectConfig;
use crate::inject::webhook::{self, WebhookError};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Why Kubernetes mode could not start. Each message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum InClusterError {
    #[error(
        "cannot reach the Kubernetes API: {0}; --kubernetes runs in a cluster or with a kubeconfig"
    )]
    Connect(kube::Error),
    #[error(transparent)]
    Ca(#[from] ClusterCaError),
    #[error("cannot issue the webhook certificate: {0}")]
    WebhookCert(rcgen::Error),
    #[error(transparent)]
    WebhookTls(#[from] WebhookError),
    #[error("cannot listen on {addr} for the webhook: {source}; set --webhook-addr")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What `prepare` started: the cluster client, the CA files the control plane loads, and the
/// webhook task.
pub struct InCluster {
    pub client: kube::Client,
    pub ca: CaSource,
    pub webhook: JoinHandle<()>,
}

/// Loads (or creates) the cluster CA in `namespace`, writes it under `state_dir`, publishes
/// it, and serves the injector webhook on `webhook_addr`, injecting `proxy_image` when given.
pub async fn prepare(
    namespace: &str,
    state_dir: &Path,
    webhook_addr: SocketAddr,
    proxy_image: Option<&str>,
) -> Result<InCluster, InClusterError> {
    let client = kube::Client::try_default()
        .await
        .map_err(InClusterError::Connect)?;
    let ca = cluster_ca::load_or_create(client.clone(), namespace).await?;
    let ca_source = cluster_ca::write_files(&ca, state_dir)?;
    let service = format!("trellis-control.{namespace}.svc");
    let names = vec![service.clone(), format!("{service}.cluster.local")];
    let (chain, key) =
        cluster_ca::issue_serving_cert(&ca, &names).map_err(InClusterError::WebhookCert)?;
    if let Err(e) = cluster_ca::publish_ca_bundle(client.clone(), &ca.cert).await {
        // Injection fails until this succeeds; say so, but keep serving the mesh.
        tracing::error!("{e}; pods in injected namespaces cannot be created until it is set");
    }
    if let Err(e) = cluster_ca::publish_ca_root(client.clone(), namespace, &ca.cert).await {
        tracing::error!("{e}; the trellis gateway cannot start until it exists");
    }
    let tls = webhook::acceptor(chain.as_bytes(), key.as_bytes())?;
    let listener = tokio::net::TcpListener::bind(webhook_addr)
        .await
        .map_err(|source| InClusterError::Listen {
            addr: webhook_addr,
            source,
        })?;
    let mut cfg = InjectConfig::default();
    if let Some(image) = proxy_image {
        cfg.proxy_image = image.to_string();
    }
    cfg.control_plane = format!("https://{service}:15010");
    cfg.ca_bundle = Some(ca.cert.clone());
    tracing::info!(addr = %webhook_addr, "injector webhook listening");
    let webhook = tokio::spawn(webhook::serve(listener, tls, Arc::new(cfg)));
    Ok(InCluster {
        client,
        ca: ca_source,
        webhook,
    })
}
