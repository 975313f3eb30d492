//! trellis-control: the Trellis control plane. It loads mesh YAML, compiles one snapshot per
//! kind of proxy, streams deltas to every proxy, records their ACKs and NACKs, and serves the
//! admin API that the `trellis` CLI uses.

mod admin;
mod certify;
mod dashboard;
mod discovery;
pub mod golden;
mod http;
pub mod identity;
pub mod inject;
pub mod kubernetes;
mod metrics;
mod options;
mod registry;
pub mod shift;
mod start;
mod state;
pub mod world;

pub use options::{Options, default_server_names};
pub use start::{Running, Source, StartError, start, start_with};
pub use state::ControlPlane;
