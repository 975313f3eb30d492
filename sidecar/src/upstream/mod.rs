//! Upstream: the pooled clients, one try of a request to a cluster (`call.rs`), the load
//! balancers, and each endpoint's live state and health (outlier detection).

pub(crate) mod balance;
pub(crate) mod call;
pub(crate) mod cluster;
pub(crate) mod endpoint;
pub(crate) mod ewma;
pub(crate) mod outlier;
pub(crate) mod pool;
pub(crate) mod ring;
