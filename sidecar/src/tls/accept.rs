//! Inbound: plaintext or TLS? A TLS connection starts with a handshake record (content type
//! 22); anything else is plaintext. STRICT refuses plaintext; PERMISSIVE takes both;
//! DISABLED takes plaintext (and still TLS from a caller that chose it).

use super::MeshTls;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use trellis_config::model::MtlsMode;
use trellis_identity::SpiffeId;

/// The first byte of a TLS record carrying a handshake message (RFC 8446 §5.1).
const TLS_HANDSHAKE: u8 = 0x16;

pub enum Accepted {
    Plain(TcpStream),
    /// A mutually authenticated connection and the peer's SPIFFE ID.
    Tls(Box<TlsStream<TcpStream>>, Arc<SpiffeId>),
}

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error(
        "plaintext connection refused: mTLS is STRICT for this workload; call it through a sidecar"
    )]
    PlaintextRefused,
    #[error(
        "inbound connection refused: mTLS is STRICT but this proxy has no mesh identity (set controlPlane.tokenFile)"
    )]
    NoLocalIdentity,
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("TLS handshake timed out")]
    Timeout,
    #[error("the client closed the connection before sending anything")]
    Closed,
    #[error("the peer certificate has no usable SPIFFE ID")]
    NoIdentity,
}

/// A refused connection: why, and the connection itself while it is still open (when it
/// is), so that the caller counts the refusal before the client sees the close. Dropping it
/// closes the connection.
pub struct Refused {
    pub error: AcceptError,
    _conn: Option<TcpStream>,
}

fn refuse(error: AcceptError, conn: Option<TcpStream>) -> Result<Accepted, Refused> {
    Err(Refused { error, _conn: conn })
}

/// Classifies a new inbound connection and, for TLS, completes the handshake. Without a mesh
/// identity (`tls` is `None`) nothing is read: plaintext, or refused under STRICT.
/// `first_byte`: for a connection iptables redirected, how long to wait for the client's
/// first byte before taking it as plaintext from a server-speaks-first protocol (unless
/// STRICT, which refuses it).
pub async fn accept(
    tls: Option<&MeshTls>,
    mode: MtlsMode,
    stream: TcpStream,
    peer: SocketAddr,
    handshake_timeout: Duration,
    first_byte: Option<Duration>,
) -> Result<Accepted, Refused> {
    let Some(tls) = tls else {
        // This proxy cannot do mTLS, so STRICT fails closed.
        return match mode {
            MtlsMode::Strict => refuse(AcceptError::NoLocalIdentity, Some(stream)),
            _ => Ok(Accepted::Plain(stream)),
        };
    };
    let mut first = [0u8; 1];
    // A plaintext HTTP client speaks first too, so waiting for one byte never stalls a
    // protocol this listener serves.
    let wait = first_byte.unwrap_or(handshake_timeout);
    let n = match tokio::time::timeout(wait, stream.peek(&mut first)).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return refuse(AcceptError::Handshake(e), Some(stream)),
        Err(_) if first_byte.is_some() && mode != MtlsMode::Strict => {
            return Ok(Accepted::Plain(stream));
        }
        Err(_) => return refuse(AcceptError::Timeout, Some(stream)),
    };
    if n == 0 {
        return refuse(AcceptError::Closed, Some(stream));
    }
    if first[0] != TLS_HANDSHAKE || !tls.is_ready() {
        return match mode {
            MtlsMode::Strict => refuse(AcceptError::PlaintextRefused, Some(stream)),
            _ => Ok(Accepted::Plain(stream)),
        };
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
    // Fallible: a failed handshake hands the connection back, so it stays open until the
    // refusal is counted. (A timed-out one is closed with the dropped handshake.)
    let handshake = acceptor.accept(stream).into_fallible();
    let tls_stream = match tokio::time::timeout(handshake_timeout, handshake).await {
        Ok(Ok(s)) => s,
        // A client that hangs up mid-handshake (or right after it, before reading the session
        // tickets) is not a refused peer.
        Ok(Err((e, conn)))
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            return refuse(AcceptError::Closed, Some(conn));
        }
        Ok(Err((e, conn))) => return refuse(AcceptError::Handshake(e), Some(conn)),
        Err(_) => return refuse(AcceptError::Timeout, None),
    };
    let id = {
        let (_, conn) = tls_stream.get_ref();
        conn.peer_certificates()
            .and_then(|c| c.first())
            .and_then(|leaf| trellis_identity::cert::inspect(leaf).ok())
            .map(|info| Arc::new(info.id))
    };
    match id {
        Some(id) => {
            tracing::trace!(%peer, identity = %id, "mTLS peer");
            Ok(Accepted::Tls(Box::new(tls_stream), id))
        }
        None => {
            let (conn, _) = tls_stream.into_inner();
            refuse(AcceptError::NoIdentity, Some(conn))
        }
    }
}

/// A connection's byte stream, plaintext or TLS, behind one type for hyper.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The metric label for a refused connection.
pub fn reason(e: &AcceptError) -> &'static str {
    match e {
        AcceptError::PlaintextRefused | AcceptError::NoLocalIdentity => "plaintext-refused",
        AcceptError::Handshake(_) => "handshake-failed",
        AcceptError::Timeout => "timeout",
        AcceptError::Closed => "closed",
        AcceptError::NoIdentity => "no-identity",
    }
}
