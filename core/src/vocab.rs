//! Vocabularies: a YAML file of attributes (zero-shot prompts, softmax groups, derived rules)
//! checked as a whole, so that a bad file is refused with every problem and its line and column.
//!
//! The YAML is parsed with `marked_yaml` into position-marked nodes and each part is deserialised
//! with serde into typed structs (`deny_unknown_fields`). Parts are deserialised one by one (each
//! top-level key, each attribute) rather than in one `from_str`, because serde stops at the first
//! error and the file's author should see all of them at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use marked_yaml::{from_node, parse_yaml_with_options, LoaderOptions, Marker, Node, Span, Spanned};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use yaml_rust2::parser::Event;

/// The sigmoid applied to a zero-shot logit (logit = logit_scale x cosine):
/// confidence = 1 / (1 + exp(-(logit - center) / scale)), computed by clip._score in SQL.
/// An attribute without one (in the file) takes its model's default (clip._calibration).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    pub center: f64,
    pub scale: f64,
}

impl Calibration {
    /// The default under a softmax-trained CLIP model: a photo's logit with its best
    /// description is typically about 25 to 30.
    pub const CLIP_DEFAULT: Calibration = Calibration { center: 25.5, scale: 1.5 };
}

pub const DEFAULT_TEMPLATE: &str = "a photo of {description}";

/// Limits on what a vocabulary may hold. Each is far above what a real file needs and keeps a
/// hostile one cheap: the text is refused before it is parsed, the nesting from the parser's
/// events before any tree is built (building and dropping a tree recurses once per level), a
/// rule before it is parsed or while its depth is counted.
pub mod limits {
    /// Bytes of YAML text.
    pub const TEXT_BYTES: usize = 1 << 20;
    /// Nesting of mappings and sequences (a vocabulary needs 4).
    pub const YAML_DEPTH: usize = 16;
    /// Attributes, base and derived: each is a column of the attribute view, which also holds
    /// the image id and classifier columns under PostgreSQL's 1,600.
    pub const ATTRIBUTES: usize = 1_000;
    /// Prompts of one attribute, and characters of one prompt, label or description.
    pub const PROMPTS: usize = 64;
    pub const TEXT_CHARS: usize = 1_000;
    /// Characters of a rule as written, nesting of its parentheses and NOTs, and codes in a rule
    /// once derived codes are replaced by their rules (each is a term of the SQL it becomes).
    pub const RULE_CHARS: usize = 2_000;
    pub const RULE_DEPTH: usize = 32;
    pub const RULE_TERMS: usize = 1_000;
}
pub const DEFAULT_THRESHOLD: f64 = 0.5;

/// One problem in a vocabulary file, where it is (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
    }
}

/// A checked vocabulary: attributes in file order, base ones first, with the file's defaults
/// (template, calibration, threshold) already applied to each.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocabulary {
    pub attributes: Vec<Attribute>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub code: String,
    pub label: String,
    pub description: Option<String>,
    /// the free grouping tag (`type:` in the file)
    pub tag: Option<String>,
    pub threshold: f64,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Scored from the image embedding: the prompts' text embeddings are averaged and
    /// renormalised; a sigmoid calibrates the logit, or a softmax over the group's logits.
    Base { prompts: Vec<String>, calibration: Option<Calibration>, group: Option<String> },
    /// Computed from other attributes' confidences: min for AND, max for OR, 1 - x for NOT.
    /// `expanded` is the rule with derived codes replaced by their own rules (base codes only).
    Derived { rule: Rule, expanded: Rule },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBase {
    code: Spanned<String>,
    label: Option<String>,
    description: Option<String>,
    #[serde(rename = "type")]
    tag: Option<String>,
    prompts: Option<Spanned<Vec<String>>>,
    calibration: Option<Spanned<Calibration>>,
    group: Option<Spanned<String>>,
    threshold: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDerived {
    code: Spanned<String>,
    label: Option<String>,
    description: Option<String>,
    #[serde(rename = "type")]
    tag: Option<String>,
    rule: Spanned<String>,
    threshold: Option<Spanned<f64>>,
}

fn file_start() -> Span {
    Span::new_start(Marker::new(0, 0, 1, 1))
}

const TOP_KEYS: [&str; 6] =
    ["version", "template", "calibration", "base_attributes", "derived_attributes", "threshold"];

/// Collects problems while the file is checked.
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn at(&mut self, span: &Span, message: impl Into<String>) {
        let (line, column) = span.start().map(|m| (m.line(), m.column())).unwrap_or((1, 1));
        self.problems.push(Problem { line, column, message: message.into() });
    }

    /// Deserialise one node, or record the problem and return None.
    fn de<T: DeserializeOwned>(&mut self, node: &Node, what: &str) -> Option<T> {
        match from_node::<T>(node) {
            Ok(v) => Some(v),
            Err(e) => {
                // an unknown key is shown at the key, a missing one at the mapping that lacks it
                let at_key = match (&*e, node.as_mapping()) {
                    (marked_yaml::Error::UnknownFieldError(f, _, _), Some(m)) => {
                        m.keys().find(|k| k.as_str() == f.as_str()).and_then(|k| k.span().start().copied())
                    }
                    _ => None,
                };
                // (a block mapping's own mark is where it ends; its first key is where it starts)
                let missing =
                    matches!(&*e, marked_yaml::Error::Other(msg, _) if msg.starts_with("missing field"));
                let first_key =
                    node.as_mapping().and_then(|m| m.keys().next()).and_then(|k| k.span().start().copied());
                let mark =
                    at_key.or(if missing { first_key } else { e.start_mark() }).filter(|m| m.line() > 0);
                let (line, column) = match mark {
                    Some(m) => (m.line(), m.column()),
                    None => node.span().start().map(|m| (m.line(), m.column())).unwrap_or((1, 1)),
                };
                self.problems.push(Problem { line, column, message: format!("{what}: {}", describe(&e)) });
                None
            }
        }
    }
}

/// serde's message without marked_yaml's own position suffix (we print line and column first).
fn describe(e: &marked_yaml::FromNodeError) -> String {
    use marked_yaml::Error as E;
    match &**e {
        E::NotBoolean(_) => "expected true or false".into(),
        E::IntegerParseFailure(p, _) => format!("expected an integer ({p})"),
        E::FloatParseFailure(p, _) => format!("expected a number ({p})"),
        E::UnknownFieldError(f, expected, _) => {
            format!("unknown key \"{f}\" (expected one of: {})", expected.join(", "))
        }
        E::Other(m, _) => m.clone(),
    }
}

fn check_fraction(ck: &mut Checker, v: &Option<Spanned<f64>>, what: &str) -> Option<f64> {
    let v = v.as_ref()?;
    if !(0.0..=1.0).contains(&**v) {
        ck.at(v.span(), format!("{what} must be between 0 and 1, not {}", **v));
    }
    Some(**v)
}

fn check_calibration(ck: &mut Checker, c: &Spanned<Calibration>) {
    if !c.center.is_finite() || !c.scale.is_finite() || c.scale <= 0.0 {
        ck.at(
            c.span(),
            format!(
                "calibration needs a finite center and a scale above 0, not {{center: {}, scale: {}}}",
                c.center, c.scale
            ),
        );
    }
}

/// Attribute codes become column names: lowercase, `[a-z][a-z0-9_]*`, at most 63 characters,
/// not a rule keyword and not the view's key column.
fn check_code(ck: &mut Checker, code: &Spanned<String>) -> bool {
    let c = code.as_str();
    let shape = c.len() <= 63
        && c.chars().next().is_some_and(|ch| ch.is_ascii_lowercase())
        && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
    if !shape {
        ck.at(code.span(), format!("bad code \"{c}\": codes are [a-z][a-z0-9_]*, at most 63 characters"));
        return false;
    }
    if matches!(c, "and" | "or" | "not" | "image_id") {
        ck.at(code.span(), format!("bad code \"{c}\": it is reserved"));
        return false;
    }
    true
}

/// Parse and check a vocabulary. On any problem, every problem found, in file order.
pub fn parse(text: &str) -> Result<Vocabulary, Vec<Problem>> {
    check_shape(text).map_err(|p| vec![p])?;
    let opts = LoaderOptions::default().error_on_duplicate_keys(true);
    let root = parse_yaml_with_options(0, text, opts).map_err(|e| vec![load_problem(&e)])?;
    let top = root.as_mapping().expect("marked_yaml's top level is a mapping");
    let mut ck = Checker { problems: Vec::new() };

    for (k, _) in top.iter() {
        if !TOP_KEYS.contains(&k.as_str()) {
            ck.at(
                k.span(),
                format!("unknown key \"{}\" (expected one of: {})", k.as_str(), TOP_KEYS.join(", ")),
            );
        }
    }
    let field = |k: &str| top.get_node(k);
    match field("version") {
        None => ck.at(&file_start(), "missing key \"version\" (this format is version 1)"),
        Some(n) => {
            if let Some(v) = ck.de::<Spanned<u32>>(n, "version") {
                if *v != 1 {
                    ck.at(v.span(), format!("unsupported version {}: this is version 1", *v));
                }
            }
        }
    }
    let template = field("template").and_then(|n| ck.de::<Spanned<String>>(n, "template"));
    if let Some(t) = &template {
        if !t.contains("{description}") {
            ck.at(t.span(), "template must contain {description}");
        }
    }
    let template = template.map(|t| t.to_string()).unwrap_or_else(|| DEFAULT_TEMPLATE.to_string());
    let calibration = field("calibration").and_then(|n| ck.de::<Spanned<Calibration>>(n, "calibration"));
    if let Some(c) = &calibration {
        check_calibration(&mut ck, c);
    }
    let calibration = calibration.map(|c| *c);
    let threshold = field("threshold").and_then(|n| ck.de::<Spanned<f64>>(n, "threshold"));
    let threshold = check_fraction(&mut ck, &threshold, "threshold").unwrap_or(DEFAULT_THRESHOLD);

    let items = |ck: &mut Checker, key: &str| -> Vec<Node> {
        match field(key) {
            None => Vec::new(),
            Some(Node::Sequence(s)) => s.iter().cloned().collect(),
            Some(n) => {
                ck.at(n.span(), format!("{key} must be a list of attributes"));
                Vec::new()
            }
        }
    };
    let base_nodes = items(&mut ck, "base_attributes");
    let derived_nodes = items(&mut ck, "derived_attributes");
    if base_nodes.len() + derived_nodes.len() > limits::ATTRIBUTES {
        ck.at(
            &file_start(),
            format!(
                "{} attributes; a vocabulary may have at most {}",
                base_nodes.len() + derived_nodes.len(),
                limits::ATTRIBUTES
            ),
        );
        ck.problems.sort_by_key(|p| (p.line, p.column));
        return Err(ck.problems);
    }
    if base_nodes.is_empty() && field("base_attributes").is_none() {
        ck.at(&file_start(), "missing key \"base_attributes\" (a list of at least one attribute)");
    }

    // codes: unique across base and derived
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    let mut claim = |ck: &mut Checker, code: &Spanned<String>| -> bool {
        if !check_code(ck, code) {
            return false;
        }
        let line = code.span().start().map(|m| m.line()).unwrap_or(0);
        if let Some(prev) = first_seen.get(code.as_str()) {
            ck.at(
                code.span(),
                format!("duplicate code \"{}\" (first defined on line {prev})", code.as_str()),
            );
            return false;
        }
        first_seen.insert(code.to_string(), line);
        true
    };

    let mut attributes = Vec::new();
    let mut groups: BTreeMap<String, (Span, usize)> = BTreeMap::new();
    for (i, n) in base_nodes.iter().enumerate() {
        let Some(raw) = ck.de::<RawBase>(n, &format!("base attribute {}", i + 1)) else { continue };
        let code_ok = claim(&mut ck, &raw.code);
        check_texts(
            &mut ck,
            &raw.code,
            &[
                ("label", raw.label.as_deref()),
                ("description", raw.description.as_deref()),
                ("type", raw.tag.as_deref()),
            ],
        );
        if let Some(p) = &raw.prompts {
            if p.len() > limits::PROMPTS {
                ck.at(
                    p.span(),
                    format!(
                        "{}: {} prompts; an attribute may have at most {}",
                        raw.code.as_str(),
                        p.len(),
                        limits::PROMPTS
                    ),
                );
            }
            for t in p.iter() {
                check_texts(&mut ck, &raw.code, &[("prompt", Some(t))]);
            }
        }
        let prompts = match (&raw.prompts, &raw.description) {
            (Some(p), _) if p.is_empty() || p.iter().any(|s| s.trim().is_empty()) => {
                ck.at(
                    p.span(),
                    format!("{}: prompts must be a non-empty list of non-empty texts", raw.code.as_str()),
                );
                Vec::new()
            }
            (Some(p), _) => p.to_vec(),
            (None, Some(d)) if !d.trim().is_empty() => vec![template.replace("{description}", d)],
            (None, _) => {
                ck.at(
                    raw.code.span(),
                    format!("{}: needs a description (for the template) or prompts", raw.code.as_str()),
                );
                Vec::new()
            }
        };
        if let Some(c) = &raw.calibration {
            check_calibration(&mut ck, c);
            if raw.group.is_some() {
                ck.at(
                    c.span(),
                    format!("{}: calibration does not apply to a softmax group member", raw.code.as_str()),
                );
            }
        }
        if let Some(g) = &raw.group {
            if g.trim().is_empty() {
                ck.at(g.span(), format!("{}: group must not be empty", raw.code.as_str()));
            }
            groups.entry(g.to_string()).or_insert_with(|| (*g.span(), 0)).1 += 1;
        }
        let t = check_fraction(&mut ck, &raw.threshold, "threshold").unwrap_or(threshold);
        if code_ok {
            attributes.push(Attribute {
                code: raw.code.to_string(),
                label: raw.label.unwrap_or_else(|| raw.code.to_string()),
                description: raw.description,
                tag: raw.tag,
                threshold: t,
                kind: Kind::Base {
                    prompts,
                    calibration: raw.calibration.map(|c| *c).or(calibration),
                    group: raw.group.map(|g| g.to_string()),
                },
            });
        }
    }
    for (g, (span, n)) in &groups {
        if *n < 2 {
            ck.at(span, format!("group \"{g}\" has one attribute: a softmax group needs at least two"));
        }
    }

    let mut derived: Vec<(Spanned<String>, Attribute, Option<Rule>)> = Vec::new();
    for (i, n) in derived_nodes.iter().enumerate() {
        let Some(raw) = ck.de::<RawDerived>(n, &format!("derived attribute {}", i + 1)) else { continue };
        let code_ok = claim(&mut ck, &raw.code);
        check_texts(
            &mut ck,
            &raw.code,
            &[
                ("label", raw.label.as_deref()),
                ("description", raw.description.as_deref()),
                ("type", raw.tag.as_deref()),
            ],
        );
        let rule = match Rule::parse(&raw.rule) {
            Ok(r) => Some(r),
            Err(e) => {
                ck.at(
                    raw.rule.span(),
                    format!("{}: bad rule \"{}\": {e}", raw.code.as_str(), abbreviated(raw.rule.as_str())),
                );
                None
            }
        };
        let t = check_fraction(&mut ck, &raw.threshold, "threshold").unwrap_or(threshold);
        if code_ok {
            let attr = Attribute {
                code: raw.code.to_string(),
                label: raw.label.unwrap_or_else(|| raw.code.to_string()),
                description: raw.description,
                tag: raw.tag,
                threshold: t,
                kind: Kind::Derived { rule: Rule::Code(String::new()), expanded: Rule::Code(String::new()) },
            };
            derived.push((raw.rule, attr, rule));
        }
    }

    // rules: every code known, no cycles; then expand derived codes into base-only rules
    let rules: HashMap<String, Rule> =
        derived.iter().filter_map(|(_, a, r)| Some((a.code.clone(), r.clone()?))).collect();
    let all_known: HashSet<String> = attributes
        .iter()
        .map(|a| a.code.clone())
        .chain(derived.iter().map(|(_, a, _)| a.code.clone()))
        .collect();
    let mut resolved = Vec::new();
    for (span, mut attr, rule) in derived {
        let Some(rule) = rule else { continue };
        let unknown: Vec<&str> = rule.codes().into_iter().filter(|c| !all_known.contains(*c)).collect();
        if !unknown.is_empty() {
            ck.at(span.span(), format!("{}: rule names unknown code(s): {}", attr.code, unknown.join(", ")));
            continue;
        }
        match expand(&rule, &rules, &mut vec![attr.code.clone()], &mut 0) {
            Ok(expanded) => {
                attr.kind = Kind::Derived { rule, expanded };
                resolved.push(attr);
            }
            Err(Expansion::Cycle(cycle)) => ck.at(span.span(), format!("{}: rules form a cycle: {}", attr.code, cycle.join(" -> "))),
            Err(Expansion::TooLarge) => ck.at(
                span.span(),
                format!("{}: with the derived codes it names replaced by their rules, the rule has more than {} terms", attr.code, limits::RULE_TERMS),
            ),
        }
    }
    attributes.extend(resolved);

    if ck.problems.is_empty() {
        Ok(Vocabulary { attributes })
    } else {
        ck.problems.sort_by_key(|p| (p.line, p.column));
        Err(ck.problems)
    }
}

/// The text's size, its nesting depth and its aliases, from the parser's events alone. A
/// syntax error is left to the real parse, which reports it with its place.
fn check_shape(text: &str) -> Result<(), Problem> {
    let at = |line, column, message: String| Problem { line, column, message };
    if text.len() > limits::TEXT_BYTES {
        return Err(at(
            1,
            1,
            format!(
                "the file has {} bytes; a vocabulary may have at most {}",
                text.len(),
                limits::TEXT_BYTES
            ),
        ));
    }
    let mut parser = yaml_rust2::parser::Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        let Ok((event, mark)) = parser.next_token() else { return Ok(()) };
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > limits::YAML_DEPTH {
                    return Err(at(
                        mark.line(),
                        mark.col() + 1,
                        format!("nested more than {} levels deep", limits::YAML_DEPTH),
                    ));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            Event::Alias(_) => {
                return Err(at(mark.line(), mark.col() + 1, "YAML aliases (*name) are not supported".into()))
            }
            Event::StreamEnd => return Ok(()),
            _ => {}
        }
    }
}

/// Why a rule could not be expanded.
enum Expansion {
    /// The path of codes that leads back to its start.
    Cycle(Vec<String>),
    /// More than `limits::RULE_TERMS` codes once expanded (rules naming rules can double at
    /// every level).
    TooLarge,
}

/// Replace derived codes by their rules, recursively, counting the base codes in `terms`.
fn expand(
    rule: &Rule,
    rules: &HashMap<String, Rule>,
    path: &mut Vec<String>,
    terms: &mut usize,
) -> Result<Rule, Expansion> {
    Ok(match rule {
        Rule::Code(c) => match rules.get(c) {
            None => {
                *terms += 1;
                if *terms > limits::RULE_TERMS {
                    return Err(Expansion::TooLarge);
                }
                Rule::Code(c.clone())
            }
            Some(inner) => {
                if path.contains(c) {
                    let mut cycle = path.clone();
                    cycle.push(c.clone());
                    return Err(Expansion::Cycle(cycle));
                }
                path.push(c.clone());
                let e = expand(inner, rules, path, terms)?;
                path.pop();
                e
            }
        },
        Rule::Not(a) => Rule::Not(Box::new(expand(a, rules, path, terms)?)),
        Rule::And(a, b) => {
            Rule::And(Box::new(expand(a, rules, path, terms)?), Box::new(expand(b, rules, path, terms)?))
        }
        Rule::Or(a, b) => {
            Rule::Or(Box::new(expand(a, rules, path, terms)?), Box::new(expand(b, rules, path, terms)?))
        }
    })
}

/// A rule as a message quotes it: long ones cut to their first 60 characters.
fn abbreviated(s: &str) -> String {
    if s.chars().count() <= 60 {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(57).collect::<String>())
    }
}

/// A problem for each text of attribute `code` longer than `limits::TEXT_CHARS`.
fn check_texts(ck: &mut Checker, code: &Spanned<String>, texts: &[(&str, Option<&str>)]) {
    for (what, t) in texts {
        if let Some(n) = t.map(|t| t.chars().count()).filter(|&n| n > limits::TEXT_CHARS) {
            ck.at(
                code.span(),
                format!(
                    "{}: {what} has {n} characters; at most {} are allowed",
                    code.as_str(),
                    limits::TEXT_CHARS
                ),
            );
        }
    }
}

fn load_problem(e: &marked_yaml::LoadError) -> Problem {
    use marked_yaml::LoadError as L;
    let (mark, message) = match e {
        L::TopLevelMustBeMapping(m) => {
            (Some(*m), "the file must be a mapping (version:, base_attributes:, ...)".to_string())
        }
        L::DuplicateKey(d) => {
            (d.key.span().start().copied(), format!("duplicate key \"{}\"", d.key.as_str()))
        }
        L::ScanError(m, s) => (Some(*m), format!("YAML syntax error: {}", s.info())),
        other => (None, other.to_string()),
    };
    let (line, column) = mark.map(|m| (m.line(), m.column())).unwrap_or((1, 1));
    Problem { line, column, message }
}

/// A derived attribute's rule: codes combined with AND, OR, NOT and parentheses (NOT binds
/// tightest, then AND, then OR; keywords in any case). A grammar this small is parsed by hand.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    Code(String),
    Not(Box<Rule>),
    And(Box<Rule>, Box<Rule>),
    Or(Box<Rule>, Box<Rule>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Open,
    Close,
}

impl Rule {
    /// A rule as a vocabulary's author writes it.
    pub fn parse(s: &str) -> Result<Rule, String> {
        Rule::parse_within(s, limits::RULE_CHARS, limits::RULE_DEPTH)
    }

    /// A rule as [`Rule`]'s `Display` writes an expanded one (what clip.vocabulary_attribute
    /// keeps, and scoring parses again): as many terms as expansion allows, each level in
    /// parentheses.
    pub fn parse_expanded(s: &str) -> Result<Rule, String> {
        Rule::parse_within(s, limits::RULE_TERMS * 80, 2 * limits::RULE_TERMS)
    }

    fn parse_within(s: &str, max_chars: usize, max_depth: usize) -> Result<Rule, String> {
        let n = s.chars().count();
        if n > max_chars {
            return Err(format!("{n} characters; a rule may have at most {max_chars}"));
        }
        let mut tokens = Vec::new();
        let mut chars = s.char_indices().peekable();
        while let Some(&(i, ch)) = chars.peek() {
            match ch {
                c if c.is_whitespace() => {
                    chars.next();
                }
                '(' => {
                    tokens.push(Token::Open);
                    chars.next();
                }
                ')' => {
                    tokens.push(Token::Close);
                    chars.next();
                }
                c if c.is_ascii_alphanumeric() || c == '_' => {
                    let mut w = String::new();
                    while let Some(&(_, c)) = chars.peek() {
                        if !(c.is_ascii_alphanumeric() || c == '_') {
                            break;
                        }
                        w.push(c);
                        chars.next();
                    }
                    tokens.push(Token::Word(w));
                }
                other => return Err(format!("unexpected \"{other}\" at character {}", i + 1)),
            }
        }
        let mut p = RuleParser { tokens, pos: 0, depth: 0, max_depth };
        let r = p.or()?;
        match p.tokens.get(p.pos) {
            None => Ok(r),
            Some(t) => Err(format!("unexpected {} after a complete rule", show(t))),
        }
    }

    /// Every code the rule names, in order, with repeats.
    pub fn codes(&self) -> Vec<&str> {
        match self {
            Rule::Code(c) => vec![c.as_str()],
            Rule::Not(a) => a.codes(),
            Rule::And(a, b) | Rule::Or(a, b) => {
                let mut v = a.codes();
                v.extend(b.codes());
                v
            }
        }
    }

    /// The rule as an SQL expression over the confidences in columns named by `column(code)`:
    /// least() for AND, greatest() for OR, 1 - x for NOT (clip._score evaluates it).
    pub fn to_sql(&self, column: &dyn Fn(&str) -> String) -> String {
        match self {
            Rule::Code(c) => column(c),
            Rule::Not(a) => format!("(1 - {})", a.to_sql(column)),
            Rule::And(a, b) => format!("least({}, {})", a.to_sql(column), b.to_sql(column)),
            Rule::Or(a, b) => format!("greatest({}, {})", a.to_sql(column), b.to_sql(column)),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Code(c) => write!(f, "{c}"),
            Rule::Not(a) => write!(f, "NOT {a}"),
            Rule::And(a, b) => write!(f, "({a} AND {b})"),
            Rule::Or(a, b) => write!(f, "({a} OR {b})"),
        }
    }
}

fn show(t: &Token) -> String {
    match t {
        Token::Word(w) => format!("\"{w}\""),
        Token::Open => "\"(\"".into(),
        Token::Close => "\")\"".into(),
    }
}

struct RuleParser {
    tokens: Vec<Token>,
    pos: usize,
    /// NOTs and parentheses open around the current token: the parser recurses once for each
    depth: usize,
    max_depth: usize,
}

impl RuleParser {
    fn keyword(&self, k: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Word(w)) if w.eq_ignore_ascii_case(k))
    }

    fn or(&mut self) -> Result<Rule, String> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            left = Rule::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Rule, String> {
        let mut left = self.not()?;
        while self.keyword("and") {
            self.pos += 1;
            left = Rule::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn deeper(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(format!("NOTs and parentheses nested more than {} deep", self.max_depth));
        }
        Ok(())
    }

    fn not(&mut self) -> Result<Rule, String> {
        if self.keyword("not") {
            self.pos += 1;
            self.deeper()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Rule::Not(Box::new(inner)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Rule, String> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        match t {
            Some(Token::Open) => {
                self.deeper()?;
                let inner = self.or()?;
                self.depth -= 1;
                match self.tokens.get(self.pos) {
                    Some(Token::Close) => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    _ => Err("missing \")\"".into()),
                }
            }
            Some(Token::Word(w)) if ["and", "or", "not"].iter().any(|k| w.eq_ignore_ascii_case(k)) => {
                Err(format!("expected a code, found {w}"))
            }
            Some(Token::Word(w)) => Ok(Rule::Code(w)),
            Some(t) => Err(format!("expected a code, found {}", show(&t))),
            None => Err("the rule ends where a code was expected".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
version: 1
template: "a photo of {description}"
calibration: {center: 25.5, scale: 1.5}
base_attributes:
  - code: earth
    label: Earth
    description: Earth visible in the image
    type: celestial_body
  - code: moon
    description: the Moon
    calibration: {center: 24.0, scale: 1.2}
    threshold: 0.7
  - code: packaged
    prompts: ["a product in its box", "a packaged product"]
    group: packaging
  - code: unpackaged
    prompts: ["a product without packaging"]
    group: packaging
derived_attributes:
  - code: earth_and_moon
    label: Earth and Moon
    rule: earth AND moon
  - code: lonely
    rule: NOT (earth_and_moon OR packaged)
threshold: 0.5
"#;

    fn problems(text: &str) -> Vec<String> {
        parse(text).expect_err("refused").iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn a_good_file_gives_typed_attributes_with_defaults_applied() {
        let v = parse(GOOD).unwrap();
        let codes: Vec<&str> = v.attributes.iter().map(|a| a.code.as_str()).collect();
        assert_eq!(codes, ["earth", "moon", "packaged", "unpackaged", "earth_and_moon", "lonely"]);
        let earth = &v.attributes[0];
        assert_eq!(earth.label, "Earth");
        assert_eq!(earth.tag.as_deref(), Some("celestial_body"));
        assert_eq!(
            earth.kind,
            Kind::Base {
                prompts: vec!["a photo of Earth visible in the image".into()],
                calibration: Some(Calibration { center: 25.5, scale: 1.5 }),
                group: None
            }
        );
        assert_eq!(v.attributes[1].label, "moon");
        assert_eq!(v.attributes[1].threshold, 0.7);
        assert!(matches!(&v.attributes[1].kind, Kind::Base { calibration: Some(c), .. } if c.center == 24.0));
        assert!(
            matches!(&v.attributes[2].kind, Kind::Base { prompts, group: Some(g), .. } if prompts.len() == 2 && g == "packaging")
        );
        let Kind::Derived { expanded, .. } = &v.attributes[5].kind else { panic!() };
        assert_eq!(expanded.to_string(), "NOT ((earth AND moon) OR packaged)");
    }

    #[test]
    fn every_problem_is_listed_with_line_and_column() {
        let text = "\
version: 1
base_attributes:
  - code: earth
    description: Earth
  - code: earth
    description: Earth again
  - code: Bad-Code
    description: x
  - code: moon
  - code: sun
    description: the Sun
    colour: yellow
  - code: star
    description: a star
    calibration: {center: abc, scale: 1}
  - description: no code
derived_attributes:
  - code: both
    rule: earth AND mars
  - code: a
    rule: b OR earth
  - code: b
    rule: NOT a
";
        let p = problems(text);
        assert_eq!(
            p,
            [
                "line 5, column 11: duplicate code \"earth\" (first defined on line 3)",
                "line 7, column 11: bad code \"Bad-Code\": codes are [a-z][a-z0-9_]*, at most 63 characters",
                "line 9, column 11: moon: needs a description (for the template) or prompts",
                "line 12, column 5: base attribute 5: unknown key \"colour\" (expected one of: code, label, description, type, prompts, calibration, group, threshold)",
                "line 15, column 27: base attribute 6: expected a number (invalid float literal)",
                "line 16, column 5: base attribute 7: missing field `code`",
                "line 19, column 11: both: rule names unknown code(s): mars",
                "line 21, column 11: a: rules form a cycle: a -> b -> a",
                "line 23, column 11: b: rules form a cycle: b -> a -> b",
            ]
        );
    }

    #[test]
    fn file_level_problems() {
        assert_eq!(
            problems("version: 2\nbase_attributes: []\n"),
            ["line 1, column 10: unsupported version 2: this is version 1"]
        );
        assert_eq!(
            problems("base_attributes: []\nextra: 1\n")[0],
            "line 1, column 1: missing key \"version\" (this format is version 1)"
        );
        assert!(problems("base_attributes: []\nextra: 1\n")[1]
            .starts_with("line 2, column 1: unknown key \"extra\""));
        assert_eq!(
            problems("version: 1\n"),
            ["line 1, column 1: missing key \"base_attributes\" (a list of at least one attribute)"]
        );
        assert_eq!(problems("version: [1\n")[0].split(':').next().unwrap(), "line 2, column 1");
        assert_eq!(
            problems("version: 1\nversion: 1\nbase_attributes: []\n"),
            ["line 2, column 1: duplicate key \"version\""]
        );
        assert_eq!(
            problems("version: 1\ntemplate: a photo\nthreshold: 2\ncalibration: {center: 1, scale: 0}\nbase_attributes: []\n"),
            [
                "line 2, column 11: template must contain {description}",
                "line 3, column 12: threshold must be between 0 and 1, not 2",
                "line 4, column 14: calibration needs a finite center and a scale above 0, not {center: 1, scale: 0}",
            ]
        );
        assert_eq!(
            problems("version: 1\nbase_attributes:\n  - code: a\n    description: x\n    group: g\n"),
            ["line 5, column 12: group \"g\" has one attribute: a softmax group needs at least two"]
        );
        assert_eq!(
            problems("version: 1\nbase_attributes: 3\n"),
            ["line 2, column 18: base_attributes must be a list of attributes"]
        );
    }

    #[test]
    fn rules_parse_with_precedence_and_render_as_min_max_sql() {
        let r = Rule::parse("a or b and not (c OR d)").unwrap();
        assert_eq!(r.to_string(), "(a OR (b AND NOT (c OR d)))");
        assert_eq!(r.to_sql(&|c| format!("x.{c}")), "greatest(x.a, least(x.b, (1 - greatest(x.c, x.d))))");
        assert_eq!(r.codes(), ["a", "b", "c", "d"]);
        for bad in ["", "a AND", "(a", "a b", "a & b", "AND a", "a OR ()"] {
            assert!(Rule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn expanded_rules_round_trip_through_their_text_and_sql_text_does_not_parse() {
        for text in ["a", "NOT a", "(a OR (b AND NOT (c OR d)))", "NOT (NOT a AND b)", "((a OR b) AND c)"] {
            let r = Rule::parse(text).unwrap();
            assert_eq!(Rule::parse_expanded(&r.to_string()).unwrap(), r, "{text}");
        }
        // a rule of 1,000 terms once expanded, 999 levels deep: deeper than an author may write
        let mut deep = Rule::Code("a".into());
        for _ in 1..1000 {
            deep = Rule::Or(Box::new(deep), Box::new(Rule::Code("b".into())));
        }
        assert!(Rule::parse(&deep.to_string()).is_err());
        assert_eq!(Rule::parse_expanded(&deep.to_string()).unwrap(), deep);
        for sql in ["(SELECT 1)", "x.\"a\"", "a; DROP TABLE t", "a) + (b", "greatest(a, b)"] {
            assert!(Rule::parse_expanded(sql).is_err(), "{sql}");
        }
    }

    #[test]
    fn hostile_files_are_refused_with_a_problem_not_a_crash() {
        let one = |text: &str| problems(text).join("\n");
        let deep = format!("version: 1\nbase_attributes: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        // (the YAML scanner has its own limit on flow nesting, which it reaches first)
        assert!(one(&deep).contains("recursion limit"), "{}", one(&deep));
        let block = format!("version: 1\nbase_attributes:\n  {}x\n", "- ".repeat(20));
        assert!(one(&block).contains("nested more than 16 levels"), "{}", one(&block));
        let big = format!("version: 1\n# {}\nbase_attributes: []\n", "x".repeat(limits::TEXT_BYTES));
        assert!(one(&big).contains("at most 1048576"), "{}", one(&big));
        let alias = "version: 1\nbase_attributes:\n  - &a {code: a, description: x}\n  - *a\n";
        assert!(one(alias).contains("aliases"), "{}", one(alias));
        let rule = |r: String| {
            format!("version: 1\nbase_attributes:\n  - {{code: a, description: x}}\nderived_attributes:\n  - code: d\n    rule: \"{r}\"\n")
        };
        // 2,000,000 NOTs: over the text limit; 300: too deep; a long flat rule: too long
        assert!(one(&rule(format!("{}a", "NOT ".repeat(2_000_000)))).contains("at most 1048576"));
        let nots = one(&rule(format!("{}a", "NOT ".repeat(300))));
        assert!(nots.contains("nested more than 32"), "{nots}");
        let flat = one(&rule(format!("a{}", " OR a".repeat(500))));
        assert!(flat.contains("a rule may have at most 2000"), "{flat}");
        let nested = one(&rule(format!("{}a{}", "(".repeat(40), ")".repeat(40))));
        assert!(nested.contains("nested more than 32"), "{nested}");
        // each rule names the previous one twice: 2^20 terms once expanded
        let mut doubling = "version: 1\nbase_attributes:\n  - {code: a, description: x}\nderived_attributes:\n  - {code: d0, rule: a AND a}\n".to_string();
        for i in 1..20 {
            doubling += &format!("  - {{code: d{i}, rule: d{} OR d{}}}\n", i - 1, i - 1);
        }
        assert!(one(&doubling).contains("more than 1000 terms"), "{}", one(&doubling));
        let many: String = (0..1_001).map(|i| format!("  - {{code: a{i}, description: x}}\n")).collect();
        assert!(one(&format!("version: 1\nbase_attributes:\n{many}")).contains("at most 1000"));
        let long =
            format!("version: 1\nbase_attributes:\n  - {{code: a, description: {}}}\n", "x".repeat(1_001));
        assert!(one(&long).contains("description has 1001 characters"), "{}", one(&long));
    }
}
