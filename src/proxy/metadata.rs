//! OAuth 2.0 Protected Resource Metadata (RFC 9728): how an API client (or an MCP client) finds
//! the authorization server for an `api`/`any` route, at
//! `/.well-known/oauth-protected-resource` and `/.well-known/oauth-protected-resource/<path>`.

use crate::config::AuthMode;
use crate::gateway::Gateway;
use crate::reply::Reply;
use crate::routing::route_key;

/// The well-known path prefix.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The metadata URL for a resource at `path` under `origin`.
pub fn metadata_url(origin: &str, path: &str) -> String {
    if path == "/" { format!("{origin}{WELL_KNOWN}") } else { format!("{origin}{WELL_KNOWN}{path}") }
}

/// The metadata document for a request to `path`, or `None` when `path` is not a metadata URL
/// of a bearer-token resource here (the request then goes through routing as usual).
pub fn document(gateway: &Gateway, host: &str, path: &str, origin: &str) -> Option<serde_json::Value> {
    let resource_path = match path.strip_prefix(WELL_KNOWN)? {
        "" | "/" => "/",
        rest if rest.starts_with('/') => rest,
        _ => return None,
    };
    let key = route_key(resource_path, gateway.case_insensitive_paths);
    let route = gateway.routes.find(host, &key)?;
    if !matches!(route.auth, AuthMode::Api | AuthMode::Any) {
        return None;
    }
    let list = gateway.config.provider_list();
    let providers: Vec<_> =
        route.providers.iter().filter_map(|p| list.get(p.index).map(|(_, c)| *c)).collect();
    let first = providers.first()?;
    let scopes =
        if route.access.policy.scopes.is_empty() { &first.scopes } else { &route.access.policy.scopes };
    let servers: Vec<&str> = providers.iter().map(|p| p.issuer.as_str()).collect();
    let resource = if resource_path == "/" { origin.to_owned() } else { format!("{origin}{resource_path}") };
    Some(serde_json::json!({
        "resource": resource,
        "authorization_servers": servers,
        "bearer_methods_supported": ["header"],
        "scopes_supported": scopes,
        "resource_name": route.name,
    }))
}

/// The metadata document as a response (cacheable: it changes only with the config).
pub fn reply(doc: &serde_json::Value) -> Reply {
    let mut r = Reply::json(http::StatusCode::OK, doc);
    r.headers.retain(|(name, _)| name != http::header::CACHE_CONTROL);
    r.header(http::header::CACHE_CONTROL, http::HeaderValue::from_static("max-age=300"));
    r
}
