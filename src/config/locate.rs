//! Mapping serde errors and validation findings back to keys and lines of a TOML file.

use std::ops::Range;
use std::path::Path;

use kaudit_schema::ConfigIssue;
use serde::de::DeserializeOwned;
use toml_edit::{Document, DocumentMut, Item, Table, Value};

use super::durations::{self, Rename};
use super::env::{self, Override, Source};
use super::{ConfigError, Problem};

/// A key path: `agent.topics[1].pattern` is `[Key(agent), Key(topics), Index(1), Key(pattern)]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPath(pub Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

impl std::fmt::Display for KeyPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Segment::Key(k) if k.contains('.') => write!(f, "{}\"{k}\"", if i > 0 { "." } else { "" })?,
                Segment::Key(k) => write!(f, "{}{k}", if i > 0 { "." } else { "" })?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

impl KeyPath {
    /// Whether `prefix` is this path or one of its parents.
    pub fn starts_with(&self, prefix: &KeyPath) -> bool {
        self.0.starts_with(&prefix.0)
    }

    /// Parse the form [`Display`](std::fmt::Display) writes.
    pub fn parse(text: &str) -> KeyPath {
        let mut segs = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            rest = rest.strip_prefix('.').unwrap_or(rest);
            if let Some(r) = rest.strip_prefix('"') {
                let end = r.find('"').unwrap_or(r.len());
                segs.push(Segment::Key(r[..end].to_string()));
                rest = r.get(end + 1..).unwrap_or("");
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').unwrap_or(r.len());
                segs.push(Segment::Index(r[..end].parse().unwrap_or(0)));
                rest = r.get(end + 1..).unwrap_or("");
            } else {
                let end = rest.find(['.', '[']).unwrap_or(rest.len());
                segs.push(Segment::Key(rest[..end].to_string()));
                rest = &rest[end..];
            }
        }
        KeyPath(segs)
    }
}

fn contains(span: &Option<Range<usize>>, at: usize) -> bool {
    span.as_ref().is_some_and(|s| s.start <= at && at < s.end.max(s.start + 1))
}

/// The deepest key whose key or value span holds byte `at`.
fn find_in_table(table: &Table, at: usize, path: &mut Vec<Segment>) -> bool {
    for (k, item) in table.iter() {
        path.push(Segment::Key(k.to_string()));
        if find_in_item(item, at, path) {
            return true;
        }
        if contains(&table.key(k).and_then(|k| k.span()), at) || contains(&item.span(), at) {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_item(item: &Item, at: usize, path: &mut Vec<Segment>) -> bool {
    match item {
        Item::Table(t) => find_in_table(t, at, path),
        Item::ArrayOfTables(a) => a.iter().enumerate().any(|(i, t)| {
            path.push(Segment::Index(i));
            let hit = find_in_table(t, at, path) || contains(&t.span(), at);
            if !hit {
                path.pop();
            }
            hit
        }),
        Item::Value(v) => find_in_value(v, at, path),
        Item::None => false,
    }
}

fn find_in_value(v: &Value, at: usize, path: &mut Vec<Segment>) -> bool {
    match v {
        Value::InlineTable(t) => t.iter().any(|(k, v)| {
            path.push(Segment::Key(k.to_string()));
            let hit =
                find_in_value(v, at, path) || contains(&t.key(k).and_then(|k| k.span()), at) || contains(&v.span(), at);
            if !hit {
                path.pop();
            }
            hit
        }),
        Value::Array(a) => a.iter().enumerate().any(|(i, v)| {
            path.push(Segment::Index(i));
            let hit = find_in_value(v, at, path) || contains(&v.span(), at);
            if !hit {
                path.pop();
            }
            hit
        }),
        _ => false,
    }
}

/// Byte span of the key at `path` (or of its value, or table header), in a spanned document. A key
/// that is not in the file (a required key left out) is located at the nearest table that is.
fn span_of(doc: &Table, path: &KeyPath) -> Option<Range<usize>> {
    let mut item: Option<&Item> = None;
    let mut table = Some(doc);
    let mut span = None;
    for seg in &path.0 {
        match (seg, item) {
            (Segment::Key(k), _) if table.is_some() => {
                let t = table.expect("checked");
                let Some((key, it)) = t.get_key_value(k) else {
                    return span;
                };
                span = key.span().or_else(|| it.span()).or(span);
                item = Some(it);
            }
            (Segment::Key(k), Some(Item::Value(Value::InlineTable(t)))) => {
                let Some((key, it)) = t.get_key_value(k) else {
                    return span;
                };
                span = key.span().or_else(|| it.span()).or(span);
                item = Some(it);
            }
            (Segment::Index(i), Some(Item::ArrayOfTables(a))) => {
                let Some(t) = a.get(*i) else {
                    return span;
                };
                span = t.span().or(span);
                table = Some(t);
                item = None;
                continue;
            }
            (Segment::Index(i), Some(Item::Value(Value::Array(a)))) => {
                return a.get(*i).and_then(Value::span).or(span);
            }
            _ => return span,
        }
        table = item.and_then(Item::as_table);
    }
    span
}

fn remove(doc: &mut Table, path: &KeyPath) -> bool {
    let Some((last, parents)) = path.0.split_last() else {
        return false;
    };
    let mut item: Option<&mut Item> = None;
    for seg in parents {
        let next = match (seg, item) {
            (Segment::Key(k), None) => doc.get_mut(k),
            (Segment::Key(k), Some(it)) => it.get_mut(k.as_str()),
            (Segment::Index(i), Some(it)) => it.get_mut(*i),
            (Segment::Index(_), None) => None,
        };
        match next {
            Some(n) => item = Some(n),
            None => return false,
        }
    }
    match (last, item) {
        (Segment::Key(k), None) => doc.remove(k).is_some(),
        (Segment::Key(k), Some(it)) => match it {
            Item::Table(t) => t.remove(k).is_some(),
            Item::Value(Value::InlineTable(t)) => t.remove(k).is_some(),
            _ => false,
        },
        (Segment::Index(i), Some(it)) => match it {
            Item::ArrayOfTables(a) if *i < a.len() => {
                a.remove(*i);
                true
            }
            Item::Value(Value::Array(a)) if *i < a.len() => {
                a.remove(*i);
                true
            }
            _ => false,
        },
        (Segment::Index(_), None) => false,
    }
}

fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Where the document being deserialised came from: the file, the environment variables applied
/// to it, and the short-form durations rewritten into `_ms` keys.
struct Origin<'a> {
    original: Document<&'a str>,
    text: &'a str,
    sources: Vec<Source>,
    renames: Vec<Rename>,
}

impl Origin<'_> {
    /// `message` about `path` (of the deserialised document), located where it was written: the
    /// key as the file or the variable spelt it, and the file's line or the variable's name.
    fn problem(&self, mut path: KeyPath, mut message: String) -> Problem {
        // A rewritten key, or a table holding one (serde locates some errors at the table only).
        let leaf = |p: &KeyPath| p.0.last().map(|s| format!("`{}`", KeyPath(vec![s.clone()]))).unwrap_or_default();
        for r in self.renames.iter().filter(|r| r.long.starts_with(&path) || path.starts_with(&r.long)) {
            message = message.replace(&leaf(&r.long), &leaf(&r.short));
        }
        if let Some(r) = self.renames.iter().find(|r| path.starts_with(&r.long)) {
            path = KeyPath([&r.short.0[..], &path.0[r.long.0.len()..]].concat());
        }
        // serde locates some errors above the key a variable set (inside a tagged sink, at the
        // sink): such a message may quote the value, so every variable set below `path` is
        // scrubbed from it, and the last of them is named.
        let below: Vec<&Source> = self.sources.iter().filter(|s| s.path.starts_with(&path)).collect();
        for source in &below {
            message = source.scrub(&source.path, &message);
        }
        let at = self.sources.iter().rev().find(|s| path.starts_with(&s.path)).or(below.last().copied());
        if let Some(source) = at {
            let message = source.scrub(&path, &message);
            return Problem {
                key: path.to_string(),
                line: None,
                column: None,
                env: Some(source.variable.clone()),
                message,
            };
        }
        let span = span_of(self.original.as_table(), &path);
        let (line, column) = span.map(|s| line_col(self.text, s.start)).unzip();
        Problem { key: path.to_string(), line, column, env: None, message }
    }
}

/// serde's messages say `unknown field `x`, expected one of ...`; keep them, they read well.
fn clean(message: &str) -> String {
    message.trim().trim_end_matches('.').replace('\n', " ")
}

/// Problems shown one by one; past it, one line says how many more there are.
pub(super) const MAX_SHOWN: usize = 64;
/// Structural errors counted at most (each costs a parse of the file): past it, "at least".
const MAX_COUNTED: usize = 256;

/// The first [`MAX_SHOWN`] problems in file order, then `... and N more` if there are more.
fn shown(mut problems: Vec<Problem>, counted_all: bool) -> Vec<Problem> {
    problems.sort_by_key(|p| (p.line.unwrap_or(usize::MAX), p.column));
    if problems.len() > MAX_SHOWN || !counted_all {
        let more = problems.len().saturating_sub(MAX_SHOWN);
        problems.truncate(MAX_SHOWN);
        let at_least = if counted_all { "" } else { "at least " };
        let message = format!("... and {at_least}{more} more (fix these and run again)");
        problems.push(Problem { key: String::new(), line: None, column: None, env: None, message });
    }
    problems
}

/// Deserialise `text` into `T` with the overrides of `env` applied, gathering every error with
/// its key and line (or variable), then validate.
pub(super) fn load_all_errors<T: DeserializeOwned>(
    text: &str,
    file: &Path,
    env: &[(String, String)],
    validate: impl Fn(&T) -> Vec<ConfigIssue>,
) -> Result<(T, Vec<Override>), ConfigError> {
    let fail = |problems: Vec<Problem>| ConfigError { file: file.to_path_buf(), problems: shown(problems, true) };
    let original = match Document::parse(text) {
        Ok(d) => d,
        Err(e) => {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unzip();
            let message = clean(e.message());
            return Err(fail(vec![Problem { key: String::new(), line, column, env: None, message }]));
        }
    };
    let mut doc: DocumentMut = text.parse().expect("parsed above");
    let applied = env::apply(&mut doc, env);
    let normalized = durations::normalize(&mut doc);
    let origin = Origin { original, text, sources: applied.sources, renames: normalized.renames };
    let mut problems: Vec<Problem> = applied
        .problems
        .into_iter()
        .map(|(variable, key, message)| Problem { key, line: None, column: None, env: Some(variable), message })
        .collect();
    problems.extend(normalized.problems.into_iter().map(|(path, message)| origin.problem(path, message)));
    let overrides = || {
        let all = origin.sources.iter();
        all.map(|s| Override { variable: s.variable.clone(), key: s.path.to_string() }).collect()
    };
    let mut current = doc.to_string();
    for _ in 0..MAX_COUNTED {
        let err = match toml::from_str::<T>(&current) {
            Ok(config) => {
                // Semantic findings on what remains, after the structural ones.
                let issues = validate(&config).into_iter();
                problems.extend(issues.map(|i| origin.problem(KeyPath::parse(&i.path), i.message)));
                if problems.is_empty() {
                    return Ok((config, overrides()));
                }
                return Err(fail(problems));
            }
            Err(e) => e,
        };
        let spanned = Document::parse(current.as_str()).expect("re-serialised TOML parses");
        let mut path = Vec::new();
        let located = err.span().is_some_and(|s| find_in_table(spanned.as_table(), s.start, &mut path));
        let path = KeyPath(path);
        let mut editable: DocumentMut = current.parse().expect("re-serialised TOML parses");
        let removed = located && remove(editable.as_table_mut(), &path);
        problems.push(origin.problem(path, clean(err.message())));
        if !removed {
            return Err(fail(problems));
        }
        current = editable.to_string();
    }
    Err(ConfigError { file: file.to_path_buf(), problems: shown(problems, false) })
}
