//! The admin listener: `/healthz` (liveness), `/readyz` (readiness, with a JSON body that
//! names each check), `/metrics`, `POST /reload`, and session administration (`operators`).
//! Kept off the public listeners so probes never pass through routing, and closed to browsers:
//! a request with an `Origin` (a page's form or fetch) or a `Host` that is not an address or a
//! configured name (DNS rebinding) is refused; `POST /reload` needs an admin token when one is
//! configured, session administration always does.

pub mod client;
pub mod operators;

pub use client::request_reload;

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::gateway::Gateway;
use crate::lifecycle::Drain;
use crate::metrics::METRICS;
use crate::oidc::OidcProvider;
use crate::reload::Reloader;
use crate::routing::parse_authority;

/// Serves the admin endpoints.
pub struct AdminApp {
    gateway: Arc<ArcSwap<Gateway>>,
    providers: Vec<Arc<OidcProvider>>,
    reloader: Arc<Reloader>,
    drain: Drain,
}

impl AdminApp {
    /// Admin endpoints over the current gateway state, the provider's documents, reloads and
    /// the drain on SIGTERM.
    pub fn new(
        gateway: Arc<ArcSwap<Gateway>>,
        providers: Vec<Arc<OidcProvider>>,
        reloader: Arc<Reloader>,
        drain: Drain,
    ) -> Self {
        Self { gateway, providers, reloader, drain }
    }
}

/// The readiness report: one entry per dependency, ready only when all are and no stop has
/// begun.
pub fn readiness(
    gateway: &Gateway,
    providers: &[Arc<OidcProvider>],
    reloads: (u64, u64),
    session_store: Option<Result<(), String>>,
    draining: bool,
) -> (bool, serde_json::Value) {
    let routes = gateway.config.routes.len();
    let mut checks = serde_json::json!({
        "config": { "ready": true, "routes": routes, "reloads": reloads.0, "failed_reloads": reloads.1 },
    });
    let mut ready = !draining;
    if draining {
        checks["draining"] = serde_json::json!({ "ready": false });
    }
    // the first provider under its own keys (as with one provider), every one by issuer; only
    // the first gates readiness: another's outage refuses its own routes' sign-ins, and must not
    // take the gateway out of its load balancer
    for (i, p) in providers.iter().enumerate() {
        let (discovery, keys) = p.readiness();
        if i == 0 {
            ready &= discovery && keys;
        }
        let discovery_check = serde_json::json!({ "ready": discovery, "issuer": p.issuer });
        let keys_check = serde_json::json!({
            "ready": keys,
            "keys": p.jwks.current().len(),
            "fetch_failures": p.jwks.failures(),
        });
        if i == 0 {
            checks["provider_discovery"] = discovery_check.clone();
            checks["provider_keys"] = keys_check.clone();
        }
        if providers.len() > 1 {
            checks["providers"][p.issuer.as_str()] =
                serde_json::json!({ "discovery": discovery_check, "keys": keys_check });
        }
    }
    if let Some(store) = session_store {
        ready &= store.is_ok();
        checks["session_store"] = match store {
            Ok(()) => serde_json::json!({ "ready": true }),
            Err(e) => serde_json::json!({ "ready": false, "error": e }),
        };
    }
    (ready, serde_json::json!({ "ready": ready, "checks": checks }))
}

/// What an admin path needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Probes and scrapers: anyone who reaches the listener.
    Open,
    /// `POST /reload`: an admin token when one is configured.
    Reload,
    /// Session administration: always an admin token (none configured: nobody).
    Operator,
}

impl Guard {
    /// The guard of `path`.
    pub fn of(path: &str) -> Self {
        match path {
            "/reload" => Self::Reload,
            p if operators::is_operator_path(p) => Self::Operator,
            _ => Self::Open,
        }
    }
}

/// Admits an admin request, naming its caller (the admin token's name) when it presented one;
/// or the refusal.
pub fn admit<'c>(
    headers: &http::HeaderMap,
    host: Option<&str>,
    guard: Guard,
    config: &'c crate::config::ServerConfig,
) -> Result<Option<&'c str>, (StatusCode, &'static str)> {
    if headers.contains_key(http::header::ORIGIN) {
        return Err((StatusCode::FORBIDDEN, "{\"error\":\"cross_origin\"}\n"));
    }
    if !host.is_some_and(|h| allowed_host(h, &config.admin_hosts)) {
        return Err((StatusCode::MISDIRECTED_REQUEST, "{\"error\":\"unknown_host\"}\n"));
    }
    let needs_token = match guard {
        Guard::Open => return Ok(None),
        Guard::Reload => config.has_admin_token(),
        Guard::Operator if !config.has_admin_token() => {
            return Err((StatusCode::FORBIDDEN, "{\"error\":\"admin_token_not_configured\"}\n"));
        }
        Guard::Operator => true,
    };
    if !needs_token {
        return Ok(None);
    }
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    match config.admin_caller(given) {
        Some(name) => Ok(Some(name)),
        None => Err((StatusCode::UNAUTHORIZED, "{\"error\":\"admin_token_required\"}\n")),
    }
}

/// Is `host` (a `Host` header: name or address, optional port) one the admin listener answers
/// to? IP addresses and `localhost` always (probes and scrapers address it so); names only when
/// configured, since a rebound name is the attacker's.
fn allowed_host(host: &str, configured: &[String]) -> bool {
    let Some(asked) = parse_authority(host) else { return false };
    let name = asked.host();
    // parse_authority leaves a bracketed IPv6 address, a DNS name or an IPv4 address
    name.starts_with('[')
        || name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || configured.iter().filter_map(|c| parse_authority(c)).any(|c| match c.port() {
            Some(_) => c.as_str() == asked.as_str(),
            None => c.host() == name,
        })
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        let method = session.req_header().method.clone();
        let req = session.req_header();
        let host = req
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers.get(http::header::HOST).and_then(|v| v.to_str().ok()));
        let gateway = self.gateway.load_full();
        let guard = Guard::of(&path);
        let (status, body) = match (admit(&req.headers, host, guard, &gateway.config.server), guard) {
            (Err((status, body)), _) => {
                if guard != Guard::Open {
                    // token guessing must show; the header itself is never logged
                    let peer = session.client_addr().map(|a| a.to_string()).unwrap_or_default();
                    tracing::warn!(target: "audit", path, peer, status = status.as_u16(), "admin request refused");
                }
                (status, body.as_bytes().to_vec())
            }
            (Ok(caller), Guard::Operator) => {
                let query = req.uri.query().unwrap_or_default();
                let caller = caller.unwrap_or_default();
                operators::serve(gateway.browser.as_deref(), caller, &method, &path, query).await
            }
            (Ok(_), _) => self.serve(&path, &method).await,
        };
        self.finish(&path, status, body)
    }
}

impl AdminApp {
    async fn serve(&self, path: &str, method: &http::Method) -> (StatusCode, Vec<u8>) {
        match path {
            "/healthz" => (StatusCode::OK, b"ok\n".to_vec()),
            crate::assertion::JWKS_PATH => match &self.gateway.load().assertion {
                Some(signer) => (StatusCode::OK, format!("{}\n", signer.jwks()).into_bytes()),
                None => (StatusCode::NOT_FOUND, b"{\"error\":\"not_found\"}\n".to_vec()),
            },
            "/metrics" => {
                let m = &*METRICS;
                let gateway = self.gateway.load();
                if let Some(n) = gateway.browser.as_ref().and_then(|b| b.store().session_count()) {
                    m.sessions.set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                // the oldest key set of all providers
                if let Some(age) = self.providers.iter().filter_map(|p| p.jwks.age()).max() {
                    m.jwks_age_seconds.set(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
                }
                (StatusCode::OK, m.render())
            }
            "/reload" if method == http::Method::POST => {
                let reloader = self.reloader.clone();
                match tokio::task::spawn_blocking(move || reloader.reload()).await {
                    Ok(Ok(())) => (StatusCode::OK, b"{\"reloaded\":true}\n".to_vec()),
                    Ok(Err(e)) => {
                        let body = serde_json::json!({ "reloaded": false, "error": e.to_string() });
                        (StatusCode::UNPROCESSABLE_ENTITY, format!("{body}\n").into_bytes())
                    }
                    Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, b"{\"reloaded\":false}\n".to_vec()),
                }
            }
            "/readyz" => {
                let gateway = self.gateway.load_full();
                let store = match &gateway.browser {
                    // draining answers not ready at once, whatever the store
                    Some(_) if self.drain.is_draining() => None,
                    Some(b) => Some(b.store().ping().await.map_err(|e| e.to_string())),
                    None => None,
                };
                let (ready, report) = readiness(
                    &gateway,
                    &self.providers,
                    self.reloader.counts(),
                    store,
                    self.drain.is_draining(),
                );
                let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (status, format!("{report}\n").into_bytes())
            }
            _ => (StatusCode::NOT_FOUND, b"{\"error\":\"not_found\"}\n".to_vec()),
        }
    }

    fn finish(&self, path: &str, status: StatusCode, body: Vec<u8>) -> Response<Vec<u8>> {
        let content_type = match path {
            "/healthz" => "text/plain",
            "/metrics" => "text/plain; version=0.0.4",
            _ => "application/json",
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
        resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_localhost_and_configured_names_reach_the_admin_listener() {
        let names = vec!["authgate-admin.monitoring.svc".to_owned(), "gw.internal:9090".to_owned()];
        for ok in [
            "127.0.0.1:9090",
            "10.1.2.3",
            "[::1]:9090",
            "localhost:9090",
            "LOCALHOST",
            "authgate-admin.monitoring.svc:9090",
            "gw.internal:9090",
        ] {
            assert!(allowed_host(ok, &names), "{ok}");
        }
        for refused in
            ["a", "rebind.attacker.example:9090", "127.0.0.1.attacker.example", "gw.internal:9091", "[::1"]
        {
            assert!(!allowed_host(refused, &names), "{refused}");
        }
    }

    #[test]
    fn browsers_are_refused_and_tokens_named() {
        use crate::config::Secret;
        let mut config = crate::config::ServerConfig::default();
        let mut h = http::HeaderMap::new();
        let status = |r: Result<Option<&str>, (StatusCode, &str)>| r.err().map(|e| e.0);
        assert_eq!(admit(&h, Some("127.0.0.1:9090"), Guard::Reload, &config), Ok(None));
        assert_eq!(status(admit(&h, None, Guard::Open, &config)), Some(StatusCode::MISDIRECTED_REQUEST));
        assert_eq!(
            status(admit(&h, Some("127.0.0.1"), Guard::Operator, &config)),
            Some(StatusCode::FORBIDDEN),
            "no token configured: nobody administers sessions"
        );
        h.insert(http::header::ORIGIN, http::HeaderValue::from_static("http://evil.example"));
        assert_eq!(status(admit(&h, Some("127.0.0.1"), Guard::Open, &config)), Some(StatusCode::FORBIDDEN));
        h.clear();
        config.admin_token = Some(Secret::new("t".repeat(40)));
        config.admin_tokens.insert("oncall".into(), Secret::new("o".repeat(40)));
        for guard in [Guard::Reload, Guard::Operator] {
            assert_eq!(status(admit(&h, Some("127.0.0.1"), guard, &config)), Some(StatusCode::UNAUTHORIZED));
        }
        assert_eq!(admit(&h, Some("127.0.0.1"), Guard::Open, &config), Ok(None), "probes need no token");
        h.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer wrong"));
        assert_eq!(
            status(admit(&h, Some("127.0.0.1"), Guard::Reload, &config)),
            Some(StatusCode::UNAUTHORIZED)
        );
        for (token, name) in [("t", "admin"), ("o", "oncall")] {
            let right = http::HeaderValue::from_str(&format!("Bearer {}", token.repeat(40))).unwrap();
            h.insert(http::header::AUTHORIZATION, right);
            assert_eq!(admit(&h, Some("127.0.0.1"), Guard::Operator, &config), Ok(Some(name)));
            assert_eq!(admit(&h, Some("127.0.0.1"), Guard::Reload, &config), Ok(Some(name)));
        }
        assert_eq!(Guard::of("/sessions"), Guard::Operator);
        assert_eq!(Guard::of("/deny/lift"), Guard::Operator);
        assert_eq!(Guard::of("/readyz"), Guard::Open);
    }
}
