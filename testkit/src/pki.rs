//! Test certificates: a throwaway CA that mints server and SPIFFE leaf certificates with any
//! validity, for the handshakes the mesh CA itself would never sign (expired, foreign).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::time::{Duration, SystemTime};

pub struct TestCa {
    pub root_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate chain and its private key, both PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let root = p.self_signed(&key).unwrap();
        TestCa {
            root_pem: root.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// An existing CA (e.g. the mesh CA from trellis-control's state directory).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> TestCa {
        let key = KeyPair::from_pem(key_pem).unwrap();
        TestCa {
            root_pem: cert_pem.to_string(),
            issuer: Issuer::from_ca_cert_pem(cert_pem, key).unwrap(),
        }
    }

    /// A serving certificate for DNS names or IPs, valid for a day.
    pub fn server(&self, names: &[&str]) -> Leaf {
        let sans = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().unwrap()),
            })
            .collect();
        self.leaf(
            sans,
            SystemTime::now() - Duration::from_secs(60),
            Duration::from_secs(86400),
        )
    }

    /// A serving certificate for DNS names, valid from `not_before` for `ttl`: expired, or
    /// not yet valid, when a test needs one.
    pub fn server_valid(&self, names: &[&str], not_before: SystemTime, ttl: Duration) -> Leaf {
        let sans = (names.iter())
            .map(|n| SanType::DnsName((*n).try_into().unwrap()))
            .collect();
        self.leaf(sans, not_before, ttl)
    }

    /// A mesh leaf for `spiffe_id`, valid from `not_before` for `ttl`.
    pub fn spiffe(&self, spiffe_id: &str, not_before: SystemTime, ttl: Duration) -> Leaf {
        self.leaf(
            vec![SanType::URI(spiffe_id.try_into().unwrap())],
            not_before,
            ttl,
        )
    }

    fn leaf(&self, sans: Vec<SanType>, not_before: SystemTime, ttl: Duration) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = sans;
        p.not_before = not_before.into();
        p.not_after = (not_before + ttl).into();
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}
