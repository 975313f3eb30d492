//! SPIFFE IDs of the form `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, the
//! shape Istio and Linkerd use, and their TLS server-name form.

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
    #[error(
        "{0:?} is not a valid {1}: use lowercase letters, digits, '-' and '.' (a Kubernetes name)"
    )]
    Name(String, &'static str),
}

/// Suffix of the TLS server name a client asks for; see [`SpiffeId::server_name`].
const SERVER_NAME_SUFFIX: &str = ".identity.trellis";

impl SpiffeId {
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, SpiffeIdError> {
        check_name(trust_domain, "trust domain")?;
        check_name(namespace, "namespace")?;
        if namespace.contains('.') {
            return Err(SpiffeIdError::Name(namespace.into(), "namespace"));
        }
        check_name(service_account, "service account")?;
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

    /// The name a client sends as SNI when it expects this identity:
    /// `<sa>.<namespace>.identity.trellis`. The client's verifier turns it back into the
    /// SPIFFE ID the server's certificate must carry, so one rustls config serves every peer.
    pub fn server_name(&self) -> ServerName<'static> {
        let name = format!(
            "{}.{}{SERVER_NAME_SUFFIX}",
            self.service_account, self.namespace
        );
        // `new` only admits DNS-safe labels, so the name is a valid DNS name.
        ServerName::try_from(name).expect("a checked SPIFFE ID is a DNS name")
    }

    /// The inverse of [`SpiffeId::server_name`], in `trust_domain`.
    pub fn from_server_name(trust_domain: &str, name: &ServerName<'_>) -> Option<SpiffeId> {
        let ServerName::DnsName(dns) = name else {
            return None;
        };
        let (sa, ns) = dns
            .as_ref()
            .strip_suffix(SERVER_NAME_SUFFIX)?
            .rsplit_once('.')?;
        SpiffeId::new(trust_domain, ns, sa).ok()
    }
}

fn check_name(s: &str, what: &'static str) -> Result<(), SpiffeIdError> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(SpiffeIdError::Name(s.into(), what))
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
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id = SpiffeId::parse("spiffe://trellis.local/ns/rides/sa/trip").unwrap();
        assert_eq!(id.service_account_key(), "rides/trip");
        assert_eq!(id.to_string(), "spiffe://trellis.local/ns/rides/sa/trip");
        let sni = id.server_name();
        assert_eq!(
            SpiffeId::from_server_name("trellis.local", &sni),
            Some(id.clone())
        );
        assert_eq!(
            SpiffeId::from_service_account("trellis.local", "rides/trip").unwrap(),
            id
        );
    }

    #[test]
    fn refuses_other_shapes() {
        for bad in [
            "spiffe://td/ns/rides/sa/trip/x",
            "https://td/ns/rides/sa/trip",
            "spiffe://td/sa/trip",
            "spiffe://td/ns/Rides/sa/trip",
            "spiffe://td/ns/a.b/sa/trip",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
        assert!(SpiffeId::from_service_account("td", "trip").is_err());
    }
}
