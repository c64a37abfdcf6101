//! Every pg_clip setting: declared here, registered by [`init`], read through the getters.

use std::ffi::CString;

use pg_clip_core::preprocess::ImageLimits;
use pg_clip_core::runtime::{self, Device};
use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PostgresGucEnum)]
pub enum DeviceSetting {
    #[name = c"cpu"]
    Cpu,
    #[name = c"cuda"]
    Cuda,
    #[name = c"auto"]
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PostgresGucEnum)]
pub enum InferenceSetting {
    #[name = c"auto"]
    Auto,
    #[name = c"service"]
    Service,
    #[name = c"local"]
    Local,
}

/// Where models run: in the shared inference service (with pg_clip preloaded), or in each
/// backend. Superuser only: a backend of its own holds a whole copy of the model.
static INFERENCE: GucSetting<InferenceSetting> = GucSetting::<InferenceSetting>::new(InferenceSetting::Auto);
/// The service's batching: the most items per model call, how long a batch that is not full
/// waits for more (0: none), and the most bulk items queued per model before senders wait.
static INFERENCE_MAX_BATCH: GucSetting<i32> = GucSetting::<i32>::new(64);
static INFERENCE_BATCH_WAIT: GucSetting<i32> = GucSetting::<i32>::new(0);
static INFERENCE_MAX_QUEUED: GucSetting<i32> = GucSetting::<i32>::new(512);
/// Seconds a call waits for the service to accept its connection (while it starts).
static INFERENCE_CONNECT_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(10);

/// Name of the registered model used when a function's `model` argument is NULL.
static MODEL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Path of libonnxruntime.so, loaded once per backend on first use. Superuser only: the
/// server process executes this file.
static ONNXRUNTIME_LIBRARY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Folder against which relative model folders in clip.register_model are resolved.
static MODEL_DIR: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Folder that image paths in text columns are resolved under; paths may not leave it.
static IMAGE_ROOT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Where inference runs: cpu, cuda (an ERROR when unavailable) or auto (CUDA if usable).
static DEVICE: GucSetting<DeviceSetting> = GucSetting::<DeviceSetting>::new(DeviceSetting::Auto);
/// ONNX Runtime intra-op threads per session; 0 lets ONNX Runtime pick (physical cores).
static INTRA_OP_THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);
/// Images (or texts) per model call on bulk paths.
static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(32);
/// Largest image, in pixels, that is decoded; larger ones are refused from their header,
/// before any pixel is decoded (decompression bombs). Superuser only, as the next one.
static MAX_IMAGE_PIXELS: GucSetting<i32> = GucSetting::<i32>::new(100_000_000);
/// The longer side of the thumbnails refresh stores (clip.thumbnail); 0: none.
static THUMBNAIL_SIZE: GucSetting<i32> = GucSetting::<i32>::new(0);
/// Megabytes one backend may hold for decoding and resizing images at once (all its decoding
/// threads together); an image whose buffers alone need more is refused from its header.
static MAX_IMAGE_MEMORY: GucSetting<i32> = GucSetting::<i32>::new(1024);

/// Start the auto-refresh background worker (needs shared_preload_libraries = 'pg_clip').
/// `hnsw.ef_search` for clip.identify's index scans (candidate list size: recall against speed).
static IDENTIFY_EF_SEARCH: GucSetting<i32> = GucSetting::<i32>::new(100);
/// Reference sets with fewer references than this are searched exactly, without the index.
static IDENTIFY_EXACT_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(200);
/// Whether clip.identify answers through a reference set's projection head when it has one.
static IDENTIFY_PROJECTION: GucSetting<bool> = GucSetting::<bool>::new(true);
/// Trailing file-name suffixes that clip.label_from_filename splits off into the variant.
static IDENTIFY_VARIANTS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"pscr,scr,ur,sr,op,utr,cr,ea,gmr"));
/// clip.label refits the classifier after this many new labels since its last fit; 0 = never.
static REFIT_EVERY: GucSetting<i32> = GucSetting::<i32>::new(10);
static AUTO_REFRESH: GucSetting<bool> = GucSetting::<bool>::new(false);
/// Database whose collections the worker keeps embedded.
static AUTO_REFRESH_DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
/// Role the worker connects as (needs LOGIN); each collection's batch runs as the collection's
/// owner. Unset, the worker does not run.
static AUTO_REFRESH_ROLE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// Seconds the worker sleeps between looks at the queues.
static AUTO_REFRESH_NAPTIME: GucSetting<i32> = GucSetting::<i32>::new(10);

pub fn init() {
    // Postmaster settings can only be defined while the postmaster loads the library; a
    // backend that loads it later (no shared_preload_libraries) has no worker to configure.
    // SAFETY: a plain read of a postmaster global during library load.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        GucRegistry::define_bool_guc(
            c"pg_clip.auto_refresh",
            c"Run a background worker that embeds queued rows of every collection.",
            c"Needs shared_preload_libraries = 'pg_clip'; rows are queued by the collections' triggers.",
            &AUTO_REFRESH,
            GucContext::Postmaster,
            GucFlags::default(),
        );
        GucRegistry::define_string_guc(
            c"pg_clip.auto_refresh_role",
            c"Role the auto-refresh worker connects as (needs LOGIN; unset, the worker does not run).",
            c"Each collection's batches run as the role that owns the collection, in a security-restricted operation.",
            &AUTO_REFRESH_ROLE,
            GucContext::Postmaster,
            GucFlags::default(),
        );
        GucRegistry::define_string_guc(
            c"pg_clip.auto_refresh_database",
            c"Database whose collections the auto-refresh worker keeps embedded.",
            c"",
            &AUTO_REFRESH_DATABASE,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    GucRegistry::define_int_guc(
        c"pg_clip.auto_refresh_naptime",
        c"Seconds between the auto-refresh worker's looks at the queues.",
        c"",
        &AUTO_REFRESH_NAPTIME,
        1,
        3600,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"pg_clip.inference",
        c"Where models run: auto, service (the shared pg_clip inference worker) or local (this backend).",
        c"auto uses the service when pg_clip is in shared_preload_libraries, else this backend.",
        &INFERENCE,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_clip.inference_max_batch",
        c"The most images or texts the inference service runs in one model call.",
        c"Concurrent callers' requests for one model are batched up to this.",
        &INFERENCE_MAX_BATCH,
        1,
        4096,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_clip.inference_batch_wait",
        c"How long the inference service lets a batch that is not full wait for more requests.",
        c"0 runs what is queued at once (CPU); a few milliseconds can pay on a GPU.",
        &INFERENCE_BATCH_WAIT,
        0,
        1000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pg_clip.inference_max_queued",
        c"The most bulk images or texts queued per model in the inference service; senders wait beyond it.",
        c"",
        &INFERENCE_MAX_QUEUED,
        1,
        1 << 20,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_clip.inference_connect_timeout",
        c"Seconds a call waits for the inference service to accept it (while the service starts).",
        c"",
        &INFERENCE_CONNECT_TIMEOUT,
        0,
        3600,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"pg_clip.model",
        c"Default CLIP model (a name in clip.model).",
        c"Used by clip.embed_* when their model argument is NULL.",
        &MODEL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_clip.onnxruntime_library",
        c"Path of the ONNX Runtime shared library (libonnxruntime.so).",
        c"Loaded once per backend on first use; changing it affects new sessions only.",
        &ONNXRUNTIME_LIBRARY,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_clip.model_dir",
        c"Folder that relative model folders are resolved against.",
        c"clip.register_model(name, 'ViT-B-32__openai') looks in this folder.",
        &MODEL_DIR,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_clip.image_root",
        c"Folder that image paths in text columns are resolved under.",
        c"Paths leaving it (.., absolute paths elsewhere, symlinks pointing out) are refused.",
        &IMAGE_ROOT,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"pg_clip.device",
        c"Where CLIP inference runs: cpu, cuda or auto.",
        c"auto uses CUDA when the ONNX Runtime library has the CUDA provider and a GPU is present, else CPU with a NOTICE; cuda without one is an ERROR.",
        &DEVICE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_clip.intra_op_threads",
        c"ONNX Runtime threads per model session (0 = one per physical core).",
        c"",
        &INTRA_OP_THREADS,
        0,
        1024,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_clip.batch_size",
        c"Images or texts per model call on bulk paths.",
        c"",
        &BATCH_SIZE,
        1,
        runtime::MAX_BATCH_SIZE as i32,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_clip.thumbnail_size",
        c"Longer side in pixels of the JPEG thumbnails refresh stores in clip.thumbnail; 0: none.",
        c"Made from the decode that embeds each image; 1 to 15 mean 16.",
        &THUMBNAIL_SIZE,
        0,
        pg_clip_core::thumbnail::MAX_SIZE as i32,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_clip.max_image_pixels",
        c"Largest image (width x height) that is decoded.",
        c"Checked from the image header before decoding, so a decompression bomb costs nothing.",
        &MAX_IMAGE_PIXELS,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_clip.max_image_memory",
        c"Memory one backend may use to decode and resize images (all its decoding threads together).",
        c"An image whose decoded, converted and resized buffers need more is refused before decoding.",
        &MAX_IMAGE_MEMORY,
        16,
        1 << 20,
        GucContext::Suset,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_int_guc(
        c"pg_clip.identify_ef_search",
        c"hnsw.ef_search used by clip.identify (raised to the number of candidates it needs).",
        c"Higher finds the true nearest reference more often and costs more time.",
        &IDENTIFY_EF_SEARCH,
        1,
        1000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_clip.identify_exact_limit",
        c"Reference sets with fewer references than this are searched exactly rather than through HNSW.",
        c"0 always uses the index.",
        &IDENTIFY_EXACT_LIMIT,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_clip.identify_projection",
        c"clip.identify, identify_many and verify_reference_set answer through the set's projection head when it has one.",
        c"off: without it, to compare (the result's head column is NULL).",
        &IDENTIFY_PROJECTION,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_clip.refit_every",
        c"clip.label refits the classifier after this many new labels since its last fit (0: never).",
        c"",
        &REFIT_EVERY,
        0,
        1_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_clip.identify_variants",
        c"Comma-separated file-name suffixes that clip.label_from_filename splits off as the variant.",
        c"",
        &IDENTIFY_VARIANTS,
        GucContext::Userset,
        GucFlags::default(),
    );
    // SAFETY: called from _PG_init, in the postmaster or a backend's main thread.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"pg_clip".as_ptr()) };
}

fn string(s: &GucSetting<Option<CString>>) -> Option<String> {
    s.get().map(|c| c.to_string_lossy().into_owned()).filter(|s| !s.is_empty())
}

pub fn inference() -> InferenceSetting {
    INFERENCE.get()
}

pub fn inference_service_config(library: String) -> pg_clip_core::service::Config {
    pg_clip_core::service::Config {
        library,
        device: device(),
        threads: intra_op_threads(),
        max_batch: INFERENCE_MAX_BATCH.get() as usize,
        batch_wait: std::time::Duration::from_millis(INFERENCE_BATCH_WAIT.get() as u64),
        max_queued: INFERENCE_MAX_QUEUED.get() as usize,
    }
}

pub fn inference_connect_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(INFERENCE_CONNECT_TIMEOUT.get() as u64)
}

pub fn auto_refresh() -> bool {
    AUTO_REFRESH.get()
}

pub fn auto_refresh_database() -> String {
    string(&AUTO_REFRESH_DATABASE).unwrap_or_else(|| "postgres".into())
}

pub fn auto_refresh_role() -> Option<String> {
    string(&AUTO_REFRESH_ROLE)
}

pub fn auto_refresh_naptime() -> u64 {
    AUTO_REFRESH_NAPTIME.get().max(1) as u64
}

pub fn model() -> Option<String> {
    string(&MODEL)
}

pub fn onnxruntime_library() -> Option<String> {
    string(&ONNXRUNTIME_LIBRARY)
}

pub fn model_dir() -> Option<String> {
    string(&MODEL_DIR)
}

pub fn image_root() -> Option<String> {
    string(&IMAGE_ROOT)
}

pub fn device() -> Device {
    match DEVICE.get() {
        DeviceSetting::Cpu => Device::Cpu,
        DeviceSetting::Cuda => Device::Cuda,
        DeviceSetting::Auto => Device::Auto,
    }
}

pub fn intra_op_threads() -> usize {
    INTRA_OP_THREADS.get().max(0) as usize
}

pub fn batch_size() -> usize {
    BATCH_SIZE.get().max(1) as usize
}

/// What one image may cost, from pg_clip.max_image_pixels and pg_clip.max_image_memory.
/// The thumbnail size refresh makes, if any.
pub fn thumbnail_size() -> Option<u32> {
    match THUMBNAIL_SIZE.get() {
        0 => None,
        n => Some((n as u32).max(16)),
    }
}

pub fn image_limits() -> ImageLimits {
    ImageLimits {
        max_pixels: MAX_IMAGE_PIXELS.get().max(1) as u64,
        max_bytes: (MAX_IMAGE_MEMORY.get().max(16) as u64) << 20,
    }
}

pub fn identify_variants() -> String {
    IDENTIFY_VARIANTS.get().map(|c| c.to_string_lossy().into_owned()).unwrap_or_default()
}

/// clip._setting(name): a pg_clip setting as text, its default included. The SQL functions read
/// settings through it, so that each default is written once, above: calling it loads this
/// library, which defines the settings (`current_setting` alone sees nothing in a session that
/// has not loaded pg_clip yet). Only pg_clip's own settings.
#[pg_extern(create_or_replace, stable, parallel_safe, strict, name = "_setting")]
fn setting(name: &str) -> Option<String> {
    if !name.starts_with("pg_clip.") {
        crate::errors::report(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("\"{name}\" is not a pg_clip setting"),
            None,
            None,
        );
    }
    let c = CString::new(name).ok()?;
    // SAFETY: a NUL-terminated name; missing_ok, so an unknown name is NULL, not an ERROR. The
    // result is palloc'd in the current memory context (or NULL), read before it is freed.
    let value = unsafe { pg_sys::GetConfigOptionByName(c.as_ptr(), std::ptr::null_mut(), true) };
    if value.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated string from PostgreSQL (above).
    Some(unsafe { std::ffi::CStr::from_ptr(value) }.to_string_lossy().into_owned())
}
