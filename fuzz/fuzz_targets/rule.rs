//! Any text as a derived rule: a rule whose written form parses back to itself (the expanded
//! form scoring parses again), or an error; never a panic or a stack overflow.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pg_clip_core::vocab::Rule;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Ok(rule) = Rule::parse(text) {
            assert_eq!(Rule::parse_expanded(&rule.to_string()).as_ref(), Ok(&rule));
            let _ = rule.to_sql(&|c| format!("x.\"{c}\""));
        }
        let _ = Rule::parse_expanded(text);
    }
});
