//! An HTTPS Gateway listener's TLS: its certificates by SNI, and the rustls server config
//! that serves them. Built with the runtime, off the request path, so a config change (a
//! rotated Secret) is a new config for new handshakes while open connections keep theirs.

use super::{ALPN_H2, ALPN_HTTP1};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::Arc;
use trellis_identity::provider;

/// A listener's certificates by the names they serve. The first certificate listed is the
/// default, for a client that sends no SNI or one no certificate names, as the Gateway API
/// leaves it to implementations and as most edge proxies do.
#[derive(Debug, Default)]
pub struct SniCerts {
    /// Lowercase DNS names.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` as `example.com`: one label in place of the `*`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniCerts {
    /// `certs` in the listener's order, each with the DNS names of its leaf. A name two
    /// certificates share goes to the one listed first.
    pub fn new<'a>(certs: impl IntoIterator<Item = (Arc<CertifiedKey>, &'a [String])>) -> SniCerts {
        let mut t = SniCerts::default();
        for (key, names) in certs {
            t.default.get_or_insert_with(|| key.clone());
            for n in names {
                let n = n.to_ascii_lowercase();
                match n.strip_prefix("*.") {
                    Some(parent) => t.wildcard.entry(parent.to_string()),
                    None => t.exact.entry(n),
                }
                .or_insert_with(|| key.clone());
            }
        }
        t
    }

    /// The certificate for `sni`: the exact name, else a wildcard over its parent, else the
    /// default. rustls has already lowercased the name and refused an IP address as SNI.
    pub fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni {
            let name = name.strip_suffix('.').unwrap_or(name);
            if let Some(k) = self.exact.get(name) {
                return Some(k.clone());
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(k) = self.wildcard.get(parent)
            {
                return Some(k.clone());
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // None fails the handshake with an alert: a listener with no usable certificate.
        self.pick(hello.server_name())
    }
}

/// The server config of an HTTPS listener: TLS 1.3 preferred and 1.2 the floor, on
/// aws-lc-rs; ALPN h2 then http/1.1, so browsers get HTTP/2; stateless session tickets, so
/// a returning client resumes without a full handshake.
pub fn server_config(certs: Arc<SniCerts>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    cfg.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<CertifiedKey> {
        let k = rcgen::KeyPair::generate().unwrap();
        let c = rcgen::CertificateParams::new(vec!["x.test".to_string()])
            .unwrap()
            .self_signed(&k)
            .unwrap();
        let der = rustls_pki_types::PrivateKeyDer::Pkcs8(k.serialize_der().into());
        trellis_identity::certified_key(vec![c.der().clone()], der).unwrap()
    }

    #[test]
    fn exact_then_wildcard_then_the_first_listed() {
        let (a, b) = (key(), key());
        let names_a = ["rides.example.com".to_string()];
        let names_b = ["*.example.com".to_string(), "rides.example.com".to_string()];
        let t = SniCerts::new([(a.clone(), &names_a[..]), (b.clone(), &names_b[..])]);
        let same =
            |x: Option<Arc<CertifiedKey>>, y: &Arc<CertifiedKey>| Arc::ptr_eq(&x.unwrap(), y);
        assert!(
            same(t.pick(Some("rides.example.com")), &a),
            "the first listed wins a shared name"
        );
        assert!(same(t.pick(Some("api.example.com")), &b));
        assert!(
            same(t.pick(Some("api.example.com.")), &b),
            "a trailing dot is the same name"
        );
        // A wildcard stands for one label only.
        assert!(
            same(t.pick(Some("a.b.example.com")), &a),
            "falls back to the default"
        );
        assert!(same(t.pick(None), &a));
        assert!(SniCerts::new([]).pick(Some("x")).is_none());
    }
}
