//! The layering guard: a module imports only from layers below its own. One Rust crate has no
//! boundary that refuses an import cycle (Pingora's crates and Go's packages do), so this test
//! reads every `crate::` path in `src/` (in `use` lines and in code, `super::` paths that leave
//! a top-level module included) and fails on any that points at the same layer or above.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every top-level module of the library and its layer, bottom to top (see `src/lib.rs`).
const LAYERS: &[(&str, u8)] = &[
    // foundation: imports nothing of the crate
    ("clock", 0),
    ("random", 0),
    ("codec", 0),
    ("http_util", 0),
    ("pem", 0),
    ("reply", 0),
    ("metrics", 0),
    ("lifecycle", 0),
    // plumbing
    ("routing", 1),
    ("upstream", 1),
    ("forwarding", 1),
    ("log_writer", 1),
    // model
    ("config", 2),
    ("identity", 3),
    ("pages", 3),
    ("policy", 4),
    // state
    ("session", 5),
    // provider
    ("oidc", 6),
    // verification
    ("jwt", 7),
    ("assertion", 7),
    ("revocation", 8),
    // browser
    ("browser", 9),
    // gateway
    ("gateway", 10),
    // proxy
    ("proxy", 11),
    // top
    ("reload", 12),
    ("admin", 13),
    ("server", 14),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/` (`src/a/b.rs` and `src/a/b/mod.rs` → `[a, b]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The code of a line, without its `//` comment (string literals holding `//` are rare enough
/// in `src/` that none hides a path here).
fn code(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules a piece of code names through `crate::` (also `crate::{a, b::c}`) and
/// through `super::` chains that climb to the crate root from `depth` (how deep the code sits:
/// its file's module path, plus inline `mod` blocks).
fn referenced(text: &str, depth: usize) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let before_ok = rest[..i].chars().last().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        if before_ok {
            if let Some(group) = after.strip_prefix('{') {
                // a grouped import: the first name of each top-level item of the group
                let mut depth = 0;
                let mut item_start = true;
                for (j, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if item_start && !c.is_whitespace() => {
                            found.push(ident_at(&group[j..]).to_owned());
                            item_start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                found.push(ident_at(after).to_owned());
            }
        }
        rest = after;
    }
    // `super::super::x` from a/b/c.rs is crate::x when the chain climbs to the crate root
    let mut rest = text;
    while let Some(i) = rest.find("super::") {
        let mut after = &rest[i..];
        let mut ups = 0;
        while let Some(next) = after.strip_prefix("super::") {
            ups += 1;
            after = next;
        }
        if ups >= depth {
            found.push(ident_at(after).to_owned());
        }
        rest = after;
    }
    found
}

#[test]
fn no_module_imports_from_its_own_layer_or_above() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    let mut seen_modules = BTreeMap::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        if rel == Path::new("lib.rs") || rel == Path::new("main.rs") {
            continue;
        }
        let here = module_path(rel);
        let module = here[0].clone();
        let Some(own) = layer(&module) else {
            problems.push(format!("{}: module `{module}` has no layer in LAYERS", rel.display()));
            continue;
        };
        seen_modules.insert(module.clone(), ());
        let text = std::fs::read_to_string(file).unwrap();
        // inline modules (`mod tests {`) sit at the end of their file: count them from there on
        let mut inline = 0;
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            if (trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ")) && trimmed.ends_with('{') {
                inline += 1;
            }
            for target in referenced(code(line), here.len() + inline) {
                if target == module {
                    continue;
                }
                match layer(&target) {
                    Some(l) if l < own => {}
                    Some(l) => problems.push(format!(
                        "{}:{}: `{module}` (layer {own}) uses `{target}` (layer {l}): a module may only use layers below its own",
                        rel.display(),
                        n + 1
                    )),
                    None => problems.push(format!(
                        "{}:{}: `{target}` is not a module in LAYERS",
                        rel.display(),
                        n + 1
                    )),
                }
            }
        }
    }
    for (module, _) in LAYERS {
        if !seen_modules.contains_key(*module) {
            problems.push(format!("LAYERS names `{module}`, which is not in src/"));
        }
    }
    assert!(problems.is_empty(), "layering broken:\n{}", problems.join("\n"));
}

#[test]
fn the_guard_sees_every_kind_of_import() {
    // code in browser/refresh.rs sits two deep
    assert_eq!(referenced("use crate::proxy::Caller;", 2), ["proxy"]);
    assert_eq!(referenced("use crate::{gateway::Gateway, proxy};", 2), ["gateway", "proxy"]);
    assert_eq!(referenced("let x = crate::server::build();", 2), ["server"]);
    assert_eq!(referenced("use super::super::admin::X;", 2), ["admin"]);
    assert!(referenced("use super::BrowserAuth;", 2).is_empty(), "inside its own module");
    assert!(referenced("use super::*;", 2).is_empty());
    assert!(referenced("use mycrate::x;", 2).is_empty());
    assert_eq!(module_path(Path::new("browser/mod.rs")), ["browser"]);
    assert_eq!(module_path(Path::new("browser/refresh.rs")), ["browser", "refresh"]);
}
