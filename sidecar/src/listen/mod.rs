//! Listening: the accept loop every listener shares, the inbound listener's mTLS front door,
//! protocol detection, the original destination of a redirected connection, and the dispatch
//! of each connection to HTTP (hyper) or opaque TCP. Then `inbound/`, `outbound/` or `l4/`.

pub(crate) mod accept;
pub(crate) mod detect;
pub(crate) mod dispatch;
pub(crate) mod gateway;
pub(crate) mod inbound;
pub(crate) mod original_dst;
pub(crate) mod peeked;
