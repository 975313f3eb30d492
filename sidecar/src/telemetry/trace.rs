//! Trace context: W3C `traceparent`/`tracestate`, B3 single and multi header, and
//! `x-request-id`; and the sampling decision.
//!
//! A proxy names a span of its own as the parent only when it exports that span: otherwise an
//! app that records a span would name a parent that no backend ever receives, and the trace
//! tree would break at the proxy. So with tracing off (no collector), incoming context passes
//! unchanged, B3's deferred decision included, and where none came the proxy starts a root
//! `traceparent` marked not sampled: the hops' logs share one trace id, and an app that
//! samples by its parent records nothing it was not asked to.
//!
//! With tracing on, the decision is made once, where the trace enters the mesh: a new trace,
//! or a B3 context that deferred it, is sampled at the configured percentage; a decision that
//! came in is followed (B3's debug flag forces sampling). A sampled request gets a span of
//! this proxy, whose id replaces the caller's in the header it came in, with the caller's
//! span as its parent; `tracestate` passes unchanged.

use http::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

/// The context a request carries on from this hop, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: u128,
    /// The span id in the context sent on: this proxy's span when it records one, else the
    /// caller's span, or the root this proxy started when no context came.
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

/// The span this proxy records for a sampled request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: u128,
    pub span_id: u64,
    /// The caller's span; `None` for the root of a trace that starts here.
    pub parent: Option<u64>,
}

/// Which header the context came in, and so the one it goes on in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    W3c,
    B3Single,
    B3Multi,
}

/// Reads incoming context (W3C first, then B3 single, then B3 multi), decides sampling, and
/// writes what goes on. `sample_percent` is `None` with tracing off: nothing is decided and
/// no span is made. Adds an `x-request-id` where none came.
pub fn propagate(
    headers: &mut HeaderMap,
    sample_percent: Option<f64>,
) -> (TraceIds, Option<SpanIds>) {
    let w3c = parse_traceparent(headers);
    if w3c.is_none() && headers.contains_key(TRACEPARENT) {
        // One that does not parse restarts the trace, and its `tracestate` belongs to it
        // (W3C Trace Context, "tracestate" processing): neither is sent on.
        headers.remove(TRACEPARENT);
        headers.remove(TRACESTATE);
    }
    let incoming = (w3c.map(|i| (i, Format::W3c)))
        .or_else(|| parse_b3_single(headers).map(|i| (i, Format::B3Single)))
        .or_else(|| parse_b3_multi(headers).map(|i| (i, Format::B3Multi)));
    let mut rng = rand::rng();
    let mut decide = |percent: f64| rng.random::<f64>() * 100.0 < percent;
    let out = match (incoming, sample_percent) {
        // Tracing off: the context as it came.
        (Some((ids, _)), None) => (ids, None),
        // A decision was made upstream, and it was no.
        (
            Some((
                ids @ TraceIds {
                    sampled: Some(false),
                    ..
                },
                _,
            )),
            Some(_),
        ) => (ids, None),
        (Some((caller, format)), Some(percent)) => {
            let sampled = caller.sampled.unwrap_or_else(|| decide(percent));
            if sampled {
                let span = SpanIds {
                    trace_id: caller.trace_id,
                    span_id: new_span_id(),
                    parent: Some(caller.span_id),
                };
                let ids = TraceIds {
                    trace_id: caller.trace_id,
                    span_id: span.span_id,
                    sampled: Some(true),
                };
                write(headers, format, &ids, Some(caller.span_id));
                (ids, Some(span))
            } else {
                // The deferred decision, made here, is a no: say so, so that no hop after
                // decides again.
                let ids = TraceIds {
                    sampled: Some(false),
                    ..caller
                };
                write(headers, format, &ids, None);
                (ids, None)
            }
        }
        (None, percent) => {
            let sampled = percent.is_some_and(&mut decide);
            let ids = TraceIds {
                trace_id: rand::rng().random::<u128>().max(1),
                span_id: new_span_id(),
                sampled: Some(sampled),
            };
            // A `tracestate` alone describes no trace.
            headers.remove(TRACESTATE);
            write_traceparent(headers, &ids);
            let span = sampled.then_some(SpanIds {
                trace_id: ids.trace_id,
                span_id: ids.span_id,
                parent: None,
            });
            (ids, span)
        }
    };
    if !headers.contains_key(X_REQUEST_ID) {
        let mut b: [u8; 16] = rand::rng().random();
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
    out
}

fn new_span_id() -> u64 {
    rand::rng().random::<u64>().max(1)
}

/// Writes `ids` in `format`. B3 carries the parent span too (`parent`), and keeps its debug
/// flag; W3C keeps `tracestate` as it came. Values are built in stack buffers, as
/// `write_traceparent` does.
fn write(headers: &mut HeaderMap, format: Format, ids: &TraceIds, parent: Option<u64>) {
    match format {
        Format::W3c => write_traceparent(headers, ids),
        Format::B3Single => {
            // `<trace>-<span>-<flag>[-<parent>]`, the trace id as long as it came.
            let came = get(headers, "b3").unwrap_or_default();
            let mut parts = came.split('-');
            let trace_len = if parts.next().is_some_and(|t| t.len() == 16) {
                16
            } else {
                32
            };
            let flag = match (parts.nth(1), ids.sampled) {
                (Some("d"), _) => b'd',
                (_, Some(true)) => b'1',
                _ => b'0',
            };
            let mut v = [0u8; 68];
            hex_into(&mut v[..trace_len], ids.trace_id);
            let mut n = trace_len;
            v[n] = b'-';
            hex_into(&mut v[n + 1..n + 17], u128::from(ids.span_id));
            v[n + 17] = b'-';
            v[n + 18] = flag;
            n += 19;
            if let Some(p) = parent {
                v[n] = b'-';
                hex_into(&mut v[n + 1..n + 17], u128::from(p));
                n += 17;
            }
            if let Some(v) = value(&v[..n]) {
                headers.insert(B3, v);
            }
        }
        Format::B3Multi => {
            if let Some(v) = hex64_value(ids.span_id) {
                headers.insert(X_B3_SPANID, v);
            }
            if let Some(p) = parent.and_then(hex64_value) {
                headers.insert(X_B3_PARENTSPANID, p);
            }
            // `X-B3-Flags: 1` (debug) already says sampled, and stays. Any other flags
            // value says nothing (as `parse_b3_multi` reads it), so the decision is written:
            // without it the next hop would decide again (found by the trace_headers fuzz
            // target, fuzz/corpus/trace_headers/regression-b3-flags-not-debug).
            if get(headers, X_B3_FLAGS.as_str()) != Some("1") {
                let v = if ids.sampled == Some(true) { "1" } else { "0" };
                headers.insert(X_B3_SAMPLED, HeaderValue::from_static(v));
            }
        }
    }
}

/// A span id as a header value: 16 hex digits.
fn hex64_value(id: u64) -> Option<HeaderValue> {
    let mut v = [0u8; 16];
    hex_into(&mut v, u128::from(id));
    value(&v)
}

// Header names as constants: inserting by `&str` would parse and validate the name on
// every request.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const B3: HeaderName = HeaderName::from_static("b3");
const X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
const X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

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
        let (ids, _) = propagate(&mut h, None);
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
            let (ids, _) = propagate(&mut h, None);
            assert_eq!(context(&h), before, "{case:?}");
            assert_eq!(ids.sampled, decision, "{case:?}");
        }
        let mut h = headers(cases[2]);
        let (ids, _) = propagate(&mut h, None);
        assert_eq!(ids.trace_id, 0x463a_c35c_9f64_13ad, "a 64-bit B3 trace id");
        assert_eq!(ids.span_id, 0xa2fb_4a1d_1a96_d312);
    }

    #[test]
    fn with_no_context_a_root_marked_not_sampled_is_started() {
        let mut h = HeaderMap::new();
        let (ids, _) = propagate(&mut h, None);
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
            let (ids, _) = propagate(&mut h, None);
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
        let (ids, _) = propagate(&mut h, None);
        assert_eq!(ids.trace_hex(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert!(!h.contains_key("traceparent"));
        // A later version may carry more fields; its first four are read.
        let mut h = headers(&[(
            "traceparent",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future",
        )]);
        let (ids, _) = propagate(&mut h, None);
        assert_eq!(ids.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn an_incoming_request_id_is_kept() {
        let mut h = headers(&[("x-request-id", "req-123")]);
        propagate(&mut h, None);
        assert_eq!(h["x-request-id"], "req-123");
    }

    #[test]
    fn a_trace_that_starts_here_is_sampled_at_the_configured_percentage() {
        let mut h = HeaderMap::new();
        let (ids, span) = propagate(&mut h, Some(100.0));
        let span = span.expect("100% samples every new trace");
        assert_eq!(span.parent, None, "the root of the trace");
        assert_eq!((span.trace_id, span.span_id), (ids.trace_id, ids.span_id));
        assert_eq!(
            h["traceparent"].to_str().unwrap(),
            format!("00-{}-{}-01", ids.trace_hex(), ids.span_hex())
        );
        let mut h = HeaderMap::new();
        let (ids, span) = propagate(&mut h, Some(0.0));
        assert_eq!((span, ids.sampled), (None, Some(false)));
        assert!(h["traceparent"].to_str().unwrap().ends_with("-00"));
        // 50%: a binomial(2000, 0.5) count lies within 1000 ± 150 (over six standard
        // deviations) unless the sampler is wrong.
        let sampled = (0..2000)
            .filter(|_| propagate(&mut HeaderMap::new(), Some(50.0)).1.is_some())
            .count();
        assert!((850..=1150).contains(&sampled), "{sampled} of 2000 at 50%");
    }

    #[test]
    fn after_the_root_the_parents_decision_is_followed_and_tracestate_kept() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = headers(&[("traceparent", tp), ("tracestate", "vendor=x,other=y")]);
        let (ids, span) = propagate(&mut h, Some(0.0));
        let span = span.expect("a sampled parent is followed even at 0%");
        assert_eq!(span.parent, Some(0x00f0_67aa_0ba9_02b7));
        assert_ne!(span.span_id, 0x00f0_67aa_0ba9_02b7);
        assert_eq!(ids.span_id, span.span_id, "logs name the span sent on");
        assert_eq!(
            h["traceparent"].to_str().unwrap(),
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", ids.span_hex()),
            "the proxy's span is the next hop's parent"
        );
        assert_eq!(h["tracestate"], "vendor=x,other=y");

        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let mut h = headers(&[("traceparent", unsampled), ("tracestate", "v=1")]);
        let before = context(&h);
        let (ids, span) = propagate(&mut h, Some(100.0));
        assert_eq!(
            (span, ids.sampled),
            (None, Some(false)),
            "a no is followed at 100%"
        );
        assert_eq!(context(&h), before, "and passed on unchanged");
    }

    #[test]
    fn b3_deferred_decisions_are_made_here_and_debug_forces_sampling() {
        let trace = "80f198ee56343ba864fe8b2a57d3eff7";
        let caller = "e457b5a2e4d86bd1";
        // Deferred, sampled here: the proxy's span, the caller as its parent, the decision.
        let mut h = headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1")]);
        let (ids, span) = propagate(&mut h, Some(100.0));
        assert_eq!(span.unwrap().parent, Some(0xe457_b5a2_e4d8_6bd1));
        assert_eq!(
            h["b3"].to_str().unwrap(),
            format!("{trace}-{}-1-{caller}", ids.span_hex())
        );
        // Deferred, not sampled here: the no is written down, the ids stay.
        let mut h = headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1")]);
        let (ids, span) = propagate(&mut h, Some(0.0));
        assert_eq!((span, ids.sampled), (None, Some(false)));
        assert_eq!(h["b3"].to_str().unwrap(), format!("{trace}-{caller}-0"));
        // Debug: sampled whatever the percentage, and the flag goes on.
        let mut h = headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d")]);
        let (ids, span) = propagate(&mut h, Some(0.0));
        assert!(span.is_some());
        assert_eq!(
            h["b3"].to_str().unwrap(),
            format!("{trace}-{}-d-{caller}", ids.span_hex())
        );
        // A 64-bit trace id stays 64-bit.
        let mut h = headers(&[("b3", "a3ce929d0e0e4736-e457b5a2e4d86bd1-1")]);
        let (ids, _) = propagate(&mut h, Some(0.0));
        assert!(h["b3"].to_str().unwrap().starts_with("a3ce929d0e0e4736-"));
        assert_eq!(ids.trace_id, 0xa3ce_929d_0e0e_4736);
        // Multi header: deferred and sampled here; then the debug flag at 0%.
        let mut h = headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ]);
        let (ids, span) = propagate(&mut h, Some(100.0));
        assert_eq!(span.unwrap().parent, Some(0xa2fb_4a1d_1a96_d312));
        assert_eq!(h["x-b3-spanid"].to_str().unwrap(), ids.span_hex());
        assert_eq!(h["x-b3-parentspanid"], "a2fb4a1d1a96d312");
        assert_eq!(h["x-b3-sampled"], "1");
        assert_eq!(h["x-b3-traceid"], "463ac35c9f6413ad");
        let mut h = headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-flags", "1"),
        ]);
        let (_, span) = propagate(&mut h, Some(0.0));
        assert!(span.is_some(), "X-B3-Flags: 1 is debug");
        assert!(
            !h.contains_key("x-b3-sampled"),
            "the debug flag already says it"
        );
    }
}
