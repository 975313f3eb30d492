//! Reading certificates: PEM chains, and the SPIFFE ID, expiry and serial of a leaf.

use crate::spiffe::{SpiffeId, SpiffeIdError};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::extensions::GeneralName;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("no PEM certificate found in {0}")]
    NoCertificate(String),
    #[error("bad PEM in {what}: {message}")]
    Pem { what: String, message: String },
    #[error("certificate does not parse as X.509: {0}")]
    X509(String),
    #[error(
        "certificate has no SPIFFE URI SAN; a mesh peer must present spiffe://<td>/ns/<ns>/sa/<sa>"
    )]
    NoSpiffeId,
    #[error("certificate has {0} SPIFFE URI SANs; exactly one is allowed")]
    ManySpiffeIds(usize),
    #[error(transparent)]
    SpiffeId(#[from] SpiffeIdError),
}

/// What the mesh needs to know about a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub id: SpiffeId,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Hex, as `openssl x509 -serial` prints it.
    pub serial: String,
}

/// Seconds since the Unix epoch, the unit of certificate and token validity.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Every certificate in a PEM text, in order. `what` names the source for errors.
pub fn parse_pem_chain(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            what: what.into(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate(what.into()));
    }
    Ok(certs)
}

/// The SPIFFE ID, validity and serial of `der`.
pub fn inspect(der: &CertificateDer<'_>) -> Result<CertInfo, CertError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CertError::X509(e.to_string()))?;
    let uris: Vec<&str> = cert
        .subject_alternative_name()
        .map_err(|e| CertError::X509(e.to_string()))?
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) if u.starts_with("spiffe://") => Some(*u),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let id = match uris.as_slice() {
        [] => return Err(CertError::NoSpiffeId),
        [one] => SpiffeId::parse(one)?,
        many => return Err(CertError::ManySpiffeIds(many.len())),
    };
    Ok(CertInfo {
        id,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string().replace(':', "").to_uppercase(),
    })
}
