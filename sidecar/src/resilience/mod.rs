//! Resilience: the tower layers between a routed request and a cluster's endpoints (faults,
//! rate limit, bulkhead, circuit breaker, timeout, retry) and the per-cluster state they
//! share.

// Outlier detection, which the balancer obeys, is in `upstream/outlier.rs`. `stack.rs`
// assembles the layers for a request; `policy.rs` builds each cluster's state from its
// `ResiliencePolicy` and carries it over config swaps; `http/exchange.rs` is what moves
// through them.

pub(crate) mod breaker;
pub(crate) mod budget;
pub(crate) mod bulkhead;
pub(crate) mod client_limit;
pub(crate) mod fault;
pub(crate) mod layer;
pub(crate) mod policy;
pub(crate) mod rate_limit;
pub(crate) mod replay;
pub(crate) mod retry;
pub(crate) mod stack;
pub(crate) mod timeout;
pub(crate) mod window;
