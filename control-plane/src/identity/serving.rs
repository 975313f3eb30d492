//! The control plane's own TLS: a serving certificate from its CA, renewed in the background
//! at half its lifetime, and the acceptor that puts the gRPC port behind it. Proxies check it
//! against the bootstrap's `caBundle`.

use super::authority::Authority;
use super::ca::{Ca, CaError};
use rustls::ServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use trellis_identity::cert::parse_pem_chain;
use trellis_identity::{CertError, CurrentCert, certified_key, provider};
use trellis_proto::listen::{ConnectionPermit, Listener};

/// Lifetime of the control plane's serving certificate.
const SERVING_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why the control plane could not issue itself a serving certificate. Each message is the
/// failing step's own.
#[derive(Debug, thiserror::Error)]
pub enum ServingCertError {
    #[error(transparent)]
    Sign(#[from] CaError),
    #[error(transparent)]
    Chain(#[from] CertError),
    #[error(transparent)]
    Key(#[from] rustls::Error),
}

/// Signs a serving certificate for `names` with `ca` and makes it the one `current` serves.
pub fn issue(ca: &Ca, names: &[String], current: &CurrentCert) -> Result<(), ServingCertError> {
    let (chain, key) = ca.sign_server(names, SERVING_TTL)?;
    let chain = parse_pem_chain(chain.join("").as_bytes(), "serving certificate")?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    current.set(certified_key(chain, key)?);
    Ok(())
}

/// TLS 1.3 preferred, 1.2 the floor; ALPN h2 for gRPC. A client may present a certificate
/// from the mesh CA (`roots`, PEM): a proxy renewing with the certificate it holds. Clients
/// without one (a first Certify with a token, discovery, the CLI) are served as before; one
/// that presents a certificate from elsewhere fails the handshake.
pub fn server_config(
    current: Arc<CurrentCert>,
    roots: &[String],
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut store = rustls::RootCertStore::empty();
    let ders = parse_pem_chain(roots.join("").as_bytes(), "the mesh CA bundle")
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    for der in ders {
        store.add(der)?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(current);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Open gRPC connections at once: one or two per proxy (discovery, certificate renewal) and a
/// few CLIs. A backstop against running out of descriptors, not a limit on mesh size.
const MAX_CONNECTIONS: usize = 100_000;

/// A finished TLS connection to the gRPC port, with the permit that counts it against the cap.
pub type Incoming = Permitted<TlsStream<TcpStream>>;

/// Accepts on `listener` and yields finished TLS connections; handshakes run concurrently so
/// one slow client cannot hold up the others.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<Result<Incoming, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let mut listener = Listener::new(listener, "grpc", MAX_CONNECTIONS);
    tokio::spawn(async move {
        loop {
            let (tcp, peer, permit) = listener.accept().await;
            if tx.is_closed() {
                return;
            }
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx
                            .send(Ok(Permitted {
                                io: tls,
                                _permit: permit,
                            }))
                            .await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake on the gRPC port failed; is the client using https:// and the mesh CA bundle?");
                    }
                    Err(_) => tracing::debug!(%peer, "TLS handshake on the gRPC port timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A connection that holds its listener permit until tonic drops it. Reads, writes and the
/// connect info (peer address, client certificate) are the inner stream's.
pub struct Permitted<S> {
    io: S,
    _permit: ConnectionPermit,
}

impl<S: Connected> Connected for Permitted<S> {
    type ConnectInfo = S::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Permitted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Permitted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Keeps the serving certificate fresh: renews at half its lifetime.
pub fn renew_in_background(ca: Arc<Authority>, names: Vec<String>, current: Arc<CurrentCert>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SERVING_TTL / 2).await;
            if let Err(e) = issue(&ca.ca, &names, &current) {
                tracing::error!(error = %e, "cannot renew the control plane's serving certificate");
            }
        }
    });
}
