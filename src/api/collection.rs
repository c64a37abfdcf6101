//! Collections: the Rust half. clip.try_embed_images embeds a batch and reports each failure
//! as data instead of raising, which is what clip.refresh (sql/collections.sql) needs to skip
//! and record bad rows while keeping the rest of the batch.

use pgrx::prelude::*;
use sha2::{Digest, Sha256};

use crate::errors;
use crate::gucs;
use crate::models;
use crate::vector::Vector;

/// One row per array element (1-based `ord`): its SHA-256 and either an embedding or the
/// SQLSTATE and message it would have raised. NULL elements give a row with everything NULL.
#[pg_extern(volatile, parallel_unsafe)]
fn try_embed_images(
    images: Array<&[u8]>,
    model: &str,
) -> TableIterator<
    'static,
    (
        name!(ord, i32),
        name!(content_sha256, Option<Vec<u8>>),
        name!(embedding, Option<Vector>),
        name!(error_sqlstate, Option<String>),
        name!(error_message, Option<String>),
    ),
> {
    let all: Vec<Option<&[u8]>> = images.iter().collect();
    let present: Vec<Option<&[u8]>> = all.iter().filter(|b| b.is_some()).copied().collect();
    let (batch, max_pixels) = (gucs::batch_size(), gucs::max_image_pixels());
    let mut results = models::with_model(model, |m| m.embed_images(&present, batch, max_pixels)).into_iter();
    let rows: Vec<_> = all
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let ord = i as i32 + 1;
            match b {
                None => (ord, None, None, None, None),
                Some(bytes) => {
                    let sha = Sha256::digest(bytes).to_vec();
                    match results.next().expect("one result per image") {
                        Ok(v) => (ord, Some(sha), Some(Vector(v)), None, None),
                        Err(e) => {
                            let state = errors::sqlstate(e.kind).1.to_string();
                            (ord, Some(sha), None, Some(state), Some(e.to_string()))
                        }
                    }
                }
            }
        })
        .collect();
    TableIterator::new(rows)
}
