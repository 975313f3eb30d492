//! Workload identity: the CA, the proofs a proxy may show, and the `Identity.Certify` gRPC
//! service that trades a proof and a CSR for a short-lived SPIFFE certificate.

pub mod ca;
pub mod proof;
pub mod serving;
pub mod token;

use crate::ControlPlane;
use ca::Ca;
use proof::{IdentityProof, ProofError};
use rcgen::{CertificateSigningRequestParams, SanType};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};
use trellis_identity::SpiffeId;
use trellis_proto::v1::{CertifyRequest, CertifyResponse};

/// The CA and the proofs it accepts.
pub struct Authority {
    pub ca: Ca,
    pub tokens: Arc<token::JoinTokens>,
    proofs: Vec<Arc<dyn IdentityProof>>,
    /// Lifetime of a proxy's leaf certificate.
    pub leaf_ttl: Duration,
}

impl Authority {
    pub fn new(ca: Ca, leaf_ttl: Duration) -> Authority {
        let tokens = Arc::new(token::JoinTokens::new(ca.token_key_material()));
        Authority {
            ca,
            proofs: vec![tokens.clone()],
            tokens,
            leaf_ttl,
        }
    }

    /// Adds another kind of proof (e.g. Kubernetes service-account tokens).
    pub fn add_proof(&mut self, proof: Arc<dyn IdentityProof>) {
        self.proofs.push(proof);
    }

    /// Checks the proof, then that the CSR asks for exactly the identity the proof vouches
    /// for, and signs it.
    pub async fn certify(
        &self,
        trust_domain: &str,
        csr_pem: &str,
        token: &str,
    ) -> Result<CertifyResponse, Status> {
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
                "the CSR asks for {asked:?} but the {} proves only {proven}; a proxy may get a certificate only for its own service account",
                proof.kind()
            )));
        }
        let (chain, expires) = self
            .ca
            .sign_csr(&csr, &proven, self.leaf_ttl)
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(identity = %proven, expires_unix = expires, proof = proof.kind(), "issued a certificate");
        Ok(CertifyResponse {
            certificate_chain: chain,
            trust_bundle: self.ca.roots.clone(),
            expires_at_unix: expires,
        })
    }
}

/// `trellis.v1.Identity`.
pub struct IdentityService(pub Arc<ControlPlane>);

#[tonic::async_trait]
impl trellis_proto::v1::identity_server::Identity for IdentityService {
    async fn certify(
        &self,
        req: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let r = req.into_inner();
        let td = self.0.trust_domain();
        let result = self.0.authority.certify(&td, &r.csr, &r.token).await;
        let label = match &result {
            Ok(_) => "issued",
            Err(s) if s.code() == tonic::Code::PermissionDenied => "wrong_identity",
            Err(s) if s.code() == tonic::Code::Unauthenticated => "bad_proof",
            Err(_) => "error",
        };
        self.0
            .metrics
            .certificates
            .get_or_create(&crate::metrics::ResultLabel { result: label })
            .inc();
        if let Err(s) = &result {
            tracing::warn!(code = ?s.code(), reason = s.message(), "refused a certificate");
        }
        result.map(Response::new)
    }
}
