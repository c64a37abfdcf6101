//! Errors as RFC 9457 problem details (`application/problem+json`), carrying the SQLSTATE of a
//! database error. The one home of the SQLSTATE -> HTTP status rule: a bad input is never a 500.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` or `urn:pg_clip:sqlstate:<code>`)
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Seconds to wait before trying again (also the Retry-After header)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u32>,
}

/// The error answers every API route may give, as problem documents (for the OpenAPI
/// description: a client reads the status and the document).
#[allow(dead_code)] // (only described, never built: handlers answer with Problem)
#[derive(utoipa::IntoResponses)]
pub enum ProblemResponses {
    #[response(
        status = 400,
        description = "a malformed request: query string, path or JSON body",
        content_type = "application/problem+json"
    )]
    BadRequest(#[to_schema] Problem),
    #[response(
        status = 403,
        description = "the database role may not do this",
        content_type = "application/problem+json"
    )]
    Forbidden(#[to_schema] Problem),
    #[response(
        status = 404,
        description = "no such collection, reference set, classifier, model or row",
        content_type = "application/problem+json"
    )]
    NotFound(#[to_schema] Problem),
    #[response(
        status = 409,
        description = "the labels changed since (an undo)",
        content_type = "application/problem+json"
    )]
    Conflict(#[to_schema] Problem),
    #[response(
        status = 413,
        description = "too large a body, or an image with too many pixels",
        content_type = "application/problem+json"
    )]
    TooLarge(#[to_schema] Problem),
    #[response(
        status = 415,
        description = "a JSON route called without Content-Type: application/json",
        content_type = "application/problem+json"
    )]
    UnsupportedMediaType(#[to_schema] Problem),
    #[response(
        status = 422,
        description = "a bad image or argument",
        content_type = "application/problem+json"
    )]
    Unprocessable(#[to_schema] Problem),
    #[response(
        status = 503,
        description = "the database, the model or its library is not available now (see Retry-After)",
        content_type = "application/problem+json"
    )]
    Unavailable(#[to_schema] Problem),
    #[response(
        status = 504,
        description = "the statement timeout ended the request",
        content_type = "application/problem+json"
    )]
    Timeout(#[to_schema] Problem),
}

/// What a request was doing when the database refused it: the same SQLSTATE can mean a
/// conflict with other labels (409) or a model that cannot run now (503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doing {
    Model,
    Labels,
}

/// The HTTP status of a SQLSTATE.
pub fn status_of(sqlstate: &str, doing: Doing) -> StatusCode {
    match sqlstate {
        "54000" => StatusCode::PAYLOAD_TOO_LARGE,
        "42704" | "P0002" | "42P01" | "42883" => StatusCode::NOT_FOUND,
        "42501" => StatusCode::FORBIDDEN,
        "57014" => StatusCode::GATEWAY_TIMEOUT,
        "55000" if doing == Doing::Labels => StatusCode::CONFLICT,
        "55000" | "58000" | "58P01" | "F0000" | "38000" | "53200" | "40001" | "40P01" | "57P01" => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        s if s.starts_with("08") => StatusCode::SERVICE_UNAVAILABLE,
        // data exceptions (a bad image, a bad argument) and integrity violations
        s if s.starts_with("22") || s.starts_with("23") => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
            sqlstate: None,
            hint: None,
            retry_after: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn unavailable(detail: impl Into<String>, retry_after: u32) -> Self {
        Problem { retry_after: Some(retry_after), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, detail) }
    }

    /// A database error: its SQLSTATE decides the status; a lost connection is a 503.
    pub fn db(e: &tokio_postgres::Error, doing: Doing) -> Self {
        match e.as_db_error() {
            Some(db) => {
                let code = db.code().code();
                let status = status_of(code, doing);
                let mut p = Self::new(status, db.message());
                p.kind = format!("urn:pg_clip:sqlstate:{code}");
                p.sqlstate = Some(code.to_string());
                p.hint = db.hint().map(str::to_string);
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    p.retry_after = Some(1);
                }
                p
            }
            None => Self::unavailable(format!("the database connection failed: {e}"), 1),
        }
    }

    /// What `map_err` takes for a database call made while `doing`.
    pub fn of_db(doing: Doing) -> impl Fn(tokio_postgres::Error) -> Self {
        move |e| Self::db(&e, doing)
    }

    pub fn pool(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => Self::db(&e, Doing::Model),
            deadpool_postgres::PoolError::Timeout(_) => {
                Self::unavailable("every database connection is busy; try again shortly", 1)
            }
            other => Self::unavailable(format!("no database connection: {other}"), 1),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry = self.retry_after;
        let mut r = (status, serde_json::to_string(&self).unwrap_or_default()).into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(s) = retry {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

pub type Result<T> = std::result::Result<T, Problem>;

// A malformed query string, path or JSON body is a problem document too (axum's own rejections
// are plain text): the extractors below are axum's, with that rejection.
macro_rules! rejection {
    ($($t:ty),*) => {$(
        impl From<$t> for Problem {
            fn from(r: $t) -> Self {
                Problem::new(r.status(), r.body_text())
            }
        }
    )*};
}
rejection!(JsonRejection, PathRejection, QueryRejection);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Problem))]
pub struct Query<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Problem))]
pub struct Path<T>(pub T);

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(Problem))]
pub struct Json<T>(pub T);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_is_never_a_server_error() {
        for code in ["22023", "22P02", "22003", "23505", "54000", "42704", "P0002", "42501", "57014"] {
            assert!(status_of(code, Doing::Model).is_client_error() || code == "57014", "{code}");
        }
        assert_eq!(status_of("22023", Doing::Model), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status_of("54000", Doing::Model), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(status_of("57014", Doing::Model), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(status_of("55000", Doing::Model), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of("55000", Doing::Labels), StatusCode::CONFLICT);
        assert_eq!(status_of("08006", Doing::Model), StatusCode::SERVICE_UNAVAILABLE);
    }
}
