//! Unpacking any byte string as a layer never panics and never writes outside the snapshot
//! directory (checked on a sentinel next to it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_agent::unpack::{Limits, unpack};

fuzz_target!(|data: &[u8]| {
    let base = std::env::temp_dir().join(format!("skiff-fuzz-unpack-{}", std::process::id()));
    let dest = base.join("snapshot");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&dest).expect("temp dir");
    let limits = Limits {
        compressed: data.len() as u64,
        max_ratio: 100,
        floor: 8 << 20,
    };
    let _ = unpack(data, &dest, limits);
    // Only the snapshot directory may exist next to where it was made.
    let siblings: Vec<_> = std::fs::read_dir(&base)
        .expect("base")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        siblings,
        vec![std::ffi::OsString::from("snapshot")],
        "something was written beside the snapshot"
    );
    let _ = std::fs::remove_dir_all(&base);
});
