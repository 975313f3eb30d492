//! W3C and B3 trace context: read, decided and written on without a panic, and what is
//! written reads back as what the proxy said (`trellis_proxy::fuzzing::trace_headers`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| trellis_proxy::fuzzing::trace_headers(data));
