//! SPIFFE IDs (a parsed ID prints back as itself) and Gateway API durations: never a panic.
#![no_main]
use trellis_identity::spiffe::SpiffeId;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = SpiffeId::parse(text) {
        let printed = id.to_string();
        assert_eq!(
            SpiffeId::parse(&printed).as_ref(),
            Ok(&id),
            "{text:?} printed as {printed:?}"
        );
    }
    let _ = trellis_config::duration::parse(text);
});
