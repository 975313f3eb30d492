//! Trace context: W3C `traceparent`/`tracestate`, B3 single and multi header, and
//! `x-request-id`.
//!
//! Until the proxy exports spans, it must not put a span id of its own in a header: an app
//! that records a span would name as its parent a span that no backend ever receives, and
//! every trace tree would break at the proxy. So incoming context passes unchanged, B3's
//! deferred sampling decision included. Where none came, the proxy starts a root
//! `traceparent` marked not sampled: the hops' logs share one trace id, and an app that
//! samples by its parent records nothing it was not asked to.

use http::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

/// The context a request carries on from this hop, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: u128,
    /// The span id in the context sent on: the caller's span when context came in, the root
    /// this proxy started when none did.
    pub span_id: u64,
    /// `None` when the decision was deferred (B3 without a sampling state).
    pub sampled: Option<bool>,
}

impl TraceIds {
    pub fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    pub fn span_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

/// Reads incoming context (W3C first, then B3 single, then B3 multi) and leaves it as it
/// came. With none, or with a `traceparent` that does not parse, writes a root
/// `traceparent` marked not sampled. Adds an `x-request-id` where none came.
pub fn propagate(headers: &mut HeaderMap) -> TraceIds {
    let w3c = parse_traceparent(headers);
    if w3c.is_none() && headers.contains_key(TRACEPARENT) {
        // One that does not parse restarts the trace, and its `tracestate` belongs to it
        // (W3C Trace Context, "tracestate" processing): neither is sent on.
        headers.remove(TRACEPARENT);
        headers.remove(TRACESTATE);
    }
    let incoming = w3c
        .or_else(|| parse_b3_single(headers))
        .or_else(|| parse_b3_multi(headers));
    let mut rng = rand::rng();
    let ids = match incoming {
        Some(ids) => ids,
        None => {
            let ids = TraceIds {
                trace_id: rng.random::<u128>().max(1),
                span_id: rng.random::<u64>().max(1),
                sampled: Some(false),
            };
            // A `tracestate` alone describes no trace.
            headers.remove(TRACESTATE);
            write_traceparent(headers, &ids);
            ids
        }
    };
    if !headers.contains_key(X_REQUEST_ID) {
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
            X_REQUEST_ID,
            HeaderValue::try_from(s).expect("hex is a valid header value"),
        );
    }
    ids
}

// Header names as constants: inserting by `&str` would parse and validate the name on
// every request.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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

/// `00-<trace>-<span>-<flags>`, built in a stack buffer: no format machinery on the
/// request path.
fn write_traceparent(headers: &mut HeaderMap, ids: &TraceIds) {
    let mut tp = [0u8; 55];
    tp[..3].copy_from_slice(b"00-");
    hex_into(&mut tp[3..35], ids.trace_id);
    tp[35] = b'-';
    hex_into(&mut tp[36..52], u128::from(ids.span_id));
    tp[52..54].copy_from_slice(b"-0");
    tp[54] = if ids.sampled == Some(true) {
        b'1'
    } else {
        b'0'
    };
    if let Some(v) = value(&tp) {
        headers.insert(TRACEPARENT, v);
    }
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

/// `00-<32 hex trace>-<16 hex parent>-<2 hex flags>`; a later version may append fields.
fn parse_traceparent(h: &HeaderMap) -> Option<TraceIds> {
    let mut it = get(h, "traceparent")?.split('-');
    let (ver, trace, parent, flags) = (it.next()?, it.next()?, it.next()?, it.next()?);
    let version = u8::from_str_radix(ver, 16).ok()?;
    if ver.len() != 2 || version == 0xff || trace.len() != 32 || flags.len() != 2 {
        return None;
    }
    // Version 00 has exactly four fields.
    if version == 0 && it.next().is_some() {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceIds {
        trace_id: hex128(trace)?,
        span_id: hex64(parent)?,
        sampled: Some(flags & 1 == 1),
    })
}

/// `b3: <trace>-<span>[-<sampled>[-<parent>]]`, where sampled is `1`, `0` or `d` (debug,
/// which means sampled). Without it, the decision is deferred. `b3: 0` alone (a decision
/// with no ids) carries no trace.
fn parse_b3_single(h: &HeaderMap) -> Option<TraceIds> {
    let mut it = get(h, "b3")?.split('-');
    let (trace, span) = (hex128(it.next()?)?, hex64(it.next()?)?);
    let sampled = match it.next() {
        None => None,
        Some("1" | "d") => Some(true),
        Some("0") => Some(false),
        Some(_) => return None,
    };
    Some(TraceIds {
        trace_id: trace,
        span_id: span,
        sampled,
    })
}

/// `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled` (`1`/`0`, or the older `true`/`false`) and
/// `X-B3-Flags: 1` (debug). Without either of the last two, the decision is deferred.
fn parse_b3_multi(h: &HeaderMap) -> Option<TraceIds> {
    let trace = hex128(get(h, "x-b3-traceid")?)?;
    let span = hex64(get(h, "x-b3-spanid")?)?;
    let sampled = if get(h, "x-b3-flags") == Some("1") {
        Some(true)
    } else {
        match get(h, "x-b3-sampled") {
            Some("1" | "true") => Some(true),
            Some("0" | "false") => Some(false),
            _ => None,
        }
    };
    Some(TraceIds {
        trace_id: trace,
        span_id: span,
        sampled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    /// Every header but `x-request-id`, which the proxy may add.
    fn context(h: &HeaderMap) -> Vec<(String, String)> {
        let mut v: Vec<_> = (h.iter())
            .filter(|(k, _)| *k != "x-request-id")
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn w3c_context_passes_unchanged_with_no_span_of_the_proxys_own() {
        let incoming = [
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "vendor=x,other=y"),
        ];
        let mut h = headers(&incoming);
        let before = context(&h);
        let ids = propagate(&mut h);
        assert_eq!(context(&h), before, "no header changed and none was added");
        assert_eq!(ids.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ids.span_hex(), "00f067aa0ba902b7");
        assert_eq!(ids.sampled, Some(true));
        assert!(h.contains_key("x-request-id"));
    }

    #[test]
    fn b3_contexts_pass_unchanged_and_a_deferred_decision_stays_deferred() {
        let cases: [&[(&'static str, &'static str)]; 5] = [
            &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1")],
            &[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d")],
            &[
                ("x-b3-traceid", "463ac35c9f6413ad"),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ],
            &[
                ("x-b3-traceid", "463ac35c9f6413ad"),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
                ("x-b3-sampled", "0"),
            ],
            &[
                ("x-b3-traceid", "463ac35c9f6413ad"),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
                ("x-b3-flags", "1"),
            ],
        ];
        let decisions = [None, Some(true), None, Some(false), Some(true)];
        for (case, decision) in cases.iter().zip(decisions) {
            let mut h = headers(case);
            let before = context(&h);
            let ids = propagate(&mut h);
            assert_eq!(context(&h), before, "{case:?}");
            assert_eq!(ids.sampled, decision, "{case:?}");
        }
        let mut h = headers(cases[2]);
        let ids = propagate(&mut h);
        assert_eq!(ids.trace_id, 0x463a_c35c_9f64_13ad, "a 64-bit B3 trace id");
        assert_eq!(ids.span_id, 0xa2fb_4a1d_1a96_d312);
    }

    #[test]
    fn with_no_context_a_root_marked_not_sampled_is_started() {
        let mut h = HeaderMap::new();
        let ids = propagate(&mut h);
        assert_eq!(ids.sampled, Some(false));
        let tp = h["traceparent"].to_str().unwrap();
        assert_eq!(
            tp,
            format!("00-{}-{}-00", ids.trace_hex(), ids.span_hex()),
            "the root is what the logs name"
        );
        assert!(!h.contains_key("b3") && !h.contains_key("x-b3-sampled"));
        let rid = h["x-request-id"].to_str().unwrap();
        assert_eq!(rid.len(), 36);
        assert_eq!(&rid[14..15], "4");
    }

    #[test]
    fn an_invalid_traceparent_is_replaced_by_a_root_and_its_tracestate_dropped() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            let mut h = headers(&[("traceparent", bad), ("tracestate", "vendor=x")]);
            let ids = propagate(&mut h);
            assert_ne!(ids.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert_eq!(ids.sampled, Some(false), "{bad}");
            assert!(h["traceparent"].to_str().unwrap().ends_with("-00"), "{bad}");
            assert!(!h.contains_key("tracestate"), "{bad}");
        }
        // A broken traceparent beside a good B3 context: the B3 one is carried on alone.
        let mut h = headers(&[
            ("traceparent", "00-xyz-00f067aa0ba902b7-01"),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ]);
        let ids = propagate(&mut h);
        assert_eq!(ids.trace_hex(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert!(!h.contains_key("traceparent"));
        // A later version may carry more fields; its first four are read.
        let mut h = headers(&[(
            "traceparent",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future",
        )]);
        let ids = propagate(&mut h);
        assert_eq!(ids.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn an_incoming_request_id_is_kept() {
        let mut h = headers(&[("x-request-id", "req-123")]);
        propagate(&mut h);
        assert_eq!(h["x-request-id"], "req-123");
    }
}
