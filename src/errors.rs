//! The edge where a core error becomes a Postgres ERROR: SQLSTATE, message, detail, hint.

use pg_clip_core::{ClipError, ErrorKind, Interrupt};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode as Code;

/// The SQLSTATE of each kind of core error, as the code pgrx raises and as text (for
/// clip.try_embed_images, which reports errors as data).
pub fn sqlstate(kind: ErrorKind) -> (Code, &'static str) {
    match kind {
        ErrorKind::InvalidImage | ErrorKind::InvalidText => (Code::ERRCODE_INVALID_PARAMETER_VALUE, "22023"),
        ErrorKind::ImageTooLarge => (Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED, "54000"),
        ErrorKind::InvalidModel => (Code::ERRCODE_CONFIG_FILE_ERROR, "F0000"),
        ErrorKind::Runtime => (Code::ERRCODE_SYSTEM_ERROR, "58000"),
        ErrorKind::DeviceUnavailable => (Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "55000"),
        ErrorKind::Inference => (Code::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, "38000"),
        ErrorKind::PathNotAllowed => (Code::ERRCODE_INSUFFICIENT_PRIVILEGE, "42501"),
        ErrorKind::FileUnreadable => (Code::ERRCODE_UNDEFINED_FILE, "58P01"),
        ErrorKind::OutOfMemory => (Code::ERRCODE_OUT_OF_MEMORY, "53200"),
        ErrorKind::Cancelled => (Code::ERRCODE_QUERY_CANCELED, "57014"),
        ErrorKind::ServiceUnavailable => (Code::ERRCODE_CONNECTION_FAILURE, "08006"),
        ErrorKind::ModelChanged => (Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "55000"),
    }
}

/// Raise `e` as an ERROR; never returns.
pub fn raise(e: ClipError) -> ! {
    report(sqlstate(e.kind).0, e.message, e.detail, e.hint)
}

pub fn report(code: Code, message: String, detail: Option<String>, hint: Option<String>) -> ! {
    let mut r = ErrorReport::new(code, message, "pg_clip");
    if let Some(d) = detail {
        r = r.set_detail(d);
    }
    if let Some(h) = hint {
        r = r.set_hint(h);
    }
    r.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// A WARNING with a hint, to the client and the log; returns.
pub fn warn(message: String, hint: String) {
    ErrorReport::new(Code::ERRCODE_WARNING, message, "pg_clip").set_hint(hint).report(PgLogLevel::WARNING);
}

/// True when a cancel (pg_cancel_backend, statement_timeout) or a termination waits for this
/// backend. Only reads the flags the signal handlers set, so the core's loops and threads may
/// poll it; the ERROR itself is raised on the backend's thread by [`raise_core`]. (Not
/// InterruptPending: it is also set for requests that end nothing, such as a barrier.)
fn interrupt_pending() -> bool {
    // SAFETY: reads of sig_atomic_t flags that signal handlers write; no Postgres call.
    unsafe {
        std::ptr::read_volatile(std::ptr::addr_of!(pg_sys::QueryCancelPending)) != 0
            || std::ptr::read_volatile(std::ptr::addr_of!(pg_sys::ProcDiePending)) != 0
    }
}

/// What the core's long loops poll.
pub const INTERRUPT: Interrupt = Interrupt(interrupt_pending);

/// A core result that stopped for [`INTERRUPT`] raises the cancel here, on the
/// backend's thread: Postgres raises it (57014) or ends the backend; had it nothing to raise
/// after all, the stop is still an ERROR. Any other error raises as it is.
pub fn raise_core(e: ClipError) -> ! {
    if e.kind == ErrorKind::Cancelled {
        check_for_interrupts!();
    }
    raise(e)
}

/// Raise the cancel when the core stopped a batch for it (its elements say Cancelled).
pub fn stop_if_cancelled<T>(results: &[pg_clip_core::Result<T>]) {
    if let Some(Err(e)) = results.iter().find(|r| matches!(r, Err(e) if e.kind == ErrorKind::Cancelled)) {
        raise_core(e.clone())
    }
}

/// Unwrap a core result or raise it.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for pg_clip_core::Result<T> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| raise_core(e))
    }
}
