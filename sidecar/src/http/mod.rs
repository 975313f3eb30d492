//! HTTP plumbing that both sides share: the body type, hop-by-hop headers and the head copy,
//! path normalization, the last leg with protocol upgrades, and the one place where errors
//! become answers (`errors.rs` → `respond.rs`).

pub(crate) mod body;
pub(crate) mod errors;
pub(crate) mod exchange;
pub(crate) mod forward;
pub(crate) mod future;
pub(crate) mod headers;
pub(crate) mod idle;
pub(crate) mod normalize;
pub(crate) mod respond;
