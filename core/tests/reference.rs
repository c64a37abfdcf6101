//! The core against the reference tools' golden files (tests/golden, made by
//! tests/reference/make_golden.py with PIL, OpenAI's tokenizer and Python onnxruntime).

use std::path::Path;

use pg_clip_core::model::{ModelFolder, ModelOptions, TextClean};
use pg_clip_core::preprocess::{self, Flavour, PreprocessConfig};
use pg_clip_core::runtime::{self, ClipModel, Device, SessionOptions};
use pg_clip_core::tokenize::ClipTokenizer;
use serde_json::Value;

mod common;
use common::{cosine, ort_library, root};

fn golden_json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("tests/golden").join(name)).unwrap()).unwrap()
}

fn tiny() -> ModelFolder {
    ModelFolder::open(&root().join("models/tiny-clip"), &ModelOptions::default()).unwrap()
}

fn tensor_of(crop: &image::RgbImage, cfg: &PreprocessConfig) -> Vec<f32> {
    let mut t = vec![0f32; cfg.tensor_len()];
    preprocess::normalize_into(crop, cfg, &mut t);
    t
}

/// Reference tensor straight from the golden crop: ToTensor + Normalize written out here,
/// independently of the crate's lookup table.
fn reference_tensor(path: &Path, cfg: &PreprocessConfig) -> Vec<f32> {
    let img = image::open(path).unwrap().to_rgb8();
    let plane = (cfg.size * cfg.size) as usize;
    let mut t = vec![0f32; 3 * plane];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            t[c * plane + i] = (px.0[c] as f32 / 255.0 - cfg.mean[c]) / cfg.std[c];
        }
    }
    t
}

fn golden_images() -> Vec<String> {
    let mut v: Vec<String> =
        golden_json("embeddings.json")["images"].as_object().unwrap().keys().cloned().collect();
    v.sort();
    v
}

/// Mean absolute difference per element between our tensor and the reference, per image.
/// Bicubic kernels and JPEG decoders differ in rounding, so equality is not expected; the
/// bound was set from measured figures (printed with --nocapture) with some headroom.
#[test]
fn preprocessing_matches_open_clip_reference() {
    crops_match(Flavour::OpenClip, "preprocess");
}

/// The transformers and immich flavours against crops made by transformers'
/// CLIPImageProcessor and by immich's loader (tests/reference/make_flavour_golden.py).
#[test]
fn preprocessing_flavours_match_transformers_and_immich() {
    crops_match(Flavour::Transformers, "preprocess-transformers");
    crops_match(Flavour::Immich, "preprocess-immich");
}

const MAD_TOLERANCE: f64 = 0.01;

/// Every golden image through `flavour` against its crop in tests/golden/<dir>.
fn crops_match(flavour: Flavour, dir: &str) {
    let cfg = PreprocessConfig { flavour, ..tiny().preprocess };
    let mut worst = 0f64;
    for rel in golden_images() {
        let bytes = std::fs::read(root().join("tests/images").join(&rel)).unwrap();
        let decoded = preprocess::decode_as(&bytes, flavour, &preprocess::ImageLimits::TRUSTED).unwrap();
        let ours = tensor_of(
            &preprocess::resize_crop(&decoded, &cfg, &preprocess::ImageLimits::TRUSTED).unwrap(),
            &cfg,
        );
        let name = format!("{}.png", Path::new(&rel).file_name().unwrap().to_str().unwrap());
        let reference = reference_tensor(&root().join("tests/golden").join(dir).join(name), &cfg);
        let mad =
            ours.iter().zip(&reference).map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / ours.len() as f64;
        let max = ours.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        println!("{flavour:?} {rel:32} mean |diff| {mad:.5}  max {max:.4}");
        worst = worst.max(mad);
        assert!(mad < MAD_TOLERANCE, "{flavour:?} {rel}: mean absolute difference {mad} >= {MAD_TOLERANCE}");
    }
    println!("{flavour:?}: worst mean |diff| {worst:.5}");
}

#[test]
fn token_ids_match_openai_tokenizer() {
    let folder = tiny();
    let tok = ClipTokenizer::from_file(
        &folder.path.join("textual/tokenizer.json"),
        77,
        folder.pad_token.as_deref(),
        folder.text_clean,
        None,
    )
    .unwrap();
    let cases = golden_json("tokens.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 200);
    let mut bad = Vec::new();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> =
            c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let got = tok.encode(text).unwrap().0;
        if got != want {
            bad.push(format!("{text:?}\n  ours {got:?}\n  ref  {want:?}"));
        }
    }
    assert!(bad.is_empty(), "{} of {} prompts differ:\n{}", bad.len(), cases.len(), bad.join("\n"));
}

#[test]
fn padding_fills_the_context_with_the_pad_token() {
    let folder = tiny();
    let tok = ClipTokenizer::from_file(
        &folder.path.join("textual/tokenizer.json"),
        77,
        Some("<|endoftext|>"),
        TextClean::Whitespace,
        None,
    )
    .unwrap();
    let ids = tok.encode_batch(&["a cat", "a photo of a dog"]).unwrap().ids;
    assert_eq!(ids.len(), 2 * 77);
    assert_eq!(&ids[..4], &[49406, 320, 2368, 49407]);
    assert!(ids[4..77].iter().all(|&i| i == 49407));
}

fn load_tiny() -> ClipModel {
    let env = runtime::environment(&ort_library()).unwrap();
    ClipModel::load(&env, tiny(), &SessionOptions { device: Device::Cpu, intra_op_threads: 1 }).unwrap()
}

#[test]
fn embeddings_match_python_onnxruntime() {
    let mut model = load_tiny();
    let golden = golden_json("embeddings.json");
    let cfg = model.folder.preprocess.clone();
    for (rel, want) in golden["images"].as_object().unwrap() {
        let want: Vec<f32> = want.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        // same input tensor as the reference: the model call alone must agree to float precision
        let name = format!("{}.png", Path::new(rel).file_name().unwrap().to_str().unwrap());
        let t = reference_tensor(&root().join("tests/golden/preprocess").join(name), &cfg);
        let got = model.run_visual(&t, 1, pg_clip_core::Interrupt::NEVER).unwrap().remove(0);
        assert!(cosine(&got, &want) >= 0.9999, "{rel}: cosine {}", cosine(&got, &want));
        // and from the file's bytes through our preprocessing
        let bytes = std::fs::read(root().join("tests/images").join(rel)).unwrap();
        let e2e = model
            .embed_images(&[&bytes], 1, &preprocess::ImageLimits::TRUSTED, pg_clip_core::Interrupt::NEVER)
            .unwrap()
            .remove(0)
            .unwrap();
        println!("{rel:32} end-to-end cosine {:.6}", cosine(&e2e, &want));
        assert!(cosine(&e2e, &want) >= E2E_COSINE, "{rel}: end-to-end cosine {}", cosine(&e2e, &want));
    }
    for (text, want) in golden["texts"].as_object().unwrap() {
        let want: Vec<f32> = want.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let got = model.embed_texts(&[text], 8, pg_clip_core::Interrupt::NEVER).unwrap().remove(0);
        assert!(cosine(&got, &want) >= 0.9999, "{text}: cosine {}", cosine(&got, &want));
    }
}

const E2E_COSINE: f64 = 0.999;

#[test]
fn batches_equal_single_calls_and_bad_elements_stay_local() {
    let mut model = load_tiny();
    let photos = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png"];
    let bytes: Vec<Vec<u8>> =
        photos.iter().map(|p| std::fs::read(root().join("tests/images/photos").join(p)).unwrap()).collect();
    let mut inputs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
    inputs.insert(2, b"garbage".as_slice());
    let batched = model
        .embed_images(&inputs, 4, &preprocess::ImageLimits::TRUSTED, pg_clip_core::Interrupt::NEVER)
        .unwrap();
    assert_eq!(batched.len(), 6);
    assert!(batched[2].as_ref().unwrap_err().message.contains("recognised format"));
    for (i, b) in bytes.iter().enumerate() {
        let single = model
            .embed_images(&[b], 1, &preprocess::ImageLimits::TRUSTED, pg_clip_core::Interrupt::NEVER)
            .unwrap()
            .remove(0)
            .unwrap();
        let j = if i >= 2 { i + 1 } else { i };
        let cos = cosine(&single, batched[j].as_ref().unwrap());
        assert!(cos > 0.99999, "{}: batch vs single cosine {cos}", photos[i]);
        let norm: f32 = single.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}

#[test]
fn thumbnails_made_while_embedding_equal_those_made_alone() {
    let mut model = load_tiny();
    let photos = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png"];
    let bytes: Vec<Vec<u8>> =
        photos.iter().map(|p| std::fs::read(root().join("tests/images/photos").join(p)).unwrap()).collect();
    let mut images: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    images.push(b"not an image");
    let limits = preprocess::ImageLimits::TRUSTED;
    let plain = model.embed_images(&images, 8, &limits, pg_clip_core::Interrupt::NEVER).unwrap();
    let with = model
        .embed_images_with_thumbnails(&images, 8, &limits, pg_clip_core::Interrupt::NEVER, Some(64))
        .unwrap();
    assert_eq!(with.len(), images.len());
    for ((image, p), w) in images.iter().zip(&plain).zip(&with) {
        match (p, w) {
            (Ok(v), Ok(e)) => {
                assert_eq!(&e.vector, v, "the same embedding");
                let alone = pg_clip_core::thumbnail::make(image, 64, &limits).unwrap();
                assert_eq!(e.thumbnail.as_deref(), Some(alone.as_slice()), "the same thumbnail");
            }
            (Err(a), Err(b)) => assert_eq!(a.kind, b.kind),
            _ => panic!("one path failed where the other did not"),
        }
    }
}
