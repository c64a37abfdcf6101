//! pg_clip from a client application's side: a real cluster with the installed extension
//! (make test-client starts it and exports PGHOST/PGPORT/PGUSER/PGDATABASE), the Rust
//! `postgres` driver and the `pgvector` crate's `Vector` type.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use pgvector::Vector;
use postgres::{Client, NoTls};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn conn_string() -> String {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set: run through `make test-client`"))
    };
    format!(
        "host={} port={} user={} dbname={}",
        var("PGHOST"),
        var("PGPORT"),
        var("PGUSER"),
        var("PGDATABASE")
    )
}

fn connect() -> Client {
    let mut c = Client::connect(&conn_string(), NoTls).expect("connect to the test cluster");
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

#[test]
fn auto_device_falls_back_to_cpu_in_the_server_log_once() {
    connect();
    // the server's log since it last started (make test-client restarts it after an install)
    let log = root().join(".run/postgres.log");
    let fallbacks = || {
        let text = std::fs::read_to_string(&log).unwrap();
        let since = text.rfind("database system is ready to accept connections").expect("a started server");
        text[since..].matches("pg_clip.device is auto and CUDA is not available: running on CPU").count()
    };
    // two new sessions load the model with device auto (this ONNX Runtime has no CUDA)
    for _ in 0..2 {
        let notices = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = Arc::clone(&notices);
        let mut config: postgres::Config = conn_string().parse().unwrap();
        config.notice_callback(move |n| seen.lock().unwrap().push(n.message().to_string()));
        let mut c = config.connect(NoTls).unwrap();
        // (in this session: the service logs where it loads models on its own)
        c.batch_execute("SET pg_clip.inference = 'local'; SET pg_clip.device = 'auto'; SELECT clip.embed_text('a photo', 'tiny')")
            .unwrap();
        let told = notices.lock().unwrap().clone();
        assert!(told.iter().all(|m| !m.contains("CUDA")), "a client was told about the device: {told:?}");
    }
    assert_eq!(fallbacks(), 1, "the fallback is logged once per server");
}

fn golden() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("tests/golden/embeddings.json")).unwrap())
        .unwrap()
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
        for _ in 0..3000 {
            let active = watcher
                .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", &[&pid])
                .unwrap()
                .is_some();
            if active {
                token.cancel_query(NoTls).unwrap();
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("the batch never started");
    });
    // 2,000 copies made on the server: seconds of work, cancelled as soon as it is seen running
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
    // (a session's own library: the service loads the one postgresql.conf names)
    c.execute("SET pg_clip.inference = 'local'", &[]).unwrap();
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
    fn copy_dir(src: &Path, dst: &Path) {
        std::fs::create_dir_all(dst).unwrap();
        for entry in std::fs::read_dir(src).unwrap() {
            let entry = entry.unwrap();
            let to = dst.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &to);
            } else {
                std::fs::copy(entry.path(), to).unwrap();
            }
        }
    }
    let dst = root().join(".run/models").join(name);
    let _ = std::fs::remove_dir_all(&dst);
    copy_dir(&root().join("models/tiny-clip"), &dst);
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

/// A source table of `n` rows cycling through the sample photos, with a collection on it.
fn collection_with_rows(c: &mut Client, name: &str, n: i64) {
    c.batch_execute(&format!(
        "SELECT clip.drop_collection('{name}') FROM clip.collection WHERE name = '{name}';
         DROP TABLE IF EXISTS {name};
         CREATE TABLE {name} (id bigint PRIMARY KEY, note text, img bytea);"
    ))
    .unwrap();
    for (i, p) in PHOTOS.iter().enumerate() {
        c.execute(
            &format!("INSERT INTO {name} SELECT g, 'row', $1 FROM generate_series(1, $2::bigint) g WHERE g % 6 = $3::bigint"),
            &[&photo(p), &n, &(i as i64)],
        )
        .unwrap();
    }
    c.execute(&format!("SELECT clip.add_collection('{name}', '{name}', 'id', 'img', 'tiny')"), &[]).unwrap();
}

/// Every source row has exactly one embedding, equal to embedding its current bytes, and
/// nothing else is stored: what a clean refresh produces.
fn assert_collection_matches_source(c: &mut Client, name: &str) {
    let row = c
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM {name}),
                        (SELECT count(*) FROM clip.embedding WHERE collection = '{name}'),
                        (SELECT count(*) FROM clip.embedding e JOIN {name} s ON s.id = e.image_id
                          WHERE e.collection = '{name}' AND e.content_sha256 = sha256(s.img)
                            AND (e.embedding <=> clip.embed_image(s.img, 'tiny')) < 1e-5),
                        (SELECT count(*) FROM clip.embedding_error WHERE collection = '{name}')"
            ),
            &[],
        )
        .unwrap();
    let (rows, stored, equal, errors): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!((stored, equal, errors), (rows, rows, 0), "{name}: {rows} rows");
}

fn wait_for_progress(watcher: &mut Client, name: &str) {
    for _ in 0..1200 {
        let done: Option<i64> = watcher
            .query_opt("SELECT done FROM clip.refresh_progress WHERE collection = $1 AND running", &[&name])
            .unwrap()
            .map(|r| r.get(0));
        if done.unwrap_or(0) > 0 {
            return;
        }
        thread::sleep(Duration::from_millis(25));
    }
    panic!("refresh of {name} never made progress");
}

#[test]
fn two_sessions_refreshing_at_once_neither_fail_nor_duplicate() {
    let mut c = connect();
    collection_with_rows(&mut c, "conc", 120);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            thread::spawn(|| {
                let mut c = connect();
                c.batch_execute("SET pg_clip.batch_size = 8").unwrap();
                c.batch_execute("CALL clip.refresh('conc')").unwrap();
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_collection_matches_source(&mut c, "conc");
}

#[test]
fn a_cancelled_refresh_resumes_to_the_clean_result() {
    let mut c = connect();
    collection_with_rows(&mut c, "cancelled", 300);
    let mut worker = connect();
    let token = worker.cancel_token();
    worker.batch_execute("SET pg_clip.batch_size = 8").unwrap();
    // one statement per call: a multi-statement string is one transaction, where CALL cannot COMMIT
    let run = thread::spawn(move || worker.batch_execute("CALL clip.refresh('cancelled')"));
    wait_for_progress(&mut c, "cancelled");
    token.cancel_query(NoTls).unwrap();
    let err = run.join().unwrap().expect_err("cancelled");
    assert_eq!(err.code(), Some(&postgres::error::SqlState::QUERY_CANCELED), "{err}");
    let kept: i64 = c
        .query_one("SELECT count(*) FROM clip.embedding WHERE collection = 'cancelled'", &[])
        .unwrap()
        .get(0);
    assert!(kept > 0 && kept < 300, "committed batches are kept: {kept}");
    c.batch_execute("CALL clip.refresh('cancelled')").unwrap();
    assert_collection_matches_source(&mut c, "cancelled");
}

#[test]
fn a_terminated_refresh_resumes_to_the_clean_result() {
    let mut c = connect();
    collection_with_rows(&mut c, "terminated", 300);
    let mut worker = connect();
    let pid: i32 = worker.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    worker.batch_execute("SET pg_clip.batch_size = 8").unwrap();
    // one statement per call: a multi-statement string is one transaction, where CALL cannot COMMIT
    let run = thread::spawn(move || worker.batch_execute("CALL clip.refresh('terminated')"));
    wait_for_progress(&mut c, "terminated");
    c.execute("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
    assert!(run.join().unwrap().is_err(), "the backend was terminated");
    // its progress row is unfinished, and no longer running once the backend has exited
    let running = |c: &mut Client| -> bool {
        c.query_one("SELECT running FROM clip.refresh_progress WHERE collection = 'terminated'", &[])
            .unwrap()
            .get(0)
    };
    for _ in 0..50 {
        if !running(&mut c) {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(!running(&mut c), "refresh_progress says running for a terminated backend");
    c.batch_execute("CALL clip.refresh('terminated')").unwrap();
    assert_collection_matches_source(&mut c, "terminated");
}

#[test]
fn rows_changed_during_a_refresh_are_right_after_the_next_one() {
    let mut c = connect();
    collection_with_rows(&mut c, "moving", 240);
    let run = thread::spawn(|| {
        let mut w = connect();
        w.batch_execute("SET pg_clip.batch_size = 8").unwrap();
        w.batch_execute("CALL clip.refresh('moving')").unwrap();
    });
    wait_for_progress(&mut c, "moving");
    c.batch_execute(
        "DELETE FROM moving WHERE id % 10 = 0;
         UPDATE moving SET note = 'edited' WHERE id % 10 = 1;",
    )
    .unwrap();
    c.execute("UPDATE moving SET img = $1 WHERE id % 10 = 2", &[&photo("chelsea.png")]).unwrap();
    c.execute(
        "INSERT INTO moving SELECT g, 'new', $1 FROM generate_series(1001, 1020) g",
        &[&photo("coffee.png")],
    )
    .unwrap();
    run.join().unwrap();
    c.batch_execute("CALL clip.refresh('moving')").unwrap();
    assert_collection_matches_source(&mut c, "moving");
}

/// A user's transaction that changed an already-queued row and stays open must not block a
/// refresh (a queue that locked entries made the refresh wait here, and two such writers in
/// opposite orders could deadlock). The change is picked up once it commits.
#[test]
fn an_open_user_transaction_does_not_block_a_refresh() {
    let mut c = connect();
    collection_with_rows(&mut c, "open_tx", 12);
    c.batch_execute("CALL clip.refresh('open_tx')").unwrap();
    // queued and committed: the refresh below will dequeue this entry
    c.execute("UPDATE open_tx SET img = $1 WHERE id IN (2, 3)", &[&photo("chelsea.png")]).unwrap();
    let mut user = connect();
    user.batch_execute("BEGIN").unwrap();
    user.execute("UPDATE open_tx SET img = $1 WHERE id IN (3, 2)", &[&photo("coffee.png")]).unwrap();
    let mut w = connect();
    w.batch_execute("SET statement_timeout = '10s'").unwrap();
    w.batch_execute("CALL clip.refresh('open_tx')").expect("the refresh does not wait for the user");
    let queued: i64 = c
        .query_one("SELECT count(*) FROM clip.refresh_queue WHERE collection = 'open_tx'", &[])
        .unwrap()
        .get(0);
    assert_eq!(queued, 0, "the committed entries were dequeued; the open ones are invisible");
    user.batch_execute("COMMIT").unwrap();
    let queued: i64 = c
        .query_one(
            "SELECT count(DISTINCT image_id) FROM clip.refresh_queue WHERE collection = 'open_tx'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(queued, 2, "the user's change is queued once it commits");
    c.batch_execute("CALL clip.refresh('open_tx')").unwrap();
    assert_collection_matches_source(&mut c, "open_tx");
}

#[test]
fn an_unreadable_file_is_recorded_and_files_changed_on_disk_are_rechecked() {
    let mut c = connect();
    let dir = root().join(".run/unreadable-root");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("good.jpg"), photo("rocket.jpg")).unwrap();
    std::fs::write(dir.join("locked.jpg"), photo("rocket.jpg")).unwrap();
    // owned by root with no permissions: the server's OS user cannot open it
    std::fs::set_permissions(dir.join("locked.jpg"), std::os::unix::fs::PermissionsExt::from_mode(0o000))
        .unwrap();
    c.batch_execute(&format!(
        "SET pg_clip.image_root = '{}';
         SELECT clip.drop_collection('locked') FROM clip.collection WHERE name = 'locked';
         DROP TABLE IF EXISTS locked;
         CREATE TABLE locked (id int PRIMARY KEY, path text);
         INSERT INTO locked VALUES (1, 'good.jpg'), (2, 'locked.jpg');
         SELECT clip.add_collection('locked', 'locked', 'id', 'path', 'tiny');",
        dir.display()
    ))
    .unwrap();
    c.batch_execute("CALL clip.refresh('locked')").unwrap();
    let ok: i64 =
        c.query_one("SELECT count(*) FROM clip.embedding WHERE collection = 'locked'", &[]).unwrap().get(0);
    let err = c
        .query_one(
            "SELECT image_id, sqlstate, message FROM clip.embedding_error WHERE collection = 'locked'",
            &[],
        )
        .unwrap();
    assert_eq!(ok, 1);
    assert_eq!((err.get::<_, i64>(0), err.get::<_, String>(1).as_str()), (2, "58P01"));
    assert!(err.get::<_, String>(2).contains("Permission denied"), "{}", err.get::<_, String>(2));

    // files changed on disk behind unchanged paths: no trigger fires, clip.recheck_files finds them
    c.batch_execute("CALL clip.refresh('locked')").unwrap();
    let none: i64 = c.query_one("SELECT clip.recheck_files('locked')", &[]).unwrap().get(0);
    assert_eq!(none, 0, "nothing changed on disk yet");
    std::fs::write(dir.join("good.jpg"), photo("chelsea.png")).unwrap();
    std::fs::set_permissions(dir.join("locked.jpg"), std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .unwrap();
    let queued: i64 = c.query_one("SELECT clip.recheck_files('locked')", &[]).unwrap().get(0);
    assert_eq!(queued, 2, "a rewritten file and a now-readable one");
    c.batch_execute("CALL clip.refresh('locked')").unwrap();
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM clip.embedding_error WHERE collection = 'locked'),
                    (SELECT e.embedding <=> clip.embed_image($1, 'tiny') FROM clip.embedding e
                      WHERE e.collection = 'locked' AND e.image_id = 1),
                    (SELECT e.content_sha256 = sha256($1) FROM clip.embedding e
                      WHERE e.collection = 'locked' AND e.image_id = 1),
                    (SELECT count(*) FROM clip.embedding WHERE collection = 'locked')",
            &[&photo("chelsea.png")],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0, "the fixed file is embedded");
    assert!(row.get::<_, f64>(1) < 1e-5, "good.jpg now holds the new image");
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, i64>(3), 2);
}

#[test]
fn the_worker_embeds_and_scores_inserted_rows_without_a_refresh() {
    let mut c = connect();
    let on: String = c.query_one("SHOW pg_clip.auto_refresh", &[]).unwrap().get(0);
    assert_eq!(on, "on", "make test-client starts the cluster with the auto-refresh worker on");
    c.batch_execute(
        "SELECT clip.drop_collection('auto') FROM clip.collection WHERE name = 'auto';
         DROP TABLE IF EXISTS auto;
         CREATE TABLE auto (id bigint PRIMARY KEY, img bytea);
         SELECT clip.add_collection('auto', 'auto', 'id', 'img', 'tiny');
         SELECT count(*) FROM clip.load_vocabulary('auto_vocab', E'version: 1\nbase_attributes:\n'
             '  - {code: cat, description: a cat}\n  - {code: rocket, description: a rocket}\n'
             'derived_attributes:\n  - {code: either, rule: cat OR rocket}\n');
         SELECT clip.attach_vocabulary('auto', 'auto_vocab');",
    )
    .unwrap();
    for (i, p) in PHOTOS.iter().enumerate() {
        c.execute("INSERT INTO auto VALUES ($1, $2), ($1 + 100, $2)", &[&(i as i64), &photo(p)]).unwrap();
    }
    c.execute("INSERT INTO auto VALUES (999, 'not an image')", &[]).unwrap();
    // nobody calls refresh: the worker (naptime 1 s) must empty the queue
    wait_for_worker(&mut c, "auto");
    let stored: i64 =
        c.query_one("SELECT count(*) FROM clip.embedding WHERE collection = 'auto'", &[]).unwrap().get(0);
    let failed: i64 = c
        .query_one(
            "SELECT count(*) FROM clip.embedding_error WHERE collection = 'auto' AND image_id = 999",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        (stored, failed),
        (2 * PHOTOS.len() as i64, 1),
        "the worker embedded the good rows and recorded the bad one"
    );
    let scored: i64 = c
        .query_one("SELECT count(*) FROM clip.feature_image_attribute WHERE collection = 'auto'", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        scored,
        2 * PHOTOS.len() as i64 * 3,
        "the worker scored every embedded image with the 3 attributes"
    );
    c.execute("DELETE FROM auto WHERE id = 999", &[]).unwrap();
    c.batch_execute("CALL clip.refresh('auto')").unwrap();
    assert_collection_matches_source(&mut c, "auto");
}

/// The worker does a collection's batches as the collection's owner, in a security-restricted
/// operation: code attached to the source table (here a forced row-security policy that logs
/// who runs it and whether it may create a temporary table) runs as that owner, never as the
/// worker's role or a superuser.
#[test]
fn the_worker_runs_a_collections_batches_as_its_owner() {
    let mut c = connect();
    c.batch_execute(
        "SELECT clip.drop_collection('owned') FROM clip.collection WHERE name = 'owned';
         DROP TABLE IF EXISTS owned, owned_log;
         DROP FUNCTION IF EXISTS owned_policy();
         DO $$ BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clip_owner') THEN CREATE ROLE clip_owner; END IF;
         END $$;
         SELECT clip.grant_manager('clip_owner');
         CREATE TABLE owned (id bigint PRIMARY KEY, img bytea NOT NULL);
         CREATE TABLE owned_log (who name, superuser boolean, restricted boolean);
         CREATE FUNCTION owned_policy() RETURNS boolean LANGUAGE plpgsql AS $f$
         DECLARE restricted boolean := false;
         BEGIN
             BEGIN
                 CREATE TEMP TABLE owned_probe (x int);
                 DROP TABLE owned_probe;
             EXCEPTION WHEN OTHERS THEN
                 restricted := true;
             END;
             INSERT INTO public.owned_log VALUES (current_user, current_setting('is_superuser')::boolean, restricted);
             RETURN true;
         END $f$;
         ALTER TABLE owned OWNER TO clip_owner;
         ALTER TABLE owned_log OWNER TO clip_owner;
         ALTER FUNCTION owned_policy() OWNER TO clip_owner;
         ALTER TABLE owned ENABLE ROW LEVEL SECURITY;
         ALTER TABLE owned FORCE ROW LEVEL SECURITY;
         CREATE POLICY logged ON owned USING (public.owned_policy());
         SET ROLE clip_owner;
         SELECT clip.add_collection('owned', 'owned', 'id', 'img', 'tiny');
         RESET ROLE;",
    )
    .unwrap();
    c.execute("INSERT INTO owned VALUES (1, $1)", &[&photo(PHOTOS[0])]).unwrap();
    wait_for_worker(&mut c, "owned");
    let stored: i64 =
        c.query_one("SELECT count(*) FROM clip.embedding WHERE collection = 'owned'", &[]).unwrap().get(0);
    assert_eq!(stored, 1, "the worker embedded the row");
    let runs: Vec<(String, bool, bool)> = c
        .query("SELECT DISTINCT who::text, superuser, restricted FROM owned_log", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        runs,
        [("clip_owner".to_string(), false, true)],
        "the policy ran only as the owner, restricted"
    );
    c.batch_execute(
        "SELECT clip.drop_collection('owned');
         DROP TABLE owned, owned_log;
         DROP FUNCTION owned_policy();
         SELECT clip.revoke_manager('clip_owner');",
    )
    .unwrap();
}

/// Wait (up to a minute) until the auto-refresh worker (naptime 1 s) has emptied the queue of
/// `collection`.
fn wait_for_worker(c: &mut Client, collection: &str) {
    for _ in 0..240 {
        let queued: i64 = c
            .query_one("SELECT count(*) FROM clip.refresh_queue WHERE collection = $1", &[&collection])
            .unwrap()
            .get(0);
        if queued == 0 {
            return;
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// What a shop's application does: one reference image per product, then camera frames sent as
/// bytes, one at a time (a prepared statement), many in one LATERAL query, many in one
/// clip.identify_many call, and by vector; all agree, also from four sessions at once.
#[test]
fn an_application_identifies_frames_against_a_reference_set() {
    let mut c = connect();
    c.batch_execute(
        "SELECT clip.drop_reference_set(name) FROM clip.reference_set WHERE name = 'shop';
         DROP TABLE IF EXISTS shop, frames;
         CREATE TABLE shop (id bigint PRIMARY KEY, product text NOT NULL, img bytea NOT NULL);
         CREATE TABLE frames (id int PRIMARY KEY, source bigint, img bytea);
         SET client_min_messages = warning;
         SELECT clip.add_reference_set('shop', 'shop', 'id', 'img', 'product');",
    )
    .unwrap();
    for (i, p) in PHOTOS.iter().enumerate() {
        let product = format!("product {}", p.split('.').next().unwrap());
        c.execute("INSERT INTO shop VALUES ($1, $2, $3)", &[&(i as i64 + 1), &product, &photo(p)]).unwrap();
    }
    c.batch_execute("CALL clip.refresh('shop')").unwrap();
    // the camera frames: blurred and rotated copies of each product's image
    c.batch_execute(
        "INSERT INTO frames
         SELECT row_number() OVER (ORDER BY s.id, a.kind), s.id, a.image
         FROM shop s CROSS JOIN LATERAL clip.augmented_copies(s.img) a WHERE a.kind IN ('blur', 'rotate')",
    )
    .unwrap();
    let frames: Vec<(i32, i64, Vec<u8>)> = c
        .query("SELECT id, source, img FROM frames ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(frames.len(), 2 * PHOTOS.len());

    let one =
        c.prepare("SELECT reference_id, label, score, margin FROM clip.identify($1::bytea, 'shop')").unwrap();
    let mut singles = Vec::new();
    for (_, source, img) in &frames {
        let r = c.query_one(&one, &[img]).unwrap();
        let (id, label, score, margin): (i64, String, f32, Option<f32>) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        assert_eq!(id, *source, "frame of {source} identified as {id} ({label})");
        assert!(score > 0.0 && score <= 1.0 && margin.unwrap() > 0.0, "{label}: {score} {margin:?}");
        singles.push((id, label, score));
    }

    let lateral: Vec<(i64, String, f32)> = c
        .query(
            "SELECT i.reference_id, i.label, i.score FROM frames f
             CROSS JOIN LATERAL clip.identify(f.img, 'shop') i ORDER BY f.id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(lateral, singles);

    let imgs: Vec<&[u8]> = frames.iter().map(|f| f.2.as_slice()).collect();
    let many: Vec<(i32, i64, f32)> = c
        .query("SELECT frame, reference_id, score FROM clip.identify_many($1, 'shop')", &[&imgs])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(many.len(), frames.len());
    for ((frame, id, score), (i, single)) in many.iter().zip(singles.iter().enumerate()) {
        // batched model calls agree with single ones to float rounding
        assert_eq!((*frame, *id), (i as i32 + 1, single.0));
        assert!((score - single.2).abs() < 1e-4, "frame {frame}: {score} vs {}", single.2);
    }

    // by vector, from an embedding the application computed earlier
    let v: Vector = c.query_one("SELECT clip.embed_image($1, 'tiny')", &[&frames[0].2]).unwrap().get(0);
    let id: i64 =
        c.query_one("SELECT reference_id FROM clip.identify($1::vector, 'shop')", &[&v]).unwrap().get(0);
    assert_eq!(id, frames[0].1);

    // a threshold no frame reaches: no row, which the application reads as "not recognised"
    let none =
        c.query("SELECT * FROM clip.identify($1::bytea, 'shop', 1, 0.99999)", &[&frames[0].2]).unwrap();
    assert!(none.is_empty());

    // four sessions at once get the same answers
    let expected: Vec<i64> = singles.iter().map(|s| s.0).collect();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let frames: Vec<Vec<u8>> = frames.iter().map(|f| f.2.clone()).collect();
            thread::spawn(move || {
                let mut c = connect();
                frames
                    .iter()
                    .map(|f| {
                        c.query_one("SELECT reference_id FROM clip.identify($1::bytea, 'shop')", &[f])
                            .unwrap()
                            .get(0)
                    })
                    .collect::<Vec<i64>>()
            })
        })
        .collect();
    for w in workers {
        assert_eq!(w.join().unwrap(), expected);
    }
    c.batch_execute("SELECT clip.drop_reference_set('shop'); DROP TABLE shop, frames;").unwrap();
}

// --- the shared inference service (the test cluster preloads pg_clip) ----------------------

fn service_pid(c: &mut Client) -> i32 {
    for _ in 0..200 {
        if let Some(r) = c
            .query_opt("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_clip inference'", &[])
            .unwrap()
        {
            return r.get(0);
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("no pg_clip inference worker");
}

/// Whether process `pid` has the ONNX Runtime library mapped.
fn maps_onnxruntime(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default().contains("libonnxruntime")
}

#[test]
fn the_service_gives_the_local_paths_vectors_and_backends_load_no_runtime() {
    let mut c = connect();
    let files: Vec<Vec<u8>> = PHOTOS.iter().map(|p| photo(p)).collect();
    let texts = vec!["a photo of a cat".to_string(), "an astronaut".into(), String::new()];
    let query = "SELECT clip.embed_images($1), clip.embed_texts($2)";
    let row = c.query_one(query, &[&files, &texts]).unwrap();
    let (service_i, service_t): (Vec<Option<Vector>>, Vec<Option<Vector>>) = (row.get(0), row.get(1));
    let status = c
        .query_one("SELECT count(*), max(items) FROM clip.inference_status() WHERE model = 'tiny'", &[])
        .unwrap();
    assert_eq!(status.get::<_, i64>(0), 2, "one row per tower of the loaded model");
    let mut local = connect();
    local.execute("SET pg_clip.inference = 'local'", &[]).unwrap();
    let row = local.query_one(query, &[&files, &texts]).unwrap();
    let (local_i, local_t): (Vec<Option<Vector>>, Vec<Option<Vector>>) = (row.get(0), row.get(1));
    for (a, b) in service_i.iter().zip(&local_i).chain(service_t.iter().zip(&local_t)) {
        let cos = cosine(a.as_ref().unwrap().as_slice(), b.as_ref().unwrap().as_slice());
        assert!(cos >= 0.99999, "service against local: cosine {cos}");
    }
    // the sessions that used the service have no ONNX Runtime; the local one and the service do
    let pid = |c: &mut Client| c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get::<_, i32>(0);
    let (service_user, local_user) = (pid(&mut c), pid(&mut local));
    assert!(!maps_onnxruntime(service_user), "a backend that used the service loaded ONNX Runtime");
    assert!(maps_onnxruntime(local_user));
    assert!(maps_onnxruntime(service_pid(&mut c)));
    let others: Vec<i32> = c
        .query(
            "SELECT pid FROM pg_stat_activity WHERE pid <> $1 AND backend_type <> 'pg_clip inference'",
            &[&local_user],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for p in others {
        assert!(!maps_onnxruntime(p), "process {p} has ONNX Runtime loaded");
    }
}

#[test]
fn concurrent_service_callers_get_their_own_answers_while_a_refresh_runs() {
    let mut c = connect();
    collection_with_rows(&mut c, "svc_conc", 60);
    let expected: Arc<Vec<Vector>> = Arc::new(
        PHOTOS
            .iter()
            .map(|p| c.query_one("SELECT clip.embed_image($1)", &[&photo(p)]).unwrap().get(0))
            .collect(),
    );
    let refresh = thread::spawn(|| connect().batch_execute("CALL clip.refresh('svc_conc')").unwrap());
    let callers: Vec<_> = (0..6)
        .map(|w| {
            let expected = expected.clone();
            thread::spawn(move || {
                let mut c = connect();
                for i in 0..8 {
                    let k = (i + w) % PHOTOS.len();
                    let v: Vector =
                        c.query_one("SELECT clip.embed_image($1)", &[&photo(PHOTOS[k])]).unwrap().get(0);
                    assert!(
                        cosine(v.as_slice(), expected[k].as_slice()) > 0.99999,
                        "caller {w}: {}",
                        PHOTOS[k]
                    );
                    let text = format!("caller {w} asks {i}");
                    let (a, b): (Vector, Vector) = {
                        let r = c
                            .query_one(
                                "SELECT clip.embed_text($1), (clip.embed_texts(ARRAY[$1, 'x']))[1]",
                                &[&text],
                            )
                            .unwrap();
                        (r.get(0), r.get(1))
                    };
                    assert!(
                        cosine(a.as_slice(), b.as_slice()) > 0.99999,
                        "caller {w}: a text got another's vector"
                    );
                }
            })
        })
        .collect();
    for t in callers {
        t.join().unwrap();
    }
    refresh.join().unwrap();
    assert_collection_matches_source(&mut c, "svc_conc");
}

#[test]
fn a_wait_for_the_service_ends_within_a_second_of_a_cancel_or_timeout() {
    let mut c = connect();
    c.execute("CREATE TEMP TABLE rocket AS SELECT $1::bytea AS img", &[&photo("rocket.jpg")]).unwrap();
    // 3,000 copies: many seconds of decoding here and embedding in the service
    let copies = "SELECT cardinality(clip.embed_images(array_fill(img, ARRAY[3000]))) FROM rocket";
    let code = |e: &postgres::Error| e.code().cloned();
    c.execute("SET statement_timeout = '400ms'", &[]).unwrap();
    let t0 = std::time::Instant::now();
    let e = c.simple_query(copies).unwrap_err();
    assert_eq!(code(&e), Some(postgres::error::SqlState::QUERY_CANCELED), "{e} after {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_millis(1400), "timed out after {:?}", t0.elapsed());
    c.execute("RESET statement_timeout", &[]).unwrap();
    let token = c.cancel_token();
    let canceller = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        let at = std::time::Instant::now();
        token.cancel_query(NoTls).unwrap();
        at
    });
    let e = c.simple_query(copies).unwrap_err();
    let ended = std::time::Instant::now();
    let cancelled_at = canceller.join().unwrap();
    assert_eq!(code(&e), Some(postgres::error::SqlState::QUERY_CANCELED), "{e}");
    assert!(
        ended - cancelled_at < Duration::from_secs(1),
        "ended {:?} after the cancel",
        ended - cancelled_at
    );
    let v: Vector = c.query_one("SELECT clip.embed_image($1)", &[&photo("rocket.jpg")]).unwrap().get(0);
    assert_eq!(v.as_slice().len(), 64);
}

#[test]
fn a_killed_service_is_an_error_and_the_next_call_works_after_its_restart() {
    let mut c = connect();
    let mut admin = connect();
    c.query_one("SELECT clip.embed_text('warm')", &[]).unwrap();
    let before = service_pid(&mut admin);
    let token_pid = before;
    let killer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(400));
        connect().execute("SELECT pg_terminate_backend($1)", &[&token_pid]).unwrap();
    });
    let e = c
        .query_one("SELECT clip.embed_images(array_fill($1::bytea, ARRAY[3000]))", &[&photo("rocket.jpg")])
        .unwrap_err();
    killer.join().unwrap();
    let db = e.as_db_error().expect("an ERROR, not a lost connection");
    assert_eq!(db.code(), &postgres::error::SqlState::CONNECTION_FAILURE, "{}", db.message());
    assert!(db.hint().unwrap().contains("restarts by itself"), "{:?}", db.hint());
    // the next call waits for the restarted service
    let v: Vector = c.query_one("SELECT clip.embed_text('after the restart')", &[]).unwrap().get(0);
    assert_eq!(v.as_slice().len(), 64);
    assert_ne!(service_pid(&mut admin), before, "a new service process");
}

#[test]
fn a_bulk_chunk_over_one_service_message_is_split() {
    let mut c = connect();
    // 500 images of 224 px are 301 MB of tensor: over one message's 256 MB
    c.execute("SET pg_clip.batch_size = 500", &[]).unwrap();
    let same: bool = c
        .query_one(
            "SELECT cardinality(v) = 500 AND (v[1] <=> s) < 1e-5 AND (v[500] <=> s) < 1e-5
             FROM (SELECT clip.embed_images(array_fill($1::bytea, ARRAY[500])) v, clip.embed_image($1) s) x",
            &[&photo("rocket.jpg")],
        )
        .unwrap()
        .get(0);
    assert!(same, "500 copies embedded as one image is");
}

#[test]
fn a_text_over_one_service_message_is_refused_as_the_local_path_refuses_it() {
    let mut c = connect();
    let mut admin = connect();
    c.query_one("SELECT clip.embed_text('warm')", &[]).unwrap();
    let before = service_pid(&mut admin);
    // 300 MB of text: over one message's 256 MB; refused before it is sent
    let huge = "SELECT clip.embed_text(repeat('word ', 60000000))";
    let refusal = |c: &mut Client| {
        let e = c.simple_query(huge).unwrap_err();
        let db = e.as_db_error().expect("an ERROR").clone();
        (db.code().clone(), db.message().to_string())
    };
    let service = refusal(&mut c);
    assert_eq!(service.0, postgres::error::SqlState::INVALID_PARAMETER_VALUE, "{}", service.1);
    assert!(service.1.contains("at most 10000 are embedded"), "{}", service.1);
    let mut local = connect();
    local.execute("SET pg_clip.inference = 'local'", &[]).unwrap();
    assert_eq!(refusal(&mut local), service);
    // the connection to the service was kept, and the service did not restart
    let v: Vector = c.query_one("SELECT clip.embed_text('next')", &[]).unwrap().get(0);
    assert_eq!(v.as_slice().len(), 64);
    assert_eq!(service_pid(&mut admin), before);
}
