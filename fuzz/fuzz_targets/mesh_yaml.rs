//! The mesh YAML loader: documents to validated config, never a panic; and a config that
//! loads compiles for a proxy without one either.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        trellis_config::fuzzing::mesh_yaml(text);
    }
});
