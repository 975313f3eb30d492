//! Proving an identity: what a proxy shows to get a certificate. A join token (file mode) is
//! the first kind; Kubernetes service-account tokens checked by TokenReview slot in beside it
//! as another [`IdentityProof`].

use std::fmt;

/// A service account a proof vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a proof was refused. Every variant but `Unavailable` means "not this identity".
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("the {kind} is malformed: {message}")]
    Malformed { kind: &'static str, message: String },
    #[error(
        "the {kind} was not signed by this control plane's CA; mint a new one with `trellis-control token create --service-account NS/SA` against the CA this control plane uses"
    )]
    BadSignature { kind: &'static str },
    #[error(
        "the {kind} expired at unix time {expired_at}; mint a new one with `trellis-control token create`"
    )]
    Expired { kind: &'static str, expired_at: i64 },
    #[error("the {kind} was refused: {message}")]
    Refused { kind: &'static str, message: String },
    #[error("cannot check the {kind} right now: {message}")]
    Unavailable { kind: &'static str, message: String },
}

/// One way of proving who a proxy runs as.
#[tonic::async_trait]
pub trait IdentityProof: Send + Sync + 'static {
    /// A short name for errors and logs, e.g. "join token".
    fn kind(&self) -> &'static str;

    /// Whether `token` has this proof's shape. Cheap and syntactic: it picks which proof
    /// checks a token, it does not check it.
    fn accepts(&self, token: &str) -> bool;

    /// Checks the proof and returns the service account it vouches for.
    async fn prove(&self, token: &str) -> Result<ServiceAccount, ProofError>;
}
