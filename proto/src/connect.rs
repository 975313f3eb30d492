//! Reaching trellis-control: its gRPC port speaks TLS only, with a serving certificate from
//! the mesh CA, so every client (proxy or CLI) brings that CA's bundle.

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// An endpoint for `address` (`https://host:port`, or a bare `host:port`) that trusts only
/// `ca_bundle_pem`.
pub fn endpoint(address: &str, ca_bundle_pem: &[u8]) -> Result<Endpoint, String> {
    let url = normalize(address)?;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_bundle_pem));
    Endpoint::from_shared(url.clone())
        .and_then(|e| e.tls_config(tls))
        .map_err(|e| format!("{address:?} is not a usable control-plane address: {e}"))
}

/// The same endpoint, presenting a client certificate: a proxy renewing with the mesh
/// certificate it holds (`cert_pem`, the chain, and its `key_pem`).
pub fn endpoint_with_identity(
    address: &str,
    ca_bundle_pem: &[u8],
    cert_pem: &str,
    key_pem: &str,
) -> Result<Endpoint, String> {
    let url = normalize(address)?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_bundle_pem))
        .identity(Identity::from_pem(cert_pem, key_pem));
    Endpoint::from_shared(url)
        .and_then(|e| e.tls_config(tls))
        .map_err(|e| format!("{address:?} is not a usable control-plane address: {e}"))
}

/// `host:port` becomes `https://host:port`; `http://` is refused with what to use instead.
pub fn normalize(address: &str) -> Result<String, String> {
    let s = address.trim();
    if s.is_empty() {
        return Err("the control-plane address is empty: use https://host:port, e.g. https://127.0.0.1:15010".into());
    }
    if let Some(rest) = s.strip_prefix("http://") {
        return Err(format!(
            "{s:?}: trellis-control serves gRPC over TLS only; use https://{rest}"
        ));
    }
    let url = if s.contains("://") {
        s.to_string()
    } else {
        format!("https://{s}")
    };
    if !url.starts_with("https://") {
        return Err(format!("{s:?}: use https://host:port"));
    }
    Endpoint::from_shared(url.clone()).map_err(|e| {
        format!("{s:?} is not an address ({e}): use host:port or https://host:port")
    })?;
    Ok(url)
}
