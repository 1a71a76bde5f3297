//! One provider's sign-in client: the verifier of its tokens, the gateway's registration there,
//! and the code exchanges each client network may make at it.

use std::sync::Arc;

use super::login_budget::ExchangeLimiter;
use crate::jwt::TokenVerifier;
use crate::oidc::login::LoginSettings;

/// One provider's sign-in: its tokens' verifier, the gateway's client registration there, and
/// the code exchanges each client network may make at it.
pub struct ProviderClient {
    /// Verifies its tokens (and knows its discovery, keys and token-endpoint budget).
    pub verifier: Arc<TokenVerifier>,
    /// The client registration and sign-in settings.
    pub settings: LoginSettings,
    /// How the sign-in chooser names it.
    pub display_name: String,
    /// Code exchanges per client network (made-up codes must not spend its budget).
    pub(super) exchange_limiter: ExchangeLimiter,
}

impl ProviderClient {
    /// A provider's sign-in client.
    pub fn new(verifier: Arc<TokenVerifier>, settings: LoginSettings, display_name: String) -> Self {
        let exchange_limiter = ExchangeLimiter::new(settings.token_endpoint_rate);
        Self { verifier, settings, display_name, exchange_limiter }
    }

    /// Its name in the config.
    pub fn name(&self) -> &str {
        self.verifier.name()
    }

    /// What its users' revocation keys are qualified with.
    pub(super) fn namespace(&self) -> Option<&str> {
        self.verifier.namespace()
    }
}
