//! Reaching trellis-control: its gRPC port speaks TLS only, with a serving certificate from
//! the mesh CA, so every client (proxy or CLI) brings that CA's bundle.

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Why a control-plane address cannot be dialled. Each message says what to write instead.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error(
        "the control-plane address is empty: use https://host:port, e.g. https://127.0.0.1:15010"
    )]
    Empty,
    /// `rest`: the address after `http://`.
    #[error("{address:?}: trellis-control serves gRPC over TLS only; use https://{rest}")]
    PlainHttp { address: String, rest: String },
    #[error("{address:?}: use https://host:port")]
    NotHttps { address: String },
    #[error("{address:?} is not an address ({source}): use host:port or https://host:port")]
    NotAnAddress {
        address: String,
        source: tonic::transport::Error,
    },
    /// The address parsed, but tonic refused it with the TLS settings.
    #[error("{address:?} is not a usable control-plane address: {source}")]
    Unusable {
        address: String,
        source: tonic::transport::Error,
    },
}

/// An endpoint for `address` (`https://host:port`, or a bare `host:port`) that trusts only
/// `ca_bundle_pem`.
pub fn endpoint(address: &str, ca_bundle_pem: &[u8]) -> Result<Endpoint, AddressError> {
    let url = normalize(address)?;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_bundle_pem));
    Endpoint::from_shared(url.clone())
        .and_then(|e| e.tls_config(tls))
        .map_err(|source| unusable(address, source))
}

/// The same endpoint, presenting a client certificate: a proxy renewing with the mesh
/// certificate it holds (`cert_pem`, the chain, and its `key_pem`).
pub fn endpoint_with_identity(
    address: &str,
    ca_bundle_pem: &[u8],
    cert_pem: &str,
    key_pem: &str,
) -> Result<Endpoint, AddressError> {
    let url = normalize(address)?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_bundle_pem))
        .identity(Identity::from_pem(cert_pem, key_pem));
    Endpoint::from_shared(url)
        .and_then(|e| e.tls_config(tls))
        .map_err(|source| unusable(address, source))
}

fn unusable(address: &str, source: tonic::transport::Error) -> AddressError {
    AddressError::Unusable {
        address: address.to_string(),
        source,
    }
}

/// `host:port` becomes `https://host:port`; `http://` is refused with what to use instead.
pub fn normalize(address: &str) -> Result<String, AddressError> {
    let s = address.trim();
    if s.is_empty() {
        return Err(AddressError::Empty);
    }
    if let Some(rest) = s.strip_prefix("http://") {
        return Err(AddressError::PlainHttp {
            address: s.to_string(),
            rest: rest.to_string(),
        });
    }
    let url = if s.contains("://") {
        s.to_string()
    } else {
        format!("https://{s}")
    };
    if !url.starts_with("https://") {
        return Err(AddressError::NotHttps {
            address: s.to_string(),
        });
    }
    Endpoint::from_shared(url.clone()).map_err(|source| AddressError::NotAnAddress {
        address: s.to_string(),
        source,
    })?;
    Ok(url)
}
