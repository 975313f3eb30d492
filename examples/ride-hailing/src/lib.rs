//! The ride-hailing demo app: five small HTTP services in one library, one role per process.
//! Each calls the next through its own sidecar's outbound listener, as any app in the mesh
//! would, and each can be made slow or failing on command through `POST /fault`.
//!
//! Run it with `cargo run --release -p trellis-cli -- demo` (docs/demo.md); the demo starts
//! one process per role with `trellis __app --role ROLE ...`.

mod fault;
mod roles;

pub use roles::{Role, serve};

/// The demo's mesh YAML: Services, the gateway and its routes, the billing canary, resilience
/// policies and authorization.
pub const MESH_YAML: &str = include_str!("../mesh.yaml");

/// One running instance of a role.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub role: Role,
    /// The workload name, e.g. `driver-2`; every answer carries it in `x-served-by`.
    pub name: String,
    /// `v1`, `v2`: billing's canary answers with its version.
    pub version: String,
    pub listen: std::net::SocketAddr,
    /// This instance's sidecar outbound listener, through which it calls other services.
    pub sidecar: std::net::SocketAddr,
}
