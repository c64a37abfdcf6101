//! Image bytes through decode, the size checks and preprocessing, as clip.embed_image does it:
//! any input is an image tensor or an error, within the limits, never a panic or an abort.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pg_clip_core::preprocess::{
    preprocess_into, Budget, Flavour, ImageLimits, Interpolation, PreprocessConfig, ResizeMode,
};

fuzz_target!(|bytes: &[u8]| {
    let cfg = PreprocessConfig {
        size: 32,
        mean: [0.5; 3],
        std: [0.5; 3],
        interpolation: Interpolation::Bicubic,
        resize_mode: ResizeMode::Shortest,
        flavour: Flavour::OpenClip,
    };
    // small limits, so that the fuzzer finds their edges rather than the machine's memory
    let limits = ImageLimits { max_pixels: 4_000_000, max_bytes: 64 << 20 };
    let budget = Budget::new(limits.max_bytes);
    let mut out = vec![0f32; cfg.tensor_len()];
    let _ = preprocess_into(bytes, &cfg, &limits, Some(&budget), &mut out);
});
