//! Getting and keeping a certificate: generate a key (it never leaves this process), send a
//! CSR with the join token to `Identity.Certify`, install what comes back, and renew at about
//! half of the certificate's lifetime.

// When the token no longer proves anything (a join token past its `--ttl`), the proxy renews
// with the certificate it holds instead, presenting it on the connection, so a join token only
// has to outlive the first certification. A failed renewal retries with backoff while the
// current certificate keeps serving.

use crate::shared::Shared;
use crate::tls::MeshTls;
use crate::tls::metrics::ResultLabel;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use trellis_identity::cert::{inspect, parse_pem_chain, unix_now};
use trellis_identity::{CertInfo, SpiffeId, TrustBundle, certified_key};
use trellis_proto::v1::CertifyRequest;
use trellis_proto::v1::identity_client::IdentityClient;

const RETRY_START: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error(
        "cannot read the join token {path}: {source}; mint one with `trellis-control token create --service-account {sa}`"
    )]
    Token {
        path: String,
        sa: String,
        source: std::io::Error,
    },
    #[error(
        "the bootstrap's workload has no serviceAccount; set workload.serviceAccount to the account the join token was minted for"
    )]
    NoServiceAccount,
    #[error("no control plane to renew with")]
    NoControlPlane,
    #[error(transparent)]
    ControlPlane(#[from] trellis_proto::connect::AddressError),
    #[error(transparent)]
    Identity(#[from] trellis_identity::spiffe::SpiffeIdError),
    #[error(transparent)]
    Csr(#[from] rcgen::Error),
    #[error(transparent)]
    CaBundle(#[from] crate::config::bootstrap::CaBundleError),
    #[error("the control plane refused the certificate: {0:?}: {1}")]
    Refused(tonic::Code, String),
    #[error("the control plane's answer is unusable: {0}")]
    Answer(String),
}

/// The certificate this proxy holds, as PEM, to renew with when the token cannot.
struct Held {
    chain_pem: String,
    key_pem: String,
    not_after: i64,
}

/// Runs until the proxy drains.
pub async fn run(shared: Arc<Shared>, tls: Arc<MeshTls>, channel: Channel, token_file: PathBuf) {
    let mut client = IdentityClient::new(channel);
    let mut retry = RETRY_START;
    let mut held: Option<Held> = None;
    // The token the control plane last refused as no proof. It is not sent again until the
    // file changes (a rotated projected token, a new join token): renewal goes straight to
    // the certificate instead of costing one refused call each time.
    let mut refused_token: Option<String> = None;
    loop {
        // The trust domain comes with the config: wait for the first one.
        let Some(td) = trust_domain(&shared).await else {
            return;
        };
        let token_now = std::fs::read_to_string(&token_file).ok();
        let held_valid = held.as_ref().is_some_and(|h| h.not_after > unix_now());
        let mut result = if held_valid && token_now.is_some() && token_now == refused_token {
            Err(CertifyError::Refused(
                tonic::Code::Unauthenticated,
                "the token was refused before and has not changed".into(),
            ))
        } else {
            certify_once(&shared, &tls, &mut client, Proof::Token(&token_file), &td).await
        };
        if let Err(CertifyError::Refused(tonic::Code::Unauthenticated, _)) = &result {
            refused_token = token_now;
        }
        if let (Err(e), Some(h)) = (&result, &held)
            && token_unusable(e)
            && h.not_after > unix_now()
        {
            tracing::info!(error = %e, "the token proves nothing now; renewing with the current certificate");
            result = match renewal_client(&shared, h).await {
                Ok(mut c) => certify_once(&shared, &tls, &mut c, Proof::Certificate, &td).await,
                Err(e) => Err(e),
            };
        }
        // Skipping the token is only worth it while the certificate renews (file mode; a
        // Kubernetes control plane refuses renewal by certificate). When nothing worked, the
        // next attempt sends the token again, in case its refusal was the control plane's
        // passing trouble.
        if result.is_err() {
            refused_token = None;
        }
        let wait = match result {
            Ok((info, h)) => {
                held = Some(h);
                retry = RETRY_START;
                shared
                    .metrics
                    .security
                    .renewals
                    .get_or_create(&ResultLabel { result: "issued" })
                    .inc();
                shared.metrics.security.cert_expiry.set(info.not_after);
                let left =
                    Duration::from_secs(u64::try_from(info.not_after - unix_now()).unwrap_or(0));
                tracing::info!(identity = %info.id, serial = %info.serial, expires_unix = info.not_after, "installed a mesh certificate");
                // Renew at about half of what is left, with a little jitter so that proxies
                // started together do not renew together.
                left.mul_f64(rand::random_range(0.45..0.55))
            }
            Err(e) => {
                shared
                    .metrics
                    .security
                    .renewals
                    .get_or_create(&ResultLabel { result: "failed" })
                    .inc();
                tracing::warn!(error = %e, retry_in = ?retry, "cannot get a mesh certificate; the current one (if any) keeps serving");
                let w = retry;
                retry = (retry * 2).min(RETRY_MAX);
                w
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.drain.wait() => return,
        }
    }
}

async fn trust_domain(shared: &Shared) -> Option<String> {
    loop {
        if let Some(rt) = shared.config.current_full() {
            return Some(rt.snapshot.mesh.trust_domain.clone());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = shared.drain.wait() => return None,
        }
    }
}

/// What proves the identity to Certify.
enum Proof<'a> {
    /// The join token (or projected service-account token) in this file.
    Token(&'a PathBuf),
    /// The certificate the connection presented; the request carries no token.
    Certificate,
}

/// Whether the token cannot prove the identity (gone, unreadable, expired or refused), so
/// that the certificate the proxy holds should.
fn token_unusable(e: &CertifyError) -> bool {
    matches!(
        e,
        CertifyError::Token { .. } | CertifyError::Refused(tonic::Code::Unauthenticated, _)
    )
}

/// A connection to Identity that presents the held certificate.
async fn renewal_client(
    shared: &Shared,
    held: &Held,
) -> Result<IdentityClient<Channel>, CertifyError> {
    let cp = shared
        .bootstrap
        .control_plane
        .as_ref()
        .ok_or(CertifyError::NoControlPlane)?;
    let ca = cp.ca_pem()?;
    let endpoint = trellis_proto::connect::endpoint_with_identity(
        &cp.address,
        &ca,
        &held.chain_pem,
        &held.key_pem,
    )?
    .connect_timeout(Duration::from_secs(3));
    let channel = endpoint.connect().await.map_err(|e| {
        CertifyError::Refused(tonic::Code::Unavailable, format!("cannot connect: {e}"))
    })?;
    Ok(IdentityClient::new(channel))
}

async fn certify_once(
    shared: &Shared,
    tls: &MeshTls,
    client: &mut IdentityClient<Channel>,
    proof: Proof<'_>,
    trust_domain: &str,
) -> Result<(CertInfo, Held), CertifyError> {
    let w = &shared.bootstrap.workload;
    let sa = w
        .service_account
        .as_deref()
        .ok_or(CertifyError::NoServiceAccount)?;
    let id = SpiffeId::new(trust_domain, &w.namespace, sa)?;
    let token = match proof {
        Proof::Token(file) => std::fs::read_to_string(file)
            .map_err(|source| CertifyError::Token {
                path: file.display().to_string(),
                sa: format!("{}/{sa}", w.namespace),
                source,
            })?
            .trim()
            .to_string(),
        Proof::Certificate => String::new(),
    };
    let (key, csr) = csr_for(&id)?;
    let answer = client
        .certify(CertifyRequest { csr, token })
        .await
        .map_err(|s| CertifyError::Refused(s.code(), s.message().to_string()))?
        .into_inner();
    let bad = |e: &dyn std::fmt::Display| CertifyError::Answer(e.to_string());
    let chain = parse_pem_chain(
        answer.certificate_chain.join("").as_bytes(),
        "the certificate chain",
    )
    .map_err(|e| bad(&e))?;
    let info = inspect(&chain[0]).map_err(|e| bad(&e))?;
    if info.id != id {
        return Err(CertifyError::Answer(format!(
            "the certificate is for {}, not {id}",
            info.id
        )));
    }
    let roots = parse_pem_chain(answer.trust_bundle.join("").as_bytes(), "the trust bundle")
        .map_err(|e| bad(&e))?;
    let bundle = TrustBundle::new(trust_domain, roots).map_err(|e| bad(&e))?;
    let held = Held {
        chain_pem: answer.certificate_chain.join(""),
        key_pem: key.serialize_pem(),
        not_after: info.not_after,
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let certified = certified_key(chain, key).map_err(|e| bad(&e))?;
    certified.keys_match().map_err(|e| {
        CertifyError::Answer(format!("the certificate does not match the key: {e}"))
    })?;
    // Bundle first: a peer with a new certificate from a rotated root must already verify.
    tls.bundle.store(Arc::new(bundle));
    tls.cert.set(certified);
    tls.info.store(Some(Arc::new(info.clone())));
    (tls.pem).store(Some(Arc::new((
        held.chain_pem.clone(),
        held.key_pem.clone(),
    ))));
    tls.installed.notify_one();
    Ok((info, held))
}

/// A fresh P-256 key and a CSR asking for exactly `id`.
fn csr_for(id: &SpiffeId) -> Result<(KeyPair, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into()?)];
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((key, csr))
}
