//! `trellis.v1.Identity`: the gRPC face of the mesh CA (`identity/`), beside `discovery.rs` and
//! `admin.rs`; it counts each answer in the metrics.

use crate::metrics::ResultLabel;
use crate::state::ControlPlane;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use trellis_proto::v1::{CertifyRequest, CertifyResponse};

/// `trellis.v1.Identity`.
pub struct IdentityService(pub Arc<ControlPlane>);

#[tonic::async_trait]
impl trellis_proto::v1::identity_server::Identity for IdentityService {
    async fn certify(
        &self,
        req: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let peer = req.peer_certs();
        let r = req.into_inner();
        let td = self.0.trust_domain();
        let leaf = peer.as_ref().and_then(|c| c.first());
        let result = self.0.authority.certify(&td, &r.csr, &r.token, leaf).await;
        let label = match &result {
            Ok(_) => "issued",
            Err(s) if s.code() == tonic::Code::PermissionDenied => "wrong_identity",
            Err(s) if s.code() == tonic::Code::Unauthenticated => "bad_proof",
            Err(_) => "error",
        };
        self.0
            .metrics
            .certificates
            .get_or_create(&ResultLabel { result: label })
            .inc();
        if let Err(s) = &result {
            tracing::warn!(code = ?s.code(), reason = s.message(), "refused a certificate");
        }
        result.map(Response::new)
    }
}
