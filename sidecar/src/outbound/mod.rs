//! The outbound side: the app's own requests to other Services, and gateway mode's requests
//! from outside the mesh. Routing (by the HTTPRoute matchers of `config/routing.rs`),
//! filters, mirrors, then the cluster's resilience stack.

pub(crate) mod cors;
pub(crate) mod filters;
pub(crate) mod forwarded;
pub(crate) mod gateway;
pub(crate) mod handler;
