//! Discovery messages as either side decodes them: a request (Subscribe, Ack, Nack,
//! Summary) as the control plane does, a response and each of its resources as a proxy
//! does. Never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| trellis_config::fuzzing::discovery(data));
