//! Registered models (the clip.model table) and this backend's cache of loaded sessions.
//!
//! A session is reused while the registered stamp, the device settings and the files' sizes
//! and mtimes are unchanged; otherwise the folder is re-read and its stamp recomputed, and a
//! stamp that no longer matches the registration is an ERROR rather than silently mixing
//! embeddings of two different models.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use pg_clip_core::model::{ModelFolder, ModelOptions};
use pg_clip_core::preprocess::PreprocessConfig;
use pg_clip_core::runtime::{self, ClipModel, Device, Embedded, SessionOptions};
use pg_clip_core::service::{images_per_request, Input, ModelInfo, ModelSpec, Priority, Reply, Request};
use pg_clip_core::{ClipError, ErrorKind};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic, PgSqlErrorCode as Code};

use crate::errors::{self, OrRaise};
use crate::gucs;
use crate::service;

struct Cached {
    stamp: String,
    fingerprint: Vec<(u64, Option<SystemTime>)>,
    device: Device,
    threads: usize,
    model: ClipModel,
}

impl Cached {
    fn new(
        stamp: String,
        fingerprint: Vec<(u64, Option<SystemTime>)>,
        opts: &SessionOptions,
        model: ClipModel,
    ) -> Self {
        Cached { stamp, fingerprint, device: opts.device, threads: opts.intra_op_threads, model }
    }
}

thread_local! {
    static CACHE: RefCell<HashMap<String, Cached>> = RefCell::new(HashMap::new());
}

/// A relative folder is looked up under pg_clip.model_dir.
pub fn resolve_folder(folder: &str) -> PathBuf {
    let p = Path::new(folder);
    match (p.is_absolute(), gucs::model_dir()) {
        (false, Some(dir)) => Path::new(&dir).join(p),
        _ => p.to_path_buf(),
    }
}

pub fn environment() -> runtime::Environment {
    let lib = gucs::onnxruntime_library().unwrap_or_else(|| {
        errors::raise(
            ClipError::new(ErrorKind::Runtime, "pg_clip.onnxruntime_library is not set")
                .hint("A superuser sets it to the path of libonnxruntime.so, e.g. in postgresql.conf."),
        )
    });
    runtime::environment(&lib).or_raise()
}

fn options() -> SessionOptions {
    SessionOptions { device: gucs::device(), intra_op_threads: gucs::intra_op_threads() }
}

/// Whether the server log was told that `auto` fell back to the CPU: once per server when
/// pg_clip is preloaded (a flag in shared memory), else once per backend.
static CPU_FALLBACK_LOGGED: PgAtomic<AtomicBool> =
    // SAFETY: the one shared-memory object of that name.
    unsafe { PgAtomic::new(c"pg_clip cpu fallback logged") };
static SHARED_FLAG: AtomicBool = AtomicBool::new(false);
static BACKEND_FLAG: AtomicBool = AtomicBool::new(false);

/// From _PG_init while shared_preload_libraries is processed: the flag goes to shared memory
/// (backends fork from the postmaster with SHARED_FLAG set).
pub fn init_shared_memory() {
    pg_shmem_init!(CPU_FALLBACK_LOGGED);
    SHARED_FLAG.store(true, Ordering::Relaxed);
}

/// Load a folder's sessions with the current settings. When `auto` falls back to the CPU, the
/// server log says so once (LOG): a client is not told on every connection, since running on
/// the CPU is what `auto` means without a GPU.
pub fn load(folder: ModelFolder) -> ClipModel {
    let env = environment();
    let opts = options();
    let model = ClipModel::load(&env, folder, &opts).or_raise();
    if opts.device == Device::Auto && model.device_used == Device::Cpu {
        let flag =
            if SHARED_FLAG.load(Ordering::Relaxed) { CPU_FALLBACK_LOGGED.get() } else { &BACKEND_FLAG };
        if !flag.swap(true, Ordering::Relaxed) {
            log!("pg_clip.device is auto and CUDA is not available: running on CPU");
        }
    }
    model
}

/// The model name to use: the argument, else pg_clip.model.
pub fn model_name(arg: Option<&str>) -> String {
    arg.map(String::from).or_else(gucs::model).unwrap_or_else(|| {
        errors::report(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            "no model given and pg_clip.model is not set".into(),
            None,
            Some(
                "Pass a model name, or SET pg_clip.model = '<name>' (see SELECT name FROM clip.model)."
                    .into(),
            ),
        )
    })
}

fn registered(name: &str) -> (String, String, ModelOptions) {
    // (through to_jsonb: a database still at 0.1.0, whose clip.model has no options, runs
    // this library too until ALTER EXTENSION pg_clip UPDATE)
    let row = Spi::get_three_with_args::<String, String, pgrx::JsonB>(
        "SELECT m.folder, m.stamp, coalesce(to_jsonb(m) -> 'options', '{}') FROM clip.model m WHERE m.name = $1",
        &[name.into()],
    );
    match row {
        Ok((Some(folder), Some(stamp), Some(options))) => {
            // written by clip.register_model from checked options; a hand-edited row is refused
            let options = ModelOptions::from_json(&options.0.to_string()).unwrap_or_else(|m| {
                errors::report(
                    Code::ERRCODE_DATA_CORRUPTED,
                    format!("clip.model row of \"{name}\" has invalid options: {m}"),
                    None,
                    Some(format!(
                        "Register it again: SELECT clip.register_model('{name}', '{folder}', ...)."
                    )),
                )
            });
            (folder, stamp, options)
        }
        _ => errors::report(
            Code::ERRCODE_UNDEFINED_OBJECT,
            format!("model \"{name}\" is not registered"),
            None,
            Some("Register it with SELECT clip.register_model(name, folder).".into()),
        ),
    }
}

/// Run `f` with the loaded model `name`, loading or reloading it as needed.
pub fn with_model<T>(name: &str, f: impl FnOnce(&mut ClipModel) -> T) -> T {
    let (folder, stamp, model_options) = registered(name);
    let opts = options();
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let fresh = cache.get(name).is_some_and(|c| {
            c.stamp == stamp
                && c.device == opts.device
                && c.threads == opts.intra_op_threads
                && c.model.folder.fingerprint() == c.fingerprint
        });
        if !fresh {
            cache.remove(name);
            let mf = ModelFolder::open(&PathBuf::from(&folder), &model_options).or_raise();
            let fingerprint = mf.fingerprint();
            let now = mf.stamp().or_raise();
            if now != stamp {
                errors::raise(ClipError::model_changed(name, &folder, &stamp, &now, &model_options));
            }
            let model = load(mf);
            cache.insert(name.to_string(), Cached::new(stamp, fingerprint, &opts, model));
        }
        f(&mut cache.get_mut(name).expect("just inserted").model)
    })
}

/// A failure of the model itself while embedding images: no image is to blame, so it is an
/// ERROR of the whole call (a refresh leaves the rows queued) rather than one per image.
pub fn refused(name: &str, e: ClipError) -> ClipError {
    e.context(format!("model \"{name}\""))
        .hint("No image was recorded as failed: the model refused the batch. Check its graphs' input shapes (SELECT * FROM clip.model) and the server log.")
}

/// Keep a model just loaded by clip.register_model, so the next call need not load it again.
pub fn remember(name: &str, stamp: String, model: ClipModel) {
    let fingerprint = model.folder.fingerprint();
    let entry = Cached::new(stamp, fingerprint, &options(), model);
    CACHE.with(|c| c.borrow_mut().insert(name.to_string(), entry));
}

/// What the service needs to know of a registered model, and the preprocessing this backend
/// does for it, kept while the registration's stamp is the same.
struct Remote {
    spec: ModelSpec,
    preprocess: PreprocessConfig,
}

thread_local! {
    static REMOTE: RefCell<HashMap<String, Remote>> = RefCell::new(HashMap::new());
}

/// How the service knows a registered model: by what clip.model records of it.
fn spec_of(name: &str, folder: &str, stamp: &str, options: &ModelOptions) -> ModelSpec {
    ModelSpec {
        name: name.to_string(),
        folder: folder.to_string(),
        stamp: stamp.to_string(),
        options: serde_json::to_string(options).expect("options serialise"),
    }
}

/// The service's spec for `name` and its preprocessing (the folder's configs read here; the
/// service checks the files' stamp).
fn remote(name: &str) -> (ModelSpec, PreprocessConfig) {
    let (folder, stamp, options) = registered(name);
    let spec = spec_of(name, &folder, &stamp, &options);
    REMOTE.with(|r| {
        let mut r = r.borrow_mut();
        if let Some(known) = r.get(name).filter(|k| k.spec == spec) {
            return (known.spec.clone(), known.preprocess.clone());
        }
        let preprocess = pg_clip_core::model::preprocess_config(&PathBuf::from(&folder), &options).or_raise();
        r.insert(name.to_string(), Remote { spec: spec.clone(), preprocess: preprocess.clone() });
        (spec, preprocess)
    })
}

/// A model failure from the service while embedding images: raised as the local path raises it.
fn service_failed(name: &str, e: ClipError) -> ClipError {
    match e.kind {
        ErrorKind::Inference | ErrorKind::InvalidModel | ErrorKind::Runtime => refused(name, e),
        _ => e,
    }
}

/// Embed texts with model `name`, pg_clip.batch_size per model call (here) or per request
/// (the service). A text that cannot be tokenised is an ERROR.
pub fn embed_texts(name: &str, texts: &[&str], priority: Priority) -> Vec<Vec<f32>> {
    let batch = gucs::batch_size();
    if !service::use_service() {
        return with_model(name, |m| {
            let mut out = Vec::with_capacity(texts.len());
            for chunk in texts.chunks(batch) {
                check_for_interrupts!();
                out.extend(m.embed_texts(chunk, chunk.len(), errors::INTERRUPT).or_raise());
            }
            out
        });
    }
    let (spec, _) = remote(name);
    service::with_client(|c| {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(batch) {
            let input = Input::Texts(chunk.iter().map(|t| t.to_string()).collect());
            // (errors as the local path raises them: as they are, no image hint)
            out.extend(c.embed(&spec, priority, input, &mut service::latch_wait)?);
        }
        Ok(out)
    })
}

/// Embed images with model `name`: one result per image (a bad image is its own error), the
/// model's failure an ERROR.
pub fn embed_images(name: &str, images: &[&[u8]], priority: Priority) -> Vec<pg_clip_core::Result<Vec<f32>>> {
    embed_images_with_thumbnails(name, images, priority, None)
        .into_iter()
        .map(|r| r.map(|e| e.vector))
        .collect()
}

/// As [`embed_images`], with a thumbnail of `thumbnail` pixels made from each image's decode.
/// Through the service, this backend decodes and resizes each chunk while the service runs the
/// previous one.
pub fn embed_images_with_thumbnails(
    name: &str,
    images: &[&[u8]],
    priority: Priority,
    thumbnail: Option<u32>,
) -> Vec<pg_clip_core::Result<Embedded>> {
    let (batch, limits) = (gucs::batch_size(), gucs::image_limits());
    let results = if !service::use_service() {
        with_model(name, |m| {
            m.embed_images_with_thumbnails(images, batch, &limits, errors::INTERRUPT, thumbnail)
        })
        .map_err(|e| refused(name, e))
        .or_raise()
    } else {
        let (spec, cfg) = remote(name);
        // (and within one message to the service: a chunk of pg_clip.batch_size images may be
        // over its frame limit)
        let chunk = runtime::batch_limit(batch, &cfg, &limits).min(images_per_request(&cfg));
        service::with_client(|c| {
            let mut out = Vec::with_capacity(images.len());
            let mut in_flight: Option<(Option<u64>, Decoded)> = None;
            for part in images.chunks(chunk) {
                let (tensor, decoded) =
                    runtime::preprocess_batch(part, &cfg, &limits, errors::INTERRUPT, thumbnail);
                errors::stop_if_cancelled(&decoded);
                let good = decoded.iter().filter(|r| r.is_ok()).count();
                let id = if good > 0 {
                    let input = Input::Images { n: good, tensor };
                    Some(c.submit(&Request::Embed { model: spec.clone(), priority, input })?)
                } else {
                    None
                };
                if let Some(prev) = in_flight.replace((id, decoded)) {
                    collect(c, name, prev, &mut out)?;
                }
            }
            if let Some(prev) = in_flight {
                collect(c, name, prev, &mut out)?;
            }
            Ok(out)
        })
    };
    errors::stop_if_cancelled(&results);
    results
}

/// Each image's decoding outcome, with its thumbnail when one was asked for.
type Decoded = Vec<pg_clip_core::Result<Option<Vec<u8>>>>;

/// The service's reply to one chunk, matched to its images' decoding outcomes.
fn collect(
    c: &mut pg_clip_core::service::Client,
    name: &str,
    (id, decoded): (Option<u64>, Decoded),
    out: &mut Vec<pg_clip_core::Result<Embedded>>,
) -> pg_clip_core::Result<()> {
    let good = decoded.iter().filter(|r| r.is_ok()).count();
    let rows = match id {
        None => Vec::new(),
        Some(id) => match c.wait(id, &mut service::latch_wait)? {
            Reply::Vectors(v) if v.len() == good => v,
            Reply::Failed(e) => return Err(service_failed(name, e)),
            _ => return Err(pg_clip_core::service::client::lost("an unexpected reply to an embedding")),
        },
    };
    out.extend(runtime::pair(decoded, rows));
    Ok(())
}

/// Load a folder being registered, where calls will run it (here, and kept in this backend's
/// cache; or in the service), and say what was loaded.
pub fn load_for_registration(name: &str, folder: ModelFolder, stamp: &str) -> ModelInfo {
    if !service::use_service() {
        let model = load(folder);
        let info = ModelInfo::of(&model);
        remember(name, stamp.to_string(), model);
        return info;
    }
    let spec = spec_of(name, &folder.path.display().to_string(), stamp, &folder.options);
    service::with_client(|c| c.describe(&spec, &mut service::latch_wait))
}
