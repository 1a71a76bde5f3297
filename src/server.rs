//! Assembling the Pingora server from a validated config: proxy listeners (plain, h2c, TLS
//! with HTTP/2), the admin listener, and process settings (threads, draining and graceful
//! shutdown).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::browser::cookies::CookieSettings;
use crate::browser::{BrowserAuth, ProviderClient, RefreshSettings};
use crate::config::{Config, DEFAULT_PROVIDER, StoreKind, resolve_path};
use crate::gateway::{BuildError, Gateway};
use crate::jwt::introspection::Introspector;
use crate::jwt::{TokenVerifier, VerifierSettings};
use crate::lifecycle::{Drain, DrainOnTerm};
use crate::oidc::login::LoginSettings;
use crate::oidc::{OidcProvider, ProviderError, ProviderRefresher};
use crate::proxy::AuthGate;
use crate::reload::{Reloader, SighupReloader};
use crate::revocation::{DenyListSync, Revocations};
use crate::session::{
    MemoryStore, RedisSettings, RedisStore, SentinelSettings, SessionSealer, SessionStore, StoreError,
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config is valid but cannot be served (e.g. an upstream does not resolve).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The provider client cannot be set up.
    #[error("provider: {0}")]
    Provider(#[from] ProviderError),
    /// A file of the session store's settings cannot be read.
    #[error("cannot read session.{key} {}: {source}", path.display())]
    StoreFile {
        /// The setting.
        key: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// What happened.
        source: std::io::Error,
    },
    /// The Redis client key file is not text.
    #[error("session.redis_client_key_file is not PEM")]
    StoreKeyNotPem,
    /// The session store cannot be set up.
    #[error("session store: {0}")]
    Store(#[from] StoreError),
    /// A setting this version does not implement yet.
    #[error("{0} is not available in this version")]
    Unsupported(&'static str),
    /// TLS certificate or key could not be loaded.
    #[error("server.tls: cannot load the certificate or key: {0}")]
    Tls(#[source] Box<pingora::Error>),
}

/// The session store `config` asks for (`session.store`): the embedded memory store, or Redis
/// (directly or through Sentinel).
pub fn session_store(config: &Config) -> Result<Arc<dyn SessionStore>, StartError> {
    let s = &config.session;
    Ok(match s.store {
        StoreKind::Memory => {
            Arc::new(MemoryStore::new(s.max_sessions, s.idle_lifetime.get(), s.login_lifetime.get()))
        }
        StoreKind::Redis => {
            let url = s
                .redis_url
                .clone()
                .ok_or(StartError::Unsupported("session.store = \"redis\" without redis_url"))?;
            let read = |key: &'static str, file: &std::path::Path| {
                std::fs::read(file).map_err(|source| StartError::StoreFile {
                    key,
                    path: file.to_owned(),
                    source,
                })
            };
            let ca_pem = s.redis_ca_file.as_deref().map(|f| read("redis_ca_file", f)).transpose()?;
            let client_pem = match (&s.redis_client_cert_file, &s.redis_client_key_file) {
                (Some(cert), Some(key)) => {
                    let key = String::from_utf8(read("redis_client_key_file", key)?)
                        .map_err(|_| StartError::StoreKeyNotPem)?;
                    Some((read("redis_client_cert_file", cert)?, crate::config::Secret::new(key)))
                }
                _ => None,
            };
            let sentinel = s.redis_sentinel.clone().map(|parsed| SentinelSettings {
                url: parsed,
                username: s.redis_sentinel_username.clone(),
                password: s.redis_sentinel_password.clone(),
            });
            let settings = RedisSettings {
                url,
                sentinel,
                wait_replicas: s.redis_wait_replicas,
                ca_pem,
                client_pem,
                prefix: s.redis_prefix.clone(),
                timeout: s.redis_timeout.get(),
                connections: s.redis_connections,
                idle: s.idle_lifetime.get(),
                login_ttl: s.login_lifetime.get(),
            };
            Arc::new(RedisStore::new(&settings)?)
        }
    })
}

/// Browser sign-in, when the config has a session secret (validation requires one for
/// `browser` and `any` routes).
fn browser_auth(
    config: &Config,
    verifiers: &[Arc<TokenVerifier>],
) -> Result<Option<Arc<BrowserAuth>>, StartError> {
    let s = &config.session;
    let Some(secret) = &s.secret else { return Ok(None) };
    let store = session_store(config)?;
    let all_https = !config.server.public_url.is_empty()
        && config.server.public_url.iter().all(|u| u.starts_with("https://"));
    let list = config.provider_list();
    let mut clients: Vec<ProviderClient> = list
        .iter()
        .zip(verifiers)
        .map(|((name, provider), verifier)| {
            let settings = LoginSettings {
                client_id: provider.client_id.clone(),
                client_secret: provider.client_secret.clone(),
                scopes: provider.scopes.join(" "),
                extra_params: provider
                    .extra_authorize_params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                login_ttl: s.login_lifetime.get(),
                trust_unverified_email: provider.trust_unverified_email,
                session_lifetime: s.absolute_lifetime.get().as_secs(),
                post_logout_redirect_uri: provider.post_logout_redirect_uri.clone(),
                max_pending_logins: s.max_pending_logins,
                max_stale: s.max_stale.get(),
                token_endpoint_rate: provider.token_endpoint_rate,
            };
            let display_name = provider.display_name.clone().unwrap_or_else(|| (*name).to_owned());
            ProviderClient::new(verifier.clone(), settings, display_name)
        })
        .collect();
    // one refresher holds a session's lock at most as long as its provider call may take
    let slowest = list.iter().map(|(_, p)| p.http_timeout.get()).max().unwrap_or(Duration::from_secs(5));
    let cookies = CookieSettings::new(
        &s.cookie_name,
        all_https,
        s.absolute_lifetime.get().as_secs(),
        s.login_lifetime.get().as_secs(),
    );
    let sealer = SessionSealer::new(secret.expose().as_bytes());
    // revocation records outlive every session they may apply to
    let keep = s.absolute_lifetime.get().max(Duration::from_secs(24 * 3600)) + Duration::from_secs(3600);
    let deny_for = Duration::from_secs(crate::identity::MAX_LIFETIME_SECS);
    let revocations = Revocations::new(store.clone(), sealer.clone(), keep, deny_for);
    let lock_ttl = slowest * 2 + Duration::from_secs(5);
    if clients.is_empty() {
        return Ok(None);
    }
    let first = clients.remove(0);
    Ok(Some(BrowserAuth::new(
        first,
        clients,
        store,
        sealer,
        cookies,
        RefreshSettings { before: s.refresh_before.get(), lock_ttl },
        revocations,
    )))
}

/// The assembled server, ready to run.
pub struct Gatekeeper {
    server: Server,
    shutdown: DrainOnTerm,
}

impl Gatekeeper {
    /// Serves until a shutdown signal and returns once the services have stopped.
    pub fn run(self) {
        self.server.run(RunArgs { shutdown_signal: Box::new(self.shutdown) });
    }
}

/// Builds the server for `config`, read from `config_path` (reloads re-read it; relative paths
/// in it are resolved against its directory).
pub fn build(config: Config, config_path: &std::path::Path) -> Result<Gatekeeper, StartError> {
    let base_dir = config_path.parent().unwrap_or(std::path::Path::new("."));
    // register every metric now, not on the first request
    std::sync::LazyLock::force(&crate::metrics::METRICS);
    let config = Arc::new(config);
    // one client per provider, in `Config::provider_list` order (indexes mean that everywhere)
    let mut providers = Vec::new();
    let mut verifiers = Vec::new();
    for (name, p) in config.provider_list() {
        let provider = Arc::new(OidcProvider::new(p)?);
        let settings = VerifierSettings {
            algorithms: p.signature_algorithms.clone(),
            leeway: p.leeway.get().as_secs(),
            cache_size: p.token_cache_size,
            client_id: p.client_id.clone(),
            extra_claims: config.headers.claims.keys().cloned().collect(),
            name: name.to_owned(),
            // by name, never by position: adding a provider must not re-key another's users
            namespace: (name != DEFAULT_PROVIDER).then(|| name.to_owned()),
        };
        let mut verifier = TokenVerifier::new(provider.clone(), settings);
        if let (true, Some(secret)) = (p.introspection, &p.client_secret) {
            verifier = verifier.with_introspection(Introspector::new(
                p.client_id.clone(),
                secret.clone(),
                p.introspection_ttl.get(),
                p.token_cache_size,
            ));
        }
        providers.push(provider);
        verifiers.push(Arc::new(verifier));
    }
    let browser = match verifiers.is_empty() {
        true => None,
        false => browser_auth(&config, &verifiers)?,
    };
    let gateway = Arc::new(ArcSwap::from_pointee(Gateway::build(config.clone(), verifiers, browser)?));
    let s = &config.server;
    let threads = match s.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(s.grace_period.get().as_secs()),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let drain = Drain::new();
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        AuthGate::new(gateway.clone(), drain.clone()),
        "authgate",
    );
    if s.h2c {
        if let Some(app) = proxy.app_logic_mut() {
            let mut opts = HttpServerOptions::default();
            opts.h2c = true;
            app.server_options = Some(opts);
        }
    }
    for addr in &s.listen {
        proxy.add_tcp(addr);
    }
    if let Some(tls) = &s.tls {
        let cert = resolve_path(base_dir, &tls.cert);
        let key = resolve_path(base_dir, &tls.key);
        for addr in &tls.listen {
            let mut settings = TlsSettings::intermediate(&cert.to_string_lossy(), &key.to_string_lossy())
                .map_err(StartError::Tls)?;
            settings.enable_h2();
            proxy.add_tls_with_settings(addr, None, settings);
        }
    }
    server.add_service(proxy);

    for provider in &providers {
        server.add_service(background_service("provider refresh", ProviderRefresher(provider.clone())));
    }
    if let Some(browser) = &gateway.load().browser {
        server.add_service(background_service("deny-list sync", DenyListSync(browser.revocations().clone())));
    }

    let reloader = Arc::new(Reloader::new(config_path.to_path_buf(), gateway.clone()));
    server.add_service(background_service("reload on SIGHUP", SighupReloader(reloader.clone())));

    let admin_app = AdminApp::new(gateway, providers, reloader, drain.clone());
    let mut admin = Service::new("authgate admin".into(), admin_app);
    admin.add_tcp(&s.admin_listen);
    server.add_service(admin);
    Ok(Gatekeeper { server, shutdown: DrainOnTerm::new(drain, s.drain_period.get()) })
}
