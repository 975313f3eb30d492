//! Certificates that serve clients from outside the mesh (a Gateway's HTTPS listener): an
//! operator's PEM chain and key, checked once when the config loads, with the names and
//! validity that status, `/config_dump` and the SNI table use. The key never leaves the
//! `CertifiedKey`; nothing here prints it.

use crate::cert::parse_pem_chain;
use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use std::sync::Arc;
use x509_parser::extensions::GeneralName;

/// What is public about a serving certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingCertInfo {
    /// DNS subject alternative names, lowercase, wildcards as `*.example.com`. When the leaf
    /// has none, its subject CN (legacy certificates).
    pub dns_names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Hex, as `openssl x509 -serial` prints it.
    pub serial: String,
}

/// Why a chain and key cannot serve. The messages say what to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServingCertError {
    #[error("tls.crt: {0}")]
    Chain(String),
    #[error(
        "tls.key: no private key in it; expected a PEM \"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block"
    )]
    NoKey,
    #[error("tls.key: {0}")]
    Key(String),
    #[error(
        "tls.key does not belong to the certificate in tls.crt (their public keys differ); was one of them replaced without the other?"
    )]
    Mismatch,
    #[error("the certificate expired at {0} (unix seconds {1}); renew it")]
    Expired(String, i64),
    #[error("the certificate is not valid before {0} (unix seconds {1})")]
    NotYetValid(String, i64),
}

/// Parses a PEM chain (leaf first) and its private key, checks that they belong together and
/// that `now` (unix seconds) is inside the leaf's validity, and returns the signing key with
/// what is public about it.
pub fn load_serving_pair(
    chain_pem: &[u8],
    key_pem: &[u8],
    now: i64,
) -> Result<(Arc<CertifiedKey>, ServingCertInfo), ServingCertError> {
    let chain = parse_pem_chain(chain_pem, "tls.crt")
        .map_err(|e| ServingCertError::Chain(e.to_string()))?;
    let info = inspect_serving(&chain[0]).map_err(ServingCertError::Chain)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => ServingCertError::NoKey,
        e => ServingCertError::Key(e.to_string()),
    })?;
    let signer = crate::verify::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| ServingCertError::Key(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signer);
    // `keys_match` is Ok(()) when they match, and also when the key cannot say (then the
    // handshake would fail later, at the client); only a definite mismatch is refused.
    if let Err(rustls::Error::InconsistentKeys(_)) = certified.keys_match() {
        return Err(ServingCertError::Mismatch);
    }
    if now > info.not_after {
        return Err(ServingCertError::Expired(
            rfc3339(info.not_after),
            info.not_after,
        ));
    }
    if now < info.not_before {
        return Err(ServingCertError::NotYetValid(
            rfc3339(info.not_before),
            info.not_before,
        ));
    }
    Ok((Arc::new(certified), info))
}

fn inspect_serving(der: &rustls_pki_types::CertificateDer<'_>) -> Result<ServingCertInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the leaf does not parse as X.509: {e}"))?;
    let mut dns_names: Vec<String> = (cert.subject_alternative_name())
        .map_err(|e| format!("the leaf's subjectAltName does not parse: {e}"))?
        .map(|san| {
            (san.value.general_names.iter())
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if dns_names.is_empty() {
        dns_names.extend(
            (cert.subject().iter_common_name())
                .filter_map(|cn| cn.as_str().ok())
                .map(|s| s.to_ascii_lowercase()),
        );
    }
    Ok(ServingCertInfo {
        dns_names,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string().replace(':', "").to_uppercase(),
    })
}

/// `2026-12-06T13:00:00Z`, for messages and status.
pub fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Days since 1970-01-01 to a proleptic Gregorian date, by 400-year eras.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str], days: (i64, i64)) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let at = |d: i64| {
            let now = std::time::SystemTime::now();
            let delta = std::time::Duration::from_secs(d.unsigned_abs() * 86_400);
            if d < 0 { now - delta } else { now + delta }
        };
        p.not_before = at(days.0).into();
        p.not_after = at(days.1).into();
        (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn a_good_pair_gives_its_names_and_validity() {
        let (crt, key) = pair(&["rides.example.com", "*.rides.example.com"], (-1, 30));
        let (_, info) =
            load_serving_pair(crt.as_bytes(), key.as_bytes(), crate::cert::unix_now()).unwrap();
        assert_eq!(info.dns_names, ["rides.example.com", "*.rides.example.com"]);
        assert!(info.not_after > crate::cert::unix_now());
    }

    #[test]
    fn a_key_of_another_certificate_is_a_mismatch() {
        let (crt, _) = pair(&["a.example.com"], (-1, 30));
        let (_, other_key) = pair(&["b.example.com"], (-1, 30));
        let err = load_serving_pair(crt.as_bytes(), other_key.as_bytes(), 0).unwrap_err();
        assert_eq!(err, ServingCertError::Mismatch);
    }

    #[test]
    fn expired_and_not_yet_valid_are_named() {
        let (crt, key) = pair(&["a.example.com"], (-30, -1));
        let now = crate::cert::unix_now();
        let err = load_serving_pair(crt.as_bytes(), key.as_bytes(), now).unwrap_err();
        assert!(matches!(err, ServingCertError::Expired(..)), "{err}");
        assert!(err.to_string().contains("renew"), "{err}");
        let (crt, key) = pair(&["a.example.com"], (2, 30));
        let err = load_serving_pair(crt.as_bytes(), key.as_bytes(), now).unwrap_err();
        assert!(matches!(err, ServingCertError::NotYetValid(..)), "{err}");
    }

    #[test]
    fn dates_read_as_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_569_200), "2026-12-06T15:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn garbage_is_named_by_the_field() {
        let err = load_serving_pair(b"nope", b"nope", 0).unwrap_err();
        assert!(err.to_string().starts_with("tls.crt:"), "{err}");
        let (crt, _) = pair(&["a.example.com"], (-1, 30));
        let err = load_serving_pair(crt.as_bytes(), b"", 0).unwrap_err();
        assert_eq!(err, ServingCertError::NoKey);
    }
}
