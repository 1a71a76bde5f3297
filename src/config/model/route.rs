//! `[[routes]]`: where a request goes, how its caller authenticates, what it must have, and
//! the rules inside a route (public paths, denied paths, stricter policies, networks).

use ipnet::IpNet;
use serde::Deserialize;

use super::ClaimRuleConfig;
use super::one_or_many;
use crate::config::units::Duration;

/// How a route authenticates its callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication; identity headers are still stripped.
    Public,
    /// A browser session; anonymous navigations are sent to sign in.
    Browser,
    /// A bearer token on every request.
    Api,
    /// A browser session or a bearer token.
    Any,
}

impl AuthMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Public => "public",
            AuthMode::Browser => "browser",
            AuthMode::Api => "api",
            AuthMode::Any => "any",
        }
    }
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in logs and metrics (default: host + path).
    pub name: Option<String>,
    /// `app.example.com`, `*.example.com` or `*` (any host).
    #[serde(default = "any_host")]
    pub host: String,
    /// Path prefix, matched on whole segments.
    #[serde(default = "root_path")]
    pub path: String,
    /// One upstream URL or a list (balanced round-robin); none for a route a front proxy
    /// serves itself (forward-auth only).
    #[serde(default, deserialize_with = "one_or_many")]
    pub upstream: Vec<String>,
    /// `public`, `browser`, `api` or `any`.
    pub auth: AuthMode,
    /// The providers whose sessions and tokens are accepted here, by name (default: the only
    /// provider, or `[provider]`).
    #[serde(default, deserialize_with = "one_or_many")]
    pub providers: Vec<String>,
    /// The caller needs at least one of these licenses.
    #[serde(default)]
    pub licenses: Vec<String>,
    /// The caller needs every one of these licenses.
    #[serde(default)]
    pub licenses_all: Vec<String>,
    /// The caller needs every one of these permissions.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// The caller's `user_type` must be one of these.
    #[serde(default)]
    pub user_types: Vec<String>,
    /// The caller's organization must be one of these.
    #[serde(default)]
    pub organizations: Vec<String>,
    /// Client-credentials tokens of these clients are accepted.
    #[serde(default)]
    pub clients: Vec<String>,
    /// Bearer tokens must carry every one of these scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Overrides `[provider] audience` for bearer tokens on this route.
    #[serde(default, deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// Send the caller's access token upstream as `Authorization: Bearer`.
    #[serde(default)]
    pub pass_access_token: bool,
    /// Any claim the caller's token (or id_token) must hold, by path.
    #[serde(default)]
    pub claims: Vec<ClaimRuleConfig>,
    /// The caller's verified e-mail address is one of these (domain compared in any case).
    #[serde(default)]
    pub emails: Vec<String>,
    /// The caller's verified e-mail address is in one of these domains (exactly: no subdomain).
    #[serde(default)]
    pub email_domains: Vec<String>,
    /// Users of these types skip the license, permission, type and organization rules (as
    /// Calimatic lets platform admins skip license checks).
    #[serde(default)]
    pub bypass_user_types: Vec<String>,
    /// Ordered rules by method, path and network; the first that matches decides, and a
    /// request no rule matches gets the route's own policy.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Let real CORS preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
    /// through to the app without credentials; any other `OPTIONS` is judged as usual.
    #[serde(default)]
    pub cors_preflight: bool,
    /// Requests from these networks (the client's address, through `trusted_proxies`) pass
    /// without sign-in, and without identity headers.
    #[serde(default)]
    pub allow_networks: Vec<IpNet>,
    /// Requests from these networks are refused (403), whatever else holds.
    #[serde(default)]
    pub deny_networks: Vec<IpNet>,
    /// Send the client's `Host` upstream instead of the upstream's own.
    #[serde(default)]
    pub preserve_host: bool,
    /// Send the signed identity assertion here (default: on for authenticated routes when
    /// `[assertion] enabled`).
    pub assertion: Option<bool>,
    /// The assertion's `aud` (default: the route's upstream origin).
    pub assertion_audience: Option<String>,
    /// Overrides `[server.limits] connect_timeout` for this route.
    pub connect_timeout: Option<Duration>,
    /// Overrides `[server.limits] read_timeout` for this route.
    pub read_timeout: Option<Duration>,
    /// Overrides `[server.limits] write_timeout` for this route.
    pub write_timeout: Option<Duration>,
}

impl RouteConfig {
    /// The policy keys that are set, by config name.
    pub fn policy_keys_set(&self) -> Vec<&'static str> {
        let lists: [(&'static str, &Vec<String>); 9] = [
            ("licenses", &self.licenses),
            ("licenses_all", &self.licenses_all),
            ("permissions", &self.permissions),
            ("user_types", &self.user_types),
            ("organizations", &self.organizations),
            ("clients", &self.clients),
            ("scopes", &self.scopes),
            ("audience", &self.audience),
            ("bypass_user_types", &self.bypass_user_types),
        ];
        let mut set: Vec<&'static str> =
            lists.iter().filter(|(_, v)| !v.is_empty()).map(|(k, _)| *k).collect();
        if self.pass_access_token {
            set.push("pass_access_token");
        }
        for (key, set_here) in [
            ("claims", !self.claims.is_empty()),
            ("emails", !self.emails.is_empty()),
            ("email_domains", !self.email_domains.is_empty()),
            ("cors_preflight", self.cors_preflight),
            ("providers", !self.providers.is_empty()),
            ("allow_networks", !self.allow_networks.is_empty()),
        ] {
            if set_here {
                set.push(key);
            }
        }
        set
    }
}

fn any_host() -> String {
    "*".into()
}

fn root_path() -> String {
    "/".into()
}

/// `[[routes.rules]]`: requests with one of `methods`, on one of `paths`, from one of
/// `networks` (each condition left out matches any) get `access`, or the route's policy with
/// the keys given here in place of the route's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Methods, upper case (`GET` covers `HEAD`).
    #[serde(default, deserialize_with = "one_or_many")]
    pub methods: Vec<String>,
    /// Path patterns over the normalised path: `/health` (itself, with or without a trailing
    /// `/`), `/admin/*` (`/admin` and everything below), `*` within a segment, `**` across.
    #[serde(default, deserialize_with = "one_or_many")]
    pub paths: Vec<String>,
    /// Client networks (CIDRs).
    #[serde(default)]
    pub networks: Vec<IpNet>,
    /// `public` (no sign-in, no identity headers) or `deny` (403); absent: the policy keys.
    pub access: Option<RuleAccess>,
    /// In place of the route's `licenses`.
    pub licenses: Option<Vec<String>>,
    /// In place of the route's `licenses_all`.
    pub licenses_all: Option<Vec<String>>,
    /// In place of the route's `permissions`.
    pub permissions: Option<Vec<String>>,
    /// In place of the route's `user_types`.
    pub user_types: Option<Vec<String>>,
    /// In place of the route's `organizations`.
    pub organizations: Option<Vec<String>>,
    /// In place of the route's `clients`.
    pub clients: Option<Vec<String>>,
    /// In place of the route's `scopes`.
    pub scopes: Option<Vec<String>>,
    /// In place of the route's `claims`.
    pub claims: Option<Vec<ClaimRuleConfig>>,
    /// In place of the route's `emails`.
    pub emails: Option<Vec<String>>,
    /// In place of the route's `email_domains`.
    pub email_domains: Option<Vec<String>>,
    /// In place of the route's `bypass_user_types`.
    pub bypass_user_types: Option<Vec<String>>,
}

/// What a rule does with the requests it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAccess {
    /// Forwarded without sign-in and without identity headers.
    Public,
    /// Refused with 403.
    Deny,
}

impl RuleConfig {
    /// The policy keys the rule sets, by config name.
    pub fn policy_keys_set(&self) -> Vec<&'static str> {
        let lists: [(&'static str, bool); 11] = [
            ("licenses", self.licenses.is_some()),
            ("licenses_all", self.licenses_all.is_some()),
            ("permissions", self.permissions.is_some()),
            ("user_types", self.user_types.is_some()),
            ("organizations", self.organizations.is_some()),
            ("clients", self.clients.is_some()),
            ("scopes", self.scopes.is_some()),
            ("claims", self.claims.is_some()),
            ("emails", self.emails.is_some()),
            ("email_domains", self.email_domains.is_some()),
            ("bypass_user_types", self.bypass_user_types.is_some()),
        ];
        lists.iter().filter(|(_, set)| *set).map(|(k, _)| *k).collect()
    }
}
