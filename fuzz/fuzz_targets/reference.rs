//! Any string either fails to parse or parses to a reference that prints and re-parses to
//! itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_agent::reference::Reference;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = s.parse::<Reference>() {
        let again: Reference = r.whole().parse().expect("a printed reference parses");
        assert_eq!(again, r);
    }
});
