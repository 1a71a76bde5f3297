//! The rules of `[pages]`: the template directory holds only known templates, each readable,
//! small and valid minijinja; the support contact is one short line.

use std::path::Path;

use super::Problems;
use crate::config::{Config, PAGE_TEMPLATES, resolve_path};

/// Largest template accepted: a page, not a site.
const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;

/// Checks `[pages]` and reads its templates into the config.
pub(super) fn pages(config: &mut Config, base_dir: &Path, p: &mut Problems) {
    let pages = &mut config.pages;
    pages.templates.clear();
    if let Some(contact) = &pages.support_contact {
        if contact.is_empty() || contact.len() > 200 || contact.chars().any(char::is_control) {
            p.at("pages.support_contact", "one line of at most 200 characters");
        }
    }
    let Some(dir) = &pages.dir else { return };
    let dir = resolve_path(base_dir, dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => return p.at("pages.dir", format!("cannot read {}: {e}", dir.display())),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".html"))
        .collect();
    names.sort();
    if names.is_empty() {
        p.at(
            "pages.dir",
            format!("{} holds no template (one of {})", dir.display(), PAGE_TEMPLATES.join(", ")),
        );
    }
    for name in names {
        if !PAGE_TEMPLATES.contains(&name.as_str()) {
            p.at(
                "pages.dir",
                format!("{name} is not a page template (known: {})", PAGE_TEMPLATES.join(", ")),
            );
            continue;
        }
        let path = dir.join(&name);
        let source = match std::fs::metadata(&path) {
            Ok(m) if m.len() > MAX_TEMPLATE_BYTES => {
                p.at("pages.dir", format!("{name} is larger than {} KiB", MAX_TEMPLATE_BYTES / 1024));
                continue;
            }
            Ok(_) => std::fs::read_to_string(&path),
            Err(e) => Err(e),
        };
        match source {
            Ok(source) => {
                // compiled here so that `check` and a reload report a broken template, with its line
                let mut env = minijinja::Environment::new();
                if let Err(e) = env.add_template_owned(name.clone(), source.clone()) {
                    let line = e.line().map(|l| format!(" line {l}")).unwrap_or_default();
                    p.at("pages.dir", format!("{name}{line}: {}", e.detail().unwrap_or("invalid template")));
                    continue;
                }
                pages.templates.insert(name, source);
            }
            Err(e) => p.at("pages.dir", format!("cannot read {name}: {e}")),
        }
    }
}
