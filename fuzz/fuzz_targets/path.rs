//! Path normalization: never a panic, idempotent, and docs/security.md's rules hold for
//! every setting (`trellis_proxy::fuzzing::path`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| trellis_proxy::fuzzing::path(data));
