//! Protocol detection and the replay of peeked bytes: no panic, the verdict does not depend on
//! how the bytes arrive, and every byte is replayed once (`trellis_proxy::fuzzing::detect`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| trellis_proxy::fuzzing::detect(data));
