//! The inference service against the in-process path, with the real ONNX Runtime library and
//! the committed tiny model: the same vectors, no mixed-up replies under concurrency, batches
//! formed from concurrent callers, abandoned requests, a stopped service, changed files.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cosine, ort_library, root};
use pg_clip_core::model::{ModelFolder, ModelOptions};
use pg_clip_core::preprocess::ImageLimits;
use pg_clip_core::runtime::{self, ClipModel, Device, SessionOptions};
use pg_clip_core::service::{self, Client, Config, Input, ModelSpec, Priority};
use pg_clip_core::{ErrorKind, Interrupt};

const THREADS: u32 = 1;

fn config(batch_wait_ms: u64, max_queued: usize) -> Config {
    Config {
        library: ort_library(),
        device: Device::Cpu,
        threads: THREADS as usize,
        max_batch: 16,
        batch_wait: Duration::from_millis(batch_wait_ms),
        max_queued,
    }
}

fn spec(folder: &Path) -> ModelSpec {
    let stamp = ModelFolder::open(folder, &ModelOptions::default()).unwrap().stamp().unwrap();
    ModelSpec { name: "tiny".into(), folder: folder.display().to_string(), stamp, options: "{}".into() }
}

fn tiny() -> PathBuf {
    root().join("models/tiny-clip")
}

fn socket(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pg_clip_service_test_{}_{tag}.sock", std::process::id()))
}

fn local() -> ClipModel {
    let env = runtime::environment(&ort_library()).unwrap();
    let folder = ModelFolder::open(&tiny(), &ModelOptions::default()).unwrap();
    ClipModel::load(&env, folder, &SessionOptions { device: Device::Cpu, intra_op_threads: THREADS as usize })
        .unwrap()
}

fn photos() -> Vec<Vec<u8>> {
    let dir = root().join("tests/images/photos");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// What a backend sends: its own decoding, then the tensor.
fn tensor_of(images: &[Vec<u8>], folder: &Path) -> Input {
    let cfg = ModelFolder::open(folder, &ModelOptions::default()).unwrap().preprocess;
    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let (tensor, outcome) =
        runtime::preprocess_batch(&refs, &cfg, &ImageLimits::TRUSTED, Interrupt::NEVER, None);
    assert!(outcome.iter().all(Result::is_ok));
    Input::Images { n: images.len(), tensor }
}

fn wait(fd: i32, write: bool) -> pg_clip_core::Result<()> {
    service::poll_wait(fd, write, 1000)
}

fn connect(path: &Path) -> Client {
    Client::connect(path).unwrap()
}

#[test]
fn service_vectors_equal_the_local_path() {
    let path = socket("equal");
    let handle = service::start(&path, config(0, 256)).unwrap();
    let spec = spec(&tiny());
    let images = photos();
    let texts: Vec<String> =
        ["a photo of a cat", "an astronaut", "", "a cup of coffee"].map(String::from).to_vec();
    let mut model = local();
    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let want_i: Vec<Vec<f32>> = model
        .embed_images(&refs, 8, &ImageLimits::TRUSTED, Interrupt::NEVER)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let trefs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let want_t = model.embed_texts(&trefs, 8, Interrupt::NEVER).unwrap();

    let mut c = connect(&path);
    let got_i = c.embed(&spec, Priority::Bulk, tensor_of(&images, &tiny()), &mut wait).unwrap();
    let got_t = c.embed(&spec, Priority::Interactive, Input::Texts(texts.clone()), &mut wait).unwrap();
    for (g, w) in got_i.iter().zip(&want_i).chain(got_t.iter().zip(&want_t)) {
        assert!(cosine(g, w) >= 0.99999, "cosine {}", cosine(g, w));
    }
    let info = c.describe(&spec, &mut wait).unwrap();
    assert_eq!((info.family.as_str(), info.device_used, info.image_batch), ("clip", Device::Cpu, None));
    let status: serde_json::Value = serde_json::from_str(&c.status(&mut wait).unwrap()).unwrap();
    assert_eq!(status["models"][0]["visual"]["items"], images.len());
    assert_eq!(status["models"][0]["text"]["items"], texts.len());
    assert_eq!(status["connections"], 1);
    handle.stop();
    assert!(!path.exists(), "the socket is removed");
}

#[test]
fn concurrent_callers_get_their_own_vectors_in_shared_batches() {
    let path = socket("concurrent");
    // a batch waits up to 30 ms for more work, so concurrent single calls share batches
    let handle = Arc::new(service::start(&path, config(30, 64)).unwrap());
    let spec = Arc::new(spec(&tiny()));
    let images = photos();
    let mut model = local();
    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let want: Arc<Vec<Vec<f32>>> = Arc::new(
        model
            .embed_images(&refs, 8, &ImageLimits::TRUSTED, Interrupt::NEVER)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect(),
    );
    let words: Arc<Vec<String>> = Arc::new((0..40).map(|i| format!("a photo of thing number {i}")).collect());
    let wrefs: Vec<&str> = words.iter().map(String::as_str).collect();
    let want_t = Arc::new(model.embed_texts(&wrefs, 64, Interrupt::NEVER).unwrap());
    let inputs: Arc<Vec<Input>> =
        Arc::new(images.iter().map(|i| tensor_of(std::slice::from_ref(i), &tiny())).collect());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (path, spec, want, want_t, words, inputs) =
                (path.clone(), spec.clone(), want.clone(), want_t.clone(), words.clone(), inputs.clone());
            std::thread::spawn(move || {
                let mut c = connect(&path);
                for round in 0..12 {
                    let k = (t + round) % inputs.len();
                    let v = c.embed(&spec, Priority::Interactive, inputs[k].clone(), &mut wait).unwrap();
                    assert!(
                        cosine(&v[0], &want[k]) >= 0.99999,
                        "caller {t} round {round}: not its image's vector"
                    );
                    let w = (t * 5 + round) % words.len();
                    let v = c
                        .embed(&spec, Priority::Interactive, Input::Texts(vec![words[w].clone()]), &mut wait)
                        .unwrap();
                    assert!(
                        cosine(&v[0], &want_t[w]) >= 0.99999,
                        "caller {t} round {round}: not its text's vector"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let status: serde_json::Value = serde_json::from_str(&handle.status_json()).unwrap();
    let visual = &status["models"][0]["visual"];
    assert_eq!(visual["items"], 8 * 12);
    let mean = visual["mean_batch"].as_f64().unwrap();
    assert!(mean > 1.5, "concurrent callers should share batches, mean batch {mean}");
    Arc::try_unwrap(handle).ok().unwrap().stop();
}

#[test]
fn an_abandoned_request_does_not_answer_the_next_one() {
    let path = socket("abandon");
    let handle = service::start(&path, config(0, 256)).unwrap();
    let spec = spec(&tiny());
    let images = photos();
    let mut c = connect(&path);
    let big = tensor_of(&images.iter().cycle().take(48).cloned().collect::<Vec<_>>(), &tiny());
    let id = c
        .submit(&service::Request::Embed { model: spec.clone(), priority: Priority::Bulk, input: big })
        .unwrap();
    // the caller gives up at once (a cancel, a statement timeout)
    let gave_up = c.wait(id, &mut |_, _| Err(pg_clip_core::ClipError::cancelled()));
    assert_eq!(gave_up.unwrap_err().kind, ErrorKind::Cancelled);
    assert_eq!(c.pending(), 0);
    let mut model = local();
    let want = model.embed_texts(&["a red star"], 1, Interrupt::NEVER).unwrap();
    let got =
        c.embed(&spec, Priority::Interactive, Input::Texts(vec!["a red star".into()]), &mut wait).unwrap();
    assert_eq!(got.len(), 1);
    assert!(cosine(&got[0], &want[0]) >= 0.99999);
    handle.stop();
}

#[test]
fn bad_input_fails_its_own_request_only() {
    let path = socket("bad");
    let handle = service::start(&path, config(20, 256)).unwrap();
    let spec = spec(&tiny());
    let mut a = connect(&path);
    let mut b = connect(&path);
    // a tensor for another image size, sent while a good request shares the batch
    let wrong = Input::Images { n: 1, tensor: vec![0.0; 3 * 8 * 8] };
    let id = a
        .submit(&service::Request::Embed {
            model: spec.clone(),
            priority: Priority::Interactive,
            input: wrong,
        })
        .unwrap();
    let good = b.embed(&spec, Priority::Interactive, tensor_of(&photos()[..1], &tiny()), &mut wait).unwrap();
    assert_eq!(good.len(), 1);
    match a.wait(id, &mut wait).unwrap() {
        service::Reply::Failed(e) => assert!(e.message.contains("values per image"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
    // a folder that is not a model: the error names it; the service keeps serving
    let mut missing = spec.clone();
    missing.folder = "/nonexistent/model".into();
    let e = a.embed(&missing, Priority::Interactive, Input::Texts(vec!["x".into()]), &mut wait).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidModel, "{e}");
    assert!(e.message.contains("/nonexistent/model"), "{e}");
    assert_eq!(
        b.embed(&spec, Priority::Interactive, Input::Texts(vec!["y".into()]), &mut wait).unwrap().len(),
        1
    );
    handle.stop();
}

#[test]
fn changed_model_files_are_refused() {
    let dir = std::env::temp_dir().join(format!("pg_clip_service_model_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&tiny(), &dir);
    let path = socket("changed");
    let handle = service::start(&path, config(0, 256)).unwrap();
    let spec = spec(&dir);
    let mut c = connect(&path);
    assert_eq!(
        c.embed(&spec, Priority::Interactive, Input::Texts(vec!["x".into()]), &mut wait).unwrap().len(),
        1
    );
    // an edited config changes the stamp
    let cfg_path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["note"] = serde_json::json!("edited");
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = c.embed(&spec, Priority::Interactive, Input::Texts(vec!["x".into()]), &mut wait).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ModelChanged, "{e}");
    assert!(e.hint.unwrap().contains("clip.register_model('tiny'"));
    handle.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_stopped_service_is_an_error_and_a_new_one_serves() {
    let path = socket("stop");
    let handle = service::start(&path, config(0, 16)).unwrap();
    let spec = spec(&tiny());
    let mut c = connect(&path);
    // bulk work queued over the limit: the later chunks wait for room (back-pressure)
    let chunk = tensor_of(&photos(), &tiny());
    let ids: Vec<u64> = (0..6)
        .map(|_| {
            c.submit(&service::Request::Embed {
                model: spec.clone(),
                priority: Priority::Bulk,
                input: chunk.clone(),
            })
            .unwrap()
        })
        .collect();
    let first = c.wait(ids[0], &mut wait).unwrap();
    assert!(matches!(first, service::Reply::Vectors(ref v) if v.len() == 6));
    handle.stop();
    // the rest either finished or fail as the service goes; nothing hangs
    let t0 = Instant::now();
    for id in &ids[1..] {
        match c.wait(*id, &mut wait) {
            Ok(service::Reply::Vectors(v)) => assert_eq!(v.len(), 6),
            Ok(service::Reply::Failed(e)) | Err(e) => {
                assert_eq!(e.kind, ErrorKind::ServiceUnavailable, "{e}")
            }
            Ok(other) => panic!("{other:?}"),
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(Client::connect(&path).is_err(), "nothing listens after stop");
    let handle = service::start(&path, config(0, 16)).unwrap();
    let mut c = connect(&path);
    assert_eq!(
        c.embed(&spec, Priority::Interactive, Input::Texts(vec!["x".into()]), &mut wait).unwrap().len(),
        1
    );
    handle.stop();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}
