//! Workload identity: the CA, the proofs a proxy may show, and the `Identity.Certify` gRPC
//! service that trades a proof and a CSR for a short-lived SPIFFE certificate.

pub(crate) mod authority;
pub mod ca;
pub mod proof;
pub(crate) mod service;
pub(crate) mod serving;
pub mod token;
