//! trellis-proto: the gRPC protocol between trellis-proxy, trellis-control and the CLI.

pub mod connect;

/// `trellis.v1`: discovery, identity and admin.
pub mod v1 {
    tonic::include_proto!("trellis.v1");
}
