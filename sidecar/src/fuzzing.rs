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

/// A reader that is always ready and hands out `data` in chunks whose sizes `sizes` picks
/// in turn (each 1 to 16 bytes), as a socket may.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    turn: usize,
}

impl tokio::io::AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let size = match self.sizes {
            [] => 16,
            s => usize::from(s[self.turn % s.len()] % 16) + 1,
        };
        self.turn = self.turn.wrapping_add(1);
        let n = size.min(buf.remaining()).min(self.data.len());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        std::task::Poll::Ready(Ok(()))
    }
}

/// Runs `f` to completion on this thread's runtime (timers on, as the listeners have).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime");
    }
    RT.with(|rt| rt.block_on(f))
}

/// Protocol detection and the replay of what it read, on `data`: a length byte, that many
/// bytes that pick the sizes of the socket's reads, then the connection's bytes. It never
/// panics; the verdict does not depend on how the bytes arrived (a verdict on a prefix is
/// the verdict on the whole, and enough bytes always decide); and the stream handed on
/// replays every byte, in order, exactly once.
pub fn detect(data: &[u8]) {
    use crate::listen::detect::detect;
    use tokio::io::AsyncReadExt;
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (sizes, stream) = rest.split_at(usize::from(n).min(rest.len()));
    let read = |sizes| {
        block_on(async {
            let io = Chunked {
                data: stream,
                sizes,
                turn: 0,
            };
            let d = detect(io, std::time::Duration::from_secs(60))
                .await
                .expect("an in-memory stream does not fail");
            let d = d?;
            let mut replayed = Vec::new();
            let mut io = d.io;
            io.read_to_end(&mut replayed)
                .await
                .expect("an in-memory stream does not fail");
            Some((d.protocol, d.timed_out, replayed))
        })
    };
    let chunked = read(sizes);
    let whole = read(&[]);
    let Some((protocol, timed_out, replayed)) = chunked else {
        assert!(
            stream.is_empty(),
            "bytes were sent, yet detection saw a close"
        );
        return;
    };
    assert!(!timed_out, "a stream that is always ready timed out");
    assert_eq!(replayed, stream, "the replay is not the bytes that came");
    let (whole_protocol, ..) = whole.expect("the same bytes at once");
    assert_eq!(
        protocol, whole_protocol,
        "the verdict depends on how {stream:?} arrived"
    );
    // Enough bytes always decide: no prefix keeps detection waiting for the timeout.
    if let Some(head) = stream.get(..64) {
        assert!(
            crate::listen::detect::decided(head),
            "64 bytes of {stream:?} left detection undecided"
        );
    }
}

/// The transport preface between sidecars, on `data` as what a peer sent: reading it never
/// panics, and a preface that reads is written back byte for byte by the writer, with the
/// app's bytes after it untouched.
pub fn preface(data: &[u8]) {
    use crate::l4::preface::{read, write};
    block_on(async {
        let mut r = data;
        let Ok(authority) = read(&mut r).await else {
            return;
        };
        let mut written = Vec::new();
        write(&mut written, &authority)
            .await
            .expect("an authority that was read is at most 255 bytes");
        let used = data.len() - r.len();
        assert_eq!(written, &data[..used], "the preface does not round-trip");
    });
}

/// A CIDR as `--exclude-outbound-cidrs` (and the injector's annotation) takes it: parsing
/// never panics, the prefix fits the address family, and what parses prints back as itself.
pub fn cidr(data: &[u8]) {
    use crate::init::args::Cidr;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cidr) = text.parse::<Cidr>() else {
        return;
    };
    let max = if cidr.addr.is_ipv4() { 32 } else { 128 };
    assert!(cidr.prefix <= max, "{text:?} -> /{}", cidr.prefix);
    let printed = cidr.to_string();
    assert_eq!(
        printed.parse::<Cidr>().ok(),
        Some(cidr),
        "{text:?} -> {printed:?} does not parse back"
    );
}

/// The Kafka request-header decoder, on `data`: segments, each a header byte (its low bit
/// the direction: client or broker; the rest a length) and that many bytes of the stream.
/// It never panics; the events do not depend on how the bytes are split (the segments as
/// they are, against one byte at a time); and it remembers no more than its bound.
pub fn kafka(data: &[u8]) {
    use crate::l4::kafka::decode::{KafkaTap, MAX_IN_FLIGHT};
    let mut segments = Vec::new();
    let mut rest = data;
    while let Some((&head, tail)) = rest.split_first() {
        let (bytes, after) = tail.split_at(usize::from(head >> 1).min(tail.len()));
        segments.push((head & 1 == 0, bytes));
        rest = after;
    }
    let run = |one_byte: bool| {
        let mut tap = KafkaTap::new();
        let mut events = Vec::new();
        for (now, (client, bytes)) in (0u64..).zip(&segments) {
            let step = if one_byte { 1 } else { bytes.len().max(1) };
            for chunk in bytes.chunks(step) {
                let out = &mut |e| events.push(e);
                if *client {
                    tap.client_bytes(chunk, now, out);
                } else {
                    tap.broker_bytes(chunk, now, out);
                }
                assert!(
                    tap.in_flight() <= MAX_IN_FLIGHT + 1,
                    "{} requests remembered",
                    tap.in_flight()
                );
            }
        }
        events
    };
    assert_eq!(run(false), run(true), "the events depend on the split");
}

#[cfg(test)]
mod tests {
    /// Every input of `target`'s corpus, through `run`, on stable.
    fn replay(target: &str, run: fn(&[u8]), at_least: usize) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            run(&std::fs::read(entry.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n >= at_least, "only {n} inputs in {}", dir.display());
    }

    /// The path target's corpus and its regressions: no input breaks a rule.
    #[test]
    fn the_path_corpus_replays_without_a_broken_rule() {
        replay("path", super::path, 10);
    }

    #[test]
    fn the_trace_headers_corpus_replays() {
        replay("trace_headers", super::trace_headers, 5);
    }

    #[test]
    fn the_detect_corpus_replays() {
        replay("detect", super::detect, 8);
    }

    #[test]
    fn the_preface_corpus_replays() {
        replay("preface", super::preface, 3);
    }

    #[test]
    fn the_cidr_corpus_replays() {
        replay("cidr", super::cidr, 5);
    }

    #[test]
    fn the_kafka_corpus_replays() {
        replay("kafka", super::kafka, 3);
    }
}
