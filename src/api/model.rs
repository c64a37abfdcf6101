//! clip.register_model: validate a model folder, load it once, record its stamp.

use pg_clip_core::model::ModelFolder;
use pgrx::prelude::*;

use crate::errors::OrRaise;
use crate::models;

/// Register (or re-register) a model folder under `name`. A relative folder is resolved
/// under pg_clip.model_dir. The folder is opened with ONNX Runtime to check the graphs'
/// inputs and outputs against config.json before anything is recorded.
#[pg_extern(create_or_replace, volatile)]
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
    if name.trim().is_empty() {
        crate::errors::report(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "model name must not be empty".into(),
            None,
            None,
        );
    }
    let path = models::resolve_folder(folder);
    let mf = ModelFolder::open(&path).or_raise();
    let stamp = mf.stamp().or_raise();
    let model = models::load(mf);
    let f = &model.folder;
    let (dim, size, ctx) = (f.embed_dim as i32, f.preprocess.size as i32, f.context_length as i32);
    let device = format!("{:?}", model.device_used).to_lowercase();
    let folder_s = path.display().to_string();
    Spi::run_with_args(
        "INSERT INTO clip.model (name, folder, embed_dim, image_size, context_length, logit_scale, stamp) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (name) DO UPDATE SET folder = EXCLUDED.folder, embed_dim = EXCLUDED.embed_dim, \
         image_size = EXCLUDED.image_size, context_length = EXCLUDED.context_length, \
         logit_scale = EXCLUDED.logit_scale, \
         stamp = EXCLUDED.stamp, registered_at = now(), registered_by = current_user",
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
    models::remember(name, stamp.clone(), model);
    TableIterator::once((name.to_string(), folder_s, dim, size, ctx, stamp, device))
}
