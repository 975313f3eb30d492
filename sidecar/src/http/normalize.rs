//! Path normalization: the one path a request has from the moment a listener takes it, so
//! that routing, authorization and the app all read the same path (docs/security.md, "What a
//! policy protects").

// Always: percent-encodings are checked (malformed is a 400), unreserved characters are
// decoded and other encodings upper-cased (RFC 3986 §6.2.2), and dot segments are removed
// (§5.2.4). The Mesh's `pathNormalization` decides runs of `/`, encoded and raw
// backslashes and slashes, and `;` path parameters. The query is never touched.

use crate::http::errors::ProxyError;
use http::Uri;
use http::uri::{Parts, PathAndQuery};
use trellis_config::model::{EscapedSlashMode, PathNormalization, PathParameterMode, SlashMode};

/// Why a path cannot be normalized. Each is the downstream's fault: a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    Malformed,
    EscapedSlash,
    PathParameter,
}

impl PathError {
    /// What the 400 says; one text for the error and the answer.
    pub fn message(self) -> &'static str {
        match self {
            PathError::Malformed => {
                "malformed percent-encoding in the path: '%' must be followed by two hex digits"
            }
            PathError::EscapedSlash => {
                "the path holds an encoded slash or a backslash (%2F, %5C or \\), refused by the mesh's pathNormalization.escapedSlashes: REJECT"
            }
            PathError::PathParameter => {
                "the path holds a ';' path parameter, refused by the mesh's pathNormalization.pathParameters: REJECT"
            }
        }
    }
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for PathError {}

impl From<PathError> for ProxyError {
    fn from(e: PathError) -> ProxyError {
        ProxyError::BadRequest(e.message())
    }
}

/// Rewrites `uri`'s path to its normalized form; the scheme, authority and query stay.
/// A path already normal (the common case) is checked in one pass and not copied.
pub fn normalize_uri(uri: &mut Uri, opts: &PathNormalization) -> Result<(), PathError> {
    let Some(new) = normalize_path(uri.path(), opts)? else {
        return Ok(());
    };
    let pq = match uri.query() {
        Some(q) => format!("{new}?{q}"),
        None => new,
    };
    let mut parts = Parts::from(std::mem::take(uri));
    // Every byte of `pq` came from a valid path or is a decoded unreserved character.
    parts.path_and_query = Some(PathAndQuery::try_from(pq).map_err(|_| PathError::Malformed)?);
    *uri = Uri::from_parts(parts).map_err(|_| PathError::Malformed)?;
    Ok(())
}

/// The normalized form of `path`, or `None` when it is already normal. Paths that are not
/// origin-form (`*`, empty) are left alone.
pub fn normalize_path(path: &str, opts: &PathNormalization) -> Result<Option<String>, PathError> {
    if !path.starts_with('/') || is_normal(path.as_bytes(), opts) {
        return Ok(None);
    }
    let decoded = decode(path.as_bytes(), opts)?;
    let out = resolve(&decoded, opts)?;
    Ok((out != path).then_some(out))
}

/// Whether `path` has nothing the slow path would change: no `%`, `\\` or `;` (whatever the
/// mode, these need a look), no `//` when merging, and no segment that starts with `.`.
/// This runs on every request, so most bytes cost one table lookup.
fn is_normal(path: &[u8], opts: &PathNormalization) -> bool {
    let merge = opts.slashes == SlashMode::Merge;
    let mut after_slash = false;
    for &b in path {
        if !NOTABLE[usize::from(b)] {
            after_slash = false;
            continue;
        }
        match b {
            b'%' | b'\\' | b';' => return false,
            b'.' if after_slash => return false,
            b'/' if after_slash && merge => return false,
            _ => {}
        }
        after_slash = b == b'/';
    }
    true
}

/// The bytes `is_normal` must look at.
const NOTABLE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 5 {
        t[[b'%', b'\\', b';', b'.', b'/'][i] as usize] = true;
        i += 1;
    }
    t
};

/// Checks and decodes percent-encodings: unreserved characters become themselves, `%2F` and
/// `%5C` (and a raw `\`) follow `escapedSlashes`, and the rest stay encoded in upper case.
fn decode(path: &[u8], opts: &PathNormalization) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        match b {
            b'%' => {
                let (hi, lo) = match (path.get(i + 1), path.get(i + 2)) {
                    (Some(&h), Some(&l)) => (hex(h), hex(l)),
                    _ => (None, None),
                };
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::Malformed);
                };
                let v = hi << 4 | lo;
                if is_unreserved(v) {
                    out.push(v);
                } else if v == b'/' || v == b'\\' {
                    match opts.escaped_slashes {
                        EscapedSlashMode::Reject => return Err(PathError::EscapedSlash),
                        EscapedSlashMode::Decode => out.push(b'/'),
                        EscapedSlashMode::Keep => push_encoded(&mut out, v),
                    }
                } else {
                    push_encoded(&mut out, v);
                }
                i += 3;
                continue;
            }
            b'\\' => match opts.escaped_slashes {
                EscapedSlashMode::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashMode::Decode => out.push(b'/'),
                EscapedSlashMode::Keep => out.push(b),
            },
            _ => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

/// Removes dot segments, merges slashes and handles `;` parameters, segment by segment, so
/// the result has no segment that another pass would change (normalizing is idempotent).
fn resolve(path: &[u8], opts: &PathNormalization) -> Result<String, PathError> {
    let merge = opts.slashes == SlashMode::Merge;
    let mut segments: Vec<&[u8]> = Vec::new();
    // RFC 3986 §5.2.4: a path that ends in a dot segment keeps its trailing slash.
    let mut trailing = false;
    // The first piece is the empty one before the leading '/'.
    for seg in path.split(|&b| b == b'/').skip(1) {
        let seg = match seg.iter().position(|&b| b == b';') {
            None => seg,
            Some(at) => match opts.path_parameters {
                PathParameterMode::Reject => return Err(PathError::PathParameter),
                PathParameterMode::Strip => &seg[..at],
                PathParameterMode::Keep => seg,
            },
        };
        trailing = false;
        match seg {
            b"." => trailing = true,
            b".." => {
                segments.pop();
                trailing = true;
            }
            b"" if merge => trailing = true,
            _ => segments.push(seg),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for seg in &segments {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    if trailing || segments.is_empty() {
        out.push(b'/');
    }
    // Splitting on ASCII bytes keeps any UTF-8 the path held whole.
    String::from_utf8(out).map_err(|_| PathError::Malformed)
}

fn push_encoded(out: &mut Vec<u8>, v: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(v >> 4)], HEX[usize::from(v & 0xf)]]);
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests;
