//! Gateway API status: what `kubectl get httproute,grpcroute,gateway` and `kubectl describe`
//! show about the objects Trellis serves, computed from each translation and written back.

mod condition;
mod gateway;
mod patches;
mod write;

pub(crate) use condition::now;
pub(crate) use patches::Inputs;
pub use patches::{StatusPatch, patches};
pub(crate) use write::write;
