//! The connection pool: a few connections, each with the statement timeout, all opened and
//! warmed at start-up (a model loaded in a session without the inference service is loaded
//! then, not on a user's first request).

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::Config;

pub fn pool(cfg: &Config) -> Result<Pool, String> {
    let mut pg = tokio_postgres::Config::from_str(&cfg.database).map_err(|e| format!("--database: {e}"))?;
    pg.application_name("pg_clip-web");
    pg.options(format!("-c statement_timeout={}", cfg.statement_timeout.as_millis()));
    let manager = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(cfg.pool_size)
        .wait_timeout(Some(cfg.pool_wait))
        .create_timeout(Some(std::time::Duration::from_secs(10)))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| format!("connection pool: {e}"))
}

/// Open every connection of the pool and run a text through the first registered model on
/// each. An error is returned for the first connection that fails; a model that cannot run
/// is only reported (the health check says so too).
pub async fn warm(pool: &Pool) -> Result<Vec<String>, String> {
    let mut held = Vec::new();
    let mut notes = Vec::new();
    for _ in 0..pool.status().max_size {
        let c = pool.get().await.map_err(|e| format!("cannot connect to the database: {e}"))?;
        let model =
            "SELECT clip.embed_text('warm-up', m.name) IS NOT NULL FROM clip.model m ORDER BY m.name LIMIT 1";
        if let Err(e) = c.query(model, &[]).await {
            notes.push(format!(
                "warm-up: {}",
                e.as_db_error().map_or(e.to_string(), |d| d.message().to_string())
            ));
        }
        held.push(c);
    }
    notes.dedup();
    Ok(notes)
}
