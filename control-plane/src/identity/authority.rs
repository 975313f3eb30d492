//! The authority: the mesh CA and the proofs it accepts, and how it decides whether a CSR
//! gets a certificate.

use super::ca::Ca;
use super::proof::{IdentityProof, ProofError};
use super::token;
use rcgen::{CertificateSigningRequestParams, SanType};
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;
use trellis_identity::SpiffeId;
use trellis_proto::v1::CertifyResponse;

/// The CA and the proofs it accepts.
pub struct Authority {
    pub ca: Ca,
    proofs: Vec<Arc<dyn IdentityProof>>,
    /// Lifetime of a proxy's leaf certificate.
    pub leaf_ttl: Duration,
    /// Whether a presented mesh certificate proves its identity for a new one. On in file
    /// mode, where join tokens expire and a long-lived proxy must renew somehow; off in
    /// Kubernetes mode, where the kubelet keeps every pod's projected token fresh, so a
    /// stolen key and certificate cannot be renewed into a new one.
    pub certificate_renewal: bool,
}

impl Authority {
    pub fn new(ca: Ca, leaf_ttl: Duration) -> Authority {
        let tokens = Arc::new(token::JoinTokens::new(ca.token_key_material()));
        Authority {
            ca,
            proofs: vec![tokens],
            leaf_ttl,
            certificate_renewal: true,
        }
    }

    /// Adds another kind of proof (e.g. Kubernetes service-account tokens).
    pub fn add_proof(&mut self, proof: Arc<dyn IdentityProof>) {
        self.proofs.push(proof);
    }

    /// Checks the proof, then that the CSR asks for exactly the identity the proof vouches
    /// for, and signs it.
    /// Signs `csr_pem` for the identity proven by `token`, or, with no token, by `peer`: the
    /// mesh certificate the caller presented on this connection (a proxy renewing with the
    /// certificate it holds; the TLS layer has already checked that it chains to the mesh CA
    /// and is within its validity).
    pub async fn certify(
        &self,
        trust_domain: &str,
        csr_pem: &str,
        token: &str,
        peer: Option<&rustls_pki_types::CertificateDer<'_>>,
    ) -> Result<CertifyResponse, Status> {
        let (proven, kind) = match (token.is_empty(), peer) {
            (true, Some(_)) if !self.certificate_renewal => {
                return Err(Status::unauthenticated(
                    "this control plane does not renew a certificate on its own proof (Kubernetes mode): send the pod's projected service-account token (audience trellis)",
                ));
            }
            (true, Some(leaf)) => (
                Self::prove_by_certificate(trust_domain, leaf)?,
                "current certificate",
            ),
            _ => {
                let proof = self.proofs.iter().find(|p| p.accepts(token)).ok_or_else(|| {
                    Status::unauthenticated(
                        "the token is not a Trellis join token (or any other proof this control plane accepts); mint one with `trellis-control token create --service-account NS/SA` and set the proxy's controlPlane.tokenFile",
                    )
                })?;
                let sa = proof.prove(token).await.map_err(|e| match e {
                    ProofError::Unavailable { .. } => Status::unavailable(e.to_string()),
                    _ => Status::unauthenticated(e.to_string()),
                })?;
                let proven = SpiffeId::new(trust_domain, &sa.namespace, &sa.name).map_err(|e| {
                    Status::invalid_argument(format!(
                        "the proven service account {sa} cannot be an identity: {e}"
                    ))
                })?;
                (proven, proof.kind())
            }
        };
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            Status::invalid_argument(format!(
                "the CSR does not parse or its signature is wrong: {e}"
            ))
        })?;
        let asked: Vec<String> = csr
            .params
            .subject_alt_names
            .iter()
            .map(|san| match san {
                SanType::URI(u) => u.as_str().to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        if asked != [proven.to_string()] {
            return Err(Status::permission_denied(format!(
                "the CSR asks for {asked:?} but the {kind} proves only {proven}; a proxy may get a certificate only for its own service account"
            )));
        }
        let (chain, expires) = self
            .ca
            .sign_csr(&csr, &proven, self.leaf_ttl)
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(identity = %proven, expires_unix = expires, proof = kind, "issued a certificate");
        Ok(CertifyResponse {
            certificate_chain: chain,
            trust_bundle: self.ca.roots.clone(),
            expires_at_unix: expires,
        })
    }
}

impl Authority {
    /// The identity in a mesh certificate the caller presented: its one SPIFFE ID, in this
    /// mesh's trust domain.
    fn prove_by_certificate(
        trust_domain: &str,
        leaf: &rustls_pki_types::CertificateDer<'_>,
    ) -> Result<SpiffeId, Status> {
        let info = trellis_identity::cert::inspect(leaf).map_err(|e| {
            Status::unauthenticated(format!(
                "the client certificate is not a mesh certificate: {e}; certify with a join token"
            ))
        })?;
        if info.id.trust_domain != trust_domain {
            return Err(Status::unauthenticated(format!(
                "the client certificate is for trust domain {:?}, not this mesh's {trust_domain:?}; certify with a join token",
                info.id.trust_domain
            )));
        }
        Ok(info.id)
    }
}
