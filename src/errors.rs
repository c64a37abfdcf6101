//! The edge where a core error becomes a Postgres ERROR: SQLSTATE, message, detail, hint.

use pg_clip_core::{ClipError, ErrorKind};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode as Code;

pub fn sqlstate(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidImage | ErrorKind::InvalidText => Code::ERRCODE_INVALID_PARAMETER_VALUE,
        ErrorKind::ImageTooLarge => Code::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        ErrorKind::InvalidModel => Code::ERRCODE_CONFIG_FILE_ERROR,
        ErrorKind::Runtime => Code::ERRCODE_SYSTEM_ERROR,
        ErrorKind::DeviceUnavailable => Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        ErrorKind::Inference => Code::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
    }
}

/// Raise `e` as an ERROR; never returns.
pub fn raise(e: ClipError) -> ! {
    report(sqlstate(e.kind), e.message, e.detail, e.hint)
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

/// Unwrap a core result or raise it.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for pg_clip_core::Result<T> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| raise(e))
    }
}
