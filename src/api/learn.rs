//! Learning, the Rust half: fitting over the labelled embeddings that sql/learn.sql gathers as
//! a flat `real[]` array (row after row), k-means over a collection's embeddings read here
//! through SPI, and decision fusion. The SQL side stores the results and predicts with
//! pgvector's inner product, from weights with the standardisation folded in.

use ndarray::{Array2, Axis};
use pg_clip_core::learn::{fusion, kmeans, logreg, metrics};
use pg_clip_core::CANCELLED;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

use crate::errors;
use crate::vector::Vector;

pub(crate) fn bad(message: String, hint: Option<&str>) -> ! {
    errors::report(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message, None, hint.map(String::from))
}

/// n x dim matrix from a flat array of n * dim values.
pub(crate) fn matrix(values: Array<f32>, dim: i32) -> Array2<f32> {
    let v: Vec<f32> = values.iter().map(|x| x.unwrap_or(f32::NAN)).collect();
    if v.len() > MAX_VALUES {
        bad(format!("{} values are more than a fit takes at once ({MAX_VALUES})", v.len()), None);
    }
    let d = usize::try_from(dim)
        .ok()
        .filter(|&d| d > 0 && d <= 16_000 && v.len().is_multiple_of(d))
        .unwrap_or_else(|| bad(format!("{} values do not make rows of {dim}", v.len()), None));
    if v.iter().any(|x| !x.is_finite()) {
        bad("embeddings hold NULL, NaN or infinite values".into(), None);
    }
    Array2::from_shape_vec((v.len() / d, d), v).expect("checked shape")
}

fn option_f64(o: &Value, key: &str, default: f64) -> f64 {
    match o.get(key) {
        None | Some(Value::Null) => default,
        Some(v) => {
            v.as_f64().unwrap_or_else(|| bad(format!("option \"{key}\" must be a number, not {v}"), None))
        }
    }
}

/// A numeric option, finite and within [lo, hi] (ERROR naming it otherwise).
pub(crate) fn option_in(o: &Value, key: &str, default: f64, lo: f64, hi: f64) -> f64 {
    let v = option_f64(o, key, default);
    if !(v.is_finite() && (lo..=hi).contains(&v)) {
        bad(format!("option \"{key}\" must be between {lo} and {hi}, not {v}"), None);
    }
    v
}

/// An integral option within [lo, hi].
pub(crate) fn option_int(o: &Value, key: &str, default: u64, lo: u64, hi: u64) -> u64 {
    let v = option_in(o, key, default as f64, lo as f64, hi as f64);
    if v.fract() != 0.0 {
        bad(format!("option \"{key}\" must be a whole number, not {v}"), None);
    }
    v as u64
}

/// Each of `values` as an index below `below` (ERROR naming `what` for a NULL, a negative or a
/// larger one).
pub(crate) fn indices(values: Array<i32>, what: &str, below: usize) -> Vec<usize> {
    values
        .iter()
        .map(|v| {
            v.and_then(|v| usize::try_from(v).ok())
                .filter(|&v| v < below)
                .unwrap_or_else(|| bad(format!("{what} must be 0..{below}"), None))
        })
        .collect()
}

/// Most values (rows x dimensions) a fit or a clustering takes at once: 64 M, 512 MB as f64.
const MAX_VALUES: usize = 64 << 20;
/// Most centres of a clustering, and iterations and restarts of a fit or a clustering.
const MAX_K: u64 = 10_000;
const MAX_ITER: u64 = 100_000;
const MAX_N_INIT: u64 = 100;

/// A fit's or a clustering's result, or its error raised: a cancel as the cancel, any other
/// as 22023 with `hint`.
pub(crate) fn or_raise_learn<T>(r: Result<T, String>, hint: Option<&str>) -> T {
    r.unwrap_or_else(|e| {
        if e == CANCELLED {
            errors::raise_core(pg_clip_core::ClipError::cancelled())
        }
        bad(e, hint)
    })
}

/// The options as JSON text (jsonb::text), parsed here: jsonb takes numbers that serde_json
/// refuses (1e400), and pgrx's own conversion would report that as an internal error.
pub(crate) fn parse_options(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| bad(format!("options are not usable JSON: {e}"), None))
}

pub(crate) fn check_keys(o: &Value, allowed: &[&str]) {
    let Some(map) = o.as_object() else { bad(format!("options must be a JSON object, not {o}"), None) };
    if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        bad(format!("unknown option \"{k}\""), Some(&format!("Options are {}.", allowed.join(", "))));
    }
}

fn scores_json(s: &metrics::Scores) -> Value {
    json!({"accuracy": s.accuracy, "precision": s.precision, "recall": s.recall, "f1": s.f1,
           "roc_auc": s.roc_auc, "log_loss": s.log_loss})
}

/// Fit L2 logistic regression on `embeddings` (flat, `dim` per row) with labels `y` in
/// 0..classes, after stratified k-fold cross-validation. Returns the options used, the
/// cross-validated metrics (mean and std over folds) and the final model's weights per class
/// with the standardisation folded in: score = w . x + b on raw embeddings.
#[pg_extern(create_or_replace, immutable, parallel_safe)]
fn _fit_logreg(embeddings: Array<f32>, dim: i32, y: Array<i32>, classes: i32, options: &str) -> JsonB {
    let o = parse_options(options);
    check_keys(&o, &["C", "class_weight", "max_iter", "folds"]);
    let balanced = match o.get("class_weight") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "balanced" => true,
        Some(v) => bad(format!("option \"class_weight\" must be \"balanced\" or null, not {v}"), None),
    };
    let opts = logreg::Options {
        c: option_in(&o, "C", 1.0, f64::MIN_POSITIVE, 1e12),
        balanced,
        max_iter: option_int(&o, "max_iter", 100, 1, MAX_ITER),
        tol: 1e-4,
        interrupt: errors::INTERRUPT,
    };
    let folds = option_int(&o, "folds", 5, 2, u64::from(u32::MAX)) as usize;
    let x = matrix(embeddings, dim).mapv(f64::from);
    if y.len() != x.nrows() {
        bad(format!("{} labels for {} rows", y.len(), x.nrows()), None);
    }
    // classes: 2 or more, each present (so at most the rows); folds: at most the rows
    let classes =
        usize::try_from(classes).ok().filter(|&c| (2..=y.len()).contains(&c)).unwrap_or_else(|| {
            bad(format!("classes must be between 2 and the rows ({}), not {classes}", y.len()), None)
        });
    let y = indices(y, "labels", classes);
    let mut present = vec![false; classes];
    y.iter().for_each(|&c| present[c] = true);
    if let Some(c) = present.iter().position(|p| !p) {
        bad(format!("class {c} of 0..{classes} has no labelled row"), None);
    }
    if folds > y.len() {
        bad(format!("option \"folds\" must be at most the labelled rows ({}), not {folds}", y.len()), None);
    }
    let cv = or_raise_learn(metrics::cross_validate(x.view(), &y, classes, folds, &opts), None);
    let model = or_raise_learn(logreg::fit(x.view(), &y, classes, &opts), None);
    // fold the standardisation in: w . (x - m) / s + b = (w / s) . x + (b - sum w m / s)
    let weights: Vec<Value> = model
        .coef
        .axis_iter(Axis(0))
        .zip(&model.intercept)
        .map(|(w, b)| {
            let folded: Vec<f64> = w.iter().zip(&model.scaler.scale).map(|(w, s)| w / s).collect();
            let shift: f64 = folded.iter().zip(&model.scaler.mean).map(|(w, m)| w * m).sum();
            json!({"weight": folded, "intercept": b - shift})
        })
        .collect();
    JsonB(json!({
        "options": {"C": opts.c, "class_weight": if balanced { json!("balanced") } else { Value::Null },
                    "max_iter": opts.max_iter, "folds": folds},
        "metrics": {"folds": folds, "mean": scores_json(&cv.mean), "std": scores_json(&cv.std)},
        "iterations": model.iterations,
        "scaler": {"mean": model.scaler.mean, "scale": model.scaler.scale},
        "weights": weights,
    }))
}

/// k-means over the current embeddings of a collection, read here row by row (gathering them
/// into one SQL array first cost 2 s at 45,000 x 512). Returns the image ids in order, the
/// centroids (flat, `dim` per centroid), each image's cluster (0-based) and squared distance to
/// its centroid, the inertia and the iterations of the best run.
#[pg_extern(create_or_replace, stable, parallel_unsafe)]
fn _kmeans(
    collection: &str,
    model: &str,
    k: i32,
    options: &str,
) -> TableIterator<
    'static,
    (
        name!(ids, Vec<i64>),
        name!(centroids, Vec<f32>),
        name!(clusters, Vec<i32>),
        name!(distances, Vec<f32>),
        name!(inertia, f64),
        name!(iterations, i32),
    ),
> {
    let o = parse_options(options);
    check_keys(&o, &["n_init", "max_iter", "tol", "seed"]);
    let opts = kmeans::Options {
        k: usize::try_from(k)
            .ok()
            .filter(|&k| (1..=MAX_K as usize).contains(&k))
            .unwrap_or_else(|| bad(format!("k must be between 1 and {MAX_K}, not {k}"), None)),
        n_init: option_int(&o, "n_init", 4, 1, MAX_N_INIT) as usize,
        max_iter: option_int(&o, "max_iter", 300, 1, MAX_ITER) as usize,
        tol: option_in(&o, "tol", 1e-4, 0.0, 1.0),
        seed: option_int(&o, "seed", 0, 0, 1 << 53),
        interrupt: errors::INTERRUPT,
    };
    let (ids, dim, values) = Spi::connect(|client| -> Result<(Vec<i64>, usize, Vec<f32>), spi::SpiError> {
        let rows = client.select(
            "SELECT image_id, embedding FROM clip.embedding WHERE collection = $1 AND model = $2 ORDER BY image_id",
            None,
            &[collection.into(), model.into()],
        )?;
        let (mut ids, mut dim, mut values) = (Vec::with_capacity(rows.len()), 0, Vec::new());
        for row in rows {
            let (Some(id), Some(Vector(v))) = (row.get::<i64>(1)?, row.get::<Vector>(2)?) else { continue };
            if dim == 0 {
                dim = v.len();
                if dim * ids.capacity() > MAX_VALUES {
                    bad(format!("{} embeddings of {dim} values are more than k-means takes at once ({MAX_VALUES})", ids.capacity()), None);
                }
                values.reserve(dim * ids.capacity());
            }
            ids.push(id);
            values.extend_from_slice(&v);
        }
        Ok((ids, dim, values))
    })
    .unwrap_or_else(|e| bad(format!("reading the embeddings failed: {e}"), None));
    if ids.is_empty() {
        errors::report(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("collection \"{collection}\" has no embeddings to cluster"),
            None,
            Some(format!("CALL clip.refresh('{collection}') first.")),
        );
    }
    let x = Array2::from_shape_vec((ids.len(), dim), values).unwrap_or_else(|e| bad(e.to_string(), None));
    let c = or_raise_learn(
        kmeans::kmeans(x.view(), &opts),
        Some("Pick k between 1 and the number of embedded images."),
    );
    let clusters = c.labels.iter().map(|&l| l as i32).collect();
    TableIterator::once((
        ids,
        c.centroids.into_raw_vec_and_offset().0,
        clusters,
        c.distances,
        c.inertia,
        c.iterations as i32,
    ))
}

/// Decision fusion (core::learn::fusion): the classifier's probabilities blended with zero-shot
/// confidences and a cluster prior over the same classes; NULL evidence is left out.
#[pg_extern(create_or_replace, immutable, parallel_safe)]
fn _blend(
    classifier: Vec<f32>,
    zero_shot: Option<Vec<f32>>,
    cluster: Option<Vec<f32>>,
) -> TableIterator<'static, (name!(probabilities, Vec<f32>), name!(classifier_weight, f32))> {
    let f = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
    let (z, k) = (zero_shot.map(f), cluster.map(f));
    let (p, w) = fusion::blend(&f(classifier), z.as_deref(), k.as_deref());
    TableIterator::once((p.into_iter().map(|x| x as f32).collect(), w as f32))
}
