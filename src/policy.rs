//! Per-route access policy: which licenses, permissions, user types, organizations and M2M
//! clients a route admits. Read from config here; evaluated by the authentication modes.

use crate::config::RouteConfig;

/// What a caller must have to use a route. Empty lists impose nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePolicy {
    /// At least one of these licenses.
    pub licenses_any: Vec<String>,
    /// Every one of these licenses.
    pub licenses_all: Vec<String>,
    /// Every one of these permissions.
    pub permissions: Vec<String>,
    /// `user_type` is one of these.
    pub user_types: Vec<String>,
    /// The organization is one of these.
    pub organizations: Vec<String>,
    /// Client-credentials tokens of these client ids are admitted.
    pub clients: Vec<String>,
}

impl RoutePolicy {
    /// The policy written in a route's config.
    pub fn from_route(r: &RouteConfig) -> Self {
        Self {
            licenses_any: r.licenses.clone(),
            licenses_all: r.licenses_all.clone(),
            permissions: r.permissions.clone(),
            user_types: r.user_types.clone(),
            organizations: r.organizations.clone(),
            clients: r.clients.clone(),
        }
    }

    /// A one-line summary for the route table, e.g. `licenses any [wiki, crm]`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = [
            ("licenses any", &self.licenses_any),
            ("licenses all", &self.licenses_all),
            ("permissions", &self.permissions),
            ("user_types", &self.user_types),
            ("organizations", &self.organizations),
            ("clients", &self.clients),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k} [{}]", v.join(", ")))
        .collect();
        if parts.is_empty() { "-".into() } else { parts.join("; ") }
    }
}
