//! Inputs the fuzzers (fuzz/, `make fuzz`) found or that reproduce a fixed crash, one folder per
//! target under fuzz/regressions/, run through the same calls as the targets: each must give an
//! answer or an error, never a panic, an abort or a stack overflow.

use std::path::Path;

use pg_clip_core::preprocess::{
    preprocess_into, Budget, Flavour, ImageLimits, Interpolation, PreprocessConfig, ResizeMode,
};
use pg_clip_core::reference::{label_from_filename, parse_variants};
use pg_clip_core::vocab::{self, Rule};

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files.into_iter().map(|p| (p.display().to_string(), std::fs::read(&p).unwrap())).collect()
}

#[test]
fn preprocess_regressions() {
    let cfg = PreprocessConfig {
        size: 32,
        mean: [0.5; 3],
        std: [0.5; 3],
        interpolation: Interpolation::Bicubic,
        resize_mode: ResizeMode::Shortest,
        flavour: Flavour::OpenClip,
    };
    let limits = ImageLimits { max_pixels: 4_000_000, max_bytes: 64 << 20 };
    for (name, bytes) in inputs("preprocess") {
        let budget = Budget::new(limits.max_bytes);
        let mut out = vec![0f32; cfg.tensor_len()];
        let r = preprocess_into(&bytes, &cfg, &limits, Some(&budget), &mut out);
        println!("{name}: {:?}", r.err().map(|e| e.message));
    }
}

#[test]
fn vocabulary_and_rule_regressions() {
    for (name, bytes) in inputs("vocabulary") {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(problems) = vocab::parse(&text) {
            assert!(problems.iter().all(|p| p.line >= 1 && p.column >= 1), "{name}");
        }
    }
    for (name, bytes) in inputs("rule") {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(rule) = Rule::parse(&text) {
            assert_eq!(Rule::parse_expanded(&rule.to_string()).as_ref(), Ok(&rule), "{name}");
        }
        let _ = Rule::parse_expanded(&text);
    }
}

#[test]
fn filename_regressions() {
    let variants = parse_variants("pscr,scr,ur,sr,op,utr,cr,ea,gmr");
    for (_, bytes) in inputs("filename") {
        let _ = label_from_filename(&String::from_utf8_lossy(&bytes), &variants);
    }
}
