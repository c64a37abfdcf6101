//! clip.parse_vocabulary: the YAML checked by the core, as rows that sql/vocabulary.sql stores.

use pg_clip_core::vocab::{self, Kind};
use pgrx::prelude::*;

use crate::errors;

/// Check a vocabulary and return its attributes (file defaults applied), one row each; a file
/// with problems is one ERROR listing every problem with its line and column.
#[pg_extern(immutable, parallel_safe)]
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
        name!(rule_sql, Option<String>),
        name!(rule_codes, Option<Vec<String>>),
        name!(threshold, f64),
    ),
> {
    let v = vocab::parse(yaml).unwrap_or_else(|problems| {
        let n = problems.len();
        errors::report(
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
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
            let (kind, prompts, center, scale, grp, rule, rule_sql, rule_codes) = match a.kind {
                Kind::Base { prompts, calibration, group } => {
                    ("base", Some(prompts), Some(calibration.center), Some(calibration.scale), group, None, None, None)
                }
                Kind::Derived { rule, expanded } => {
                    let mut codes: Vec<String> = expanded.codes().into_iter().map(String::from).collect();
                    codes.sort();
                    codes.dedup();
                    // codes are [a-z][a-z0-9_]*, checked by the parser, so quoting is enough
                    let sql = expanded.to_sql(&|c| format!("x.\"{c}\""));
                    ("derived", None, None, None, None, Some(rule.to_string()), Some(sql), Some(codes))
                }
            };
            let position = i as i32 + 1;
            (position, a.code, kind.to_string(), a.label, a.description, a.tag, prompts, center, scale, grp, rule, rule_sql, rule_codes, a.threshold)
        })
        .collect();
    TableIterator::new(rows)
}
