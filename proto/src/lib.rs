//! trellis-proto: the gRPC protocol between trellis-proxy, trellis-control and the CLI, and
//! the accept loop (`listen`) behind every listener of both binaries.

pub mod connect;
pub mod listen;
pub mod resource;
pub mod stat;

/// The discovery protocol this release speaks. 1 was the JSON resource bodies of the releases
/// before typed resources, whose proxies sent no `Subscribe.protocol`; 2 is typed resources;
/// 3 adds HTTPS Gateway listeners with their `Certificate` resources, consumer routes, and
/// the CORS and ClientRateLimit filters (trellis-config's `protocol` module says what a
/// protocol-2 proxy is sent instead). A change that an older proxy cannot read takes the
/// next number (docs/protocol.md, "Versions and upgrades").
pub const PROTOCOL: u32 = 3;

/// The oldest protocol a control plane of this release serves. The rule is that a control
/// plane serves its own protocol and the one before, sending a proxy only the resource kinds
/// and enum values that the proxy's protocol knows, so a fleet can be upgraded one proxy at a
/// time. Protocol 1 cannot be served (its resources were JSON), so today the range is 2 to 3.
pub const MIN_PROTOCOL: u32 = 2;

/// The response header in which a control plane names its `PROTOCOL`.
pub const PROTOCOL_HEADER: &str = "trellis-protocol";

/// The response header in which a control plane names its release.
pub const RELEASE_HEADER: &str = "trellis-release";

/// The response header in which a control plane asks its proxies for a `Summary` of their
/// golden metrics every so many seconds. A proxy sends none to a control plane without it.
pub const SUMMARY_INTERVAL_HEADER: &str = "trellis-summary-interval";

/// The upper bounds, in seconds, of the latency buckets of `trellis_request_duration_seconds`
/// and of a `Summary`'s `TrafficCounts.latency`, which counts one more bucket above the last.
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `trellis.v1`: discovery, identity and admin.
pub mod v1 {
    tonic::include_proto!("trellis.v1");
    pub use crate::resource::{Resource, ResourceKey};
}
