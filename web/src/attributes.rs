//! The attributes page's data: each sigmoid attribute of the collection's vocabulary with its
//! calibration (clip.calibrate: percentiles of a sample, the current and the suggested center
//! and scale) and how many images it accepts now; an attribute's logit histogram.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::Shared;
use crate::problem::{Doing, Path, Problem, ProblemResponses, Query, Result};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Attribute {
    pub code: String,
    pub label: String,
    /// Confidence at or above which an image has the attribute
    pub threshold: f64,
    /// Images whose stored confidence is at or above the threshold
    pub accepted: i64,
    pub center: f32,
    pub scale: f32,
    pub suggested_center: f32,
    pub suggested_scale: f32,
    /// Logit percentiles of a sample: 5, 25, 50, 75, 95, 99
    pub percentiles: Vec<f32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Attributes {
    pub vocabulary: String,
    pub attributes: Vec<Attribute>,
}

/// The sigmoid attributes of the collection's vocabulary with their calibration.
#[utoipa::path(get, path = "/api/v1/collections/{collection}/attributes",
    params(("collection" = String, Path)), responses((status = 200, body = Attributes), ProblemResponses))]
pub async fn attributes(State(s): Shared, Path(collection): Path<String>) -> Result<Json<Attributes>> {
    let c = s.conn().await?;
    let v = c
        .query_opt(
            "SELECT cv.vocabulary FROM clip.collection_vocabulary cv WHERE cv.collection = (clip._collection($1)).name",
            &[&collection],
        )
        .await
        .map_err(Problem::of_db(Doing::Model))?
        .ok_or_else(|| Problem::not_found(format!("collection \"{collection}\" has no vocabulary attached")))?;
    let vocabulary: String = v.get(0);
    let rows = c
        .query(
            "SELECT k.attribute, a.label, a.threshold,
                    (SELECT count(*) FROM clip.feature_image_attribute f WHERE f.collection = $1
                       AND f.attribute_code = k.attribute AND f.confidence >= a.threshold),
                    k.center, k.scale, k.suggested_center, k.suggested_scale,
                    ARRAY[k.p05, k.p25, k.p50, k.p75, k.p95, k.p99]
             FROM clip.calibrate($1, $2, 500) k
             JOIN clip.vocabulary_attribute a ON a.vocabulary = $2 AND a.code = k.attribute ORDER BY a.position",
            &[&collection, &vocabulary],
        )
        .await
        .map_err(Problem::of_db(Doing::Model))?;
    let attributes = rows
        .iter()
        .map(|r| Attribute {
            code: r.get(0),
            label: r.get(1),
            threshold: r.get(2),
            accepted: r.get(3),
            center: r.get(4),
            scale: r.get(5),
            suggested_center: r.get(6),
            suggested_scale: r.get(7),
            percentiles: r.get(8),
        })
        .collect();
    Ok(Json(Attributes { vocabulary, attributes }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct HistogramParams {
    /// Number of bins
    #[param(minimum = 1, maximum = 200)]
    pub bins: Option<i32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Bin {
    pub lower: f32,
    pub upper: f32,
    pub images: i64,
}

/// An attribute's zero-shot logits over the collection (clip.logit_histogram).
#[utoipa::path(get, path = "/api/v1/collections/{collection}/attributes/{attribute}/histogram",
    params(("collection" = String, Path), ("attribute" = String, Path), HistogramParams),
    responses((status = 200, body = Vec<Bin>), ProblemResponses))]
pub async fn histogram(
    State(s): Shared,
    Path((collection, attribute)): Path<(String, String)>,
    Query(p): Query<HistogramParams>,
) -> Result<Json<Vec<Bin>>> {
    let bins = p.bins.unwrap_or(40).clamp(1, 200);
    let c = s.conn().await?;
    let rows = c
        .query(
            "SELECT lower, upper, images FROM clip.logit_histogram($1, $2, $3)",
            &[&collection, &attribute, &bins],
        )
        .await
        .map_err(Problem::of_db(Doing::Model))?;
    Ok(Json(rows.iter().map(|r| Bin { lower: r.get(0), upper: r.get(1), images: r.get(2) }).collect()))
}
