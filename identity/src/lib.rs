//! trellis-identity: SPIFFE workload identities, the certificates that carry them, and the
//! rustls verifiers both ends of a mesh hop use. The CA itself lives in trellis-control.

pub mod cert;
pub mod resolve;
pub mod serving;
pub mod spiffe;
pub mod verify;

pub use cert::{CertError, CertInfo};
pub use resolve::{CurrentCert, certified_key};
pub use spiffe::{SpiffeId, SpiffeIdError};
pub use verify::{
    AnyServerCertificate, PeerVerifier, SharedBundle, SpiffeServerVerifier, TrustBundle, provider,
};
