//! What the fuzz targets (the `fuzz/` crate, on nightly) and this crate's corpus replay
//! (`cargo test`, on stable) run on one input: the same function for both, so a crash the
//! fuzzer found stays a test. Built only for tests and with the `fuzzing` feature; the
//! proxy's public surface is otherwise unchanged.

use crate::http::normalize::normalize_path;
use trellis_config::model::{EscapedSlashMode, PathNormalization, PathParameterMode, SlashMode};

/// The normalization settings that the first byte of an input picks: every combination of
/// the three modes.
fn settings(b: u8) -> PathNormalization {
    PathNormalization {
        slashes: [SlashMode::Merge, SlashMode::Keep][usize::from(b & 1)],
        escaped_slashes: [
            EscapedSlashMode::Reject,
            EscapedSlashMode::Decode,
            EscapedSlashMode::Keep,
        ][usize::from((b >> 1) % 3)],
        path_parameters: [
            PathParameterMode::Reject,
            PathParameterMode::Strip,
            PathParameterMode::Keep,
        ][usize::from((b >> 3) % 3)],
    }
}

/// Path normalization on `data` (a settings byte, then the path): it never panics, it is
/// idempotent (what it returns needs no change), and what it returns keeps docs/security.md's
/// rules. Panics, naming the rule, when one is broken.
pub fn path(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(path) = std::str::from_utf8(rest) else {
        return;
    };
    let opts = settings(mode);
    let Ok(changed) = normalize_path(path, &opts) else {
        return;
    };
    if !path.starts_with('/') {
        // Not an origin-form path: left alone.
        assert_eq!(changed, None, "a path without a leading / was changed");
        return;
    }
    let out = changed.as_deref().unwrap_or(path);
    let again = normalize_path(out, &opts);
    assert!(
        matches!(again, Ok(None)),
        "not idempotent under {opts:?}: {path:?} -> {out:?} -> {again:?}"
    );
    assert!(
        out.starts_with('/'),
        "{path:?} -> {out:?} lost its leading /"
    );
    let segments: Vec<&str> = out.split('/').skip(1).collect();
    assert!(
        !segments.iter().any(|s| *s == "." || *s == ".."),
        "{path:?} -> {out:?} keeps a dot segment"
    );
    if opts.slashes == SlashMode::Merge {
        assert!(
            !out.contains("//"),
            "{path:?} -> {out:?} keeps // under MERGE"
        );
    }
    let upper = out.to_ascii_uppercase();
    if opts.escaped_slashes != EscapedSlashMode::Keep {
        assert!(
            !upper.contains("%2F") && !upper.contains("%5C") && !out.contains('\\'),
            "{path:?} -> {out:?} keeps an escaped slash under {:?}",
            opts.escaped_slashes
        );
    }
    if opts.path_parameters != PathParameterMode::Keep {
        assert!(
            !out.contains(';'),
            "{path:?} -> {out:?} keeps a ; under {:?}",
            opts.path_parameters
        );
    }
    // Encoded unreserved characters are decoded, and what stays encoded is upper case.
    let bytes = out.as_bytes();
    for (i, _) in out.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).expect("a % with two hex digits");
        let hex = std::str::from_utf8(hex).expect("ASCII hex");
        let v = u8::from_str_radix(hex, 16).expect("hex digits after %");
        assert!(
            !(v.is_ascii_alphanumeric() || b"-._~".contains(&v)),
            "{path:?} -> {out:?} keeps %{hex}, an unreserved character, encoded"
        );
        assert_eq!(
            hex,
            hex.to_ascii_uppercase(),
            "{path:?} -> {out:?}: lower-case %{hex}"
        );
    }
}

/// The trace-context headers a request may carry, which the first byte of each line of an
/// input picks.
const TRACE_HEADERS: [&str; 9] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-request-id",
];

/// W3C and B3 trace context on `data`: lines, each a header-picking byte and a value. The
/// proxy reads them, decides and writes the context on, never panicking; and what it writes
/// is what it says it is: the next hop (tracing off, reading as it came) reads the same
/// trace id, span id and decision back, and an `x-request-id` is always there.
pub fn trace_headers(data: &[u8]) {
    use crate::telemetry::trace::propagate;
    let mut headers = http::HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some((&pick, value)) = line.split_first() else {
            continue;
        };
        let name = TRACE_HEADERS[usize::from(pick) % TRACE_HEADERS.len()];
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            headers.append(name, v);
        }
    }
    let percent = f64::from(data.first().copied().unwrap_or(0) % 101);
    let (ids, _span) = propagate(&mut headers, Some(percent));
    assert!(
        headers.contains_key("x-request-id"),
        "no x-request-id on {headers:?}"
    );
    let mut next = headers.clone();
    let (read, span) = propagate(&mut next, None);
    assert_eq!(span, None, "tracing off made a span");
    assert_eq!(
        (read.trace_id, read.span_id, read.sampled),
        (ids.trace_id, ids.span_id, ids.sampled),
        "what was written is not what was said: {headers:?}"
    );
}

#[cfg(test)]
mod tests {
    /// Every input of the path target's corpus and its regressions, on stable.
    #[test]
    fn the_path_corpus_replays_without_a_broken_rule() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/path");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/path") {
            super::path(&std::fs::read(entry.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n >= 10, "only {n} inputs in {}", dir.display());
    }

    #[test]
    fn the_trace_headers_corpus_replays() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/trace_headers");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/trace_headers") {
            super::trace_headers(&std::fs::read(entry.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n >= 5, "only {n} inputs in {}", dir.display());
    }
}
