//! The auto-refresh background worker: with `shared_preload_libraries = 'pg_clip'` and
//! `pg_clip.auto_refresh = on`, it wakes every `pg_clip.auto_refresh_naptime` seconds and embeds
//! the rows queued by the collections' triggers in `pg_clip.auto_refresh_database`, one batch
//! per transaction (clip.refresh_queued), so inserted rows get embeddings without anyone calling
//! refresh and the user's INSERT never waits for a model.

use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;

use crate::gucs;

/// Called from _PG_init while shared_preload_libraries is being processed.
pub fn register() {
    BackgroundWorkerBuilder::new("pg_clip auto-refresh")
        .set_type("pg_clip auto-refresh")
        .set_function("pg_clip_auto_refresh_main")
        .set_library("pg_clip")
        .enable_spi_access()
        // an ERROR (say, the database does not exist yet) ends the worker; start it again later
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_clip_auto_refresh_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = gucs::auto_refresh_database();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    log!("pg_clip auto-refresh: watching database \"{db}\"");
    while BackgroundWorker::wait_latch(Some(Duration::from_secs(gucs::auto_refresh_naptime()))) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a background worker to re-read its configuration.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        // one batch per transaction, until every queue is empty or we are asked to stop
        while !BackgroundWorker::sigterm_received() {
            let handled = BackgroundWorker::transaction(|| {
                let installed = Spi::get_one::<bool>("SELECT to_regclass('clip.refresh_queue') IS NOT NULL")
                    .ok()
                    .flatten()
                    .unwrap_or(false);
                if !installed {
                    return 0;
                }
                Spi::get_one_with_args::<i64>(
                    "SELECT coalesce(sum(clip.refresh_queued(c.name, $1)), 0)::bigint FROM clip.collection c
                     WHERE EXISTS (SELECT 1 FROM clip.refresh_queue q WHERE q.collection = c.name)",
                    &[(gucs::batch_size() as i32).into()],
                )
                .ok()
                .flatten()
                .unwrap_or(0)
            });
            if handled == 0 {
                break;
            }
        }
    }
    // SIGTERM: from a shutdown (no restart then) or pg_terminate_backend. Exit code 1 asks the
    // postmaster to start the worker again after the restart time; 0 would retire it for good.
    // SAFETY: ends this background worker process the way Postgres expects.
    unsafe { pg_sys::proc_exit(1) };
}
