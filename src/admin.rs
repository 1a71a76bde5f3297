//! The admin listener: `/healthz` (liveness) and `/readyz` (readiness, with a JSON body that
//! names each check). Kept off the public listeners so probes never pass through routing.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::gateway::Gateway;
use crate::oidc::OidcProvider;

/// Serves the admin endpoints.
pub struct AdminApp {
    gateway: Arc<ArcSwap<Gateway>>,
    provider: Option<Arc<OidcProvider>>,
}

impl AdminApp {
    /// Admin endpoints over the current gateway state and the provider's documents.
    pub fn new(gateway: Arc<ArcSwap<Gateway>>, provider: Option<Arc<OidcProvider>>) -> Self {
        Self { gateway, provider }
    }
}

/// The readiness report: one entry per dependency, ready only when all are.
pub fn readiness(gateway: &Gateway, provider: Option<&OidcProvider>) -> (bool, serde_json::Value) {
    let routes = gateway.config.routes.len();
    let mut checks = serde_json::json!({ "config": { "ready": true, "routes": routes } });
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
    (ready, serde_json::json!({ "ready": ready, "checks": checks }))
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path();
        let (status, body) = match path {
            "/healthz" => (StatusCode::OK, b"ok\n".to_vec()),
            "/readyz" => {
                let (ready, report) = readiness(&self.gateway.load(), self.provider.as_deref());
                let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (status, format!("{report}\n").into_bytes())
            }
            _ => (StatusCode::NOT_FOUND, b"not found\n".to_vec()),
        };
        let content_type = if path == "/readyz" { "application/json" } else { "text/plain" };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
        resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
        resp
    }
}
