//! pg_clip: CLIP embeddings inside PostgreSQL. The logic lives in the `pg_clip_core` crate
//! (core/); this crate is the Postgres glue: settings, the `vector` return type, the model
//! registry with its session cache, and the SQL functions in `api/`.

use pgrx::prelude::*;

mod api;
mod errors;
mod gucs;
mod models;
mod service;
mod vector;
mod worker;

::pgrx::pg_module_magic!(name, version);

// sql/README.md: run-once schema files (frozen once released), then re-runnable ones (CREATE OR
// REPLACE, and every #[pg_extern] is create_or_replace), which each upgrade script runs again.
extension_sql_file!("../sql/schema/0.1.0.sql", name = "schema_0_1_0", bootstrap);
extension_sql_file!("../sql/schema/0.2.0.sql", name = "schema_0_2_0", requires = ["schema_0_1_0"]);
extension_sql_file!("../sql/collections.sql", name = "collections", requires = ["schema_0_2_0"]);
// (clip._calibration, a SQL function, calls the Rust _clip_calibration when it is created)
extension_sql_file!(
    "../sql/vocabulary.sql",
    name = "vocabulary",
    requires = ["collections", api::vocab::_clip_calibration]
);
// (a chain: pgrx orders files that require the same one differently from build to build)
extension_sql_file!("../sql/identify.sql", name = "identify", requires = ["vocabulary"]);
extension_sql_file!("../sql/learn.sql", name = "learn", requires = ["identify"]);
extension_sql_file!("../sql/lifecycle.sql", name = "lifecycle", requires = ["learn"]);
extension_sql_file!("../sql/grants.sql", name = "grants", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    // SAFETY: a plain read of a postmaster global during library load.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        models::init_shared_memory();
        service::register();
        if gucs::auto_refresh() {
            worker::register();
        }
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            concat!(
                "pg_clip.onnxruntime_library = '",
                env!("CARGO_MANIFEST_DIR"),
                "/.deps/onnxruntime/libonnxruntime.so.1.32.0'"
            ),
            concat!("pg_clip.model_dir = '", env!("CARGO_MANIFEST_DIR"), "/models'"),
        ]
    }
}
