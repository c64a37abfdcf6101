//! Every model family's fixture (models/gen_fixtures.py) against the Python reference
//! (tests/reference/families.py): what the loader reads from the folder, the token ids, and the
//! image and text embeddings at batch 1 and 32. make test-unit writes both into
//! .run/fixtures and points PG_CLIP_FIXTURES there; make test-export points it at models
//! exported by models/export_open_clip.py, with open_clip's own vectors as the reference.

use std::path::{Path, PathBuf};

use pg_clip_core::model::{ModelFolder, ModelOptions};
use pg_clip_core::preprocess::ImageLimits;
use pg_clip_core::runtime::{self, ClipModel, Device, SessionOptions};
use pg_clip_core::Interrupt;
use serde_json::Value;

mod common;
use common::{cosine, ort_library, root};

const COSINE: f64 = 0.9999;

fn reference() -> Value {
    let dir = std::env::var("PG_CLIP_FIXTURES")
        .expect("PG_CLIP_FIXTURES must name the fixtures folder (make test-unit writes .run/fixtures)");
    let text = std::fs::read_to_string(Path::new(&dir).join("reference.json"))
        .unwrap_or_else(|e| panic!("{dir}/reference.json: {e} (run make test-unit)"));
    serde_json::from_str(&text).unwrap()
}

fn load(spec: &Value) -> ClipModel {
    let env = runtime::environment(&ort_library()).unwrap();
    let options = ModelOptions::from_json(&spec["options"].to_string()).unwrap();
    let folder = ModelFolder::open(Path::new(spec["folder"].as_str().unwrap()), &options).unwrap();
    ClipModel::load(&env, folder, &SessionOptions { device: Device::Cpu, intra_op_threads: 1 }).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

#[test]
fn every_family_reads_tokenizes_and_embeds_like_its_reference() {
    let reference = reference();
    let mut report = Vec::new();
    for (name, spec) in reference.as_object().unwrap() {
        let mut model = load(spec);
        let folder = &model.folder;
        // what the loader read
        assert_eq!(model.family().as_str(), spec["family"].as_str().unwrap(), "{name}: family");
        let batch = |v: &Value| v.as_u64().map(|b| b as usize);
        assert_eq!(model.image_batch, batch(&spec["image_batch"]), "{name}: image batch");
        assert_eq!(model.text_batch, batch(&spec["text_batch"]), "{name}: text batch");
        if let Some(b) = spec["logit_bias"].as_f64() {
            assert_eq!(folder.logit_bias, Some(b as f32), "{name}: logit_bias");
            assert_eq!(
                folder.logit_scale,
                spec["logit_scale"].as_f64().unwrap() as f32,
                "{name}: logit_scale"
            );
        }
        let warned: Vec<&str> = folder.warnings.iter().map(|w| w.message.as_str()).collect();
        for w in spec["warns"].as_array().unwrap() {
            let w = w.as_str().unwrap();
            assert!(warned.iter().any(|m| m.contains(w)), "{name}: no warning about {w}: {warned:?}");
        }
        if spec["warns"].as_array().unwrap().is_empty() {
            assert!(warned.is_empty(), "{name}: unexpected warnings {warned:?}");
        }
        // external data: every file the graphs name is part of the model (and of its stamp)
        let external = folder.files.len() - 6;
        if spec["external"].as_bool() == Some(true) {
            assert!(external > 0, "{name}: no external data files found");
        } else {
            assert_eq!(external, 0, "{name}");
        }

        // token ids, padded to the context as the graph gets them (where the reference pads as
        // immich does: open_clip pads CLIP's ids with 0, which the graph ignores)
        let ctx = model.tokenizer().context_length();
        for (text, want) in spec["tokens"].as_object().into_iter().flatten() {
            let want: Vec<i64> = want.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
            let got = model.tokenizer().encode_batch(&[text]).unwrap().ids;
            assert_eq!(got.len(), ctx, "{name}");
            assert_eq!(got, want, "{name}: ids of {text:?}");
        }

        // images, one by one and 32 at a time (three rounds of the 12 images)
        let images: Vec<(String, Vec<u8>, Vec<f32>)> = spec["images"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(rel, e)| {
                (rel.clone(), std::fs::read(root().join("tests/images").join(rel)).unwrap(), floats(e))
            })
            .collect();
        let mut worst: f64 = 1.0;
        for (rel, bytes, want) in &images {
            let got = model.embed_images(&[bytes], 1, &ImageLimits::TRUSTED, Interrupt::NEVER).unwrap();
            let c = cosine(got[0].as_ref().unwrap(), want);
            assert!(c >= COSINE, "{name}: {rel} at batch 1: cosine {c}");
            worst = worst.min(c);
        }
        let many: Vec<&[u8]> = images.iter().cycle().take(36).map(|(_, b, _)| b.as_slice()).collect();
        let got = model.embed_images(&many, 32, &ImageLimits::TRUSTED, Interrupt::NEVER).unwrap();
        for (i, r) in got.iter().enumerate() {
            let (rel, _, want) = &images[i % images.len()];
            let c = cosine(r.as_ref().unwrap(), want);
            assert!(c >= COSINE, "{name}: {rel} at batch 32: cosine {c}");
            worst = worst.min(c);
        }
        // texts, one by one and 32 at a time
        let texts: Vec<(&str, Vec<f32>)> =
            spec["texts"].as_object().unwrap().iter().map(|(t, e)| (t.as_str(), floats(e))).collect();
        let mut worst_text: f64 = 1.0;
        for (t, want) in &texts {
            let c = cosine(&model.embed_texts(&[t], 1, Interrupt::NEVER).unwrap()[0], want);
            assert!(c >= COSINE, "{name}: text {t:?} at batch 1: cosine {c}");
            worst_text = worst_text.min(c);
        }
        let many: Vec<&str> = texts.iter().cycle().take(32).map(|(t, _)| *t).collect();
        for (i, got) in model.embed_texts(&many, 32, Interrupt::NEVER).unwrap().iter().enumerate() {
            let c = cosine(got, &texts[i % texts.len()].1);
            assert!(c >= COSINE, "{name}: text {:?} at batch 32: cosine {c}", texts[i % texts.len()].0);
            worst_text = worst_text.min(c);
        }
        report.push(format!("{name:16} lowest cosine: images {worst:.6}, texts {worst_text:.6}"));
    }
    println!("{}", report.join("\n"));
    assert!(!report.is_empty(), "no fixture in reference.json");
}

#[test]
fn the_stamp_covers_external_data_files() {
    let dir = std::env::var("PG_CLIP_FIXTURES").expect("PG_CLIP_FIXTURES");
    let copy = std::env::temp_dir().join(format!("pg_clip_external_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    for tower in ["visual", "textual"] {
        std::fs::create_dir_all(copy.join(tower)).unwrap();
    }
    let src = Path::new(&dir).join("external");
    for entry in walk(&src) {
        let rel = entry.strip_prefix(&src).unwrap();
        std::fs::copy(&entry, copy.join(rel)).unwrap();
    }
    let stamp = |p: &Path| ModelFolder::open(p, &ModelOptions::default()).unwrap().stamp().unwrap();
    let before = stamp(&copy);
    assert_eq!(before, stamp(&src), "a copy has the same stamp");
    // one byte of one weight in the visual tower's data file
    let data = copy.join("visual/model.onnx.data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&data, bytes).unwrap();
    assert_ne!(stamp(&copy), before, "the stamp changes with an external data file");
    std::fs::remove_dir_all(copy).unwrap();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A graph with a fixed batch of 1 runs a batch as one call per image: a cancel is seen between
/// those calls, not only before the batch.
#[test]
fn a_cancel_stops_between_the_calls_of_a_fixed_batch() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static POLLS: AtomicUsize = AtomicUsize::new(0);
    // set from the second poll on: the first call runs, the second does not
    let after_one = Interrupt(|| POLLS.fetch_add(1, Ordering::SeqCst) >= 1);
    let reference = reference();
    let mut model = load(&reference["immich-static"]);
    assert_eq!(model.image_batch, Some(1));
    let tensor = vec![0f32; 4 * model.folder.preprocess.tensor_len()];
    let e = model.run_visual(&tensor, 4, after_one).unwrap_err();
    assert_eq!(e.kind, pg_clip_core::ErrorKind::Cancelled, "{e}");
    assert_eq!(POLLS.load(Ordering::SeqCst), 2, "polled before each call, stopped at the second");
    POLLS.store(0, Ordering::SeqCst);
    let texts = model.tokenizer().encode_batch(&["a", "b", "c"]).unwrap();
    let e = model.run_textual(&texts, 3, after_one).unwrap_err();
    assert_eq!(e.kind, pg_clip_core::ErrorKind::Cancelled, "{e}");
}
