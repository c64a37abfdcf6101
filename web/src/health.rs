//! Liveness and readiness: the process, then the database, the extension, each model (a text
//! through it: its files still have the registered stamp) and each reference set.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::Shared;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Alive {
    pub status: String,
}

/// The process is alive (no database call).
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Alive)))]
pub async fn healthz() -> Json<Alive> {
    Json(Alive { status: "ok".into() })
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelHealth {
    pub name: String,
    pub stamp: String,
    /// Whether a text embeds (the files are the registered ones and the runtime loads)
    pub ok: bool,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SetHealth {
    pub name: String,
    pub model: String,
    pub embedded: i64,
    /// Rows waiting for a refresh
    pub queued: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// ready, or not_ready with the reason in `error`
    pub status: String,
    pub database: bool,
    pub extension_version: Option<String>,
    pub models: Vec<ModelHealth>,
    pub sets: Vec<SetHealth>,
    pub error: Option<String>,
}

async fn check(s: &crate::api::AppState) -> Result<Health, String> {
    let c = s.pool.get().await.map_err(|e| format!("no database connection: {e}"))?;
    let msg = |e: tokio_postgres::Error| e.as_db_error().map_or(e.to_string(), |d| d.message().to_string());
    let version: Option<String> = c
        .query_opt("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_clip'", &[])
        .await
        .map_err(msg)?
        .map(|r| r.get(0));
    let mut h = Health {
        status: "ready".into(),
        database: true,
        extension_version: version.clone(),
        models: Vec::new(),
        sets: Vec::new(),
        error: None,
    };
    if version.is_none() {
        h.error = Some("the pg_clip extension is not installed in this database".into());
        return Ok(h);
    }
    for r in c.query("SELECT name, stamp FROM clip.model ORDER BY name", &[]).await.map_err(msg)? {
        let name: String = r.get(0);
        let e = c.query_one("SELECT clip.embed_text('health', $1) IS NOT NULL", &[&name]).await.err();
        h.models.push(ModelHealth { name, stamp: r.get(1), ok: e.is_none(), error: e.map(msg) });
    }
    let sets = c
        .query(
            "SELECT r.name, c.model,
                    (SELECT count(*) FROM clip.embedding e WHERE e.collection = r.name AND e.model = c.model),
                    (SELECT count(*) FROM clip.refresh_queue q WHERE q.collection = r.name)
             FROM clip.reference_set r JOIN clip.collection c ON c.name = r.name ORDER BY r.name",
            &[],
        )
        .await
        .map_err(msg)?;
    h.sets = sets
        .iter()
        .map(|r| SetHealth { name: r.get(0), model: r.get(1), embedded: r.get(2), queued: r.get(3) })
        .collect();
    if h.models.is_empty() {
        h.error = Some("no model is registered (clip.register_model)".into());
    } else if let Some(m) = h.models.iter().find(|m| !m.ok) {
        h.error = Some(format!("model \"{}\" cannot run: {}", m.name, m.error.as_deref().unwrap_or("")));
    }
    Ok(h)
}

/// Ready to serve: the database answers, pg_clip is installed, every model runs. 503 otherwise.
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Health), (status = 503, body = Health, headers(("Retry-After" = u32, description = "seconds")))))]
pub async fn readyz(axum::extract::State(s): Shared) -> Response {
    let h = check(&s).await.unwrap_or_else(|e| Health {
        status: "not_ready".into(),
        database: false,
        extension_version: None,
        models: Vec::new(),
        sets: Vec::new(),
        error: Some(e),
    });
    if h.error.is_some() {
        let h = Health { status: "not_ready".into(), ..h };
        return (StatusCode::SERVICE_UNAVAILABLE, [(axum::http::header::RETRY_AFTER, "5")], Json(h))
            .into_response();
    }
    Json(h).into_response()
}
