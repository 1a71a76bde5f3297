//! The OpenID Provider as authgate sees it: its discovery document and signing keys, loaded
//! at start and refreshed in the background, so that no request ever waits on the IdP except
//! for one bounded refetch when a token names a key not seen before.

pub mod budget;
pub mod discovery;
pub mod fetch;
pub mod jwks;
pub mod login;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::ProviderConfig;
use discovery::{Discovery, DiscoveryError, discover};
use fetch::{FetchError, Fetcher};
use jwks::{JwksCache, JwksError, JwksTiming, VerifyingKey};

/// Why the provider's documents could not be refreshed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Discovery failed.
    #[error("discovery: {0}")]
    Discovery(#[from] DiscoveryError),
    /// The JWK Set failed.
    #[error("JWKS: {0}")]
    Jwks(#[from] JwksError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

/// The provider's documents and keys.
#[derive(Debug)]
pub struct OidcProvider {
    /// The configured issuer (compared exactly with every token's `iss`).
    pub issuer: String,
    fetcher: Fetcher,
    discovery: ArcSwapOption<Discovery>,
    /// The signing keys.
    pub jwks: JwksCache,
    /// The client's token-endpoint allowance, shared by every grant.
    pub budget: budget::TokenBudget,
}

impl OidcProvider {
    /// A provider whose documents are not loaded yet (see `refresh`).
    pub fn new(config: &ProviderConfig) -> Result<Self, ProviderError> {
        let fetcher = Fetcher::new(config.http_timeout.get(), config.max_response_size.bytes())?;
        Ok(Self {
            issuer: config.issuer.clone(),
            fetcher,
            discovery: ArcSwapOption::empty(),
            jwks: JwksCache::new(JwksTiming {
                cooldown: config.jwks_cooldown.get(),
                min_refresh: config.jwks_min_refresh.get(),
                max_refresh: config.jwks_max_refresh.get(),
            }),
            budget: budget::TokenBudget::new(config.token_endpoint_rate),
        })
    }

    /// The HTTP client for the provider's endpoints.
    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    /// The discovery document, once loaded.
    pub fn discovery(&self) -> Option<Arc<Discovery>> {
        self.discovery.load_full()
    }

    /// Reloads discovery (keeping the last good document if that fails) and the JWK Set;
    /// returns when to refresh again.
    pub async fn refresh(&self) -> Result<Duration, ProviderError> {
        let doc = match (discover(&self.fetcher, &self.issuer).await, self.discovery()) {
            (Ok(fresh), _) => {
                let fresh = Arc::new(fresh);
                if self.discovery().is_none() {
                    tracing::info!(issuer = %self.issuer, "provider discovery loaded");
                }
                self.discovery.store(Some(fresh.clone()));
                fresh
            }
            (Err(e), Some(old)) => {
                tracing::warn!(error = %e, "cannot reload provider discovery; keeping the last good document");
                old
            }
            (Err(e), None) => return Err(e.into()),
        };
        Ok(self.jwks.refresh(&self.fetcher, doc.jwks_uri()).await?)
    }

    /// The signing key for a token's `kid` (see `JwksCache::key_for`).
    pub async fn key_for(&self, kid: Option<&str>) -> Option<Arc<VerifyingKey>> {
        let doc = self.discovery();
        self.jwks.key_for(kid, &self.fetcher, doc.as_ref().map(|d| d.jwks_uri())).await
    }

    /// `(discovery loaded, keys loaded)` for `/readyz`.
    pub fn readiness(&self) -> (bool, bool) {
        (self.discovery.load().is_some(), self.jwks.is_loaded())
    }
}

/// Keeps the provider's documents fresh: at start, then as `Cache-Control` (within bounds)
/// says, retrying failures with backoff. The last good keys stay in use meanwhile.
pub struct ProviderRefresher(pub Arc<OidcProvider>);

#[async_trait]
impl BackgroundService for ProviderRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let wait = match self.0.refresh().await {
                Ok(next) => {
                    backoff = Duration::from_millis(500);
                    next
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot refresh the provider's documents");
                    let w = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    w
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
