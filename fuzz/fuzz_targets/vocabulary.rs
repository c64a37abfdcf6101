//! Any text as a vocabulary: accepted, or refused with problems that carry a line and column.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Err(problems) = pg_clip_core::vocab::parse(text) {
            assert!(!problems.is_empty());
            assert!(problems.iter().all(|p| p.line >= 1 && p.column >= 1));
        }
    }
});
