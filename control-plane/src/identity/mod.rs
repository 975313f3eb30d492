//! Workload identity: the CA, the proofs a proxy may show, and the authority that trades a
//! proof and a CSR for a short-lived SPIFFE certificate (served as gRPC by `certify.rs`).

pub(crate) mod authority;
pub mod ca;
pub mod proof;
pub(crate) mod serving;
pub mod token;
