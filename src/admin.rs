//! The admin listener: `/healthz` (liveness) and `/readyz` (readiness, with a JSON body that
//! names each check). Kept off the public listeners so probes never pass through routing.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::gateway::Gateway;
use crate::metrics::METRICS;
use crate::oidc::OidcProvider;
use crate::reload::Reloader;

/// Serves the admin endpoints.
pub struct AdminApp {
    gateway: Arc<ArcSwap<Gateway>>,
    provider: Option<Arc<OidcProvider>>,
    reloader: Arc<Reloader>,
}

impl AdminApp {
    /// Admin endpoints over the current gateway state, the provider's documents and reloads.
    pub fn new(
        gateway: Arc<ArcSwap<Gateway>>,
        provider: Option<Arc<OidcProvider>>,
        reloader: Arc<Reloader>,
    ) -> Self {
        Self { gateway, provider, reloader }
    }
}

/// The readiness report: one entry per dependency, ready only when all are.
pub fn readiness(
    gateway: &Gateway,
    provider: Option<&OidcProvider>,
    reloads: (u64, u64),
    session_store: Option<Result<(), String>>,
) -> (bool, serde_json::Value) {
    let routes = gateway.config.routes.len();
    let mut checks = serde_json::json!({
        "config": { "ready": true, "routes": routes, "reloads": reloads.0, "failed_reloads": reloads.1 },
    });
    let mut ready = true;
    if let Some(p) = provider {
        let (discovery, keys) = p.readiness();
        ready &= discovery && keys;
        checks["provider_discovery"] = serde_json::json!({ "ready": discovery, "issuer": p.issuer });
        checks["provider_keys"] = serde_json::json!({
            "ready": keys,
            "keys": p.jwks.current().len(),
            "fetch_failures": p.jwks.failures(),
        });
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

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        let method = session.req_header().method.clone();
        let (status, body) = match path.as_str() {
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
                if let Some(age) = self.provider.as_ref().and_then(|p| p.jwks.age()) {
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
                let (ready, report) =
                    readiness(&gateway, self.provider.as_deref(), self.reloader.counts(), store);
                let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (status, format!("{report}\n").into_bytes())
            }
            _ => (StatusCode::NOT_FOUND, b"{\"error\":\"not_found\"}\n".to_vec()),
        };
        let content_type = match path.as_str() {
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
/// (what `authgate reload` does). Returns the answer's body on success.
pub fn request_reload(admin: std::net::SocketAddr) -> Result<String, String> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(30);
    let mut stream = std::net::TcpStream::connect_timeout(&admin, std::time::Duration::from_secs(5))
        .map_err(|e| format!("cannot reach the admin listener at {admin}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream
        .write_all(
            format!(
                "POST /reload HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
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
