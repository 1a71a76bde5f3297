//! Cross-field rules of the configuration. Every rule adds a `Problem` and carries on, so one
//! `authgate check` run lists everything that is wrong.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod pages;
mod provider;
mod routes;
mod session;
mod webhooks;

use super::{AuthMode, Config, Duration, Problem, Secret, SentinelUrl, StoreKind, resolve_path};
use pages::pages;
use provider::providers;
use routes::routes;
use session::session;
use webhooks::webhooks;

/// The shortest accepted session secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// The least estimated entropy accepted in a session secret.
const MIN_SECRET_ENTROPY_BITS: f64 = 128.0;

/// Longest accepted request/upstream timeout: anything longer is a typo, not a plan.
const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Authorization-request parameters the gateway sets itself and config must not override.
const RESERVED_AUTHORIZE_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
    "request",
    "request_uri",
];

/// Algorithms a bearer token may be signed with: public-key ones only.
pub const SIGNATURE_ALGORITHMS: &[&str] =
    &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

/// Headers that an identity header name must never shadow.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "authorization",
    "cookie",
    "set-cookie",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "proxy",
];

struct Problems(Vec<Problem>);

impl Problems {
    fn at(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { path: path.into(), location: None, message: message.into() });
    }
}

/// Checks `config`, reads `*_file` secrets into it, and returns every problem found.
pub fn validate(config: &mut Config, base_dir: &Path) -> Vec<Problem> {
    let mut p = Problems(Vec::new());
    server(config, base_dir, &mut p);
    providers(config, base_dir, &mut p);
    session(config, base_dir, &mut p);
    webhooks(config, base_dir, &mut p);
    assertion(config, base_dir, &mut p);
    headers(config, &mut p);
    routes(config, &mut p);
    forward_auth(config, &mut p);
    pages(config, base_dir, &mut p);
    if tracing_subscriber::EnvFilter::try_new(&config.log.level).is_err() {
        p.at(
            "log.level",
            format!("{:?} is not a log filter (e.g. \"info\" or \"authgate=debug\")", config.log.level),
        );
    }
    if !(64..=1024 * 1024).contains(&config.log.buffer_lines) {
        p.at("log.buffer_lines", "must be between 64 and 1048576");
    }
    p.0
}

fn server(config: &mut Config, base_dir: &Path, p: &mut Problems) {
    let s = &mut config.server;
    let mut seen: HashMap<SocketAddr, String> = HashMap::new();
    let mut listener = |key: String, addr: &str, p: &mut Problems| match addr.parse::<SocketAddr>() {
        Ok(a) => {
            if let Some(first) = seen.insert(a, key.clone()) {
                p.at(key, format!("address {addr} is already used by `{first}`"));
            }
        }
        Err(_) => p.at(key, format!("{addr:?} is not an `ip:port` address")),
    };
    for (i, a) in s.listen.iter().enumerate() {
        listener(format!("server.listen[{i}]"), a, p);
    }
    if let Some(tls) = &s.tls {
        for (i, a) in tls.listen.iter().enumerate() {
            listener(format!("server.tls.listen[{i}]"), a, p);
        }
        if tls.listen.is_empty() {
            p.at("server.tls.listen", "TLS is configured but has no listen address");
        }
        for (key, file) in [("server.tls.cert", &tls.cert), ("server.tls.key", &tls.key)] {
            readable(key, &resolve_path(base_dir, file), p);
        }
    }
    listener("server.admin_listen".into(), &s.admin_listen, p);
    s.admin_addr = s.admin_listen.parse().ok();
    for (i, h) in s.admin_hosts.iter().enumerate() {
        // the admin listener matches `Host` through the same parser
        if crate::routing::parse_authority(h).is_none() {
            p.at(
                format!("server.admin_hosts[{i}]"),
                format!("{h:?} is not a host name (with an optional :port)"),
            );
        }
    }
    secret_from_file("server.admin_token", &mut s.admin_token, s.admin_token_file.as_deref(), base_dir, p);
    if s.admin_token.as_ref().is_some_and(|t| t.expose().len() < MIN_SECRET_BYTES) {
        p.at(
            "server.admin_token",
            format!("use at least {MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -base64 48`)"),
        );
    }
    for (name, token) in &s.admin_tokens {
        let key = format!("server.admin_tokens.{name}");
        let good_name = (1..=64).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !good_name {
            p.at(key.clone(), "a token's name is 1-64 letters, digits, '-', '_' or '.' (the audit log names its holder by it)");
        }
        if name == super::model::ADMIN_TOKEN_NAME && s.admin_token.is_some() {
            p.at(key.clone(), "\"admin\" is server.admin_token's name: choose another");
        }
        if token.expose().len() < MIN_SECRET_BYTES {
            p.at(
                key.clone(),
                format!("use at least {MIN_SECRET_BYTES} random bytes (e.g. `openssl rand -base64 48`)"),
            );
        }
        let others =
            s.admin_token.iter().chain(s.admin_tokens.iter().filter(|(n, _)| *n != name).map(|(_, t)| t));
        if others.into_iter().any(|t| t == token) {
            p.at(key, "the same token as another: the audit log could not tell their holders apart");
        }
    }
    if s.listen.is_empty() && s.tls.is_none() {
        p.at("server.listen", "no listener: give at least one `listen` address");
    }

    // written back in one canonical form (lower-case host, no default port, no trailing
    // slash), which every later comparison with an Origin header or a return-to relies on
    let mut canonical = Vec::with_capacity(s.public_url.len());
    s.public_origins.clear();
    for (i, u) in s.public_url.iter().enumerate() {
        match origin_url(u) {
            Ok(url) => {
                let origin = url.origin().ascii_serialization();
                let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
                s.public_origins.push((host, origin.clone()));
                canonical.push(origin);
            }
            Err(e) => p.at(format!("server.public_url[{i}]"), e),
        }
    }
    if canonical.len() == s.public_url.len() {
        s.public_url = canonical;
    }

    let l = &s.limits;
    for (key, d) in [
        ("server.limits.connect_timeout", l.connect_timeout),
        ("server.limits.read_timeout", l.read_timeout),
        ("server.limits.write_timeout", l.write_timeout),
        ("server.limits.idle_timeout", l.idle_timeout),
    ] {
        timeout(key, d, p);
    }
    if !(1024..=1024 * 1024).contains(&l.max_header_size.0) {
        p.at("server.limits.max_header_size", "must be between 1KiB and 1MiB");
    }
    if !(1024..=1024 * 1024 * 1024).contains(&l.max_body_size.0) {
        p.at("server.limits.max_body_size", "must be between 1KiB and 1GiB");
    }
    if l.request_buffer.0 > 64 * 1024 * 1024 {
        p.at("server.limits.request_buffer", "must be at most 64MiB (0 streams every body)");
    }
    let body_timeout = l.request_body_timeout.get();
    if body_timeout < std::time::Duration::from_secs(1) || body_timeout > std::time::Duration::from_secs(3600)
    {
        p.at("server.limits.request_body_timeout", "must be between 1s and 1h");
    }
    if s.grace_period.get() > std::time::Duration::from_secs(3600) {
        p.at("server.grace_period", "must be at most 1h");
    }
    if s.drain_period.get() > std::time::Duration::from_secs(3600) {
        p.at("server.drain_period", "must be at most 1h");
    }
}

fn headers(config: &Config, p: &mut Problems) {
    let mut seen: HashMap<String, String> = HashMap::new();
    for (path, name) in config.headers.all() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            p.at(path, format!("{name:?} is not a valid header name"));
            continue;
        }
        let canonical = crate::http_util::canonical_header(name);
        if RESERVED_HEADERS.contains(&canonical.as_str()) {
            p.at(path, format!("{name:?} is a standard header and cannot carry identity"));
        } else if let Some(other) = seen.insert(canonical, path.clone()) {
            p.at(path, format!("{name:?} is the same header as `{other}`"));
        }
    }
    for claim in config.headers.claims.keys() {
        if claim.is_empty() || claim.chars().any(char::is_control) {
            p.at(format!("headers.claims.{claim}"), "is not a claim name");
        }
    }
}

/// An `http(s)://host[:port]` origin with nothing after it.
fn origin_url(u: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(u).map_err(|e| format!("{u:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{u:?} must be an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{u:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{u:?} must not contain credentials"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{u:?} must be an origin only (no path, query or fragment)"));
    }
    Ok(url)
}

fn timeout(key: &str, d: Duration, p: &mut Problems) {
    if d.get().is_zero() {
        p.at(key, "must be longer than 0s");
    } else if d.get() > MAX_TIMEOUT {
        p.at(key, format!("{d} is longer than the 24h maximum"));
    }
}

fn readable(key: &str, path: &Path, p: &mut Problems) {
    if let Err(e) = std::fs::metadata(path) {
        p.at(key, format!("cannot read {}: {e}", path.display()));
    }
}

fn assertion(config: &mut Config, base_dir: &Path, p: &mut Problems) {
    let public_url_set = !config.server.public_url.is_empty();
    let identity_headers: Vec<String> =
        config.headers.all().iter().map(|(_, n)| crate::http_util::canonical_header(n)).collect();
    for (i, r) in config.routes.iter().enumerate() {
        if r.auth == AuthMode::Public && r.assertion == Some(true) {
            p.at(format!("routes[{i}].assertion"), "has no effect on a `public` route (no caller to assert)");
        }
        if r.assertion_audience.as_deref().is_some_and(|a| a.is_empty() || a.len() > 512) {
            p.at(format!("routes[{i}].assertion_audience"), "must be 1 to 512 characters");
        }
    }
    let a = &mut config.assertion;
    a.key_file = resolve_path(base_dir, &a.key_file);
    match http::HeaderName::from_bytes(a.header.as_bytes()) {
        Err(_) => p.at("assertion.header", format!("{:?} is not a valid header name", a.header)),
        Ok(_) => {
            let canonical = crate::http_util::canonical_header(&a.header);
            if RESERVED_HEADERS.contains(&canonical.as_str()) || identity_headers.contains(&canonical) {
                p.at("assertion.header", format!("{:?} is already a standard or identity header", a.header));
            }
        }
    }
    if !matches!(a.algorithm.as_str(), "ES256" | "EdDSA") {
        p.at(
            "assertion.algorithm",
            format!("{:?} is not supported: use \"ES256\" or \"EdDSA\"", a.algorithm),
        );
    }
    if !(std::time::Duration::from_secs(10)..=std::time::Duration::from_secs(3600))
        .contains(&a.lifetime.get())
    {
        p.at("assertion.lifetime", "must be between 10s and 1h");
    }
    if !(a.reuse_fraction > 0.0 && a.reuse_fraction <= 1.0) {
        p.at("assertion.reuse_fraction", "must be more than 0 and at most 1");
    }
    if !a.enabled {
        return;
    }
    if !public_url_set {
        p.at("assertion.enabled", "needs server.public_url: it is the assertion's issuer");
    }
    if a.key_file.exists() {
        if let Err(e) = crate::pem::read_key(&a.key_file, &a.algorithm) {
            p.at("assertion.key_file", e.to_string());
        }
    } else if !a.key_file.parent().is_some_and(Path::is_dir) {
        p.at("assertion.key_file", format!("{}: its directory does not exist", a.key_file.display()));
    }
}

/// Fills `value` from `<key>_file` (trailing newline trimmed); giving both is an error.
fn secret_from_file(
    key: &str,
    value: &mut Option<Secret>,
    file: Option<&Path>,
    base_dir: &Path,
    p: &mut Problems,
) {
    let Some(file) = file else { return };
    if value.is_some() {
        p.at(format!("{key}_file"), format!("give either `{key}` or `{key}_file`, not both"));
        return;
    }
    let path: PathBuf = resolve_path(base_dir, file);
    match std::fs::read_to_string(&path) {
        Ok(s) => *value = Some(Secret::new(s.trim_end_matches(['\r', '\n']))),
        Err(e) => p.at(format!("{key}_file"), format!("cannot read {}: {e}", path.display())),
    }
}

/// Shannon entropy of the secret's own byte distribution times its length: not the real
/// entropy of how it was made, but low for repeated patterns and words (`changeme-changeme...`).
fn estimated_entropy_bits(s: &str) -> f64 {
    let mut counts: HashMap<u8, usize> = HashMap::new();
    for b in s.bytes() {
        *counts.entry(b).or_default() += 1;
    }
    let n = s.len() as f64;
    let per_byte: f64 = counts.values().map(|&c| c as f64 / n).map(|p| -p * p.log2()).sum();
    per_byte * n
}

/// The auth endpoints live under `/oauth2/` beside the gateway's own, and only a trusted front
/// proxy may use them.
fn forward_auth(config: &Config, p: &mut Problems) {
    let fa = &config.forward_auth;
    if !fa.enabled {
        return;
    }
    let reserved = [
        "/oauth2/start",
        "/oauth2/callback",
        "/oauth2/sign_out",
        "/oauth2/userinfo",
        "/oauth2/backchannel-logout",
    ];
    let own = config.providers.values().filter_map(|pr| pr.webhooks.as_ref());
    let webhooks: Vec<&str> = config.webhooks.iter().chain(own).map(|w| w.path.as_str()).collect();
    let mut paths = vec![("forward_auth.path", fa.path.as_str())];
    if !fa.envoy_prefix.is_empty() {
        paths.push(("forward_auth.envoy_prefix", fa.envoy_prefix.as_str()));
    }
    for (key, path) in paths {
        let normal = crate::routing::normalize_route_path(path).ok();
        if !path.starts_with("/oauth2/") || normal.as_deref() != Some(path) || path.len() <= "/oauth2/".len()
        {
            p.at(key, format!("{path:?} must be a path under /oauth2/ in normal form"));
        } else if reserved.contains(&path) || webhooks.contains(&path) {
            p.at(key, format!("{path:?} is already one of the gateway's endpoints"));
        }
    }
    if !fa.envoy_prefix.is_empty()
        && (fa.path == fa.envoy_prefix || fa.path.starts_with(&format!("{}/", fa.envoy_prefix)))
    {
        p.at("forward_auth.envoy_prefix", "must not contain forward_auth.path");
    }
    if config.server.trusted_proxies.is_empty() {
        p.at(
            "forward_auth.enabled",
            "needs server.trusted_proxies: only the front proxy (by its address) may ask for auth decisions",
        );
    }
}
