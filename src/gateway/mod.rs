//! The runtime gateway: everything a request needs, built once from a validated `Config` and
//! shared read-only by all requests (a reload builds a new one and swaps it in whole).

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

mod route;

use crate::assertion::AssertionSigner;
use crate::assertion::keys::KeyError;
use crate::browser::BrowserAuth;
use crate::config::{AuthMode, Config, DEFAULT_PROVIDER, RouteConfig};
use crate::forwarding::{HeaderSpellings, StrippedHeaders};
use crate::identity::{BadHeaderName, IdentityHeaderNames};
use crate::jwt::TokenVerifier;
use crate::pages::{Pages, PagesError};
use crate::policy::RouteAccess;
use crate::revocation::webhook::WebhookKey;
use crate::routing::{HostPattern, RouteTable, normalize_route_path};
use crate::upstream::{UpstreamError, UpstreamPool};
pub use route::{Route, RouteAssertion, RouteProvider, Timeouts, route_table};

/// Why a validated config still cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A route's upstream cannot be used.
    #[error("routes[{index}].upstream: {source}")]
    Upstream {
        /// Index of the route in the config.
        index: usize,
        /// What went wrong.
        source: UpstreamError,
    },
    /// A header name that validation should have refused.
    #[error(transparent)]
    Header(#[from] BadHeaderName),
    /// A page template cannot be compiled.
    #[error(transparent)]
    Pages(#[from] PagesError),
    /// The assertion signing key cannot be loaded or created.
    #[error("assertion.key_file: {0}")]
    Assertion(#[from] KeyError),
    /// A route key that validation should have refused.
    #[error("routes[{index}]: {message}")]
    Route {
        /// Index of the route in the config.
        index: usize,
        /// What went wrong.
        message: String,
    },
}

/// Everything the request pipeline reads.
#[derive(Debug)]
pub struct Gateway {
    /// The validated configuration it was built from.
    pub config: Arc<Config>,
    /// Routes by host and path.
    pub routes: RouteTable<Route>,
    /// Route keys are lower-cased before matching (`[server] case_insensitive_paths`).
    pub case_insensitive_paths: bool,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// The client headers every request loses (the configured identity header names among them).
    pub stripped_headers: StrippedHeaders,
    /// The identity headers to send upstream, parsed once.
    pub identity_header_names: IdentityHeaderNames,
    /// How the names the gateway adds are spelled upstream (`[headers] preserve_case`).
    pub header_spellings: HeaderSpellings,
    /// Bearer-token verification, one per provider (`Config::provider_list` order).
    pub verifiers: Vec<Arc<TokenVerifier>>,
    /// Browser sign-in and sessions, when a provider and a session secret are configured.
    pub browser: Option<Arc<BrowserAuth>>,
    /// Signs identity assertions, when `[assertion] enabled`.
    pub assertion: Option<Arc<AssertionSigner>>,
    /// The webhook endpoints: `[webhooks]` (the first provider's) and each provider's own.
    pub webhooks: Vec<WebhookEndpoint>,
    /// The pages people read when the gateway answers (`[pages]`).
    pub pages: Pages,
}

impl Gateway {
    /// Builds the runtime state, resolving upstream host names. `verifiers` check bearer
    /// tokens (one per provider) and `browser` signs people in; both outlive reloads, so the
    /// caller builds them.
    pub fn build(
        config: Arc<Config>,
        verifiers: Vec<Arc<TokenVerifier>>,
        browser: Option<Arc<BrowserAuth>>,
    ) -> Result<Self, BuildError> {
        let mut routes = Vec::with_capacity(config.routes.len());
        for (index, rc) in config.routes.iter().enumerate() {
            routes.push(Arc::new(build_route(&config, index, rc)?));
        }
        let names = config.headers.all();
        // a client-sent assertion is removed whether assertions are on or not
        let stripped_headers = StrippedHeaders::new(
            names.iter().map(|(_, name)| *name).chain([config.assertion.header.as_str()]),
        );
        let assertion = match config.assertion.enabled {
            true => Some(Arc::new(AssertionSigner::new(&config.assertion)?)),
            false => None,
        };
        Ok(Self {
            trusted_proxies: config.server.trusted_proxies.clone(),
            routes: RouteTable::new(routes, |r| &r.host, |r| &r.path),
            case_insensitive_paths: config.server.case_insensitive_paths,
            stripped_headers,
            identity_header_names: IdentityHeaderNames::parse(&config.headers)?,
            header_spellings: HeaderSpellings::new(
                names.iter().map(|(_, name)| *name).chain([config.assertion.header.as_str()]),
            ),
            assertion,
            webhooks: webhook_endpoints(&config),
            pages: Pages::new(&config.pages)?,
            verifiers,
            browser,
            config,
        })
    }

    /// The gateway's public origin for a request to `host`: the `public_url` with that host,
    /// else the first `public_url`, else the request's own scheme and authority.
    pub fn public_origin(&self, host: &str, authority: &str, tls: bool) -> std::borrow::Cow<'_, str> {
        let origins = &self.config.server.public_origins;
        let configured = origins.iter().find(|(h, _)| h == host).or(origins.first());
        match configured {
            Some((_, origin)) => std::borrow::Cow::Borrowed(origin.as_str()),
            None => std::borrow::Cow::Owned(format!("{}://{authority}", if tls { "https" } else { "http" })),
        }
    }

    /// Is `peer` a proxy whose `X-Forwarded-*` headers we believe?
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| self.trusted_proxies.iter().any(|net| net.contains(&ip)))
    }
}

/// One provider's webhook endpoint.
#[derive(Debug)]
pub struct WebhookEndpoint {
    /// Its path, under `/oauth2/`.
    pub path: String,
    /// Its signing key.
    pub key: WebhookKey,
    /// Largest body accepted.
    pub max_body: usize,
    /// What its users' revocation keys are qualified with (`identity::user_key`).
    pub namespace: Option<String>,
}

/// The webhook endpoints of `config`: `[webhooks]` for the first provider (`[provider]` or the
/// only one), `[providers.<name>.webhooks]` for the others.
fn webhook_endpoints(config: &Config) -> Vec<WebhookEndpoint> {
    let first = config.provider_list().first().map(|(name, _)| *name);
    let namespace = |name: &str| (name != DEFAULT_PROVIDER).then(|| name.to_owned());
    let top = config.webhooks.iter().map(|w| (w, first.and_then(namespace)));
    let own =
        config.providers.iter().filter_map(|(name, p)| p.webhooks.as_ref().map(|w| (w, namespace(name))));
    top.chain(own)
        .filter_map(|(w, namespace)| {
            let secret = w.secret.as_ref()?;
            Some(WebhookEndpoint {
                path: w.path.clone(),
                key: WebhookKey::new(secret.expose().as_bytes()),
                max_body: w.max_body_size.bytes(),
                namespace,
            })
        })
        .collect()
}

/// The assertion a route sends: on every authenticated route when `[assertion] enabled`, unless
/// the route opts out; its audience is the route's upstream origin unless configured.
fn route_assertion(config: &Config, index: usize, rc: &RouteConfig) -> Option<RouteAssertion> {
    if !config.assertion.enabled || rc.auth == AuthMode::Public || rc.assertion == Some(false) {
        return None;
    }
    let audience = match &rc.assertion_audience {
        Some(a) => a.clone(),
        None => rc
            .upstream
            .first()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default(),
    };
    Some(RouteAssertion { index, audience })
}

fn build_route(config: &Config, index: usize, rc: &RouteConfig) -> Result<Route, BuildError> {
    let bad = |message: String| BuildError::Route { index, message };
    let host = HostPattern::parse(&rc.host).map_err(bad)?;
    let mut path = normalize_route_path(&rc.path).map_err(bad)?;
    if config.server.case_insensitive_paths {
        path.make_ascii_lowercase();
    }
    let upstream =
        UpstreamPool::resolve(&rc.upstream).map_err(|source| BuildError::Upstream { index, source })?;
    let limits = &config.server.limits;
    Ok(Route {
        name: rc.name.clone().unwrap_or_else(|| format!("{host}{path}")),
        label: rc.name.clone(),
        host,
        path,
        auth: rc.auth,
        access: RouteAccess::from_route(rc, config.server.case_insensitive_paths).map_err(bad)?,
        upstream,
        providers: config
            .route_providers(rc)
            .into_iter()
            .map(|index| RouteProvider {
                index,
                audiences: match rc.audience.is_empty() {
                    true => {
                        config.provider_list().get(index).map(|(_, p)| p.audience.clone()).unwrap_or_default()
                    }
                    false => rc.audience.clone(),
                },
            })
            .collect(),
        pass_access_token: rc.pass_access_token,
        preserve_host: rc.preserve_host,
        assertion: route_assertion(config, index, rc),
        timeouts: Timeouts {
            connect: rc.connect_timeout.unwrap_or(limits.connect_timeout).get(),
            read: rc.read_timeout.unwrap_or(limits.read_timeout).get(),
            write: rc.write_timeout.unwrap_or(limits.write_timeout).get(),
            idle: limits.idle_timeout.get(),
        },
    })
}
