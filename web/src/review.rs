//! The review grid's query (filter, sort, search, more like this) and duplicate groups. The
//! SQL is assembled from fixed pieces chosen by the request; every value is a parameter.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{content_hash_sql, image_url, Shared};
use crate::problem::{Doing, Path, Problem, ProblemResponses, Query, Result};

#[derive(Debug, Default, Deserialize, IntoParams)]
pub struct GridParams {
    /// The classifier whose predictions and labels are shown
    pub classifier: Option<String>,
    /// Only images predicted as this class (its probability is the one filtered and sorted)
    pub class: Option<String>,
    pub min_probability: Option<f32>,
    pub max_probability: Option<f32>,
    /// any (default), yes or no
    pub labelled: Option<String>,
    /// An attribute code of the collection's vocabulary, shown, and filtered by `min_confidence`
    pub attribute: Option<String>,
    pub min_confidence: Option<f32>,
    /// A clustering, shown, and filtered by `cluster`
    pub clustering: Option<String>,
    pub cluster: Option<i32>,
    /// Images most like this text (clip.search)
    pub text: Option<String>,
    /// Images most like this image id (clip.similar)
    pub like: Option<i64>,
    /// probability_desc, probability_asc, uncertainty, similarity (with text or like), id (default:
    /// similarity with text or like, else probability_desc with a classifier, else id)
    pub sort: Option<String>,
    /// How many tiles (1 to 500, default 120)
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Tile {
    pub image_id: i64,
    pub prediction: Option<String>,
    /// The probability of `class` when one is chosen, else of the prediction
    pub probability: Option<f32>,
    pub uncertainty: Option<f32>,
    pub label: Option<String>,
    pub attribute_confidence: Option<f32>,
    pub cluster: Option<i32>,
    pub similarity: Option<f32>,
    pub image_url: String,
    pub thumbnail_url: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Grid {
    /// Images matching the filters (the tiles are the first `limit` of them)
    pub total: i64,
    /// Whether the classifier has been fitted (predictions are shown)
    pub fitted: bool,
    pub tiles: Vec<Tile>,
}

fn unprocessable(m: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, m)
}

/// The images of a collection with their predictions, labels, attribute and cluster, filtered
/// and sorted as asked.
#[utoipa::path(get, path = "/api/v1/collections/{collection}/grid",
    params(("collection" = String, Path), GridParams),
    responses((status = 200, body = Grid), ProblemResponses))]
pub async fn grid(
    State(s): Shared,
    Path(collection): Path<String>,
    Query(p): Query<GridParams>,
) -> Result<Json<Grid>> {
    let limit = p.limit.unwrap_or(120).clamp(1, 500);
    let labelled = p.labelled.as_deref().unwrap_or("any");
    if !["any", "yes", "no"].contains(&labelled) {
        return Err(unprocessable(format!("labelled must be any, yes or no, not {labelled}")));
    }
    if p.text.is_some() && p.like.is_some() {
        return Err(unprocessable("give text or like, not both"));
    }
    let searching = p.text.is_some() || p.like.is_some();
    let c = s.conn().await?;
    // (an unknown or unreadable collection is its 42704, not an empty grid)
    c.query_one("SELECT (clip._collection($1)).name", &[&collection])
        .await
        .map_err(Problem::of_db(Doing::Labels))?;
    let fitted: bool = match &p.classifier {
        None => false,
        Some(k) => c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM clip.classifier WHERE name = $1 AND collection = $2)",
                &[k, &collection],
            )
            .await
            .map_err(Problem::of_db(Doing::Labels))?
            .get(0),
    };
    let sort = p.sort.as_deref().unwrap_or(if searching {
        "similarity"
    } else if fitted {
        "probability_desc"
    } else {
        "id"
    });
    let order = match sort {
        "probability_desc" => "probability DESC NULLS LAST, image_id",
        "probability_asc" => "probability ASC NULLS LAST, image_id",
        "uncertainty" => "uncertainty DESC NULLS LAST, image_id",
        "similarity" if searching => "similarity DESC, image_id",
        "id" => "image_id",
        other => return Err(unprocessable(format!("cannot sort by {other}"))),
    };
    // (the candidates: a search's best 1,000, or every embedded image; `args` names the search
    // parameters in every form of the query, so that each has a type)
    let base = if p.text.is_some() {
        "SELECT s.image_id, s.similarity FROM args, clip.search($1, args.text, 1000) s"
    } else if p.like.is_some() {
        "SELECT s.image_id, s.similarity FROM args, clip.similar($1, args.like_id, 1000) s"
    } else {
        "SELECT e.image_id, NULL::real AS similarity FROM clip.embedding e JOIN clip.collection c
         ON c.name = e.collection AND c.model = e.model WHERE e.collection = $1"
    };
    let predictions = if fitted {
        "clip.predictions($1, $2, $3)"
    } else {
        "(SELECT NULL::bigint AS image_id, NULL::text AS prediction, NULL::real AS probability,
                 NULL::real AS uncertainty, NULL::real AS class_probability WHERE false)"
    };
    let hash = content_hash_sql("$1", "b.image_id");
    let sql = format!(
        "WITH args AS (SELECT $9::text AS text, $10::bigint AS like_id),
        t AS (
            SELECT b.image_id, b.similarity, p.prediction, coalesce(p.class_probability, p.probability) AS probability,
                   p.uncertainty, l.label, fa.confidence AS attribute_confidence, ca.cluster, {hash} AS hash
            FROM ({base}) b
            LEFT JOIN {predictions} p ON p.image_id = b.image_id
            LEFT JOIN clip.label l ON l.collection = $1 AND l.classifier = $2 AND l.image_id = b.image_id
            LEFT JOIN clip.feature_image_attribute fa ON fa.collection = $1 AND fa.image_id = b.image_id AND fa.attribute_code = $7
            LEFT JOIN clip.cluster_assignment ca ON ca.clustering = $11 AND ca.image_id = b.image_id
            WHERE ($3::text IS NULL OR p.prediction = $3)
              AND ($4::real IS NULL OR coalesce(p.class_probability, p.probability) >= $4)
              AND ($5::real IS NULL OR coalesce(p.class_probability, p.probability) <= $5)
              AND ($6 = 'any' OR ($6 = 'yes') = (l.label IS NOT NULL))
              AND ($8::real IS NULL OR fa.confidence >= $8)
              AND ($12::int IS NULL OR ca.cluster = $12)
        )
        SELECT image_id, prediction, probability, uncertainty, label, attribute_confidence, cluster, similarity, hash,
               count(*) OVER () FROM t ORDER BY {order} LIMIT $13"
    );
    let rows = c
        .query(
            &sql,
            &[
                &collection,
                &p.classifier,
                &p.class,
                &p.min_probability,
                &p.max_probability,
                &labelled,
                &p.attribute,
                &p.min_confidence,
                &p.text,
                &p.like,
                &p.clustering,
                &p.cluster,
                &limit,
            ],
        )
        .await
        .map_err(Problem::of_db(Doing::Labels))?;
    let total = rows.first().map_or(0, |r| r.get(9));
    let tiles = rows
        .iter()
        .map(|r| {
            let id: i64 = r.get(0);
            let (image_url, thumbnail_url) =
                image_url("images", &collection, id, r.get::<_, Option<&str>>(8));
            Tile {
                image_id: id,
                prediction: r.get(1),
                probability: r.get(2),
                uncertainty: r.get(3),
                label: r.get(4),
                attribute_confidence: r.get(5),
                cluster: r.get(6),
                similarity: r.get(7),
                image_url,
                thumbnail_url,
            }
        })
        .collect();
    Ok(Json(Grid { total, fitted, tiles }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DuplicateParams {
    /// Cosine similarity at or above which two images are near duplicates (default 0.95)
    pub threshold: Option<f32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DuplicateImage {
    pub image_id: i64,
    /// The image's size in bytes (the largest is suggested to keep)
    pub bytes: i64,
    pub thumbnail_url: String,
    pub image_url: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DuplicateGroup {
    /// exact (the same bytes) or near (similar embeddings)
    pub kind: String,
    pub similarity: f32,
    pub images: Vec<DuplicateImage>,
}

/// Groups of duplicate images (clip.duplicates), each image with its size.
#[utoipa::path(get, path = "/api/v1/collections/{collection}/duplicates",
    params(("collection" = String, Path), DuplicateParams),
    responses((status = 200, body = Vec<DuplicateGroup>), ProblemResponses))]
pub async fn duplicates(
    State(s): Shared,
    Path(collection): Path<String>,
    Query(p): Query<DuplicateParams>,
) -> Result<Json<Vec<DuplicateGroup>>> {
    let c = s.conn().await?;
    let rows = c
        .query(
            "SELECT d.g, d.kind, d.similarity, i.id, length(clip.image($1, i.id))::bigint
             FROM clip.duplicates($1, coalesce($2::real, 0.95)) WITH ORDINALITY d (kind, image_ids, similarity, g)
             CROSS JOIN LATERAL unnest(d.image_ids) i (id) ORDER BY d.g, i.id",
            &[&collection, &p.threshold],
        )
        .await
        .map_err(Problem::of_db(Doing::Labels))?;
    let mut groups: Vec<DuplicateGroup> = Vec::new();
    let mut current = None;
    for r in rows {
        let id: i64 = r.get(3);
        let (image_url, thumbnail_url) = image_url("images", &collection, id, None);
        let img = DuplicateImage { image_id: id, bytes: r.get(4), thumbnail_url, image_url };
        let g: i64 = r.get(0);
        match groups.last_mut() {
            Some(last) if current == Some(g) => last.images.push(img),
            _ => groups.push(DuplicateGroup { kind: r.get(1), similarity: r.get(2), images: vec![img] }),
        }
        current = Some(g);
    }
    Ok(Json(groups))
}
