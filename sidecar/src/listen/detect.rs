//! Protocol detection: read a connection's first bytes and tell HTTP/1, the HTTP/2 preface,
//! a TLS ClientHello, a Trellis transport preface, or anything else (opaque TCP).

// A plain function, called between accept and dispatch on both listeners; mTLS termination
// (PERMISSIVE mode) branches on `Protocol::Tls`.

use crate::listen::peeked::PeekedIo;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// What a connection speaks, judged from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge (h2c): the client sent the connection preface.
    Http2,
    /// A TLS ClientHello record.
    Tls,
    /// Another Trellis sidecar's opaque TCP, introduced by `preface.rs`.
    MeshTcp,
    /// Anything else, including a client that sent nothing in time.
    Tcp,
}

/// The outcome of `detect`, with the bytes it read kept in front of the stream.
pub struct Detected<S> {
    pub protocol: Protocol,
    pub io: PeekedIo<S>,
    /// The client sent too little to decide before the timeout (a server-speaks-first
    /// protocol, most likely), so the connection fell back to opaque TCP.
    pub timed_out: bool,
}

/// RFC 9113 §3.4.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// RFC 9110 §9 methods plus PATCH (RFC 5789), each with the space that ends it.
const METHODS: &[&[u8]] = &[
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
];

/// The most bytes any verdict needs: the HTTP/2 preface.
const MAX_PEEK: usize = 24;

enum Verdict {
    Known(Protocol),
    NeedMore,
}

/// Judges `buf`, the first bytes of a connection. Undecided only while `buf` is still a
/// proper prefix of something recognisable.
fn classify(buf: &[u8]) -> Verdict {
    use Verdict::*;
    if buf.is_empty() {
        return NeedMore;
    }
    let prefix_of = |pattern: &[u8]| buf.len() < pattern.len() && pattern.starts_with(buf);
    if buf.starts_with(H2_PREFACE) {
        return Known(Protocol::Http2);
    }
    if buf.starts_with(crate::l4::preface::MAGIC) {
        return Known(Protocol::MeshTcp);
    }
    if let Some(p) = tls_client_hello(buf) {
        return p;
    }
    if METHODS.iter().any(|m| buf.starts_with(m)) {
        return Known(Protocol::Http1);
    }
    if prefix_of(H2_PREFACE) || prefix_of(crate::l4::preface::MAGIC) {
        return NeedMore;
    }
    extension_method(buf)
}

/// Whether `buf` is enough to decide (for the fuzz target's check that enough bytes always
/// decide).
#[cfg(any(test, feature = "fuzzing"))]
pub fn decided(buf: &[u8]) -> bool {
    matches!(classify(buf), Verdict::Known(_))
}

/// The longest method token taken for HTTP. WebDAV's longest is 16 (`VERSION-CONTROL`).
const MAX_METHOD: usize = 20;

/// Other methods (WebDAV's PROPFIND, MKCOL, SSDP's M-SEARCH, ...): a token of capital
/// letters, `-` and `_`, a space, then the start of a request target (`/` or `*`). A client
/// protocol whose first word is followed by anything else (Redis' inline `PING`, `AUTH x`)
/// stays TCP.
fn extension_method(buf: &[u8]) -> Verdict {
    use Verdict::*;
    let token = buf
        .iter()
        .take_while(|b| b.is_ascii_uppercase() || **b == b'-' || **b == b'_')
        .count();
    if token == buf.len() {
        return if token <= MAX_METHOD {
            NeedMore
        } else {
            Known(Protocol::Tcp)
        };
    }
    if token == 0 || token > MAX_METHOD || buf[token] != b' ' {
        return Known(Protocol::Tcp);
    }
    match buf.get(token + 1) {
        None => NeedMore,
        Some(b'/' | b'*') => Known(Protocol::Http1),
        Some(_) => Known(Protocol::Tcp),
    }
}

/// A TLS record header (RFC 8446 §5.1): content type 22 (handshake), legacy version 3.x,
/// two length bytes, then handshake type 1 (ClientHello). `None`: not TLS at all.
fn tls_client_hello(buf: &[u8]) -> Option<Verdict> {
    if buf[0] != 0x16 {
        return None;
    }
    // (offset, lowest allowed, highest allowed)
    const CHECKS: [(usize, u8, u8); 3] = [(1, 0x03, 0x03), (2, 0x00, 0x04), (5, 0x01, 0x01)];
    for (i, lo, hi) in CHECKS {
        match buf.get(i) {
            None => return Some(Verdict::NeedMore),
            Some(&b) if !(lo..=hi).contains(&b) => return Some(Verdict::Known(Protocol::Tcp)),
            Some(_) => {}
        }
    }
    Some(Verdict::Known(Protocol::Tls))
}

/// Reads until the first bytes decide the protocol, the client closes, or `timeout` passes.
/// A client that has sent too little by then (a server-speaks-first protocol waits for the
/// server's banner) is opaque TCP. Returns `None` when the client closed without a byte.
/// Where the destination is known, `detect_or_server_first` does not keep a banner waiting.
pub async fn detect<S: AsyncRead + Unpin>(
    io: S,
    timeout: Duration,
) -> io::Result<Option<Detected<S>>> {
    // No early connection: the same loop with nothing to connect to.
    let none = async { None::<tokio::io::Empty> };
    let raced = detect_or_server_first(io, timeout, timeout, none).await?;
    Ok(raced.map(|r| r.detected))
}

/// The outcome of `detect_or_server_first`.
pub struct Raced<S, U> {
    pub detected: Detected<S>,
    /// The upstream connection opened while waiting, when the verdict is opaque TCP; with
    /// the bytes the server already sent in front. An HTTP verdict drops it.
    pub upstream: Option<PeekedIo<U>>,
    /// The server spoke before the client: opaque TCP without waiting for the timeout.
    pub server_first: bool,
}

/// `detect`, for a connection whose destination is known: when the client has sent nothing
/// after `early`, connect upstream too (`connect`), and if the server speaks first (a NATS
/// or MySQL banner), decide opaque TCP at once instead of holding the banner back until the
/// timeout. A client that speaks first is judged by its bytes, as by `detect`: the early
/// connection is kept for opaque TCP and dropped for HTTP, which goes through the pools.
/// Returns `None` when the client closed without a byte.
pub async fn detect_or_server_first<S, U, F>(
    mut io: S,
    timeout: Duration,
    early: Duration,
    connect: F,
) -> io::Result<Option<Raced<S, U>>>
where
    S: AsyncRead + Unpin,
    U: AsyncRead + Unpin,
    F: std::future::Future<Output = Option<U>>,
{
    let mut buf = Vec::with_capacity(MAX_PEEK * 4);
    let mut banner = Vec::new();
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let connect = async {
        tokio::time::sleep_until(start + early).await;
        connect.await
    };
    tokio::pin!(connect);
    // `None` while connecting; `Some(None)` once there is no early connection to watch.
    let mut up: Option<Option<U>> = None;
    let mut server_first = false;
    let (protocol, timed_out) = loop {
        if let Verdict::Known(p) = classify(&buf) {
            break (p, false);
        }
        tokio::select! {
            read = tokio::time::timeout_at(deadline, io.read_buf(&mut buf)) => match read {
                Err(_) => break (Protocol::Tcp, true),
                Ok(Ok(0)) if buf.is_empty() => return Ok(None),
                Ok(Ok(0)) => break (Protocol::Tcp, false),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
            },
            c = &mut connect, if up.is_none() => up = Some(c),
            n = server_bytes(&mut up, &mut banner) => match n {
                Ok(n) if n > 0 => {
                    server_first = true;
                    break (Protocol::Tcp, false);
                }
                // The server closed or failed without a word: nothing to keep.
                _ => up = Some(None),
            },
        }
    };
    let upstream = match (protocol, up) {
        (Protocol::Http1 | Protocol::Http2, _) | (_, None | Some(None)) => None,
        (_, Some(Some(u))) => Some(PeekedIo::new(banner, u)),
    };
    Ok(Some(Raced {
        detected: Detected {
            protocol,
            io: PeekedIo::new(buf, io),
            timed_out,
        },
        upstream,
        server_first,
    }))
}

/// Reads what the early upstream connection sends; pending while there is none.
async fn server_bytes<U: AsyncRead + Unpin>(
    up: &mut Option<Option<U>>,
    banner: &mut Vec<u8>,
) -> io::Result<usize> {
    match up {
        Some(Some(u)) => {
            banner.reserve(1024);
            u.read_buf(banner).await
        }
        _ => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(b: &[u8]) -> Option<Protocol> {
        match classify(b) {
            Verdict::Known(p) => Some(p),
            Verdict::NeedMore => None,
        }
    }

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(verdict(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(verdict(b"OPTIONS * HTTP/1.1"), Some(Protocol::Http1));
        assert_eq!(verdict(H2_PREFACE), Some(Protocol::Http2));
        assert_eq!(
            verdict(b"PRI * HTTP/2.0\r\n"),
            None,
            "half an h2 preface waits"
        );
        assert_eq!(verdict(b"GE"), None);
        assert_eq!(verdict(b"GETX"), None, "an extension method may follow");
        assert_eq!(verdict(b"GETX\r\n"), Some(Protocol::Tcp));
        assert_eq!(verdict(b"PROPFIND /dav/ HTTP/1.1"), Some(Protocol::Http1));
        assert_eq!(verdict(b"MKCOL /dav/x"), Some(Protocol::Http1));
        assert_eq!(verdict(b"M-SEARCH * HTTP/1.1"), Some(Protocol::Http1));
        assert_eq!(verdict(b"PROPFIND "), None);
        assert_eq!(verdict(b"PING\r\n"), Some(Protocol::Tcp), "redis inline");
        assert_eq!(verdict(b"AUTH secret\r\n"), Some(Protocol::Tcp));
        assert_eq!(
            verdict(b"get / HTTP/1.1"),
            Some(Protocol::Tcp),
            "methods are case-sensitive"
        );
        assert_eq!(
            verdict(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
            Some(Protocol::Tcp),
            "no method is that long"
        );
        assert_eq!(
            verdict(b"*1\r\n$4\r\nPING\r\n"),
            Some(Protocol::Tcp),
            "redis RESP"
        );
        assert_eq!(
            verdict(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]),
            Some(Protocol::Tls)
        );
        assert_eq!(verdict(&[0x16, 0x03, 0x01]), None);
        assert_eq!(
            verdict(&[0x16, 0x03, 0x03, 0x00, 0x10, 0x02]),
            Some(Protocol::Tcp),
            "a ServerHello is not a client's first record"
        );
        assert_eq!(verdict(b"\0TRELLIS\x01"), Some(Protocol::MeshTcp));
        assert_eq!(verdict(b"\0TRE"), None);
        assert_eq!(verdict(b"\0\0\0\x08"), Some(Protocol::Tcp));
    }

    #[tokio::test]
    async fn silent_client_falls_back_to_tcp_after_the_timeout() {
        let (client, server) = tokio::io::duplex(64);
        let started = std::time::Instant::now();
        let d = detect(server, Duration::from_millis(100))
            .await
            .unwrap()
            .expect("the client is still open");
        assert_eq!(d.protocol, Protocol::Tcp);
        assert!(d.timed_out);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        drop(client);
    }

    #[tokio::test]
    async fn a_server_that_speaks_first_decides_at_once() {
        use tokio::io::AsyncWriteExt;
        let (_client, server) = tokio::io::duplex(64);
        let (mut app, upstream) = tokio::io::duplex(64);
        app.write_all(b"INFO {}\r\n").await.unwrap();
        let started = std::time::Instant::now();
        let raced = detect_or_server_first(
            server,
            Duration::from_secs(30),
            Duration::from_millis(1),
            async { Some(upstream) },
        )
        .await
        .unwrap()
        .expect("the client is still open");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "it did not wait for the timeout"
        );
        assert!(raced.server_first);
        assert_eq!(raced.detected.protocol, Protocol::Tcp);
        assert!(!raced.detected.timed_out);
        let mut banner = [0u8; 9];
        raced
            .upstream
            .expect("kept")
            .read_exact(&mut banner)
            .await
            .unwrap();
        assert_eq!(
            &banner, b"INFO {}\r\n",
            "the banner is replayed to the client"
        );
    }

    #[tokio::test]
    async fn a_client_that_speaks_http_drops_the_early_connection() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(64);
        let (_app, upstream) = tokio::io::duplex(64);
        let connected = std::sync::atomic::AtomicBool::new(false);
        let raced = detect_or_server_first(
            server,
            Duration::from_secs(30),
            Duration::from_millis(20),
            async {
                connected.store(true, std::sync::atomic::Ordering::Relaxed);
                Some(upstream)
            },
        );
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let raced = raced.await.unwrap().unwrap();
        assert_eq!(raced.detected.protocol, Protocol::Http1);
        assert!(raced.upstream.is_none());
        assert!(!raced.server_first);
        assert!(
            !connected.load(std::sync::atomic::Ordering::Relaxed),
            "a client that spoke at once never caused an early connection"
        );
    }

    #[tokio::test]
    async fn a_silent_server_and_client_still_time_out_to_tcp_with_the_connection() {
        let (_client, server) = tokio::io::duplex(64);
        let (_app, upstream) = tokio::io::duplex(64);
        let raced = detect_or_server_first(
            server,
            Duration::from_millis(50),
            Duration::from_millis(1),
            async { Some(upstream) },
        )
        .await
        .unwrap()
        .unwrap();
        assert!(raced.detected.timed_out);
        assert!(
            raced.upstream.is_some(),
            "the early connection carries the bytes"
        );
    }

    #[tokio::test]
    async fn bytes_read_while_detecting_are_replayed() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"GET /x HTTP/1.1\r\n").await.unwrap();
        drop(client);
        let d = detect(server, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.protocol, Protocol::Http1);
        let mut all = String::new();
        let mut io = d.io;
        io.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET /x HTTP/1.1\r\n");
    }
}
