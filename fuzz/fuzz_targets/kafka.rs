//! The Kafka request-header decoder: no panic, the same events however the bytes are split,
//! and a bounded memory of requests in flight (`trellis_proxy::fuzzing::kafka`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| trellis_proxy::fuzzing::kafka(data));
