//! The inbound side: requests from other sidecars (and redirected clients) to this workload.
//! The app port a request goes to, the AuthorizationPolicies of that port, and kubelet's
//! probes replayed to the app.

pub(crate) mod app_port;
pub(crate) mod authz;
pub(crate) mod handler;
pub(crate) mod probes;
