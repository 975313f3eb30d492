//! CIDRs of `--exclude-outbound-cidrs`: no panic, and what parses prints back as itself
//! (`trellis_proxy::fuzzing::cidr`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| trellis_proxy::fuzzing::cidr(data));
