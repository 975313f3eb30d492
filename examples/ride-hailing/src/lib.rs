//! The ride-hailing demo app: five small HTTP services in one library, one role per process.
//! Each calls the next through its own sidecar's outbound listener, as any app in the mesh
//! would, and each can be made slow or failing on command through `POST /fault`.

// Run it with `cargo run --release -p trellis-cli -- demo` (docs/demo.md); the demo starts
// one process per role with `trellis __child app --role ROLE ...`.

mod fault;
mod instance;
mod roles;

pub use instance::{AppConfig, Role, UnknownRole};
pub use roles::serve;

/// The demo's mesh YAML: Services, the gateway and its routes, the billing canary, resilience
/// policies and authorization.
pub const MESH_YAML: &str = include_str!("../mesh.yaml");
