//! pg_clip web: pages to label, review and identify from a browser, and the HTTP API they use.
//! The server holds no model: every ML operation is a `clip.*` SQL call.

// utoipa's path macro names the query-parameter types by their full paths
#![allow(unused_qualifications)]
// a Problem (136 bytes) is returned by value on the error path of requests that wait on the
// network and the database: boxing it would buy nothing measurable
#![allow(clippy::result_large_err)]

pub mod api;
pub mod attributes;
pub mod config;
pub mod db;
pub mod health;
pub mod labels;
pub mod problem;
pub mod review;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use utoipa::OpenApi;

use crate::problem::Problem;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "pg_clip web",
        description = "Identification, images and labelling over pg_clip's SQL functions."
    ),
    paths(
        api::identify,
        api::identify_batch,
        api::image,
        api::thumbnail,
        api::reference,
        api::reference_thumbnail,
        labels::collections,
        labels::classifier,
        labels::next,
        labels::label,
        labels::undo,
        labels::history,
        health::healthz,
        health::readyz,
    ),
    components(schemas(Problem))
)]
pub struct ApiDoc;

/// The pages and their scripts, compiled into the binary (plain ES modules, no bundler).
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../assets/index.html")),
    ("label.html", "text/html; charset=utf-8", include_str!("../assets/label.html")),
    ("identify.html", "text/html; charset=utf-8", include_str!("../assets/identify.html")),
    ("review.html", "text/html; charset=utf-8", include_str!("../assets/review.html")),
    ("duplicates.html", "text/html; charset=utf-8", include_str!("../assets/duplicates.html")),
    ("attributes.html", "text/html; charset=utf-8", include_str!("../assets/attributes.html")),
    ("common.js", "text/javascript; charset=utf-8", include_str!("../assets/common.js")),
    ("label.js", "text/javascript; charset=utf-8", include_str!("../assets/label.js")),
    ("identify.js", "text/javascript; charset=utf-8", include_str!("../assets/identify.js")),
    ("review.js", "text/javascript; charset=utf-8", include_str!("../assets/review.js")),
    ("duplicates.js", "text/javascript; charset=utf-8", include_str!("../assets/duplicates.js")),
    ("attributes.js", "text/javascript; charset=utf-8", include_str!("../assets/attributes.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../assets/style.css")),
];

fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, mime, body)) => {
            ([(header::CONTENT_TYPE, *mime), (header::CACHE_CONTROL, "no-cache")], *body).into_response()
        }
        None => Problem::not_found(format!("no asset {name}")).into_response(),
    }
}

pub fn app(state: Arc<api::AppState>, max_body: usize) -> Router {
    let v1 = "/api/v1/collections/{collection}/classifiers/{classifier}";
    Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route("/label", get(|| async { asset("label.html") }))
        .route("/identify", get(|| async { asset("identify.html") }))
        .route("/review", get(|| async { asset("review.html") }))
        .route("/duplicates", get(|| async { asset("duplicates.html") }))
        .route("/attributes", get(|| async { asset("attributes.html") }))
        .route("/assets/{name}", get(|Path(name): Path<String>| async move { asset(&name) }))
        .route(
            "/openapi.json",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    ApiDoc::openapi().to_json().unwrap_or_default(),
                )
            }),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/health", get(health::readyz))
        .route("/api/v1/identify", post(api::identify))
        .route("/api/v1/identify/batch", post(api::identify_batch))
        .route("/api/v1/collections", get(labels::collections))
        .route("/api/v1/collections/{collection}/grid", get(review::grid))
        .route("/api/v1/collections/{collection}/duplicates", get(review::duplicates))
        .route("/api/v1/collections/{collection}/attributes", get(attributes::attributes))
        .route(
            "/api/v1/collections/{collection}/attributes/{attribute}/histogram",
            get(attributes::histogram),
        )
        .route(v1, get(labels::classifier))
        .route(&format!("{v1}/next"), get(labels::next))
        .route(&format!("{v1}/labels"), post(labels::label))
        .route(&format!("{v1}/undo"), post(labels::undo))
        .route(&format!("{v1}/history"), get(labels::history))
        .route("/images/{collection}/{id}", get(api::image))
        .route("/images/{collection}/{id}/thumbnail", get(api::thumbnail))
        .route("/refs/{set}/{reference_id}", get(api::reference))
        .route("/refs/{set}/{reference_id}/thumbnail", get(api::reference_thumbnail))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no such page or API route") })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}
