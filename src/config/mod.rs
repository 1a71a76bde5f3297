//! Loading `authgate.toml`: parse with spans, interpolate `${VAR}`, deserialize into the model,
//! then validate the whole of it, so that every problem is reported at once with its key path
//! and `line:column`.

mod interpolate;
mod model;
mod secret;
mod units;
mod validate;

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub use model::*;
pub use secret::Secret;
pub use units::{ByteSize, Duration};

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `routes[1].upstream` (empty for a syntax error).
    pub path: String,
    /// Where in the file, when known.
    pub location: Option<Location>,
    /// What is wrong, for a person.
    pub message: String,
}

/// A 1-based position in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

/// A configuration that cannot be used, with every problem found.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The file (or a label for an in-memory config).
    pub origin: String,
    /// Everything wrong, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(f, "{}: {n} problem{}", self.origin, if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "  {}", self.origin)?;
            if let Some(l) = p.location {
                write!(f, ":{}:{}", l.line, l.column)?;
            }
            if p.path.is_empty() {
                writeln!(f, ": {}", p.message)?;
            } else {
                writeln!(f, ": `{}`: {}", p.path, p.message)?;
            }
        }
        Ok(())
    }
}

/// Reads and validates a config file, taking `${VAR}` values from the process environment.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        origin: origin.clone(),
        problems: vec![Problem {
            path: String::new(),
            location: None,
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_str(&text, &origin, &base, &|name| std::env::var(name).ok())
}

/// Parses and validates config text. Relative file paths in it are resolved against `base_dir`.
pub fn load_str(
    text: &str,
    origin: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let fail = |problems: Vec<Problem>| ConfigError { origin: origin.to_owned(), problems };
    let mut root = DeTable::parse(text).map_err(|e| {
        fail(vec![Problem {
            path: String::new(),
            location: e.span().map(|s| location_of(text, s.start)),
            message: e.message().trim().to_owned(),
        }])
    })?;

    let mut keys = KeyIndex::default();
    let mut problems = Vec::new();
    walk_table(root.get_mut(), "", &mut keys, &mut |path, span, value| {
        if let DeValue::String(s) = value {
            match interpolate::interpolate(s, env) {
                Ok(Some(new)) => *s = new.into(),
                Ok(None) => {}
                Err(e) => problems.push(Problem {
                    path: path.to_owned(),
                    location: Some(location_of(text, span.start)),
                    message: e.to_string(),
                }),
            }
        }
    });
    if !problems.is_empty() {
        return Err(fail(problems));
    }

    let mut config: Config =
        serde_path_to_error::deserialize(toml::de::Deserializer::from(root)).map_err(|e| {
            let path = display_path(e.path());
            let inner = e.into_inner();
            let location =
                inner.span().map(|s| location_of(text, s.start)).or_else(|| keys.locate(text, &path));
            fail(vec![Problem { path, location, message: inner.message().trim().to_owned() }])
        })?;

    let mut problems = validate::validate(&mut config, base_dir);
    if problems.is_empty() {
        return Ok(config);
    }
    for p in &mut problems {
        p.location = keys.locate(text, &p.path);
    }
    problems.sort_by_key(|p| p.location.map(|l| (l.line, l.column)));
    Err(fail(problems))
}

/// serde_path_to_error prints the root as `.`; we print it as nothing.
fn display_path(path: &serde_path_to_error::Path) -> String {
    let s = path.to_string();
    if s == "." { String::new() } else { s }
}

/// Byte offsets of every key path in the document, to place validation problems.
#[derive(Default)]
struct KeyIndex(HashMap<String, usize>);

impl KeyIndex {
    /// The position of `path`, or of its nearest ancestor that is in the file.
    fn locate(&self, text: &str, path: &str) -> Option<Location> {
        let mut p = path;
        loop {
            if let Some(&offset) = self.0.get(p) {
                return Some(location_of(text, offset));
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

fn walk_table(
    table: &mut DeTable<'_>,
    prefix: &str,
    keys: &mut KeyIndex,
    visit: &mut dyn FnMut(&str, Range<usize>, &mut DeValue<'_>),
) {
    for (key, value) in table.iter_mut() {
        let path =
            if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
        keys.0.insert(path.clone(), key.span().start);
        walk_value(value, &path, keys, visit);
    }
}

fn walk_value(
    value: &mut Spanned<DeValue<'_>>,
    path: &str,
    keys: &mut KeyIndex,
    visit: &mut dyn FnMut(&str, Range<usize>, &mut DeValue<'_>),
) {
    let span = value.span();
    match value.get_mut() {
        DeValue::Table(t) => walk_table(t, path, keys, visit),
        DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let item_path = format!("{path}[{i}]");
                keys.0.entry(item_path.clone()).or_insert(item.span().start);
                walk_value(item, &item_path, keys, visit);
            }
        }
        other => visit(path, span, other),
    }
}

fn location_of(text: &str, offset: usize) -> Location {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Location { line: before.matches('\n').count() + 1, column: before[line_start..].chars().count() + 1 }
}

/// Resolves a path from the config against the config file's directory.
pub(crate) fn resolve_path(base_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { base_dir.join(p) }
}
