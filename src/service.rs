//! The shared inference service in Postgres: the "pg_clip inference" background worker that
//! runs it (pg_clip_core::service), and a backend's side of it: which path a call takes, the
//! one connection per backend, and waiting on the latch and the socket together.

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pg_clip_core::service::{self, Client, SOCKET_NAME};
use pg_clip_core::{ClipError, ErrorKind};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;

use crate::errors::{self, OrRaise};
use crate::gucs::{self, InferenceSetting};

/// Whether this process descends from a postmaster that preloaded pg_clip (and so runs the
/// service worker).
static PRELOADED: AtomicBool = AtomicBool::new(false);
/// Whether this backend said that it runs models itself (once per backend).
static LOCAL_NOTICE: AtomicBool = AtomicBool::new(false);

thread_local! {
    static CLIENT: RefCell<Option<Client>> = const { RefCell::new(None) };
}

/// From _PG_init while shared_preload_libraries is processed.
pub fn register() {
    PRELOADED.store(true, Ordering::Relaxed);
    BackgroundWorkerBuilder::new("pg_clip inference")
        .set_type("pg_clip inference")
        .set_function("pg_clip_inference_main")
        .set_library("pg_clip")
        // (connected to no database, as the logical replication launcher: it is listed in
        // pg_stat_activity, and pg_terminate_backend reaches it)
        .enable_spi_access()
        // (a crash or a panicked inference thread: the postmaster starts it again)
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

/// True when this call's model runs in the service, false when in this backend.
pub fn use_service() -> bool {
    let preloaded = PRELOADED.load(Ordering::Relaxed);
    match gucs::inference() {
        InferenceSetting::Local => false,
        InferenceSetting::Service if !preloaded => errors::report(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pg_clip.inference is service, but pg_clip is not in shared_preload_libraries".into(),
            None,
            Some("Add pg_clip to shared_preload_libraries and restart the server, or set pg_clip.inference = auto.".into()),
        ),
        InferenceSetting::Service => true,
        InferenceSetting::Auto => {
            if !preloaded && !LOCAL_NOTICE.swap(true, Ordering::Relaxed) {
                ereport!(
                    PgLogLevel::NOTICE,
                    PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
                    "pg_clip runs models in this session: it is not in shared_preload_libraries",
                    "With shared_preload_libraries = 'pg_clip', one inference service holds each model for all sessions."
                );
            }
            preloaded
        }
    }
}

/// Run `f` with this backend's connection to the service, connecting first if needed. A
/// broken connection is dropped (the next call connects again) and raised.
pub fn with_client<T>(f: impl FnOnce(&mut Client) -> pg_clip_core::Result<T>) -> T {
    CLIENT.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(connect());
        }
        let out = f(slot.as_mut().expect("connected"));
        if matches!(&out, Err(e) if e.kind == ErrorKind::ServiceUnavailable) {
            *slot = None;
        }
        drop(slot);
        out.or_raise()
    })
}

/// Connect, waiting (cancellably, up to pg_clip.inference_connect_timeout) while the service
/// starts. Every server process runs in the data directory, where the socket is.
fn connect() -> Client {
    let deadline = Instant::now() + gucs::inference_connect_timeout();
    loop {
        match Client::connect(Path::new(SOCKET_NAME)) {
            Ok(c) => return c,
            Err(e) if Instant::now() >= deadline => errors::raise(
                ClipError::new(
                    ErrorKind::ServiceUnavailable,
                    format!("the pg_clip inference service is not running ({SOCKET_NAME} in the data directory: {e})"),
                )
                .hint("It starts with the server when pg_clip is in shared_preload_libraries; the server log says why it is not running (lines starting \"pg_clip inference\"). pg_clip.inference = local runs models in each session instead."),
            ),
            Err(_) => {
                // SAFETY: this backend's latch, on its main thread.
                unsafe {
                    pg_sys::WaitLatch(
                        pg_sys::MyLatch,
                        (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                        50,
                        pg_sys::PG_WAIT_EXTENSION,
                    );
                    pg_sys::ResetLatch(pg_sys::MyLatch);
                }
                check_for_interrupts!();
            }
        }
    }
}

/// A backend's wait for the service: its latch and the socket together, so a cancel, a
/// statement timeout or a termination ends it at once (check_for_interrupts raises, and the
/// client abandons the request as the ERROR unwinds).
pub fn latch_wait(fd: RawFd, write: bool) -> pg_clip_core::Result<()> {
    let mut events =
        pg_sys::WL_LATCH_SET | pg_sys::WL_SOCKET_READABLE | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH;
    if write {
        events |= pg_sys::WL_SOCKET_WRITEABLE;
    }
    // SAFETY: this backend's latch and an open socket, on the backend's main thread.
    unsafe {
        pg_sys::WaitLatchOrSocket(pg_sys::MyLatch, events as i32, fd, 1000, pg_sys::PG_WAIT_EXTENSION);
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    check_for_interrupts!();
    Ok(())
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_clip_inference_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    let Some(library) = gucs::onnxruntime_library() else {
        log!("pg_clip inference: pg_clip.onnxruntime_library is not set; the service stops (set it and restart the server)");
        // SAFETY: exit code 0 retires this background worker for good.
        unsafe { pg_sys::proc_exit(0) };
    };
    let handle = match service::start(Path::new(SOCKET_NAME), gucs::inference_service_config(library.clone()))
    {
        Ok(h) => h,
        Err(e) => {
            log!("pg_clip inference: cannot listen on {SOCKET_NAME} in the data directory: {e}");
            // SAFETY: exit code 1: the postmaster starts the worker again after its restart time.
            unsafe { pg_sys::proc_exit(1) };
        }
    };
    log!("pg_clip inference: serving on {SOCKET_NAME} in the data directory");
    while BackgroundWorker::wait_latch(Some(Duration::from_millis(200))) {
        for line in handle.take_log() {
            log!("pg_clip inference: {line}");
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a background worker to re-read its configuration.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            handle.reconfigure(gucs::inference_service_config(library.clone()));
        }
        if let Some(why) = handle.fatal() {
            log!("pg_clip inference: {why}; the service restarts");
            handle.stop();
            // SAFETY: as above: restarted by the postmaster.
            unsafe { pg_sys::proc_exit(1) };
        }
    }
    handle.stop();
    // SIGTERM: from a shutdown (no restart then) or pg_terminate_backend (restarted).
    // SAFETY: as above.
    unsafe { pg_sys::proc_exit(1) };
}

/// The shared inference service's state: one row per loaded model and tower (none when no
/// model is loaded yet); no rows when this session does not use the service.
#[pg_extern(create_or_replace, volatile)]
fn inference_status() -> TableIterator<
    'static,
    (
        name!(pid, i32),
        name!(connections, i64),
        name!(model, Option<String>),
        name!(device, Option<String>),
        name!(tower, Option<String>),
        name!(queued, Option<i64>),
        name!(batches, Option<i64>),
        name!(items, Option<i64>),
        name!(mean_batch, Option<f64>),
        name!(items_per_second, Option<f64>),
        name!(load_seconds, Option<f64>),
        name!(last_error, Option<String>),
    ),
> {
    if !use_service() {
        return TableIterator::new(Vec::new());
    }
    let json = with_client(|c| c.status(&mut latch_wait));
    let s: serde_json::Value = serde_json::from_str(&json).expect("the service writes JSON");
    let pid = s["pid"].as_i64().unwrap_or(0) as i32;
    let connections = s["connections"].as_i64().unwrap_or(0);
    let mut rows = Vec::new();
    for m in s["models"].as_array().into_iter().flatten() {
        for tower in ["visual", "text"] {
            let t = &m[tower];
            rows.push((
                pid,
                connections,
                m["model"].as_str().map(String::from),
                m["device"].as_str().map(String::from),
                Some(tower.to_string()),
                t["queued"].as_i64(),
                t["batches"].as_i64(),
                t["items"].as_i64(),
                t["mean_batch"].as_f64(),
                t["items_per_s"].as_f64(),
                m["load_s"].as_f64(),
                m["last_error"].as_str().map(String::from),
            ));
        }
    }
    TableIterator::new(rows)
}
