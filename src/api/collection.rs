//! Collections: the Rust half. clip.try_embed_images embeds a batch and reports each failure
//! as data instead of raising, which is what clip.refresh (sql/collections.sql) needs to skip
//! and record bad rows while keeping the rest of the batch.

use std::path::Path;

use pg_clip_core::service::Priority;
use pg_clip_core::{files, ClipError};
use pgrx::prelude::*;
use sha2::{Digest, Sha256};

use crate::errors::{self, OrRaise};
use crate::gucs;
use crate::models;
use crate::vector::Vector;

type Row = (i32, Option<Vec<u8>>, Option<Vector>, Option<String>, Option<String>, Option<Vec<u8>>);

/// One row per array element (1-based `ord`): its SHA-256 and either an embedding or the
/// SQLSTATE and message it would have raised. NULL elements give a row with everything NULL.
// (SQL name _try_embed_images: internal. The Rust name keeps the symbol the 0.1.0 script names.)
#[pg_extern(create_or_replace, volatile, parallel_unsafe, name = "_try_embed_images")]
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
        name!(thumbnail, Option<Vec<u8>>),
    ),
> {
    let all: Vec<Option<Result<&[u8], ClipError>>> = images.iter().map(|b| b.map(Ok)).collect();
    TableIterator::new(embed_rows(&all, model))
}

/// As clip.try_embed_images, for image files named by paths under pg_clip.image_root.
/// Reading server files is for superusers and members of pg_read_server_files.
// (SQL name _try_embed_files: internal. The Rust name keeps the symbol the 0.1.0 script names.)
#[pg_extern(create_or_replace, volatile, parallel_unsafe, name = "_try_embed_files")]
fn try_embed_files(
    paths: Array<&str>,
    model: &str,
) -> TableIterator<
    'static,
    (
        name!(ord, i32),
        name!(content_sha256, Option<Vec<u8>>),
        name!(embedding, Option<Vector>),
        name!(error_sqlstate, Option<String>),
        name!(error_message, Option<String>),
        name!(thumbnail, Option<Vec<u8>>),
    ),
> {
    let root = readable_image_root();
    let files: Vec<Option<Result<Vec<u8>, ClipError>>> =
        paths.iter().map(|p| p.map(|p| files::read_under(Path::new(&root), p))).collect();
    let all: Vec<Option<Result<&[u8], ClipError>>> =
        files.iter().map(|f| f.as_ref().map(|r| r.as_deref().map_err(Clone::clone))).collect();
    TableIterator::new(embed_rows(&all, model))
}

/// SHA-256 of the file at `path` under pg_clip.image_root, NULL if it cannot be read (outside
/// the root, missing, no permission). clip.recheck_files compares it with the stored hashes.
// (SQL name _file_sha256: internal. The Rust name keeps the symbol the 0.1.0 script names.)
#[pg_extern(create_or_replace, volatile, parallel_unsafe, strict, name = "_file_sha256")]
fn file_sha256(path: &str) -> Option<Vec<u8>> {
    let root = readable_image_root();
    files::read_under(Path::new(&root), path).ok().map(|b| Sha256::digest(b).to_vec())
}

/// pg_clip.image_root, after checking that it is set and that the current role may have the
/// server read files (superusers and members of pg_read_server_files); ERROR otherwise.
pub(crate) fn readable_image_root() -> String {
    let root = gucs::image_root().unwrap_or_else(|| {
        errors::report(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pg_clip.image_root is not set".into(),
            None,
            Some(
                "A superuser sets pg_clip.image_root to the folder that image paths are relative to.".into(),
            ),
        )
    });
    let allowed =
        Spi::get_one::<bool>("SELECT pg_catalog.pg_has_role(current_user, 'pg_read_server_files', 'USAGE')")
            .ok()
            .flatten()
            .unwrap_or(false);
    if !allowed {
        errors::report(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "reading image files requires the pg_read_server_files role".into(),
            None,
            Some(
                "GRANT pg_read_server_files TO <role>; (the server reads the files as its own OS user)"
                    .into(),
            ),
        );
    }
    root
}

/// Embed the readable elements in batches; every element gets a row, in order, with its
/// thumbnail when pg_clip.thumbnail_size asks for them.
fn embed_rows(all: &[Option<Result<&[u8], ClipError>>], model: &str) -> Vec<Row> {
    let present: Vec<&[u8]> = all.iter().filter_map(|b| b.as_ref()?.as_ref().ok()).copied().collect();
    let mut results =
        models::embed_images_with_thumbnails(model, &present, Priority::Bulk, gucs::thumbnail_size())
            .into_iter();
    let failed = |ord, sha, e: &ClipError| {
        (ord, sha, None, Some(errors::sqlstate(e.kind).1.to_string()), Some(e.to_string()), None)
    };
    all.iter()
        .enumerate()
        .map(|(i, b)| {
            let ord = i as i32 + 1;
            match b {
                None => (ord, None, None, None, None, None),
                Some(Err(e)) => failed(ord, None, e),
                Some(Ok(bytes)) => {
                    let sha = Some(Sha256::digest(bytes).to_vec());
                    match results.next().expect("one result per image") {
                        Ok(e) => (ord, sha, Some(Vector(e.vector)), None, None, e.thumbnail),
                        Err(e) => failed(ord, sha, &e),
                    }
                }
            }
        })
        .collect()
}

/// True inside BEGIN ... COMMIT or a multi-statement query string, where a procedure cannot
/// COMMIT: clip.refresh checks it first, to fail with a useful message.
// (SQL name _in_transaction_block: internal. The Rust name keeps the symbol the 0.1.0 script names.)
#[pg_extern(create_or_replace, volatile, name = "_in_transaction_block")]
fn in_transaction_block() -> bool {
    // SAFETY: reads the transaction state of this backend, in its main thread.
    unsafe { pg_sys::IsTransactionBlock() }
}

/// A JPEG of `image` whose longer side is at most `size` pixels (16 to 1024), for browsing a
/// collection; decoded under the same limits as embedding.
#[pg_extern(create_or_replace, stable, parallel_safe, strict)]
fn make_thumbnail(image: &[u8], size: default!(i32, 256)) -> Vec<u8> {
    let size = u32::try_from(size).unwrap_or(0);
    pg_clip_core::thumbnail::make(image, size, &gucs::image_limits()).or_raise()
}
