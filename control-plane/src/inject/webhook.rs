//! The injector's HTTPS endpoint (port 15017): the API server POSTs AdmissionReviews to
//! `/inject` and gets the answer of [`super::admission::review`].

use super::InjectConfig;
use super::admission::review;
use crate::http::HEADER_READ_TIMEOUT;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use trellis_proto::listen::Listener;

/// The largest AdmissionReview accepted; the API server caps objects at 3 MiB.
const MAX_BODY: usize = 4 << 20;

/// Open connections at once: the API servers hold a few each.
const MAX_CONNECTIONS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook certificate: {0}; pass a PEM certificate chain and its private key")]
    Pem(String),
    #[error("webhook TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// A TLS acceptor for the webhook from a PEM chain and key, on the aws-lc-rs provider.
pub fn acceptor(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsAcceptor, WebhookError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WebhookError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(WebhookError::Pem("no CERTIFICATE block".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| WebhookError::Pem(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves the webhook until the task is dropped.
pub async fn serve(listener: TcpListener, tls: TlsAcceptor, cfg: Arc<InjectConfig>) {
    let mut listener = Listener::new(listener, "webhook", MAX_CONNECTIONS);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let (tcp, peer, permit) = listener.accept().await;
        let (tls, cfg, http) = (tls.clone(), cfg.clone(), http.clone());
        tokio::spawn(async move {
            let _permit = permit;
            // The header-read timeout starts after the handshake; this bounds the handshake.
            let stream = match tokio::time::timeout(HEADER_READ_TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "webhook TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "webhook TLS handshake timed out");
                    return;
                }
            };
            let svc = service_fn(move |req| {
                let cfg = cfg.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &cfg).await) }
            });
            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn handle(req: Request<Incoming>, cfg: &InjectConfig) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: Vec<u8>, json: bool| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        let ct = if json {
            "application/json"
        } else {
            "text/plain"
        };
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(ct),
        );
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/inject") => {}
        (_, "/ready") => return reply(StatusCode::OK, b"ready\n".to_vec(), false),
        _ => {
            let msg = b"not found; the API server posts AdmissionReviews to /inject\n".to_vec();
            return reply(StatusCode::NOT_FOUND, msg, false);
        }
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let msg = format!("cannot read the AdmissionReview: {e}\n");
            return reply(StatusCode::BAD_REQUEST, msg.into_bytes(), false);
        }
    };
    reply(StatusCode::OK, review(&body, cfg), true)
}
