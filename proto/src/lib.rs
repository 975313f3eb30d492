//! trellis-proto: the gRPC protocol between trellis-proxy, trellis-control and the CLI.

/// `trellis.v1`: discovery, identity and admin.
pub mod v1 {
    tonic::include_proto!("trellis.v1");
}
