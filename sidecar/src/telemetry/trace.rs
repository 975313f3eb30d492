//! Trace context: W3C `traceparent`/`tracestate`, B3 single and multi header, and
//! `x-request-id`. The trace id is kept, each hop gets a new span id, and whatever is
//! missing is generated.

use http::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

/// The ids of this hop, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent_id: Option<u64>,
    pub sampled: bool,
}

impl TraceIds {
    pub fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

/// Reads incoming context (W3C first, then B3 single, then B3 multi), starts a new span and
/// writes every format back. `tracestate` passes through untouched.
pub fn propagate(headers: &mut HeaderMap) -> TraceIds {
    let incoming = parse_traceparent(headers)
        .or_else(|| parse_b3_single(headers))
        .or_else(|| parse_b3_multi(headers));
    let mut rng = rand::rng();
    let (trace_id, parent_id, sampled) = match incoming {
        Some((t, p, s)) => (t, Some(p), s),
        None => (rng.random::<u128>().max(1), None, true),
    };
    let ids = TraceIds {
        trace_id,
        span_id: rng.random::<u64>().max(1),
        parent_id,
        sampled,
    };
    write(headers, &ids);
    if !headers.contains_key("x-request-id") {
        let mut b: [u8; 16] = rng.random();
        b[6] = (b[6] & 0x0f) | 0x40; // UUID version 4
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
        let u = u128::from_be_bytes(b);
        let s = format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            u >> 96,
            (u >> 80) & 0xffff,
            (u >> 64) & 0xffff,
            (u >> 48) & 0xffff,
            u & 0xffff_ffff_ffff
        );
        headers.insert(
            "x-request-id",
            HeaderValue::try_from(s).expect("hex is a valid header value"),
        );
    }
    ids
}

// Header names as constants: inserting by `&str` would parse and validate the name on
// every request.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");

/// Writes `v` as lowercase hex into the `N` bytes of `out`, zero-padded.
fn hex_into(out: &mut [u8], mut v: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

fn value(bytes: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_bytes(bytes).ok()
}

fn write(headers: &mut HeaderMap, ids: &TraceIds) {
    let flag = if ids.sampled { b'1' } else { b'0' };
    // Every value is built in a stack buffer: no format machinery on the request path.
    let mut trace = [0u8; 32];
    let mut span = [0u8; 16];
    hex_into(&mut trace, ids.trace_id);
    hex_into(&mut span, u128::from(ids.span_id));
    let mut tp = [0u8; 55];
    tp[..3].copy_from_slice(b"00-");
    tp[3..35].copy_from_slice(&trace);
    tp[35] = b'-';
    tp[36..52].copy_from_slice(&span);
    tp[52..54].copy_from_slice(b"-0");
    tp[54] = flag;
    if let Some(v) = value(&tp) {
        headers.insert(TRACEPARENT, v);
    }
    let mut parent = [0u8; 16];
    if let Some(p) = ids.parent_id {
        hex_into(&mut parent, u128::from(p));
    }
    if headers.contains_key(B3) {
        // <trace>-<span>-<sampled>[-<parent>]
        let mut b3 = [0u8; 68];
        b3[..32].copy_from_slice(&trace);
        b3[32] = b'-';
        b3[33..49].copy_from_slice(&span);
        b3[49] = b'-';
        b3[50] = flag;
        let len = if ids.parent_id.is_some() {
            b3[51] = b'-';
            b3[52..68].copy_from_slice(&parent);
            68
        } else {
            51
        };
        if let Some(v) = value(&b3[..len]) {
            headers.insert(B3, v);
        }
    }
    if let Some(v) = value(&trace) {
        headers.insert(B3_TRACE_ID, v);
    }
    if let Some(v) = value(&span) {
        headers.insert(B3_SPAN_ID, v);
    }
    match ids.parent_id {
        Some(_) => {
            if let Some(v) = value(&parent) {
                headers.insert(B3_PARENT, v);
            }
        }
        None => {
            headers.remove(B3_PARENT);
        }
    }
    headers.insert(
        B3_SAMPLED,
        HeaderValue::from_static(if ids.sampled { "1" } else { "0" }),
    );
}

fn hex128(s: &str) -> Option<u128> {
    // B3 allows 64-bit trace ids; they are the low half of the 128-bit id.
    (s.len() == 32 || s.len() == 16)
        .then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
        .filter(|v| *v != 0)
}

fn hex64(s: &str) -> Option<u64> {
    (s.len() == 16)
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
        .filter(|v| *v != 0)
}

fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// `00-<32 hex trace>-<16 hex parent>-<2 hex flags>`.
fn parse_traceparent(h: &HeaderMap) -> Option<(u128, u64, bool)> {
    let mut it = get(h, "traceparent")?.split('-');
    let (ver, trace, parent, flags) = (it.next()?, it.next()?, it.next()?, it.next()?);
    if ver.len() != 2 || ver == "ff" || trace.len() != 32 || flags.len() != 2 {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((hex128(trace)?, hex64(parent)?, flags & 1 == 1))
}

/// `b3: <trace>-<span>[-<sampled>[-<parent>]]`.
fn parse_b3_single(h: &HeaderMap) -> Option<(u128, u64, bool)> {
    let mut it = get(h, "b3")?.split('-');
    let (trace, span) = (hex128(it.next()?)?, hex64(it.next()?)?);
    let sampled = it.next().is_none_or(|s| s == "1" || s == "d");
    Some((trace, span, sampled))
}

fn parse_b3_multi(h: &HeaderMap) -> Option<(u128, u64, bool)> {
    let trace = hex128(get(h, "x-b3-traceid")?)?;
    let span = hex64(get(h, "x-b3-spanid")?)?;
    let sampled = get(h, "x-b3-sampled").is_none_or(|s| s == "1" || s == "true")
        || get(h, "x-b3-flags") == Some("1");
    Some((trace, span, sampled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_w3c_trace_id_and_makes_a_new_span() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        h.insert("tracestate", "vendor=x".parse().unwrap());
        let ids = propagate(&mut h);
        assert_eq!(ids.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ids.parent_id, Some(0x00f0_67aa_0ba9_02b7));
        let tp = h["traceparent"].to_str().unwrap();
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && tp.ends_with("-01"));
        assert!(!tp.contains("00f067aa0ba902b7"));
        assert_eq!(h["tracestate"], "vendor=x");
        assert_eq!(h["x-b3-traceid"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(h["x-b3-parentspanid"], "00f067aa0ba902b7");
        assert!(h.contains_key("x-request-id"));
    }

    #[test]
    fn b3_single_and_multi_are_read() {
        let mut h = HeaderMap::new();
        h.insert(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
                .parse()
                .unwrap(),
        );
        let ids = propagate(&mut h);
        assert_eq!(ids.trace_hex(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert!(h["b3"].to_str().unwrap().ends_with("-e457b5a2e4d86bd1"));

        let mut h = HeaderMap::new();
        h.insert("x-b3-traceid", "463ac35c9f6413ad".parse().unwrap());
        h.insert("x-b3-spanid", "a2fb4a1d1a96d312".parse().unwrap());
        h.insert("x-b3-sampled", "0".parse().unwrap());
        let ids = propagate(&mut h);
        assert_eq!(ids.trace_id, 0x463a_c35c_9f64_13ad);
        assert!(!ids.sampled);
        assert!(h["traceparent"].to_str().unwrap().ends_with("-00"));
    }

    #[test]
    fn generates_everything_when_nothing_arrives_and_rejects_garbage() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let ids = propagate(&mut h);
        assert_ne!(ids.trace_id, 0);
        assert_eq!(ids.parent_id, None);
        let rid = h["x-request-id"].to_str().unwrap();
        assert_eq!(rid.len(), 36);
        assert_eq!(&rid[14..15], "4");
    }
}
