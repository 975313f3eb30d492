//! The transport preface of opaque TCP between sidecars: a sidecar's inbound listener serves
//! every app port, so the outbound side first says which Service port the bytes are for.

// ```text
// MAGIC (8 bytes: NUL "TRELLIS") | version (1 byte: 1) | length (1 byte) | authority (ASCII)
// ```
//
// The authority is `name.namespace:port` of the Service port. The receiving sidecar maps it
// to the app's port with the Service's `targetPort`, as it does an HTTP `Host`. The leading
// NUL keeps the preface apart from HTTP, TLS and the preface of any common protocol. Once
// mTLS carries sidecar-to-sidecar traffic, the preface travels inside the TLS session.

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const MAGIC: &[u8] = b"\0TRELLIS";
const VERSION: u8 = 1;

/// Writes the preface for `authority` (at most 255 bytes).
pub async fn write<W: AsyncWrite + Unpin>(w: &mut W, authority: &str) -> io::Result<()> {
    let len = u8::try_from(authority.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "service authority over 255 bytes",
        )
    })?;
    let mut buf = Vec::with_capacity(MAGIC.len() + 2 + authority.len());
    buf.extend_from_slice(MAGIC);
    buf.push(VERSION);
    buf.push(len);
    buf.extend_from_slice(authority.as_bytes());
    w.write_all(&buf).await
}

/// Reads a preface and returns its authority. Fails on a wrong magic, an unknown version or
/// an authority that is not ASCII.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<String> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut head = [0u8; 10];
    r.read_exact(&mut head).await?;
    if &head[..8] != MAGIC {
        return Err(bad("not a trellis transport preface"));
    }
    if head[8] != VERSION {
        return Err(bad(
            "unknown trellis transport preface version; upgrade this proxy",
        ));
    }
    let mut authority = vec![0u8; usize::from(head[9])];
    r.read_exact(&mut authority).await?;
    if !authority.is_ascii() {
        return Err(bad("trellis transport preface authority is not ASCII"));
    }
    String::from_utf8(authority).map_err(|_| bad("preface authority"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_refusals() {
        let mut buf = Vec::new();
        write(&mut buf, "redis.rides:6379").await.unwrap();
        buf.extend_from_slice(b"*1\r\n");
        let mut r = &buf[..];
        assert_eq!(read(&mut r).await.unwrap(), "redis.rides:6379");
        assert_eq!(r, b"*1\r\n", "the app's bytes follow untouched");

        let mut wrong = buf.clone();
        wrong[8] = 9;
        assert!(read(&mut &wrong[..]).await.is_err());
        assert!(read(&mut &b"\0TRELLIS"[..]).await.is_err(), "truncated");
    }
}
