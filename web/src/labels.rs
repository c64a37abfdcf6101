//! The labelling calls the pages use: the queue, labels (one or many), undo, history, stats.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{content_hash_sql, image_url, Shared};
use crate::problem::{Doing, Path, Problem, ProblemResponses, Query, Result};

/// A collection's classifier, as the paths below name them: the classifier name's pattern is
/// clip._is_name's rule, written once for the OpenAPI description.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ClassifierPath {
    pub collection: String,
    #[param(pattern = r"^[a-z][a-z0-9_]{0,39}$")]
    pub classifier: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CollectionInfo {
    pub name: String,
    pub model: String,
    pub embedded: i64,
    pub reference_set: bool,
    /// Classifiers with labels or fits in this collection
    pub classifiers: Vec<String>,
}

/// The collections the database role may read, with their classifiers.
#[utoipa::path(get, path = "/api/v1/collections", responses((status = 200, body = Vec<CollectionInfo>), ProblemResponses))]
pub async fn collections(State(s): Shared) -> Result<Json<Vec<CollectionInfo>>> {
    let c = s.conn().await?;
    let rows = c
        .query(
            "SELECT c.name, c.model,
                    (SELECT count(*) FROM clip.embedding e WHERE e.collection = c.name AND e.model = c.model),
                    EXISTS (SELECT 1 FROM clip.reference_set r WHERE r.name = c.name),
                    ARRAY(SELECT l.classifier FROM clip.label l WHERE l.collection = c.name
                          UNION SELECT k.name FROM clip.classifier k WHERE k.collection = c.name ORDER BY 1)
             FROM clip.collection c ORDER BY c.name",
            &[],
        )
        .await
        .map_err(Problem::of_db(Doing::Labels))?;
    Ok(Json(
        rows.iter()
            .map(|r| CollectionInfo {
                name: r.get(0),
                model: r.get(1),
                embedded: r.get(2),
                reference_set: r.get(3),
                classifiers: r.get(4),
            })
            .collect(),
    ))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClassStats {
    pub label: String,
    pub labelled: i64,
    pub predicted: Option<i64>,
    pub predicted_share: Option<f32>,
    pub confident_share: Option<f32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClassifierInfo {
    pub collection: String,
    pub classifier: String,
    /// The current fitted version, if any
    pub version: Option<i32>,
    /// The classes: the fitted ones, then labels given since
    pub classes: Vec<String>,
    pub stats: Vec<ClassStats>,
    pub labelled: i64,
}

/// A classifier's classes, version and label stats (for a labelling screen's header).
#[utoipa::path(get, path = "/api/v1/collections/{collection}/classifiers/{classifier}",
    params(ClassifierPath),
    responses((status = 200, body = ClassifierInfo), ProblemResponses))]
pub async fn classifier(
    State(s): Shared,
    Path(ClassifierPath { collection, classifier }): Path<ClassifierPath>,
) -> Result<Json<ClassifierInfo>> {
    let c = s.conn().await?;
    let head = c
        .query_one(
            "SELECT (clip._collection($1)).name,
                    (SELECT max(k.version) FROM clip.classifier k WHERE k.name = $2 AND k.collection = $1),
                    ARRAY(SELECT x FROM (SELECT u.x, u.o FROM clip.classifier k, unnest(k.labels) WITH ORDINALITY u (x, o)
                                         WHERE k.name = $2 AND k.collection = $1
                                           AND k.version = (SELECT max(version) FROM clip.classifier WHERE name = $2)
                                         UNION ALL
                                         SELECT DISTINCT l.label, 1000000 FROM clip.label l WHERE l.collection = $1 AND l.classifier = $2) y
                          GROUP BY x ORDER BY min(o), x),
                    (SELECT count(*) FROM clip.label l WHERE l.collection = $1 AND l.classifier = $2)",
            &[&collection, &classifier],
        )
        .await
        .map_err(Problem::of_db(Doing::Labels))?;
    let stats = c
        .query("SELECT label, labelled, predicted, predicted_share, confident_share FROM clip.label_stats($1, $2)", &[&collection, &classifier])
        .await
        .map_err(Problem::of_db(Doing::Labels))?
        .iter()
        .map(|r| ClassStats {
            label: r.get(0),
            labelled: r.get(1),
            predicted: r.get(2),
            predicted_share: r.get(3),
            confident_share: r.get(4),
        })
        .collect();
    Ok(Json(ClassifierInfo {
        collection: head.get(0),
        classifier,
        version: head.get(1),
        classes: head.get(2),
        stats,
        labelled: head.get(3),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct NextParams {
    /// How many (1 to 200, default 20)
    pub n: Option<i32>,
    /// uncertain (default), likely or random
    pub mode: Option<String>,
    /// The class for mode likely
    pub class: Option<String>,
    /// Ids to leave out, comma-separated (those a page already holds)
    pub exclude: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ToLabel {
    pub image_id: i64,
    pub prediction: Option<String>,
    pub probability: Option<f32>,
    pub uncertainty: Option<f32>,
    /// The zero-shot confidences of the vocabulary attributes whose codes are the classes' (a
    /// softmax group such as packaged / loose), by class
    pub zero_shot: Vec<ZeroShot>,
    pub image_url: String,
    pub thumbnail_url: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ZeroShot {
    pub class: String,
    pub confidence: f32,
}

/// The next images to label (clip.next_to_label).
#[utoipa::path(get, path = "/api/v1/collections/{collection}/classifiers/{classifier}/next",
    params(ClassifierPath, NextParams),
    responses((status = 200, body = Vec<ToLabel>), ProblemResponses))]
pub async fn next(
    State(s): Shared,
    Path(ClassifierPath { collection, classifier }): Path<ClassifierPath>,
    Query(p): Query<NextParams>,
) -> Result<Json<Vec<ToLabel>>> {
    let n = p.n.unwrap_or(20).clamp(1, 200);
    let exclude: Vec<i64> = match p.exclude.as_deref().filter(|e| !e.is_empty()) {
        None => Vec::new(),
        Some(e) => {
            e.split(',').map(|x| x.trim().parse()).collect::<std::result::Result<_, _>>().map_err(|_| {
                Problem::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "exclude must be comma-separated ids",
                )
            })?
        }
    };
    let mode = p.mode.unwrap_or_else(|| "uncertain".into());
    let c = s.conn().await?;
    let rows = c
        .query(
            &format!(
                "SELECT n.image_id, n.prediction, n.probability, n.uncertainty, {hash}, z.classes, z.confidences
             FROM clip.next_to_label($1, $2, $3, $4, $5, $6) n
             CROSS JOIN LATERAL (
                 SELECT coalesce(array_agg(k.label ORDER BY k.label), '{{}}') AS classes,
                        coalesce(array_agg(f.confidence ORDER BY k.label), '{{}}') AS confidences
                 FROM (SELECT DISTINCT l.label FROM clip.label l WHERE l.collection = $1 AND l.classifier = $2) k
                 JOIN clip.feature_image_attribute f ON f.collection = $1 AND f.image_id = n.image_id
                  AND f.source = 'zero_shot' AND f.attribute_code = clip._label_code(k.label)) z",
                hash = content_hash_sql("$1", "n.image_id")
            ),
            &[&collection, &classifier, &n, &mode, &p.class, &exclude],
        )
        .await
        .map_err(Problem::of_db(Doing::Labels))?;
    Ok(Json(
        rows.iter()
            .map(|r| {
                let id: i64 = r.get(0);
                let (image_url, thumbnail_url) =
                    image_url("images", &collection, id, r.get::<_, Option<&str>>(4));
                let (classes, confidences): (Vec<String>, Vec<f32>) = (r.get(5), r.get(6));
                ToLabel {
                    image_id: id,
                    prediction: r.get(1),
                    probability: r.get(2),
                    uncertainty: r.get(3),
                    zero_shot: classes
                        .into_iter()
                        .zip(confidences)
                        .map(|(class, confidence)| ZeroShot { class, confidence })
                        .collect(),
                    image_url,
                    thumbnail_url,
                }
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LabelRequest {
    pub image_ids: Vec<i64>,
    #[schema(min_length = 1, max_length = 1000)]
    pub label: String,
    /// The person labelling (recorded in clip.label_history)
    #[schema(min_length = 1, max_length = 200)]
    pub labelled_by: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Labelled {
    pub changed: i64,
    /// The classifier's new version when these labels made a refit due
    pub refitted_version: Option<i32>,
}

/// Label one or many images (clip.label_many); refits when pg_clip.refit_every labels were given.
#[utoipa::path(post, path = "/api/v1/collections/{collection}/classifiers/{classifier}/labels",
    params(ClassifierPath), request_body = LabelRequest,
    responses((status = 200, body = Labelled), ProblemResponses))]
pub async fn label(
    State(s): Shared,
    Path(ClassifierPath { collection, classifier }): Path<ClassifierPath>,
    crate::problem::Json(r): crate::problem::Json<LabelRequest>,
) -> Result<Json<Labelled>> {
    let c = s.conn().await?;
    let row = c
        .query_one(
            "SELECT changed, refitted_version FROM clip.label_many($1, $2, $3, $4, $5)",
            &[&collection, &classifier, &r.image_ids, &r.label, &r.labelled_by],
        )
        .await
        .map_err(Problem::of_db(Doing::Labels))?;
    Ok(Json(Labelled { changed: row.get(0), refitted_version: row.get(1) }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UndoRequest {
    #[schema(min_length = 1, max_length = 200)]
    pub labelled_by: Option<String>,
    /// How many changes to take back, newest first (default 1): a bulk label is one change per
    /// image
    #[schema(minimum = 1, maximum = 500)]
    pub steps: Option<i32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Undone {
    pub image_id: i64,
    /// The label now (null: none)
    pub label: Option<String>,
    /// The label that was undone (null: it had been removed)
    pub previous: Option<String>,
}

/// Undo the labeller's last changes not undone yet (clip.undo_label, `steps` times, in one
/// transaction): what was undone, newest first; empty when there was nothing.
#[utoipa::path(post, path = "/api/v1/collections/{collection}/classifiers/{classifier}/undo",
    params(ClassifierPath), request_body = UndoRequest,
    responses((status = 200, body = Vec<Undone>), ProblemResponses))]
pub async fn undo(
    State(s): Shared,
    Path(ClassifierPath { collection, classifier }): Path<ClassifierPath>,
    crate::problem::Json(r): crate::problem::Json<UndoRequest>,
) -> Result<Json<Vec<Undone>>> {
    let steps = r.steps.unwrap_or(1);
    if !(1..=500).contains(&steps) {
        return Err(Problem::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            format!("steps must be 1 to 500, not {steps}"),
        ));
    }
    let mut c = s.conn().await?;
    let tx = c.transaction().await.map_err(Problem::of_db(Doing::Labels))?;
    let mut undone = Vec::new();
    for _ in 0..steps {
        let row = tx
            .query_opt(
                "SELECT image_id, label, previous FROM clip.undo_label($1, $2, $3)",
                &[&collection, &classifier, &r.labelled_by],
            )
            .await
            .map_err(Problem::of_db(Doing::Labels))?;
        match row {
            Some(r) => undone.push(Undone { image_id: r.get(0), label: r.get(1), previous: r.get(2) }),
            None => break,
        }
    }
    tx.commit().await.map_err(Problem::of_db(Doing::Labels))?;
    Ok(Json(undone))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct HistoryParams {
    pub labelled_by: Option<String>,
    /// How many, newest first (1 to 500, default 10)
    pub n: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Change {
    pub image_id: i64,
    pub label: Option<String>,
    pub previous: Option<String>,
    pub labelled_by: String,
    /// When, as RFC 3339
    pub labelled_at: String,
    pub undo: bool,
    pub thumbnail_url: String,
}

/// The latest label changes (clip.label_history), newest first.
#[utoipa::path(get, path = "/api/v1/collections/{collection}/classifiers/{classifier}/history",
    params(ClassifierPath, HistoryParams),
    responses((status = 200, body = Vec<Change>), ProblemResponses))]
pub async fn history(
    State(s): Shared,
    Path(ClassifierPath { collection, classifier }): Path<ClassifierPath>,
    Query(p): Query<HistoryParams>,
) -> Result<Json<Vec<Change>>> {
    let n = p.n.unwrap_or(10).clamp(1, 500);
    let c = s.conn().await?;
    let rows = c
        .query(
            "SELECT h.image_id, h.label, h.previous, h.labelled_by,
                    to_char(h.labelled_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), h.undoes IS NOT NULL
             FROM clip.label_history h
             WHERE h.collection = $1 AND h.classifier = $2 AND ($3::text IS NULL OR h.labelled_by = $3)
             ORDER BY h.id DESC LIMIT $4",
            &[&collection, &classifier, &p.labelled_by, &n],
        )
        .await
        .map_err(Problem::of_db(Doing::Labels))?;
    Ok(Json(
        rows.iter()
            .map(|r| {
                let id: i64 = r.get(0);
                Change {
                    image_id: id,
                    label: r.get(1),
                    previous: r.get(2),
                    labelled_by: r.get(3),
                    labelled_at: r.get(4),
                    undo: r.get(5),
                    thumbnail_url: image_url("images", &collection, id, None).1,
                }
            })
            .collect(),
    ))
}
