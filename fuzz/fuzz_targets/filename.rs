//! Any file name to a label and variant: a label is always produced, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pg_clip_core::reference::{label_from_filename, parse_variants};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(name) = std::str::from_utf8(bytes) {
        let variants = parse_variants("pscr,scr,ur,sr,op,utr,cr,ea,gmr");
        let _ = label_from_filename(name, &variants);
    }
});
