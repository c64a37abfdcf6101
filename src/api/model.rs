//! clip.register_model: validate a model folder, load it once, record its stamp.

use pg_clip_core::model::{ModelFolder, ModelOptions};
use pg_clip_core::service::ModelInfo;
use pgrx::prelude::*;
use pgrx::JsonB;

use crate::errors::{self, OrRaise};
use crate::models;

/// Register (or re-register) a model folder under `name`. A relative folder is resolved
/// under pg_clip.model_dir. The folder is opened with ONNX Runtime to check the graphs'
/// inputs and outputs against config.json before anything is recorded. `options`:
/// preprocess ("open_clip", "transformers", "immich"), language (a FLORES-200 code, for
/// nllb-clip), logit_scale and logit_bias (SigLIP's trained values).
// (SQL name register_model; the Rust name register_model is 0.1.0's two-argument symbol)
#[pg_extern(create_or_replace, volatile, name = "register_model")]
fn register_model_with_options(
    name: &str,
    folder: &str,
    options: default!(JsonB, "'{}'"),
) -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(folder, String),
        name!(family, String),
        name!(embed_dim, i32),
        name!(image_size, i32),
        name!(context_length, i32),
        name!(image_batch, Option<i32>),
        name!(text_batch, Option<i32>),
        name!(stamp, String),
        name!(device, String),
    ),
> {
    let options = ModelOptions::from_json(&options.0.to_string()).unwrap_or_else(|m| {
        errors::report(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid model options: {m}"),
            None,
            None,
        )
    });
    let (path, stamp, f, info) = open_and_load(name, folder, &options);
    let (dim, size, ctx) = (f.embed_dim as i32, f.preprocess.size as i32, f.context_length as i32);
    let (image_batch, text_batch) = (info.image_batch.map(|b| b as i32), info.text_batch.map(|b| b as i32));
    let family = info.family;
    let device = format!("{:?}", info.device_used).to_lowercase();
    let folder_s = path.display().to_string();
    let options_json = serde_json::to_value(&f.options).expect("options serialise");
    Spi::run_with_args(
        "INSERT INTO clip.model (name, folder, embed_dim, image_size, context_length, logit_scale, stamp, \
                                 family, logit_bias, image_batch, text_batch, options) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (name) DO UPDATE SET folder = EXCLUDED.folder, embed_dim = EXCLUDED.embed_dim, \
         image_size = EXCLUDED.image_size, context_length = EXCLUDED.context_length, \
         logit_scale = EXCLUDED.logit_scale, stamp = EXCLUDED.stamp, family = EXCLUDED.family, \
         logit_bias = EXCLUDED.logit_bias, image_batch = EXCLUDED.image_batch, \
         text_batch = EXCLUDED.text_batch, options = EXCLUDED.options, \
         registered_at = now(), registered_by = current_user",
        &[
            name.into(),
            folder_s.clone().into(),
            dim.into(),
            size.into(),
            ctx.into(),
            f.logit_scale.into(),
            stamp.clone().into(),
            family.clone().into(),
            f.logit_bias.into(),
            image_batch.into(),
            text_batch.into(),
            JsonB(options_json).into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("cannot record model \"{name}\": {e}"));
    TableIterator::once((
        name.to_string(),
        folder_s,
        family,
        dim,
        size,
        ctx,
        image_batch,
        text_batch,
        stamp,
        device,
    ))
}

/// Check a name and folder, load the model (here or in the inference service) and tell its
/// warnings: registration's common part.
fn open_and_load(
    name: &str,
    folder: &str,
    options: &ModelOptions,
) -> (std::path::PathBuf, String, ModelFolder, ModelInfo) {
    if name.trim().is_empty() {
        errors::report(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "model name must not be empty".into(),
            None,
            None,
        );
    }
    let path = models::resolve_folder(folder);
    let mf = ModelFolder::open(&path, options).or_raise();
    let stamp = mf.stamp().or_raise();
    let info = models::load_for_registration(name, mf.clone(), &stamp);
    for w in &mf.warnings {
        errors::warn(format!("model \"{name}\": {}", w.message), w.hint.clone());
    }
    (path, stamp, mf, info)
}

/// 0.1.0's clip.register_model(name, folder), for a database still at 0.1.0 that runs this
/// library (its install script names this symbol): it records 0.1.0's columns only. No SQL of
/// this version declares it; ALTER EXTENSION pg_clip UPDATE replaces it with the function above.
#[pg_extern(sql = false)]
fn register_model(
    name: &str,
    folder: &str,
) -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(folder, String),
        name!(embed_dim, i32),
        name!(image_size, i32),
        name!(context_length, i32),
        name!(stamp, String),
        name!(device, String),
    ),
> {
    let (path, stamp, f, info) = open_and_load(name, folder, &ModelOptions::default());
    let (dim, size, ctx) = (f.embed_dim as i32, f.preprocess.size as i32, f.context_length as i32);
    let device = format!("{:?}", info.device_used).to_lowercase();
    let folder_s = path.display().to_string();
    Spi::run_with_args(
        "INSERT INTO clip.model (name, folder, embed_dim, image_size, context_length, logit_scale, stamp) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (name) DO UPDATE SET folder = EXCLUDED.folder, embed_dim = EXCLUDED.embed_dim, \
         image_size = EXCLUDED.image_size, context_length = EXCLUDED.context_length, \
         logit_scale = EXCLUDED.logit_scale, stamp = EXCLUDED.stamp, registered_at = now(), \
         registered_by = current_user",
        &[
            name.into(),
            folder_s.clone().into(),
            dim.into(),
            size.into(),
            ctx.into(),
            f.logit_scale.into(),
            stamp.clone().into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("cannot record model \"{name}\": {e}"));
    TableIterator::once((name.to_string(), folder_s, dim, size, ctx, stamp, device))
}
