//! An HTTPS client for tests of TLS listeners: one request on a new connection, trusting
//! only the roots given, reporting the leaf the server presented.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::net::SocketAddr;
use std::sync::Arc;

/// GET `path` from `addr` over TLS with SNI and `Host` `sni`, trusting the PEM roots `ca` and
/// offering HTTP/1.1. Returns the status and the leaf certificate the server presented; any
/// failure (connect, handshake, HTTP) is the error's text, `handshake: ...` for the TLS one.
pub async fn https_get(
    addr: SocketAddr,
    sni: &str,
    ca: &str,
    path: &str,
) -> Result<(u16, CertificateDer<'static>), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name =
        rustls_pki_types::ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let leaf = (tls.get_ref().1.peer_certificates())
        .and_then(|c| c.first().cloned())
        .ok_or("handshake: no server certificate")?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", sni)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let res = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    res.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok((status, leaf))
}
