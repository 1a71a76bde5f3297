//! The rules of `[provider]` and `[providers.<name>]`: names, issuers (each its own), client,
//! scopes, algorithms, timeouts and limits, each provider's keys under its own table.

use std::collections::HashMap;
use std::path::Path;

use super::{Problems, RESERVED_AUTHORIZE_PARAMS, SIGNATURE_ALGORITHMS, secret_from_file, timeout};
use crate::config::{Config, DEFAULT_PROVIDER, ProviderConfig};

/// Checks every provider and reads their `*_file` secrets.
pub(super) fn providers(config: &mut Config, base_dir: &Path, p: &mut Problems) {
    if let Some(pr) = config.provider.as_mut() {
        provider("provider", pr, base_dir, p);
    }
    for (name, pr) in config.providers.iter_mut() {
        let at = format!("providers.{name}");
        let valid = !name.is_empty()
            && name.len() <= 32
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            p.at(at.clone(), "a provider's name is 1 to 32 lower-case letters, digits, '-' and '_'");
        }
        if name == DEFAULT_PROVIDER {
            p.at(at.clone(), "\"default\" is [provider]'s name: write the table as [provider]");
        }
        provider(&at, pr, base_dir, p);
    }
    // a token or logout token is routed by its issuer: two providers cannot share one
    let mut issuers: HashMap<String, String> = HashMap::new();
    let tables = config.provider.iter().map(|pr| ("provider".to_owned(), pr));
    for (key, pr) in tables.chain(config.providers.iter().map(|(n, pr)| (format!("providers.{n}"), pr))) {
        if let Some(first) = issuers.insert(pr.issuer.trim_end_matches('/').to_owned(), key.clone()) {
            p.at(format!("{key}.issuer"), format!("is already the issuer of [{first}]"));
        }
    }
}

/// Checks one provider, whose keys are under `at`.
fn provider(at: &str, pr: &mut ProviderConfig, base_dir: &Path, p: &mut Problems) {
    if pr
        .display_name
        .as_ref()
        .is_some_and(|d| d.is_empty() || d.len() > 100 || d.chars().any(char::is_control))
    {
        p.at(format!("{at}.display_name"), "one line of at most 100 characters");
    }
    match url::Url::parse(&pr.issuer) {
        Ok(u) => {
            // RFC 6761: `*.localhost` is loopback too (the provider client resolves it so itself)
            let loopback = match u.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(name)) => crate::http_util::is_localhost_name(name),
                None => false,
            };
            if u.scheme() != "https" && !(u.scheme() == "http" && loopback) {
                p.at(format!("{at}.issuer"), "must be an https URL (http is allowed only on loopback)");
            } else if u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
                p.at(format!("{at}.issuer"), "must not have a query, fragment or user info");
            }
        }
        Err(e) => p.at(format!("{at}.issuer"), format!("{:?} is not a URL: {e}", pr.issuer)),
    }
    if pr.client_id.trim().is_empty() {
        p.at(format!("{at}.client_id"), "must not be empty");
    }
    // `client_secret = "${SECRET:-}"` with the variable unset means "no secret" (a public client)
    if pr.client_secret.as_ref().is_some_and(|s| s.expose().is_empty()) {
        pr.client_secret = None;
    }
    secret_from_file(
        &format!("{at}.client_secret"),
        &mut pr.client_secret,
        pr.client_secret_file.as_deref(),
        base_dir,
        p,
    );
    if !pr.scopes.iter().any(|s| s == "openid") {
        p.at(format!("{at}.scopes"), "must include \"openid\"");
    }
    if let Some(s) = pr.scopes.iter().find(|s| s.is_empty() || s.contains(char::is_whitespace)) {
        p.at(format!("{at}.scopes"), format!("{s:?} is not a single scope"));
    }
    if pr.audience.iter().any(|a| a.trim().is_empty()) {
        p.at(format!("{at}.audience"), "must not contain an empty audience");
    }
    pr.signature_algorithms.clear();
    for (i, alg) in pr.algorithms.iter().enumerate() {
        let parsed = alg.parse::<jsonwebtoken::Algorithm>().ok();
        if let (true, Some(a)) = (SIGNATURE_ALGORITHMS.contains(&alg.as_str()), parsed) {
            pr.signature_algorithms.push(a);
        } else {
            p.at(
                format!("{at}.algorithms[{i}]"),
                format!(
                    "{alg:?} is not accepted; use public-key algorithms: {}",
                    SIGNATURE_ALGORITHMS.join(", ")
                ),
            );
        }
    }
    if pr.algorithms.is_empty() {
        p.at(format!("{at}.algorithms"), "must list at least one algorithm");
    }
    if pr.leeway.get() > std::time::Duration::from_secs(600) {
        p.at(format!("{at}.leeway"), "must be at most 10m");
    }
    if pr.jwks_cooldown.get() < std::time::Duration::from_secs(1) {
        p.at(
            format!("{at}.jwks_cooldown"),
            "must be at least 1s (it protects the provider from unknown-kid floods)",
        );
    }
    if pr.jwks_min_refresh.get() < std::time::Duration::from_secs(1) {
        p.at(format!("{at}.jwks_min_refresh"), "must be at least 1s");
    }
    if pr.jwks_min_refresh > pr.jwks_max_refresh {
        p.at(format!("{at}.jwks_min_refresh"), "is longer than jwks_max_refresh");
    }
    timeout(&format!("{at}.http_timeout"), pr.http_timeout, p);
    if pr.http_timeout.get() > std::time::Duration::from_secs(60) {
        p.at(format!("{at}.http_timeout"), "must be at most 60s: requests may wait on it");
    }
    if !(1..=100_000).contains(&pr.token_endpoint_rate) {
        p.at(format!("{at}.token_endpoint_rate"), "must be between 1 and 100000 calls per minute");
    }
    if !(1024..=16 * 1024 * 1024).contains(&pr.max_response_size.0) {
        p.at(format!("{at}.max_response_size"), "must be between 1KiB and 16MiB");
    }
    if pr.introspection && pr.client_secret.is_none() {
        p.at(format!("{at}.introspection"), "needs the client secret (client_secret or client_secret_file)");
    }
    timeout(&format!("{at}.introspection_ttl"), pr.introspection_ttl, p);
    if let Some(u) = &pr.post_logout_redirect_uri {
        match url::Url::parse(u) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
            _ => p.at(format!("{at}.post_logout_redirect_uri"), format!("{u:?} is not an http(s) URL")),
        }
    }
    if pr.token_cache_size == 0 {
        p.at(format!("{at}.token_cache_size"), "must be at least 1");
    }
    for key in pr.extra_authorize_params.keys() {
        if RESERVED_AUTHORIZE_PARAMS.contains(&key.as_str()) {
            p.at(
                format!("{at}.extra_authorize_params.{key}"),
                "is set by the gateway itself and cannot be overridden",
            );
        }
    }
}
