//! `pg_clip-web`: see `--help` and docs/web.md.

use std::sync::Arc;

use pg_clip_web::config::{Config, USAGE};
use pg_clip_web::{api, app, db};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    let fail = |m: String| -> ! {
        eprintln!("pg_clip-web: {m}");
        std::process::exit(2)
    };
    let cfg = Config::parse(&args, &|k| std::env::var(k).ok()).unwrap_or_else(|e| fail(e));
    let pool = db::pool(&cfg).unwrap_or_else(|e| fail(e));
    match db::warm(&pool).await {
        Ok(notes) => notes.iter().for_each(|n| eprintln!("pg_clip-web: {n}")),
        Err(e) => fail(e),
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .unwrap_or_else(|e| fail(format!("{}: {e}", cfg.listen)));
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    println!("pg_clip web: http://{addr}/  ({} database connections)", cfg.pool_size);
    let router = app(Arc::new(api::AppState { pool }), cfg.max_body);
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
        fail(format!("server: {e}"));
    }
}
