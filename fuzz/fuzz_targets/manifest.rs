//! Manifest parsing never panics, whatever the registry sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = skiff_agent::pull::parse_manifest(data);
});
