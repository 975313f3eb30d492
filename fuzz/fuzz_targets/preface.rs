//! The transport preface between sidecars: reading never panics, and what reads writes back
//! byte for byte (`trellis_proxy::fuzzing::preface`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| trellis_proxy::fuzzing::preface(data));
