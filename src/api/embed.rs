//! clip.embed_image(s) and clip.embed_text(s): bytes and text to normalised `vector`s.

use pgrx::prelude::*;

use pg_clip_core::service::Priority;

use crate::errors::{self, OrRaise};
use crate::models;
use crate::vector::Vector;

/// Embed one image (JPEG, PNG, WebP, GIF, BMP, TIFF). NULL in, NULL out.
#[pg_extern(create_or_replace, stable, parallel_unsafe)]
fn embed_image(image: Option<&[u8]>, model: default!(Option<&str>, "NULL")) -> Option<Vector> {
    let bytes = image?;
    let name = models::model_name(model);
    let mut out = models::embed_images(&name, &[bytes], Priority::Interactive);
    Some(Vector(out.remove(0).or_raise()))
}

/// Embed an array of images, pg_clip.batch_size per model call, decoded in parallel threads.
/// NULL elements give NULL elements; any bad element is an ERROR naming its position.
#[pg_extern(create_or_replace, stable, parallel_unsafe)]
fn embed_images(
    images: Option<Array<&[u8]>>,
    model: default!(Option<&str>, "NULL"),
) -> Option<Vec<Option<Vector>>> {
    let images = images?;
    let name = models::model_name(model);
    let all: Vec<Option<&[u8]>> = images.iter().collect();
    let present: Vec<&[u8]> = all.iter().flatten().copied().collect();
    let mut results = models::embed_images(&name, &present, Priority::Bulk).into_iter();
    let out = all
        .iter()
        .enumerate()
        .map(|(i, b)| {
            b.map(|_| match results.next().expect("one result per image") {
                Ok(v) => Vector(v),
                Err(e) => errors::raise(e.context(format!("array element {} of {}", i + 1, all.len()))),
            })
        })
        .collect();
    Some(out)
}

/// Embed one text with the model's tokenizer (truncated to its context length).
#[pg_extern(create_or_replace, stable, parallel_unsafe)]
fn embed_text(text: Option<&str>, model: default!(Option<&str>, "NULL")) -> Option<Vector> {
    let text = text?;
    let name = models::model_name(model);
    let mut out = models::embed_texts(&name, &[text], Priority::Interactive);
    Some(Vector(out.remove(0)))
}

/// Embed an array of texts, pg_clip.batch_size per model call. NULL elements give NULL.
#[pg_extern(create_or_replace, stable, parallel_unsafe)]
fn embed_texts(
    texts: Option<Array<&str>>,
    model: default!(Option<&str>, "NULL"),
) -> Option<Vec<Option<Vector>>> {
    let texts = texts?;
    let name = models::model_name(model);
    let all: Vec<Option<&str>> = texts.iter().collect();
    let present: Vec<&str> = all.iter().flatten().copied().collect();
    let mut embedded = models::embed_texts(&name, &present, Priority::Bulk).into_iter();
    Some(all.iter().map(|t| t.map(|_| Vector(embedded.next().expect("one per text")))).collect())
}
