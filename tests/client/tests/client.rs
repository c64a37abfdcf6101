//! pg_clip from a client application's side: a real cluster with the installed extension
//! (make test-client starts it and exports PGHOST/PGPORT/PGUSER/PGDATABASE), the Rust
//! `postgres` driver and the `pgvector` crate's `Vector` type.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use pgvector::Vector;
use postgres::{Client, NoTls};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn connect() -> Client {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: run through `make test-client`"));
    let conn = format!(
        "host={} port={} user={} dbname={}",
        var("PGHOST"),
        var("PGPORT"),
        var("PGUSER"),
        var("PGDATABASE")
    );
    let mut c = Client::connect(&conn, NoTls).expect("connect to the test cluster");
    c.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS pg_clip CASCADE;
         SET pg_clip.device = 'cpu';
         SET pg_clip.model = 'tiny';",
    )
    .unwrap();
    if c.query_opt("SELECT 1 FROM clip.model WHERE name = 'tiny'", &[]).unwrap().is_none() {
        c.execute("SELECT clip.register_model('tiny', 'tiny-clip')", &[]).unwrap();
    }
    c
}

fn golden() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("tests/golden/embeddings.json")).unwrap()).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let n = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(root().join("tests/images/photos").join(name)).unwrap()
}

const PHOTOS: [&str; 6] =
    ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "rocket.jpg"];

#[test]
fn application_sends_bytes_and_gets_reference_vectors() {
    let mut c = connect();
    let g = golden();
    let files: Vec<Vec<u8>> = PHOTOS.iter().map(|p| photo(p)).collect();
    let batch: Vec<Option<Vector>> = c.query_one("SELECT clip.embed_images($1)", &[&files]).unwrap().get(0);
    assert_eq!(batch.len(), PHOTOS.len());
    for (name, (bytes, from_batch)) in PHOTOS.iter().zip(files.iter().zip(batch)) {
        let v: Vector = c.query_one("SELECT clip.embed_image($1)", &[bytes]).unwrap().get(0);
        let want: Vec<f32> = g["images"][format!("photos/{name}")]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert!(cosine(v.as_slice(), &want) > 0.999, "{name}: {}", cosine(v.as_slice(), &want));
        assert!(cosine(v.as_slice(), from_batch.unwrap().as_slice()) > 0.99999, "{name}: batch differs");
    }
    let t: Vector = c.query_one("SELECT clip.embed_text($1)", &[&"a photo of a cat"]).unwrap().get(0);
    assert_eq!(t.as_slice().len(), 64);
}

#[test]
fn concurrent_sessions_agree_with_one_session() {
    let mut c = connect();
    let expected: Vec<Vector> = PHOTOS
        .iter()
        .map(|p| c.query_one("SELECT clip.embed_image($1)", &[&photo(p)]).unwrap().get(0))
        .collect();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            thread::spawn(move || {
                let mut c = connect();
                let mut out = Vec::new();
                for i in 0..PHOTOS.len() {
                    let p = PHOTOS[(i + w) % PHOTOS.len()];
                    let v: Vector = c.query_one("SELECT clip.embed_image($1)", &[&photo(p)]).unwrap().get(0);
                    out.push(((i + w) % PHOTOS.len(), v));
                }
                out
            })
        })
        .collect();
    for w in workers {
        for (i, v) in w.join().unwrap() {
            assert!(cosine(v.as_slice(), expected[i].as_slice()) > 0.99999, "{}", PHOTOS[i]);
        }
    }
}

#[test]
fn cancel_stops_a_long_batch_and_the_session_goes_on() {
    let mut c = connect();
    c.execute("SET pg_clip.batch_size = 2", &[]).unwrap();
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let token = c.cancel_token();
    let canceller = thread::spawn(move || {
        // wait until the batch is really running, then cancel it
        let mut watcher = connect();
        for _ in 0..600 {
            let active = watcher
                .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", &[&pid])
                .unwrap()
                .is_some();
            if active {
                thread::sleep(Duration::from_millis(300));
                token.cancel_query(NoTls).unwrap();
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("the batch never started");
    });
    // 2,000 copies made on the server: minutes of work, far longer than the wait above
    let err = c
        .query_one("SELECT clip.embed_images(array_fill($1::bytea, ARRAY[2000]))", &[&photo("rocket.jpg")])
        .expect_err("the batch was cancelled");
    canceller.join().unwrap();
    assert_eq!(err.code(), Some(&postgres::error::SqlState::QUERY_CANCELED), "{err}");
    let v: Vector = c.query_one("SELECT clip.embed_text('after cancel')", &[]).unwrap().get(0);
    assert_eq!(v.as_slice().len(), 64);
}

#[test]
fn wrong_runtime_library_is_an_error_and_a_corrected_path_works() {
    let mut c = connect();
    c.execute("SET pg_clip.onnxruntime_library = '/nonexistent/libonnxruntime.so'", &[]).unwrap();
    let e = c.query_one("SELECT clip.embed_text('x')", &[]).unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code(), &postgres::error::SqlState::SYSTEM_ERROR);
    assert!(db.message().contains("/nonexistent/libonnxruntime.so"), "{}", db.message());
    assert!(db.hint().unwrap().contains("pg_clip.onnxruntime_library"));
    // a shared library that is not ONNX Runtime
    let libc = "/lib/x86_64-linux-gnu/libc.so.6";
    c.execute(&format!("SET pg_clip.onnxruntime_library = '{libc}'"), &[]).unwrap();
    let e = c.query_one("SELECT clip.embed_text('x')", &[]).unwrap_err();
    assert_eq!(e.code(), Some(&postgres::error::SqlState::SYSTEM_ERROR), "{e}");
    // the same backend recovers once the setting is right
    c.execute("RESET pg_clip.onnxruntime_library", &[]).unwrap();
    let v: Vector = c.query_one("SELECT clip.embed_text('x')", &[]).unwrap().get(0);
    assert_eq!(v.as_slice().len(), 64);
}

/// A writable copy of the tiny model under .run/, readable by the database user.
fn model_copy(name: &str) -> PathBuf {
    let src = root().join("models/tiny-clip");
    let dst = root().join(".run/models").join(name);
    let _ = std::fs::remove_dir_all(&dst);
    for f in [
        "config.json",
        "visual/model.onnx",
        "visual/preprocess_cfg.json",
        "textual/model.onnx",
        "textual/tokenizer.json",
        "textual/tokenizer_config.json",
    ] {
        std::fs::create_dir_all(dst.join(f).parent().unwrap()).unwrap();
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst
}

#[test]
fn corrupt_onnx_file_is_refused_at_registration() {
    let mut c = connect();
    let dir = model_copy("corrupt");
    std::fs::write(dir.join("visual/model.onnx"), b"this is not protobuf").unwrap();
    let e = c.query_one("SELECT clip.register_model('corrupt', $1)", &[&dir.to_str().unwrap()]).unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code(), &postgres::error::SqlState::CONFIG_FILE_ERROR);
    assert!(db.message().contains("visual/model.onnx is not a loadable ONNX model"), "{}", db.message());
    assert!(c.query_opt("SELECT 1 FROM clip.model WHERE name = 'corrupt'", &[]).unwrap().is_none());
}

#[test]
fn changed_model_files_are_caught_until_re_registered() {
    let mut c = connect();
    let dir = model_copy("changing");
    let path = dir.to_str().unwrap().to_string();
    c.execute("SELECT clip.register_model('changing', $1)", &[&path]).unwrap();
    c.query_one("SELECT clip.embed_text('x', 'changing')", &[]).unwrap();
    // same JSON, different bytes: the stamp changes
    let cfg = dir.join("textual/tokenizer_config.json");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push('\n');
    std::fs::write(&cfg, text).unwrap();
    let e = c.query_one("SELECT clip.embed_text('x', 'changing')", &[]).unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code(), &postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE);
    assert!(db.message().contains("changed since it was registered"), "{}", db.message());
    c.execute("SELECT clip.register_model('changing', $1)", &[&path]).unwrap();
    c.query_one("SELECT clip.embed_text('x', 'changing')", &[]).unwrap();
    c.execute("DELETE FROM clip.model WHERE name = 'changing'", &[]).unwrap();
}
