//! The admin listener: `/healthz` (liveness) and `/readyz` (readiness, with a JSON body that
//! names each check). Kept off the public listeners so probes never pass through routing.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::gateway::Gateway;

/// Serves the admin endpoints.
pub struct AdminApp {
    gateway: Arc<ArcSwap<Gateway>>,
}

impl AdminApp {
    /// Admin endpoints over the current gateway state.
    pub fn new(gateway: Arc<ArcSwap<Gateway>>) -> Self {
        Self { gateway }
    }
}

/// The readiness report: one entry per dependency.
pub fn readiness(gateway: &Gateway) -> (bool, serde_json::Value) {
    let routes = gateway.config.routes.len();
    let checks = serde_json::json!({ "config": { "ready": true, "routes": routes } });
    (true, serde_json::json!({ "ready": true, "checks": checks }))
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path();
        let (status, body) = match path {
            "/healthz" => (StatusCode::OK, b"ok\n".to_vec()),
            "/readyz" => {
                let (ready, report) = readiness(&self.gateway.load());
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
