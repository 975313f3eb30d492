//! trellis-proto: the gRPC protocol between trellis-proxy, trellis-control and the CLI, and
//! the accept loop (`listen`) behind every listener of both binaries.

pub mod connect;
pub mod listen;
pub mod resource;

/// `trellis.v1`: discovery, identity and admin.
pub mod v1 {
    tonic::include_proto!("trellis.v1");
    pub use crate::resource::{Resource, ResourceKey};
}
