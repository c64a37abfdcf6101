//! clip.embed_image(s) and clip.embed_text(s): bytes and text to normalised `vector`s.

use pgrx::prelude::*;

use crate::errors::{self, OrRaise};
use crate::gucs;
use crate::models;
use crate::vector::Vector;

/// Embed one image (JPEG, PNG, WebP, GIF, BMP, TIFF). NULL in, NULL out.
#[pg_extern(create_or_replace, stable, parallel_unsafe)]
fn embed_image(image: Option<&[u8]>, model: default!(Option<&str>, "NULL")) -> Option<Vector> {
    let bytes = image?;
    let name = models::model_name(model);
    let limits = gucs::image_limits();
    let mut out = models::with_model(&name, |m| m.embed_images(&[bytes], 1, &limits, errors::INTERRUPT))
        .map_err(|e| models::refused(&name, e))
        .or_raise();
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
    let (batch, limits) = (gucs::batch_size(), gucs::image_limits());
    let all: Vec<Option<&[u8]>> = images.iter().collect();
    let out = models::with_model(&name, |m| {
        let mut out = Vec::with_capacity(all.len());
        for (chunk_no, chunk) in all.chunks(batch).enumerate() {
            check_for_interrupts!();
            let present: Vec<&[u8]> = chunk.iter().flatten().copied().collect();
            let results = m
                .embed_images(&present, batch, &limits, errors::INTERRUPT)
                .map_err(|e| models::refused(&name, e))
                .or_raise();
            errors::stop_if_cancelled(&results);
            let mut results = results.into_iter();
            for (i, b) in chunk.iter().enumerate() {
                if b.is_none() {
                    out.push(None);
                    continue;
                }
                match results.next().expect("one result per image") {
                    Ok(v) => out.push(Some(Vector(v))),
                    Err(e) => {
                        let pos = chunk_no * batch + i + 1;
                        errors::raise(e.context(format!("array element {pos} of {}", all.len())))
                    }
                }
            }
        }
        out
    });
    Some(out)
}

/// Embed one text with the model's tokenizer (truncated to its context length).
#[pg_extern(create_or_replace, stable, parallel_unsafe)]
fn embed_text(text: Option<&str>, model: default!(Option<&str>, "NULL")) -> Option<Vector> {
    let text = text?;
    let name = models::model_name(model);
    let mut out = models::with_model(&name, |m| m.embed_texts(&[text], 1, errors::INTERRUPT)).or_raise();
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
    let embedded = models::with_model(&name, |m| {
        let mut embedded = Vec::with_capacity(present.len());
        for chunk in present.chunks(gucs::batch_size()) {
            check_for_interrupts!();
            embedded.extend(m.embed_texts(chunk, chunk.len(), errors::INTERRUPT).or_raise());
        }
        embedded
    });
    let mut embedded = embedded.into_iter();
    Some(all.iter().map(|t| t.map(|_| Vector(embedded.next().expect("one per text")))).collect())
}
