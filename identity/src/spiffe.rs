//! SPIFFE IDs of the form `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, the
//! shape Istio and Linkerd use, and their TLS server-name form.

use aws_lc_rs::digest;
use rustls_pki_types::ServerName;
use std::fmt;

/// The identity of a workload: who it runs as, in which trust domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpiffeIdError {
    #[error(
        "{0:?} is not a Trellis SPIFFE ID: expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    Shape(String),
    #[error("{0:?} is not a service account: expected <namespace>/<name>, e.g. rides/trip")]
    ServiceAccount(String),
    #[error("{value:?} is not a valid {what}: {rule}")]
    Name {
        value: String,
        what: &'static str,
        rule: &'static str,
    },
    #[error("{0:?} is not a usable TLS server name; this is a bug in trellis-identity, report it")]
    ServerName(String),
}

/// Suffix of the readable server name, `<sa>.<namespace>.identity.trellis`.
const READABLE_SUFFIX: &str = ".identity.trellis";
/// Suffix of the hashed server name. It differs from [`READABLE_SUFFIX`] in its second-to-last
/// label, so no readable name (whose last two labels are always `identity.trellis`) can equal
/// a hashed one.
const HASHED_SUFFIX: &str = ".id-hash.trellis";

/// RFC 1035 section 2.3.4 limits, which rustls enforces on a server name.
const MAX_DNS_LABEL: usize = 63;
const MAX_DNS_NAME: usize = 253;

const SUBDOMAIN_RULE: &str = "use a Kubernetes DNS subdomain: at most 253 lowercase letters, \
     digits, '-' and '.', each '.'-separated part starting and ending with a letter or digit";
const LABEL_RULE: &str = "use a Kubernetes DNS label: at most 63 lowercase letters, digits and \
     '-', starting and ending with a letter or digit";

impl SpiffeId {
    /// Admits exactly the names Kubernetes admits: a namespace is a DNS-1123 label, a service
    /// account a DNS-1123 subdomain (whose labels, unlike DNS, may exceed 63 characters). The
    /// trust domain follows the service-account rule.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, SpiffeIdError> {
        check_subdomain(trust_domain, "trust domain")?;
        check_label(namespace, "namespace")?;
        check_subdomain(service_account, "service account")?;
        Ok(SpiffeId {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        })
    }

    /// `rides/trip` in `trust_domain`.
    pub fn from_service_account(trust_domain: &str, sa: &str) -> Result<SpiffeId, SpiffeIdError> {
        let (ns, name) = sa
            .split_once('/')
            .ok_or_else(|| SpiffeIdError::ServiceAccount(sa.into()))?;
        SpiffeId::new(trust_domain, ns, name)
    }

    pub fn parse(uri: &str) -> Result<SpiffeId, SpiffeIdError> {
        let shape = || SpiffeIdError::Shape(uri.into());
        let rest = uri.strip_prefix("spiffe://").ok_or_else(shape)?;
        let mut parts = rest.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None) => {
                SpiffeId::new(td, ns, sa).map_err(|_| shape())
            }
            _ => Err(shape()),
        }
    }

    /// `namespace/service-account`, the form authorization policies match on.
    pub fn service_account_key(&self) -> String {
        format!("{}/{}", self.namespace, self.service_account)
    }

    /// The name a client sends as SNI when it expects this identity. The client's verifier
    /// computes the same name from the SPIFFE ID in the server's certificate and compares, so
    /// one rustls config serves every peer.
    ///
    /// The name is `<sa>.<namespace>.identity.trellis` when that is a valid DNS name, so it
    /// reads well in logs and packet captures. A service account Kubernetes accepts can make
    /// it invalid (a label over 63 characters, or a name over 253), and then the name is
    /// `<SHA-256 of the SPIFFE ID, as two 32-hex-digit labels>.id-hash.trellis`. Both forms are
    /// one-to-one: a namespace has no '.', so the readable form splits back unambiguously,
    /// and distinct IDs hash apart.
    ///
    /// Errs only for an ID whose fields were set by hand to what [`SpiffeId::new`] refuses.
    pub fn server_name(&self) -> Result<ServerName<'static>, SpiffeIdError> {
        // The fields are public, so an ID built without `new` is checked here, not trusted.
        SpiffeId::new(&self.trust_domain, &self.namespace, &self.service_account)?;
        let readable = format!(
            "{}.{}{READABLE_SUFFIX}",
            self.service_account, self.namespace
        );
        let name = if readable.len() <= MAX_DNS_NAME
            && self
                .service_account
                .split('.')
                .all(|l| l.len() <= MAX_DNS_LABEL)
        {
            readable
        } else {
            self.hashed_name()
        };
        ServerName::try_from(name.clone()).map_err(|_| SpiffeIdError::ServerName(name))
    }

    fn hashed_name(&self) -> String {
        // The whole ID goes into the hash, trust domain included: the readable form leaves the
        // trust domain to the verifier's bundle check, but a hash has no parts to check apart.
        let hash = digest::digest(&digest::SHA256, self.to_string().as_bytes());
        let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        // All 256 bits, split because one DNS label holds at most 63 characters.
        format!("{}.{}{HASHED_SUFFIX}", &hex[..32], &hex[32..])
    }
}

/// A DNS-1123 label, as Kubernetes checks a namespace: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at
/// most 63 characters.
fn check_label(s: &str, what: &'static str) -> Result<(), SpiffeIdError> {
    if s.len() <= MAX_DNS_LABEL && is_label(s) {
        Ok(())
    } else {
        Err(SpiffeIdError::Name {
            value: s.into(),
            what,
            rule: LABEL_RULE,
        })
    }
}

/// A DNS-1123 subdomain, as Kubernetes checks a service account: labels as in
/// [`check_label`] joined by '.', at most 253 characters in all. Kubernetes does not limit
/// each label to 63 characters here, so neither does this.
fn check_subdomain(s: &str, what: &'static str) -> Result<(), SpiffeIdError> {
    if s.len() <= MAX_DNS_NAME && s.split('.').all(is_label) {
        Ok(())
    } else {
        Err(SpiffeIdError::Name {
            value: s.into(),
            what,
            rule: SUBDOMAIN_RULE,
        })
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, of any length.
fn is_label(s: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && b.iter().all(|c| alnum(c) || *c == b'-')
        }
        _ => false,
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz_corpus {
    use super::SpiffeId;

    /// The fuzz target `spiffe_duration`'s inputs (fuzz/corpus), on stable: a parsed ID
    /// prints back as itself.
    #[test]
    fn the_spiffe_corpus_round_trips() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/spiffe_duration");
        let mut parsed = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let Ok(text) = String::from_utf8(std::fs::read(entry.unwrap().path()).unwrap()) else {
                continue;
            };
            if let Ok(id) = SpiffeId::parse(&text) {
                assert_eq!(SpiffeId::parse(&id.to_string()), Ok(id));
                parsed += 1;
            }
        }
        assert!(parsed >= 1, "no SPIFFE ID among {}", dir.display());
    }
}
