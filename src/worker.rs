//! The auto-refresh background worker: with `shared_preload_libraries = 'pg_clip'` and
//! `pg_clip.auto_refresh = on`, it wakes every `pg_clip.auto_refresh_naptime` seconds and embeds
//! the rows queued by the collections' triggers in `pg_clip.auto_refresh_database`, one batch
//! per transaction (clip.refresh_queued), so inserted rows get embeddings without anyone calling
//! refresh and the user's INSERT never waits for a model.

use std::collections::HashSet;
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
    let Some(role) = gucs::auto_refresh_role() else {
        // not the bootstrap superuser by default: an administrator names the role
        log!("pg_clip auto-refresh: pg_clip.auto_refresh_role is not set; the worker stops (set it to a role with LOGIN and restart)");
        // SAFETY: exit code 0 retires this background worker for good.
        unsafe { pg_sys::proc_exit(0) };
    };
    BackgroundWorker::connect_worker_to_spi(Some(&db), Some(&role));
    log!("pg_clip auto-refresh: watching database \"{db}\" as role \"{role}\"");
    // the worker's own statements name everything in full; its session path holds nothing else
    BackgroundWorker::transaction(|| Spi::run("SET search_path = pg_catalog, pg_temp").ok());
    // collections whose last step failed: reported once, until a step succeeds again
    let mut broken: HashSet<String> = HashSet::new();
    while BackgroundWorker::wait_latch(Some(Duration::from_secs(gucs::auto_refresh_naptime()))) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a background worker to re-read its configuration.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        // rounds of one batch per collection, each in its own transaction, until no queue moved
        while !BackgroundWorker::sigterm_received() {
            let queued = BackgroundWorker::transaction(queued_collections);
            let mut handled = 0;
            for (name, owner) in queued {
                if BackgroundWorker::sigterm_received() {
                    break;
                }
                let (n, error) = BackgroundWorker::transaction(|| {
                    as_role(owner, || {
                        Spi::get_two_with_args::<i64, String>(
                            "SELECT handled, error FROM clip._worker_step($1, $2)",
                            &[name.as_str().into(), (gucs::batch_size() as i32).into()],
                        )
                    })
                })
                .unwrap_or((None, Some("the step could not run".into())));
                match error {
                    Some(e) => {
                        if broken.insert(name.clone()) {
                            warning!("pg_clip auto-refresh: skipping collection \"{name}\": {e}");
                        }
                    }
                    None => {
                        broken.remove(&name);
                    }
                }
                handled += n.unwrap_or(0);
            }
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

/// The collections with queued rows and the roles that own them, read as the extension's
/// owner (pg_clip's own bookkeeping; row security would hide other roles' queues from the
/// worker's role). Empty when pg_clip is not installed in the database.
fn queued_collections() -> Vec<(String, pg_sys::Oid)> {
    let Ok(Some(ext_owner)) =
        Spi::get_one::<pg_sys::Oid>("SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'pg_clip'")
    else {
        return Vec::new();
    };
    as_role(ext_owner, || {
        Spi::connect(|c| {
            let rows = c.select(
                "SELECT c.name, c.owner::oid FROM clip.collection c
                 WHERE EXISTS (SELECT 1 FROM clip.refresh_queue q WHERE q.collection = c.name)
                   AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = c.owner)
                 ORDER BY c.name",
                None,
                &[],
            )?;
            rows.map(|r| {
                Ok((
                    r.get::<String>(1)?.unwrap_or_default(),
                    r.get::<pg_sys::Oid>(2)?.unwrap_or(pg_sys::InvalidOid),
                ))
            })
            .collect::<Result<Vec<_>, spi::SpiError>>()
        })
        .unwrap_or_default()
    })
}

/// Run `f` as `role` in a security-restricted operation, as PostgreSQL runs maintenance of a
/// table as its owner (autovacuum, REFRESH MATERIALIZED VIEW): code that `f` reaches (a source
/// table's policies, defaults, triggers) runs with that role's rights, not the worker's, and may
/// not change roles or create temporary objects. An ERROR inside ends the transaction, which
/// restores the user id.
fn as_role<T>(role: pg_sys::Oid, f: impl FnOnce() -> T) -> T {
    let (mut old, mut ctx) = (pg_sys::InvalidOid, 0);
    // SAFETY: the backend's main thread, inside a transaction; the pair is restored below.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut old, &mut ctx);
        pg_sys::SetUserIdAndSecContext(
            role,
            ctx | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32 | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
    }
    let out = f();
    // SAFETY: as above.
    unsafe { pg_sys::SetUserIdAndSecContext(old, ctx) };
    out
}
