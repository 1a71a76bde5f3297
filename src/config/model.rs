//! The on-disk configuration model: what `authgate.toml` may contain, with its defaults.
//!
//! Every table denies unknown keys so a typo is an error, never a silently ignored setting.
//! Cross-field rules live in `validate`; this file only states shapes and defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use super::Secret;
use super::units::{ByteSize, Duration};

mod claims;
mod forward_auth;
mod pages;
mod provider;
mod route;
mod session;
pub use claims::{ClaimRuleConfig, claim_path};
pub use forward_auth::ForwardAuthConfig;
pub use pages::{PAGE_TEMPLATES, PagesConfig};
pub use provider::ProviderConfig;
pub use route::{AuthMode, RouteConfig, RuleAccess, RuleConfig};
pub use session::{SentinelUrl, SessionConfig, StoreKind};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners, public origin, proxy trust and limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// The OpenID Provider (named `default`); `browser`, `api` and `any` routes need it or
    /// `providers`.
    pub provider: Option<ProviderConfig>,
    /// More OpenID Providers, by name (`[providers.partners]`); routes name those they accept.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Session storage and cookie.
    #[serde(default)]
    pub session: SessionConfig,
    /// Names of the identity headers sent upstream.
    #[serde(default)]
    pub headers: HeaderNames,
    /// The route table, matched by host then longest path prefix.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Signed provider webhooks (revocation events); off unless configured.
    pub webhooks: Option<WebhookConfig>,
    /// The signed identity assertion sent to upstream apps.
    #[serde(default)]
    pub assertion: AssertionConfig,
    /// Auth decisions for a front proxy (nginx, Traefik, Caddy, Envoy).
    #[serde(default)]
    pub forward_auth: ForwardAuthConfig,
    /// Own templates for the gateway's pages.
    #[serde(default)]
    pub pages: PagesConfig,
}

/// The name `[provider]` goes by among `[providers.*]`.
pub const DEFAULT_PROVIDER: &str = "default";

impl Config {
    /// Every provider with its name: `[provider]` (as `default`) first, then `[providers.*]` by
    /// name. A provider's place in this list is its index everywhere at runtime.
    pub fn provider_list(&self) -> Vec<(&str, &ProviderConfig)> {
        let first = self.provider.iter().map(|p| (DEFAULT_PROVIDER, p));
        first.chain(self.providers.iter().map(|(n, p)| (n.as_str(), p))).collect()
    }

    /// The providers (indexes into `provider_list`) a route accepts: those it names, else the
    /// only provider, else `[provider]`; empty when it cannot be told (validation refuses it).
    pub fn route_providers(&self, r: &RouteConfig) -> Vec<usize> {
        let list = self.provider_list();
        if r.providers.is_empty() {
            return match (list.len(), self.provider.is_some()) {
                (1, _) | (_, true) => vec![0],
                _ => Vec::new(),
            };
        }
        r.providers.iter().filter_map(|name| list.iter().position(|(n, _)| n == name)).collect()
    }
}

/// `[assertion]`: a short-lived JWT signed by the gateway, for apps that verify who is calling.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssertionConfig {
    /// Send it (on every authenticated route unless the route says `assertion = false`).
    pub enabled: bool,
    /// The header it travels in.
    pub header: String,
    /// `ES256` or `EdDSA`.
    pub algorithm: String,
    /// How long an assertion is valid (never past the session's or token's own end).
    pub lifetime: Duration,
    /// Reuse a signed assertion until this fraction of its lifetime has passed.
    pub reuse_fraction: f64,
    /// The PKCS#8 PEM signing key; created (mode 0600) at first start when absent.
    pub key_file: PathBuf,
}

impl Default for AssertionConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            header: "X-Authgate-Assertion".into(),
            algorithm: "ES256".into(),
            lifetime: Duration::from_secs(300),
            reuse_fraction: 0.5,
            key_file: PathBuf::from("authgate-assertion-key.pem"),
        }
    }
}

/// `[webhooks]`: where the provider delivers signed events (`license.revoked`, `user.suspended`...).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The shared signing secret (at least 32 bytes), as registered at the provider.
    pub secret: Option<Secret>,
    /// File holding the secret (instead of `secret`).
    pub secret_file: Option<PathBuf>,
    /// The endpoint's path, under `/oauth2/`.
    #[serde(default = "default_webhook_path")]
    pub path: String,
    /// Largest body accepted; a larger one gets 413 before any work.
    #[serde(default = "default_webhook_body")]
    pub max_body_size: ByteSize,
}

fn default_webhook_path() -> String {
    "/oauth2/webhooks".into()
}

fn default_webhook_body() -> ByteSize {
    ByteSize(256 * 1024)
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (for people) or `json` (one object per line, for log pipelines).
    pub format: LogFormat,
    /// Level filter in `RUST_LOG` syntax (`info`, `authgate=debug,pingora=warn`); the `RUST_LOG`
    /// environment variable wins when set.
    pub level: String,
    /// Log lines held while stderr does not take them; past it they are dropped and counted.
    pub buffer_lines: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into(), buffer_lines: crate::log_writer::QUEUE_LINES }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Plain-HTTP listen addresses (`ip:port`).
    pub listen: Vec<String>,
    /// Accept prior-knowledge HTTP/2 on the plain listeners.
    pub h2c: bool,
    /// TLS listeners; HTTP/2 is offered through ALPN.
    pub tls: Option<TlsConfig>,
    /// External origins of the gateway (`https://app.example.com`), used to build redirect URIs.
    #[serde(deserialize_with = "one_or_many")]
    pub public_url: Vec<String>,
    /// Peers whose `X-Forwarded-*` headers are believed (CIDRs).
    pub trusted_proxies: Vec<IpNet>,
    /// Match route paths case-insensitively (the default: Express, ASP.NET and IIS route so).
    pub case_insensitive_paths: bool,
    /// Listener for `/healthz` and `/readyz`.
    pub admin_listen: String,
    /// Host names the admin listener answers to besides IP addresses and `localhost` (e.g. the
    /// Kubernetes service Prometheus scrapes); any other `Host` is refused (DNS rebinding).
    pub admin_hosts: Vec<String>,
    /// A bearer secret `POST /reload` must present (`${VAR}` allowed; at least 32 bytes).
    pub admin_token: Option<Secret>,
    /// The same, read from a file.
    pub admin_token_file: Option<PathBuf>,
    /// More admin tokens, by the name the audit log gives their holder (`admin_token` is
    /// "admin").
    pub admin_tokens: BTreeMap<String, Secret>,
    /// `public_url`s as validation read them: (lower-case host, origin), in order.
    #[serde(skip)]
    pub public_origins: Vec<(String, String)>,
    /// `admin_listen` as parsed by validation (carried, never parsed again).
    #[serde(skip)]
    pub admin_addr: Option<std::net::SocketAddr>,
    /// Worker threads of the proxy (0 = one per core).
    pub threads: usize,
    /// Request limits and upstream timeouts.
    pub limits: LimitsConfig,
    /// After SIGTERM: how long readiness is false while the listeners still accept.
    pub drain_period: Duration,
    /// Then, once the listeners are closed: time to let in-flight requests finish.
    pub grace_period: Duration,
}

impl ServerConfig {
    /// Is any admin token configured?
    pub fn has_admin_token(&self) -> bool {
        self.admin_token.is_some() || !self.admin_tokens.is_empty()
    }

    /// The name of the admin token `presented` is, if it is one (every token compared in
    /// constant time, so the answer's timing tells nothing).
    pub fn admin_caller(&self, presented: &str) -> Option<&str> {
        let named = self.admin_token.iter().map(|t| (ADMIN_TOKEN_NAME, t));
        let all = named.chain(self.admin_tokens.iter().map(|(n, t)| (n.as_str(), t)));
        all.fold(None, |found, (name, token)| {
            let same = crate::codec::constant_time_eq(presented.as_bytes(), token.expose().as_bytes());
            found.or(same.then_some(name))
        })
    }
}

/// The audit log's name for `server.admin_token`'s holder.
pub const ADMIN_TOKEN_NAME: &str = "admin";

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: vec!["127.0.0.1:8080".into()],
            h2c: false,
            tls: None,
            public_url: Vec::new(),
            trusted_proxies: Vec::new(),
            case_insensitive_paths: true,
            admin_listen: "127.0.0.1:9090".into(),
            admin_addr: None,
            admin_hosts: Vec::new(),
            admin_token: None,
            admin_token_file: None,
            admin_tokens: BTreeMap::new(),
            public_origins: Vec::new(),
            threads: 0,
            limits: LimitsConfig::default(),
            drain_period: Duration::from_secs(5),
            grace_period: Duration::from_secs(10),
        }
    }
}

/// `[server.tls]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// TLS listen addresses (`ip:port`).
    pub listen: Vec<String>,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[server.limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest total size of request headers; above it the answer is 431.
    pub max_header_size: ByteSize,
    /// Largest request body accepted by the gateway's own endpoints; above it the answer is 413.
    pub max_body_size: ByteSize,
    /// Time to open a TCP (and TLS) connection to an upstream.
    pub connect_timeout: Duration,
    /// Longest wait for an upstream to send the next bytes of its response.
    pub read_timeout: Duration,
    /// Longest wait for an upstream to accept the next bytes of the request.
    pub write_timeout: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub idle_timeout: Duration,
    /// Request bodies up to this size are read whole before the upstream is contacted
    /// (0 = stream every body).
    pub request_buffer: ByteSize,
    /// Longest time to receive a buffered request body; after it 408.
    pub request_body_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_header_size: ByteSize(64 * 1024),
            max_body_size: ByteSize(256 * 1024),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            request_buffer: ByteSize(1024 * 1024),
            request_body_timeout: Duration::from_secs(30),
        }
    }
}

/// `[headers]`: the names of the identity headers the upstream app reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderNames {
    /// The user's `sub` (or the client id of an M2M token).
    pub user_id: String,
    /// The user's e-mail address.
    pub email: String,
    /// The user's display name.
    pub name: String,
    /// The user's given name.
    pub given_name: String,
    /// The user's family name.
    pub family_name: String,
    /// The user's licenses, comma-separated.
    pub licenses: String,
    /// The user's primary organization id.
    pub organization: String,
    /// The user's platform permissions, comma-separated.
    pub permissions: String,
    /// The user's type (e.g. `customer_admin`).
    pub user_type: String,
    /// The client id of a client-credentials (M2M) token.
    pub client_id: String,
    /// More claims to send, claim name → header name (`department = "X-User-Department"`).
    pub claims: BTreeMap<String, String>,
    /// Send header names upstream as written (these names as configured, the client's as the
    /// client sent them); `false` sends them in lower case, which costs less.
    pub preserve_case: bool,
}

impl Default for HeaderNames {
    fn default() -> Self {
        Self {
            user_id: "X-User-Id".into(),
            email: "X-User-Email".into(),
            name: "X-User-Name".into(),
            given_name: "X-User-Given-Name".into(),
            family_name: "X-User-Family-Name".into(),
            licenses: "X-User-Licenses".into(),
            organization: "X-User-Org".into(),
            permissions: "X-User-Permissions".into(),
            user_type: "X-User-Type".into(),
            client_id: "X-Client-Id".into(),
            claims: BTreeMap::new(),
            preserve_case: true,
        }
    }
}

impl HeaderNames {
    /// Every header name with its config key path, the `claims` mapping included.
    pub fn all(&self) -> Vec<(String, &str)> {
        let mut all: Vec<(String, &str)> =
            self.entries().iter().map(|(k, v)| (format!("headers.{k}"), *v)).collect();
        all.extend(
            self.claims.iter().map(|(claim, header)| (format!("headers.claims.{claim}"), header.as_str())),
        );
        all
    }

    /// Every configured name with its config key, in a fixed order.
    pub fn entries(&self) -> [(&'static str, &str); 10] {
        [
            ("user_id", &self.user_id),
            ("email", &self.email),
            ("name", &self.name),
            ("given_name", &self.given_name),
            ("family_name", &self.family_name),
            ("licenses", &self.licenses),
            ("organization", &self.organization),
            ("permissions", &self.permissions),
            ("user_type", &self.user_type),
            ("client_id", &self.client_id),
        ]
    }
}

/// Accepts `"x"` as well as `["x", "y"]`.
pub(super) fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;
    impl<'de> serde::de::Visitor<'de> for OneOrMany {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string or an array of strings")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_owned()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_any(OneOrMany)
}
