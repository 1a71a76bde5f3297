//! The admin listener: `/healthz` (liveness), `/readyz` (readiness, with a JSON body that
//! names each check), `/metrics`, `POST /reload`. Kept off the public listeners so probes never
//! pass through routing, and closed to browsers: a request with an `Origin` (a page's form or
//! fetch) or a `Host` that is not an address or a configured name (DNS rebinding) is refused,
//! and `POST /reload` needs the admin token when one is configured.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::codec::constant_time_eq;
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

/// Why an admin request is refused before it is served, if it is.
pub fn refusal(
    headers: &http::HeaderMap,
    host: Option<&str>,
    reload: bool,
    config: &crate::config::ServerConfig,
) -> Option<(StatusCode, &'static str)> {
    if headers.contains_key(http::header::ORIGIN) {
        return Some((StatusCode::FORBIDDEN, "{\"error\":\"cross_origin\"}\n"));
    }
    if !host.is_some_and(|h| allowed_host(h, &config.admin_hosts)) {
        return Some((StatusCode::MISDIRECTED_REQUEST, "{\"error\":\"unknown_host\"}\n"));
    }
    if let (true, Some(token)) = (reload, &config.admin_token) {
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), token.expose().as_bytes()) {
            return Some((StatusCode::UNAUTHORIZED, "{\"error\":\"admin_token_required\"}\n"));
        }
    }
    None
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
        let reload = path == "/reload";
        let refused = refusal(&req.headers, host, reload, &self.gateway.load().config.server);
        let (status, body) = match (refused, path.as_str()) {
            (Some((status, body)), _) => (status, body.as_bytes().to_vec()),
            (None, path) => self.serve(path, &method).await,
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

/// Asks a running gateway to reload its config, through `POST /reload` on its admin listener
/// (what `authgate reload` does), with the admin token when one is configured. Returns the
/// answer's body on success.
pub fn request_reload(admin: std::net::SocketAddr, token: Option<&str>) -> Result<String, String> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(30);
    let mut stream = std::net::TcpStream::connect_timeout(&admin, std::time::Duration::from_secs(5))
        .map_err(|e| format!("cannot reach the admin listener at {admin}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream
        .write_all(
            format!(
                "POST /reload HTTP/1.1\r\nHost: {admin}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n",
                auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default()
            )
            .as_bytes(),
        )
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer.as_str(), ""));
    let ok = head.lines().next().is_some_and(|status| status.split_whitespace().nth(1) == Some("200"));
    if ok { Ok(body.trim().to_owned()) } else { Err(body.trim().to_owned()) }
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
    fn browsers_and_tokenless_reloads_are_refused() {
        let mut config = crate::config::ServerConfig::default();
        let mut h = http::HeaderMap::new();
        assert_eq!(refusal(&h, Some("127.0.0.1:9090"), true, &config), None);
        assert_eq!(refusal(&h, None, false, &config).map(|r| r.0), Some(StatusCode::MISDIRECTED_REQUEST));
        h.insert(http::header::ORIGIN, http::HeaderValue::from_static("http://evil.example"));
        assert_eq!(refusal(&h, Some("127.0.0.1"), false, &config).map(|r| r.0), Some(StatusCode::FORBIDDEN));
        h.clear();
        config.admin_token = Some(crate::config::Secret::new("t".repeat(40)));
        assert_eq!(
            refusal(&h, Some("127.0.0.1"), true, &config).map(|r| r.0),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(refusal(&h, Some("127.0.0.1"), false, &config), None, "only /reload needs the token");
        h.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer wrong"));
        assert_eq!(
            refusal(&h, Some("127.0.0.1"), true, &config).map(|r| r.0),
            Some(StatusCode::UNAUTHORIZED)
        );
        let right = http::HeaderValue::from_str(&format!("Bearer {}", "t".repeat(40))).unwrap();
        h.insert(http::header::AUTHORIZATION, right);
        assert_eq!(refusal(&h, Some("127.0.0.1"), true, &config), None);
    }
}
