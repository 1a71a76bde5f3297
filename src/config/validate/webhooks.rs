//! The rules of `[webhooks]` and `[providers.<name>.webhooks]`: a secret each, their own paths
//! under `/oauth2/`, a body limit.

use std::collections::HashMap;
use std::path::Path;

use super::{MIN_SECRET_BYTES, Problems, secret_from_file};
use crate::config::{Config, WebhookConfig};

/// Checks `[webhooks]` and every `[providers.<name>.webhooks]`, reading their secret files.
pub(super) fn webhooks(config: &mut Config, base_dir: &Path, p: &mut Problems) {
    let has_session_secret = config.session.secret.is_some();
    // events are the first provider's: [provider], or the only one
    let lone_provider = config.provider.is_some() || config.providers.len() == 1;
    if let Some(w) = config.webhooks.as_mut() {
        webhook("webhooks", w, base_dir, p);
        if !lone_provider {
            p.at("webhooks", "needs a [provider] section (its events are that provider's); give others [providers.<name>.webhooks]");
        }
        if !has_session_secret {
            p.at("webhooks", "needs session.secret: revocation records are sealed with it");
        }
    }
    if config.provider.as_ref().is_some_and(|pr| pr.webhooks.is_some()) {
        p.at("provider.webhooks", "[provider]'s webhooks are the top-level [webhooks]");
    }
    for (name, pr) in config.providers.iter_mut() {
        let Some(w) = pr.webhooks.as_mut() else { continue };
        let at = format!("providers.{name}.webhooks");
        // the default path, made this provider's own
        if w.path == "/oauth2/webhooks" {
            w.path = format!("/oauth2/webhooks/{name}");
        }
        webhook(&at, w, base_dir, p);
        if !has_session_secret {
            p.at(at, "needs session.secret: revocation records are sealed with it");
        }
    }
    // every endpoint its own path
    let mut paths: HashMap<String, String> = HashMap::new();
    let own = config
        .providers
        .iter()
        .filter_map(|(n, pr)| pr.webhooks.as_ref().map(|w| (format!("providers.{n}.webhooks"), w)));
    for (at, w) in config.webhooks.iter().map(|w| ("webhooks".to_owned(), w)).chain(own) {
        if let Some(first) = paths.insert(w.path.clone(), at.clone()) {
            p.at(format!("{at}.path"), format!("{:?} is already the path of [{first}]", w.path));
        }
    }
}

/// Checks one webhook endpoint, whose keys are under `at`, and reads its secret file.
fn webhook(at: &str, w: &mut WebhookConfig, base_dir: &Path, p: &mut Problems) {
    secret_from_file(&format!("{at}.secret"), &mut w.secret, w.secret_file.as_deref(), base_dir, p);
    match &w.secret {
        None => p.at(format!("{at}.secret"), "is required (or give `secret_file`)"),
        Some(s) if s.expose().len() < MIN_SECRET_BYTES => p.at(
            format!("{at}.secret"),
            format!(
                "is {} bytes; use at least {MIN_SECRET_BYTES} (register the same secret at the provider)",
                s.expose().len()
            ),
        ),
        Some(_) => {}
    }
    let reserved = [
        "/oauth2/start",
        "/oauth2/callback",
        "/oauth2/sign_out",
        "/oauth2/userinfo",
        "/oauth2/backchannel-logout",
    ];
    if !w.path.starts_with("/oauth2/")
        || w.path.len() <= "/oauth2/".len()
        || reserved.contains(&w.path.as_str())
        || !w.path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
    {
        p.at(
            format!("{at}.path"),
            "must be a path under /oauth2/ not used by another endpoint (e.g. \"/oauth2/webhooks\")",
        );
    }
    if !(1024..=16 * 1024 * 1024).contains(&w.max_body_size.0) {
        p.at(format!("{at}.max_body_size"), "must be between 1KiB and 16MiB");
    }
}
