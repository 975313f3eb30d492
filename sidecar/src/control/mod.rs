//! What the proxy keeps receiving while it runs: config from the control plane's stream or,
//! in local mode, from the mesh file; fresh DNS answers for ExternalName Services; and its
//! workload certificate, renewed before it expires.

pub(crate) mod certify;
pub(crate) mod collector;
pub(crate) mod discovery;
pub(crate) mod mesh_file;
pub(crate) mod resolve;
pub(crate) mod summary;
