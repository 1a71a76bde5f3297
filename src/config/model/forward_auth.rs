//! `[forward_auth]`: authgate as the auth service of a front proxy (nginx `auth_request`,
//! Traefik `forwardAuth`, Caddy `forward_auth`, Envoy `ext_authz`).

use serde::Deserialize;

/// `[forward_auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardAuthConfig {
    /// Answer auth requests from `server.trusted_proxies`.
    pub enabled: bool,
    /// The auth endpoint for nginx, Traefik and Caddy (the original request in `X-Original-*`
    /// or `X-Forwarded-*` headers).
    pub path: String,
    /// Envoy `ext_authz` (HTTP service) `path_prefix`: the original path follows it. Empty
    /// (the default): no Envoy endpoint.
    pub envoy_prefix: String,
}

impl Default for ForwardAuthConfig {
    fn default() -> Self {
        Self { enabled: false, path: "/oauth2/auth".into(), envoy_prefix: String::new() }
    }
}
