//! Projection heads, the Rust half: the options of clip.train_projection, the augmented copies
//! it embeds, the training and evaluation (core/src/learn/projection.rs), and projecting
//! embeddings through a stored head. sql/identify.sql stores heads and searches with them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use ndarray::{Array2, Axis};
use pg_clip_core::learn::projection::{self, Head, Pool, Split};
use pg_clip_core::reference::{self, CopyKind};
use pg_clip_core::service::Priority;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

use super::learn::{bad, check_keys, indices, matrix, option_in, option_int, or_raise_learn, parse_options};
use crate::errors;
use crate::gucs;
use crate::models;
use crate::vector::Vector;

/// Most augmented copies (training and held-out together) one training embeds and holds:
/// 50,000 rows of 512 dimensions are 100 MB as f32, about 600 MB at the peak of a training.
const MAX_POOL: u64 = 50_000;

const KEYS: [&str; 12] = [
    "hidden",
    "output",
    "temperature",
    "epochs",
    "learning_rate",
    "weight_decay",
    "classes_per_batch",
    "copies_per_class",
    "seed",
    "pool_copies",
    "eval_copies",
    "held_out_labels",
];

/// The options a training runs with, every one present: the one reading of the JSON.
struct TrainOptions {
    train: projection::Options,
    split: Split,
    pool_copies: u64,
    eval_copies: u64,
}

fn options_of(text: &str) -> TrainOptions {
    let o = parse_options(text);
    check_keys(&o, &KEYS);
    let d = projection::Options::default();
    let int = |k: &str, default: usize, lo: u64, hi: u64| option_int(&o, k, default as u64, lo, hi) as usize;
    let train = projection::Options {
        hidden: int("hidden", d.hidden, 1, 4096),
        output: int("output", d.output, 1, 4096),
        temperature: option_in(&o, "temperature", d.temperature, 0.01, 10.0),
        epochs: int("epochs", d.epochs, 1, 1000),
        learning_rate: option_in(&o, "learning_rate", d.learning_rate, 1e-7, 1.0),
        weight_decay: option_in(&o, "weight_decay", d.weight_decay, 0.0, 1.0),
        classes_per_batch: int("classes_per_batch", d.classes_per_batch, 2, 1024),
        copies_per_class: int("copies_per_class", d.copies_per_class, 2, 64),
        seed: option_int(&o, "seed", d.seed, 0, i64::MAX as u64),
        interrupt: errors::INTERRUPT,
    };
    TrainOptions {
        train,
        split: Split { held_out_labels: option_in(&o, "held_out_labels", 0.2, 0.0, 0.5) },
        pool_copies: option_int(&o, "pool_copies", 8, 1, 64),
        eval_copies: option_int(&o, "eval_copies", 4, 1, 64),
    }
}

/// clip.train_projection's options, complete and checked (ERROR 22023 naming a bad one), for
/// a set of `references` references: the copies they make must fit in one training.
#[pg_extern(create_or_replace, immutable, parallel_safe, strict)]
fn _projection_options(options: &str, references: i64) -> JsonB {
    let t = options_of(options);
    let rows = u64::try_from(references).unwrap_or(0).saturating_mul(t.pool_copies + t.eval_copies);
    if rows > MAX_POOL {
        errors::report(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "{references} references x {} copies are {rows} augmented copies; a training takes at most {MAX_POOL}",
                t.pool_copies + t.eval_copies
            ),
            None,
            Some("Lower the options pool_copies and eval_copies.".into()),
        );
    }
    let o = &t.train;
    JsonB(json!({
        "hidden": o.hidden, "output": o.output, "temperature": o.temperature, "epochs": o.epochs,
        "learning_rate": o.learning_rate, "weight_decay": o.weight_decay,
        "classes_per_batch": o.classes_per_batch, "copies_per_class": o.copies_per_class, "seed": o.seed,
        "pool_copies": t.pool_copies, "eval_copies": t.eval_copies, "held_out_labels": t.split.held_out_labels,
    }))
}

/// Copies `copies[i]` of kind `kind` (`train` or `held_out`) of `images[i]`, whose content
/// hashes are `hashes[i]`, embedded with `model`: one vector each, in order. An image that
/// cannot be decoded is an ERROR naming its position.
#[pg_extern(create_or_replace, stable, parallel_unsafe)]
fn _embed_copies(
    images: Array<&[u8]>,
    hashes: Array<&[u8]>,
    copies: Array<i32>,
    kind: &str,
    model: &str,
) -> Vec<Vector> {
    let kind = CopyKind::parse(kind)
        .unwrap_or_else(|| bad(format!("copy kind must be train or held_out, not {kind:?}"), None));
    let (images, hashes, copies): (Vec<_>, Vec<_>, Vec<_>) =
        (images.iter().collect(), hashes.iter().collect(), copies.iter().collect());
    if images.len() != hashes.len() || images.len() != copies.len() {
        bad(
            format!("{} images, {} hashes and {} copy numbers", images.len(), hashes.len(), copies.len()),
            None,
        );
    }
    let limits = gucs::image_limits();
    let mut made = Vec::with_capacity(images.len());
    for (i, ((img, hash), n)) in images.iter().zip(&hashes).zip(&copies).enumerate() {
        check_for_interrupts!();
        let (Some(img), Some(hash), Some(n)) = (img, hash, n.and_then(|n| u32::try_from(n).ok())) else {
            bad(format!("element {} is NULL or a negative copy number", i + 1), None)
        };
        made.push(reference::random_copy(img, &limits, hash, kind, n).unwrap_or_else(|e| {
            errors::raise(e.context(format!("array element {} of {}", i + 1, images.len())))
        }));
    }
    let refs: Vec<&[u8]> = made.iter().map(Vec::as_slice).collect();
    models::embed_images(model, &refs, Priority::Bulk)
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Ok(v) => Vector(v),
            Err(e) => errors::raise(e.context(format!("copy of array element {} of {}", i + 1, refs.len()))),
        })
        .collect()
}

/// Train a head on a reference set's pool and evaluate it (core `projection::fit`):
/// `refs` (flat, `dim` per row) with 0-based labels `ref_labels`; `copies` with the 0-based
/// reference each copies and whether it is held out. `options` as `_projection_options`
/// returns them. Epochs are reported as NOTICEs.
#[pg_extern(create_or_replace, immutable, parallel_safe, strict)]
#[allow(clippy::too_many_arguments)]
fn _fit_projection(
    refs: Array<f32>,
    ref_labels: Array<i32>,
    copies: Array<f32>,
    copy_refs: Array<i32>,
    copy_held_out: Array<bool>,
    dim: i32,
    options: &str,
) -> TableIterator<
    'static,
    (
        name!(weights, Vec<u8>),
        name!(input_dim, i32),
        name!(hidden_dim, i32),
        name!(output_dim, i32),
        name!(losses, Vec<f64>),
        name!(evaluation, JsonB),
    ),
> {
    let t = options_of(options);
    let (refs, copies) = (matrix(refs, dim), matrix(copies, dim));
    let ref_labels = indices(ref_labels, "reference labels", refs.nrows());
    if ref_labels.len() != refs.nrows() {
        bad(format!("{} labels for {} references", ref_labels.len(), refs.nrows()), None);
    }
    let copy_refs = indices(copy_refs, "copy references", refs.nrows());
    let held: Vec<bool> = copy_held_out.iter().map(|b| b.unwrap_or(false)).collect();
    let pool = Pool {
        refs: refs.view(),
        ref_labels: &ref_labels,
        copies: copies.view(),
        copy_ref: &copy_refs,
        copy_held_out: &held,
    };
    let epochs = t.train.epochs;
    let fitted = or_raise_learn(
        projection::fit(&pool, t.split, &t.train, &mut |run, epoch, loss| {
            // (about ten lines per training)
            if epoch % epochs.div_ceil(10) == 0 || epoch == epochs {
                pgrx::notice!("training ({run}): epoch {epoch} of {epochs}, loss {loss:.4}");
            }
        }),
        None,
    );
    let evaluation: Vec<Value> = fitted
        .evaluations
        .iter()
        .map(|r| {
            json!({"queries": r.queries, "method": r.method, "copies": r.evaluation.queries,
                   "top1_rate": r.evaluation.top1_rate, "median_margin": r.evaluation.median_margin,
                   "lowest_margin": r.evaluation.lowest_margin})
        })
        .collect();
    let h = &fitted.head;
    TableIterator::once((
        h.to_bytes(),
        h.input() as i32,
        h.hidden() as i32,
        h.output() as i32,
        fitted.losses,
        JsonB(Value::Array(evaluation)),
    ))
}

thread_local! {
    /// Heads this backend has read, by role and clip.projection id (a stored head never
    /// changes; the role, because row security decided who may read it).
    static HEADS: RefCell<HashMap<(u32, i64), Rc<Head>>> = RefCell::new(HashMap::new());
}

/// The stored head `id`, read with the caller's rights (row security) and kept for the session.
fn head(id: i64) -> Rc<Head> {
    // SAFETY: reads the backend's current user id, set whenever a transaction runs.
    let key = (unsafe { pg_sys::GetUserId() }.to_u32(), id);
    if let Some(h) = HEADS.with(|c| c.borrow().get(&key).cloned()) {
        return h;
    }
    let row = Spi::connect(|c| {
        let t = c.select(
            "SELECT input_dim, hidden_dim, output_dim, weights FROM clip.projection WHERE id = $1",
            Some(1),
            &[id.into()],
        )?;
        if t.is_empty() {
            return Ok::<_, spi::Error>(None);
        }
        let r = t.first();
        Ok(Some((r.get::<i32>(1)?, r.get::<i32>(2)?, r.get::<i32>(3)?, r.get::<Vec<u8>>(4)?)))
    });
    let Ok(Some((Some(i), Some(hd), Some(o), Some(w)))) = row else {
        errors::report(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("projection head {id} does not exist"),
            None,
            None,
        )
    };
    let size = |v: i32| usize::try_from(v).unwrap_or(0);
    let h = Head::from_bytes(size(i), size(hd), size(o), &w).unwrap_or_else(|| {
        errors::report(
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            format!("projection head {id} has {} bytes of weights, not {i} x {hd} x {o}'s", w.len()),
            None,
            None,
        )
    });
    let h = Rc::new(h);
    HEADS.with(|c| {
        let mut c = c.borrow_mut();
        // (a few heads at most are in use at once: forget them all rather than track age)
        if c.len() >= 8 {
            c.clear();
        }
        c.insert(key, h.clone());
    });
    h
}

fn project_rows(id: i64, x: Array2<f64>) -> Vec<Vector> {
    let h = head(id);
    if x.ncols() != h.input() {
        bad(
            format!("embeddings have {} dimensions, projection head {id} takes {}", x.ncols(), h.input()),
            None,
        );
    }
    h.project(x.view()).axis_iter(Axis(0)).map(|r| Vector(r.iter().map(|&v| v as f32).collect())).collect()
}

/// An embedding (as `real[]`) through stored head `id`: unit length, of the head's output size.
#[pg_extern(create_or_replace, stable, parallel_safe, strict)]
fn _project(id: i64, embedding: Array<f32>) -> Vector {
    if embedding.is_empty() {
        bad("the embedding is empty".into(), None);
    }
    let n = i32::try_from(embedding.len()).unwrap_or(i32::MAX);
    project_rows(id, matrix(embedding, n.max(1)).mapv(f64::from)).remove(0)
}

/// Embeddings (flat, `dim` per row) through stored head `id`.
#[pg_extern(create_or_replace, stable, parallel_safe, strict)]
fn _project_rows(id: i64, embeddings: Array<f32>, dim: i32) -> Vec<Vector> {
    project_rows(id, matrix(embeddings, dim).mapv(f64::from))
}
