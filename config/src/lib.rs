//! The Trellis mesh YAML model: parse the operator's documents, validate them with
//! file:line errors, and compile them into the immutable snapshot a proxy serves.

pub mod compile;
#[cfg(feature = "kube")]
pub mod crd;
pub mod duration;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod gateway;
pub mod gateway_tls;
pub mod load;
mod mesh_config;
pub mod model;
pub mod protocol;
pub mod resources;
pub mod snapshot;
pub mod sorted;
pub mod validate;
pub mod watch;
pub mod wire;
mod yaml;

pub use compile::{NodeIdentity, compile};
pub use error::{ConfigError, ConfigErrors};
pub use load::{Loader, MeshConfig, load_dir_or_file, load_str};
pub use snapshot::Snapshot;
pub use yaml::{RewriteError, parse_document, rewrite_document};
