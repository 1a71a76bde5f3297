//! `[provider]`: the OpenID Provider, the gateway's client registration, and how its tokens
//! and documents are judged and fetched.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{WebhookConfig, one_or_many};
use crate::config::Secret;
use crate::config::units::{ByteSize, Duration};

/// `[provider]`: the OpenID Provider and this gateway's client registration at it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Issuer URL; discovery is read from `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// The gateway's client id.
    pub client_id: String,
    /// The gateway's client secret.
    pub client_secret: Option<Secret>,
    /// File holding the client secret (instead of `client_secret`).
    pub client_secret_file: Option<PathBuf>,
    /// Scopes requested at login.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Audiences accepted in bearer tokens' `aud` (one must be present); routes may override.
    #[serde(default, deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// Signature algorithms accepted in bearer tokens (never `none` or HMAC).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// `algorithms` as parsed by validation (carried, never parsed again).
    #[serde(skip)]
    pub signature_algorithms: Vec<jsonwebtoken::Algorithm>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway")]
    pub leeway: Duration,
    /// Least time between JWKS refetches caused by tokens with an unknown `kid`.
    #[serde(default = "default_jwks_cooldown")]
    pub jwks_cooldown: Duration,
    /// Shortest background JWKS refresh interval (a smaller `max-age` is raised to it).
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh: Duration,
    /// Longest background JWKS refresh interval (also used without `max-age`).
    #[serde(default = "default_jwks_max_refresh")]
    pub jwks_max_refresh: Duration,
    /// Time limit of every request to the provider.
    #[serde(default = "default_http_timeout")]
    pub http_timeout: Duration,
    /// Size limit of every document fetched from the provider.
    #[serde(default = "default_max_response_size")]
    pub max_response_size: ByteSize,
    /// How many verified bearer tokens are remembered (each until it expires).
    #[serde(default = "default_token_cache_size")]
    pub token_cache_size: u64,
    /// Accept opaque access tokens by RFC 7662 introspection (needs the client secret).
    #[serde(default)]
    pub introspection: bool,
    /// How long an introspection answer is reused (never past the token's `exp`).
    #[serde(default = "default_introspection_ttl")]
    pub introspection_ttl: Duration,
    /// Extra query parameters for the authorization request (e.g. `kc_idp_hint`).
    #[serde(default)]
    pub extra_authorize_params: BTreeMap<String, String>,
    /// Where the provider sends the browser after logout (default: the public origin + `/`).
    pub post_logout_redirect_uri: Option<String>,
    /// Pass on a signed-in user's `email` even when the id_token does not say
    /// `email_verified: true` (for providers that never send it).
    #[serde(default)]
    pub trust_unverified_email: bool,
    /// Calls per minute the provider allows this client at its token endpoint (Calimatic: 20).
    #[serde(default = "default_token_endpoint_rate")]
    pub token_endpoint_rate: u32,
    /// How the sign-in chooser names it (default: its name in the config).
    pub display_name: Option<String>,
    /// This provider's signed webhooks (`[providers.<name>.webhooks]`; `[provider]`'s are the
    /// top-level `[webhooks]`). Path default: `/oauth2/webhooks/<name>`.
    pub webhooks: Option<WebhookConfig>,
}

fn default_token_endpoint_rate() -> u32 {
    20
}

fn default_algorithms() -> Vec<String> {
    ["RS256", "PS256", "ES256", "EdDSA"].map(String::from).to_vec()
}

fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

fn default_jwks_cooldown() -> Duration {
    Duration::from_secs(30)
}

fn default_jwks_min_refresh() -> Duration {
    Duration::from_secs(60)
}

fn default_jwks_max_refresh() -> Duration {
    Duration::from_secs(3600)
}

fn default_http_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_max_response_size() -> ByteSize {
    ByteSize(1024 * 1024)
}

fn default_token_cache_size() -> u64 {
    100_000
}

fn default_introspection_ttl() -> Duration {
    Duration::from_secs(60)
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(String::from).to_vec()
}
