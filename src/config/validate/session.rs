//! The rules of `[session]`: the secret, the store and how to reach Redis (URL, TLS files),
//! and lifetimes that fit together.

use std::path::Path;

use super::*;

pub(super) fn session(config: &mut Config, base_dir: &Path, p: &mut Problems) {
    let needs_sessions = config.routes.iter().any(|r| matches!(r.auth, AuthMode::Browser | AuthMode::Any));
    let s = &mut config.session;
    secret_from_file("session.secret", &mut s.secret, s.secret_file.as_deref(), base_dir, p);
    match &s.secret {
        Some(secret) if secret.expose().len() < MIN_SECRET_BYTES => p.at(
            "session.secret",
            format!(
                "is {} bytes; use at least {MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -base64 48`)",
                secret.expose().len()
            ),
        ),
        Some(secret) if estimated_entropy_bits(secret.expose()) < MIN_SECRET_ENTROPY_BITS => p.at(
            "session.secret",
            "looks guessable (repeated or too few distinct characters); use random bytes (e.g. `openssl rand -base64 48`)",
        ),
        None if needs_sessions => p.at(
            "session.secret",
            "is required by `browser` and `any` routes (or give `secret_file`)",
        ),
        _ => {}
    }
    // read once here, carried to the store (never parsed again)
    let sentinel = s.redis_url.as_ref().and_then(|u| SentinelUrl::parse(u.expose()));
    let is_sentinel = sentinel.is_some();
    s.redis_sentinel = None;
    match (s.store, &s.redis_url, sentinel) {
        (StoreKind::Redis, None, _) => p.at("session.redis_url", "is required when store = \"redis\""),
        (StoreKind::Redis, Some(_), Some(Ok(parsed))) => s.redis_sentinel = Some(parsed),
        (StoreKind::Redis, Some(_), Some(Err(why))) => {
            p.at("session.redis_url", format!("is not a usable redis+sentinel:// URL: {why}"));
        }
        (StoreKind::Redis, Some(url), None) => {
            let scheme = url.expose().split_once("://").map(|(scheme, _)| scheme);
            if !matches!(scheme, Some("redis" | "rediss")) || redis::Client::open(url.expose()).is_err() {
                // the URL may hold a password: never echo it
                p.at("session.redis_url", "is not a redis://, rediss:// or redis+sentinel:// URL");
            } else if url::Url::parse(url.expose()).is_ok_and(|u| u.fragment() == Some("insecure")) {
                // the parsed fragment, as the Redis client reads it (it drops tabs and newlines)
                p.at(
                    "session.redis_url",
                    "#insecure would turn off the server certificate check: trust a private CA with session.redis_ca_file instead",
                );
            }
        }
        (StoreKind::Memory, Some(_), _) => {
            p.at("session.redis_url", "is set but store is \"memory\": set store = \"redis\" or remove it")
        }
        (StoreKind::Memory, None, _) => {}
    }
    for (key, set) in [
        ("session.redis_sentinel_password", s.redis_sentinel_password.is_some()),
        ("session.redis_sentinel_username", s.redis_sentinel_username.is_some()),
    ] {
        if set && !is_sentinel {
            p.at(key, "only applies to a redis+sentinel:// redis_url");
        }
    }
    if s.redis_wait_replicas > 16 {
        p.at("session.redis_wait_replicas", "must be at most 16");
    }
    redis_tls_files(s, base_dir, p);
    if s.redis_prefix.is_empty()
        || s.redis_prefix.len() > 64
        || s.redis_prefix.bytes().any(|b| !b.is_ascii_graphic())
    {
        p.at("session.redis_prefix", "must be 1 to 64 visible ASCII characters");
    }
    if !(std::time::Duration::from_millis(50)..=std::time::Duration::from_secs(60))
        .contains(&s.redis_timeout.get())
    {
        p.at("session.redis_timeout", "must be between 50ms and 60s");
    }
    if !(1..=64).contains(&s.redis_connections) {
        p.at("session.redis_connections", "must be between 1 and 64");
    }
    if s.max_stale.get() > std::time::Duration::from_secs(24 * 3600) {
        p.at("session.max_stale", "must be at most 24h");
    }
    if s.refresh_before.get() > std::time::Duration::from_secs(3600) {
        p.at("session.refresh_before", "must be at most 1h");
    }
    if s.cookie_name.is_empty()
        || !s.cookie_name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        p.at("session.cookie_name", format!("{:?} is not a valid cookie name", s.cookie_name));
    }
    if s.cookie_name.starts_with("__") {
        p.at(
            "session.cookie_name",
            "must not start with \"__\": authgate adds the __Host- prefix itself when every public_url is https",
        );
    }
    if !(std::time::Duration::from_secs(30)..=std::time::Duration::from_secs(3600))
        .contains(&s.login_lifetime.get())
    {
        p.at("session.login_lifetime", "must be between 30s and 1h");
    }
    if !(1..=10_000_000).contains(&s.max_pending_logins) {
        p.at("session.max_pending_logins", "must be between 1 and 10000000");
    }
    if s.max_sessions == 0 {
        p.at("session.max_sessions", "must be at least 1");
    }
    let day = std::time::Duration::from_secs(24 * 3600);
    if s.idle_lifetime.get().is_zero() {
        p.at("session.idle_lifetime", "must be longer than 0s");
    }
    if s.absolute_lifetime.get().is_zero() || s.absolute_lifetime.get() > 90 * day {
        p.at("session.absolute_lifetime", "must be between 1s and 90d");
    }
    if s.idle_lifetime > s.absolute_lifetime {
        p.at(
            "session.idle_lifetime",
            format!("({}) is longer than absolute_lifetime ({})", s.idle_lifetime, s.absolute_lifetime),
        );
    }
}

/// `redis_ca_file` and the client certificate pair: only for `rediss://`, readable, and holding
/// what they say (paths are made absolute here).
fn redis_tls_files(s: &mut crate::config::SessionConfig, base_dir: &Path, p: &mut Problems) {
    use crate::pem::{TlsPem, check_client_pair, check_tls_pem};
    let tls = s
        .redis_url
        .as_ref()
        .is_some_and(|u| u.expose().starts_with("rediss://") || u.expose().starts_with("rediss+sentinel://"));
    let files = [
        ("session.redis_ca_file", &mut s.redis_ca_file, TlsPem::Roots),
        ("session.redis_client_cert_file", &mut s.redis_client_cert_file, TlsPem::ClientCertificate),
        ("session.redis_client_key_file", &mut s.redis_client_key_file, TlsPem::ClientKey),
    ];
    let (mut client_files, mut cert, mut key) = (0, None, None);
    for (name, file, kind) in files {
        let Some(given) = file.as_deref() else { continue };
        client_files += usize::from(kind != TlsPem::Roots);
        let path = resolve_path(base_dir, given);
        match std::fs::read(&path) {
            _ if !tls => p.at(name, "only applies to a rediss:// (TLS) redis_url"),
            Err(e) => p.at(name, format!("cannot read {}: {e}", path.display())),
            Ok(pem) => match check_tls_pem(kind, &pem) {
                Ok(()) => {
                    *file = Some(path);
                    match kind {
                        TlsPem::ClientCertificate => cert = Some(pem),
                        TlsPem::ClientKey => key = Some(pem),
                        TlsPem::Roots => {}
                    }
                }
                Err(e) => p.at(name, format!("{}: {e}", path.display())),
            },
        }
    }
    if client_files == 1 {
        let missing = if s.redis_client_cert_file.is_none() { "cert" } else { "key" };
        p.at(
            format!("session.redis_client_{missing}_file"),
            "is needed too: a client certificate goes with its key",
        );
    }
    if let (Some(cert), Some(key)) = (cert, key) {
        if let Err(e) = check_client_pair(&cert, &key, "session.redis_client_cert_file") {
            p.at("session.redis_client_key_file", e);
        }
    }
}
