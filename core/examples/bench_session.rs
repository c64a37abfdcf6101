//! ONNX Runtime session throughput alone, on ready tensors: the ceiling for clip.embed_images.
//!     bench_session <model-dir> <libonnxruntime.so> <threads> <batch> <images>
//! Prints one line: `session batch=<b> images=<n> seconds=<s> images_per_s=<r>`.

use std::path::Path;
use std::time::Instant;

use pg_clip_core::model::ModelFolder;
use pg_clip_core::runtime::{self, ClipModel, Device, SessionOptions};
use pg_clip_core::Interrupt;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        eprintln!("usage: bench_session <model-dir> <libonnxruntime.so> <threads> <batch> <images>");
        std::process::exit(2);
    }
    let (threads, batch, images): (usize, usize, usize) =
        (a[3].parse().unwrap(), a[4].parse().unwrap(), a[5].parse().unwrap());
    let env = runtime::environment(&a[2]).unwrap_or_else(|e| panic!("{e}"));
    let folder = ModelFolder::open(Path::new(&a[1]), &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    let opts = SessionOptions { device: Device::Cpu, intra_op_threads: threads };
    let mut model = ClipModel::load(&env, folder, &opts).unwrap_or_else(|e| panic!("{e}"));
    let len = model.folder.preprocess.tensor_len();
    // deterministic pseudo-random input in the normalised range; cost does not depend on it
    let tensor: Vec<f32> = (0..batch * len).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
    model.run_visual(&tensor, batch, Interrupt::NEVER).unwrap(); // warm-up
    let calls = images.div_ceil(batch);
    let t = Instant::now();
    for _ in 0..calls {
        model.run_visual(&tensor, batch, Interrupt::NEVER).unwrap();
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "session batch={batch} images={} seconds={s:.3} images_per_s={:.2}",
        calls * batch,
        (calls * batch) as f64 / s
    );
}
