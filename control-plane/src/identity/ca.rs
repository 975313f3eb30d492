//! The mesh CA: a root (or an intermediate) that signs proxies' CSRs into short-lived SPIFFE
//! leaf certificates. Without `--ca-cert`/`--ca-key`, a root is generated at first start and
//! kept in the state directory, readable by its owner only.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use trellis_identity::SpiffeId;
use trellis_identity::cert::parse_pem_chain;

/// Where the CA comes from.
#[derive(Debug, Clone)]
pub enum CaSource {
    /// Operator-supplied: the CA certificate (an intermediate may be followed by its chain up
    /// to the root) and its PKCS#8 key.
    Files { cert: PathBuf, key: PathBuf },
    /// Generated at first start into `state_dir/ca.pem` and `state_dir/ca-key.pem`.
    StateDir(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}; set --state-dir to a writable folder")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("cannot sign: {0}")]
    Sign(#[from] rcgen::Error),
    #[error("the CSR is invalid: {0}")]
    Csr(String),
}

/// A loaded CA, ready to sign.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// PEM of the CA certificate and any intermediates above it: sent after each leaf. Empty
    /// when the CA is the root itself.
    chain: Vec<String>,
    /// PEM roots: the trust bundle every proxy verifies peers with.
    pub roots: Vec<String>,
    /// The key, as PKCS#8 DER: join tokens are MACed with a key derived from it, so every
    /// replica that shares the CA accepts the same tokens.
    key_der: Vec<u8>,
}

/// Extra room on `notBefore`, for peers whose clocks run a little behind ours.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

impl Ca {
    pub fn load(source: &CaSource) -> Result<Ca, CaError> {
        match source {
            CaSource::Files { cert, key } => Ca::from_files(cert, key),
            CaSource::StateDir(dir) => {
                let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
                if !cert.exists() {
                    generate_root(dir, &cert, &key)?;
                }
                Ca::from_files(&cert, &key)
            }
        }
    }

    fn from_files(cert_path: &Path, key_path: &Path) -> Result<Ca, CaError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| CaError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        let invalid = |p: &Path, message: String| CaError::Invalid {
            path: p.display().to_string(),
            message,
        };
        let (cert_pem, key_pem) = (read(cert_path)?, read(key_path)?);
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| invalid(key_path, format!("not a PKCS#8 private key ({e})")))?;
        let certs = parse_pem_chain(cert_pem.as_bytes(), &cert_path.display().to_string())
            .map_err(|e| invalid(cert_path, e.to_string()))?;
        let ca_der = &certs[0];
        let (_, parsed) = x509_parser::parse_x509_certificate(ca_der)
            .map_err(|e| invalid(cert_path, format!("not X.509 ({e})")))?;
        if !parsed.is_ca() {
            return Err(invalid(
                cert_path,
                "the first certificate is not a CA (basicConstraints CA:TRUE)".into(),
            ));
        }
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(invalid(
                key_path,
                format!(
                    "this key does not belong to the CA certificate {}",
                    cert_path.display()
                ),
            ));
        }
        let (mut chain, mut roots) = (Vec::new(), Vec::new());
        for der in &certs {
            let (_, c) = x509_parser::parse_x509_certificate(der)
                .map_err(|e| invalid(cert_path, format!("not X.509 ({e})")))?;
            let pem = to_pem(der);
            if c.subject() == c.issuer() {
                roots.push(pem);
            } else {
                chain.push(pem);
            }
        }
        if roots.is_empty() {
            return Err(invalid(
                cert_path,
                "no root certificate: put the intermediate first and its chain up to the self-signed root after it".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(ca_der, key)
            .map_err(|e| invalid(cert_path, format!("cannot sign with it ({e})")))?;
        let key_der = issuer.key().serialize_der();
        Ok(Ca {
            issuer,
            chain,
            roots,
            key_der,
        })
    }

    pub fn token_key_material(&self) -> &[u8] {
        &self.key_der
    }

    /// Signs a leaf for `id`, valid for `ttl`, with the public key of a CSR. The CSR's own
    /// signature is checked; everything else it asks for is ignored: the CA decides what a
    /// leaf says. Returns the PEM chain (leaf first) and the expiry in Unix seconds.
    pub(crate) fn sign_csr(
        &self,
        csr: &CertificateSigningRequestParams,
        id: &SpiffeId,
        ttl: Duration,
    ) -> Result<(Vec<String>, i64), CaError> {
        let mut params = leaf_params(ttl)?;
        params.subject_alt_names =
            vec![SanType::URI(id.to_string().try_into().map_err(|_| {
                CaError::Csr(format!("{id} is not an IA5 string"))
            })?)];
        let not_after = params.not_after.unix_timestamp();
        let leaf = params.signed_by(&csr.public_key, &self.issuer)?;
        let mut out = vec![leaf.pem()];
        out.extend(self.chain.iter().cloned());
        Ok((out, not_after))
    }

    /// A serving certificate for the control plane itself (DNS names and IPs), with a fresh key.
    pub fn sign_server(
        &self,
        names: &[String],
        ttl: Duration,
    ) -> Result<(Vec<String>, KeyPair), CaError> {
        let key = KeyPair::generate()?;
        let mut params = leaf_params(ttl)?;
        for n in names {
            params.subject_alt_names.push(match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    n.clone()
                        .try_into()
                        .map_err(|_| CaError::Csr(format!("{n:?} is not a DNS name")))?,
                ),
            });
        }
        params
            .distinguished_name
            .push(DnType::CommonName, "trellis-control");
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut out = vec![cert.pem()];
        out.extend(self.chain.iter().cloned());
        Ok((out, key))
    }
}

fn leaf_params(ttl: Duration) -> Result<CertificateParams, CaError> {
    let now = SystemTime::now();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + ttl).into();
    params.serial_number = Some(random_serial());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // a positive INTEGER (RFC 5280 §4.1.2.2)
    bytes[0] |= 0x01; // and no leading zero byte to strip
    SerialNumber::from_slice(&bytes)
}

fn to_pem(der: &CertificateDer<'_>) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der.to_vec()), config)
}

/// A new self-signed root, written with owner-only permissions.
fn generate_root(dir: &Path, cert: &Path, key_path: &Path) -> Result<(), CaError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let write_err = |p: &Path| {
        let path = p.display().to_string();
        move |source| CaError::Write { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(write_err(dir))?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let (root_pem, key_pem) = new_root()?;
    let write = |p: &Path, text: &str| -> Result<(), CaError> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(p)
            .map_err(write_err(p))?;
        f.write_all(text.as_bytes()).map_err(write_err(p))
    };
    write(key_path, &key_pem)?;
    write(cert, &root_pem)?;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    tracing::info!(cert = %cert.display(), created_unix = secs, "generated a new mesh root CA");
    Ok(())
}

/// A new self-signed mesh root, ten years (rotating it is an operator's act): `(certificate
/// PEM, private key PEM)`. The one root generator, for the state directory and for the
/// cluster's CA Secret.
pub(crate) fn new_root() -> Result<(String, String), CaError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Trellis");
    params
        .distinguished_name
        .push(DnType::CommonName, "Trellis mesh root CA");
    let now = SystemTime::now();
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + Duration::from_secs(10 * 365 * 24 * 3600)).into();
    params.serial_number = Some(random_serial());
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let root = params.self_signed(&key)?;
    Ok((root.pem(), key.serialize_pem()))
}
