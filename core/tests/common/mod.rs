//! Helpers the integration tests share (each test file is its own crate).

use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn ort_library() -> String {
    std::env::var("PG_CLIP_ORT_LIB").expect(
        "PG_CLIP_ORT_LIB must name libonnxruntime.so (make test sets it to .deps/onnxruntime/libonnxruntime.so.1.32.0)",
    )
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}
