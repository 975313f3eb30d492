//! Layer 4: opaque TCP, balanced over a cluster's endpoints, and the transport preface that
//! tells a peer sidecar which Service port the bytes are for.

pub(crate) mod carry;
pub(crate) mod kafka;
pub(crate) mod preface;
pub(crate) mod tcp;
