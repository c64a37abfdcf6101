//! clip.parse_vocabulary: the YAML checked by the core, as rows that sql/vocabulary.sql stores.

use std::path::{Path, PathBuf};

use pg_clip_core::files;
use pg_clip_core::vocab::{self, Calibration, Kind, Rule};
use pgrx::prelude::*;

use crate::errors;

/// One attribute of a checked vocabulary, as sql/vocabulary.sql stores it.
type AttributeRow = (
    i32,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<Vec<String>>,
    Option<f64>,
    Option<f64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Vec<String>>,
    f64,
);

/// Check a vocabulary and return its attributes (file defaults applied), one row each; a file
/// with problems is one ERROR listing every problem with its line and column. A base attribute
/// without a calibration in the file shows CLIP's default (what it scores with under a CLIP
/// model; a SigLIP model has its own, see clip._calibration).
#[pg_extern(create_or_replace, immutable, parallel_safe)]
fn parse_vocabulary(
    yaml: &str,
) -> TableIterator<
    'static,
    (
        name!(position, i32),
        name!(code, String),
        name!(kind, String),
        name!(label, String),
        name!(description, Option<String>),
        name!(tag, Option<String>),
        name!(prompts, Option<Vec<String>>),
        name!(center, Option<f64>),
        name!(scale, Option<f64>),
        name!(grp, Option<String>),
        name!(rule, Option<String>),
        name!(rule_expanded, Option<String>),
        name!(rule_codes, Option<Vec<String>>),
        name!(threshold, f64),
    ),
> {
    let default = Calibration::CLIP_DEFAULT;
    TableIterator::new(attribute_rows(yaml, Some(default)))
}

/// As clip.parse_vocabulary, with NULL where the file gives no calibration: what
/// clip.load_vocabulary stores, so that scoring can use the model's own.
#[pg_extern(create_or_replace, immutable, parallel_safe)]
fn _parse_vocabulary(
    yaml: &str,
) -> TableIterator<
    'static,
    (
        name!(position, i32),
        name!(code, String),
        name!(kind, String),
        name!(label, String),
        name!(description, Option<String>),
        name!(tag, Option<String>),
        name!(prompts, Option<Vec<String>>),
        name!(center, Option<f64>),
        name!(scale, Option<f64>),
        name!(grp, Option<String>),
        name!(rule, Option<String>),
        name!(rule_expanded, Option<String>),
        name!(rule_codes, Option<Vec<String>>),
        name!(threshold, f64),
    ),
> {
    TableIterator::new(attribute_rows(yaml, None))
}

/// CLIP's default calibration, {center, scale}: its one home for the SQL (clip._calibration).
#[pg_extern(create_or_replace, immutable, parallel_safe)]
fn _clip_calibration() -> Vec<f64> {
    vec![Calibration::CLIP_DEFAULT.center, Calibration::CLIP_DEFAULT.scale]
}

fn attribute_rows(yaml: &str, default: Option<Calibration>) -> Vec<AttributeRow> {
    let v = vocab::parse(yaml).unwrap_or_else(|problems| {
        let n = problems.len();
        errors::report(
            PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
            format!("vocabulary has {n} problem{}", if n == 1 { "" } else { "s" }),
            Some(problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")),
            Some("Nothing was changed. Fix the lines listed and load the file again.".into()),
        )
    });
    let rows: Vec<_> = v
        .attributes
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let (kind, prompts, center, scale, grp, rule, rule_expanded, rule_codes) = match a.kind {
                Kind::Base { prompts, calibration, group } => (
                    "base",
                    Some(prompts),
                    calibration.or(default).map(|c| c.center),
                    calibration.or(default).map(|c| c.scale),
                    group,
                    None,
                    None,
                    None,
                ),
                Kind::Derived { rule, expanded } => {
                    let mut codes: Vec<String> = expanded.codes().into_iter().map(String::from).collect();
                    codes.sort();
                    codes.dedup();
                    (
                        "derived",
                        None,
                        None,
                        None,
                        None,
                        Some(rule.to_string()),
                        Some(expanded.to_string()),
                        Some(codes),
                    )
                }
            };
            let position = i as i32 + 1;
            (
                position,
                a.code,
                kind.to_string(),
                a.label,
                a.description,
                a.tag,
                prompts,
                center,
                scale,
                grp,
                rule,
                rule_expanded,
                rule_codes,
                a.threshold,
            )
        })
        .collect();
    rows
}

/// The SQL expression clip._score evaluates for a derived attribute, over columns x."<code>"
/// holding the base attributes' confidences: its expanded rule, as clip.vocabulary_attribute
/// keeps it, parsed again here. Whatever that table holds, only a rule's shape reaches SQL
/// (codes are [A-Za-z0-9_] words, so quoting is enough); nothing stored is executed as SQL.
#[pg_extern(create_or_replace, immutable, parallel_safe, strict)]
fn _rule_sql(expanded: &str) -> String {
    let rule = Rule::parse_expanded(expanded).unwrap_or_else(|e| {
        errors::report(
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            format!("stored rule \"{}\" is not a rule: {e}", expanded.chars().take(60).collect::<String>()),
            None,
            Some("Load the vocabulary again.".into()),
        )
    });
    rule.to_sql(&|c| format!("x.\"{c}\""))
}

/// The text of a vocabulary file: a bare file name is looked up first in the extension's
/// installed `vocab/` folder (`<sharedir>/extension/pg_clip/vocab`, the examples, readable by
/// everyone); anything else is a path under pg_clip.image_root, with the same checks and role
/// (pg_read_server_files) as image files.
// (SQL name _read_vocabulary_file: internal. The Rust name keeps the symbol the 0.1.0 script names.)
#[pg_extern(create_or_replace, volatile, parallel_unsafe, name = "_read_vocabulary_file")]
fn read_vocabulary_file(path: &str) -> String {
    let bare = !path.contains('/') && !path.is_empty();
    let dir = vocab_dir();
    let shipped = bare.then(|| dir.join(path)).filter(|p| p.is_file());
    let bytes = match shipped {
        Some(p) => std::fs::read(&p).unwrap_or_else(|e| {
            errors::report(
                PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
                format!("could not read vocabulary file \"{}\": {e}", p.display()),
                None,
                None,
            )
        }),
        None if bare && crate::gucs::image_root().is_none() => errors::report(
            PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
            format!("vocabulary file \"{path}\" is not among the installed ones in {}", dir.display()),
            None,
            Some("Your own files are read by path under pg_clip.image_root, which is not set.".into()),
        ),
        None => {
            let root = super::collection::readable_image_root();
            files::read_under(Path::new(&root), path).unwrap_or_else(|e| {
                errors::raise(e.hint(format!(
                    "A bare file name is looked up in {} first, then under pg_clip.image_root.",
                    dir.display()
                )))
            })
        }
    };
    String::from_utf8(bytes).unwrap_or_else(|e| {
        errors::report(
            PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            format!("vocabulary file \"{path}\" is not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
            None,
            None,
        )
    })
}

/// `<sharedir>/extension/pg_clip/vocab`, where `make install` puts the example vocabularies.
fn vocab_dir() -> PathBuf {
    let mut buf = [0 as std::ffi::c_char; pg_sys::MAXPGPATH as usize];
    // SAFETY: my_exec_path is the backend's NUL-terminated executable path, set at startup;
    // get_share_path writes at most MAXPGPATH bytes into buf, NUL-terminated.
    let share = unsafe {
        pg_sys::get_share_path(std::ptr::addr_of!(pg_sys::my_exec_path).cast(), buf.as_mut_ptr());
        std::ffi::CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
    };
    PathBuf::from(share).join("extension/pg_clip/vocab")
}
