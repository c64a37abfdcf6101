//! Identification, the Rust half: labels from file names and the augmented copies that
//! clip.verify_reference_set identifies. The search itself is SQL over pgvector
//! (sql/identify.sql).

use std::path::Path;

use pg_clip_core::{files, reference};
use pgrx::prelude::*;

use crate::errors::OrRaise;
use crate::gucs;

/// The label and variant a reference set takes from an image's file name (see docs/identification.md):
/// the stem without a leading set code, a trailing suffix from pg_clip.identify_variants split
/// off, underscores to spaces, title case. STABLE: it reads that setting.
#[pg_extern(create_or_replace, stable, parallel_safe, strict)]
fn label_from_filename(
    path: &str,
) -> TableIterator<'static, (name!(label, String), name!(variant, Option<String>))> {
    if path.len() > pg_sys::MAXPGPATH as usize {
        crate::errors::report(
            PgSqlErrorCode::ERRCODE_NAME_TOO_LONG,
            format!("file name has {} bytes; at most {} are read", path.len(), pg_sys::MAXPGPATH),
            None,
            None,
        );
    }
    let l = reference::label_from_filename(path, &reference::parse_variants(&gucs::identify_variants()));
    TableIterator::once((l.label, l.variant))
}

/// Augmented copies of an image as PNG (kind: crop, rotate, color, blur), made the same way
/// every time; clip.verify_reference_set identifies them against the set.
#[pg_extern(create_or_replace, stable, parallel_safe, strict)]
fn augmented_copies(image: &[u8]) -> TableIterator<'static, (name!(kind, String), name!(image, Vec<u8>))> {
    let copies = reference::augmented_copies(image, &gucs::image_limits()).or_raise();
    TableIterator::new(copies.into_iter().map(|(k, b)| (k.to_string(), b)))
}

/// The bytes of an image file under pg_clip.image_root (same checks and role as a collection
/// of paths).
#[pg_extern(create_or_replace, volatile, parallel_unsafe, strict)]
fn read_image_file(path: &str) -> Vec<u8> {
    let root = super::collection::readable_image_root();
    files::read_under(Path::new(&root), path).or_raise()
}
