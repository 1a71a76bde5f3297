//! The authorization-code flow with PKCE (RFC 7636, S256) and the code exchange: plain
//! functions over the discovery document, so each step is testable without a provider.
//!
//! Hand-written rather than through `openidconnect`: that crate brings its own HTTP client
//! plumbing, JWKS types and id_token verifier, while authgate verifies every token, bearer or
//! id_token, with one `JwksCache` and one set of rules.

use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::budget::{Grant, TokenBudget};
use super::discovery::Discovery;
use super::fetch::{FetchError, Fetcher};
use crate::config::Secret;
use crate::random::{RandomError, random_token};
use crate::session::{LoginState, SealError};

/// How the gateway signs users in at the provider.
#[derive(Debug, Clone)]
pub struct LoginSettings {
    /// The gateway's client id.
    pub client_id: String,
    /// Its secret, unless it is a public client.
    pub client_secret: Option<Secret>,
    /// Space-separated scopes.
    pub scopes: String,
    /// Extra authorization-request parameters from config.
    pub extra_params: Vec<(String, String)>,
    /// How long a started login may take.
    pub login_ttl: Duration,
    /// Keep `email` without `email_verified: true`.
    pub trust_unverified_email: bool,
    /// A session's absolute lifetime, seconds.
    pub session_lifetime: u64,
    /// Where the provider sends the browser after sign-out (default: the origin + `/`).
    pub post_logout_redirect_uri: Option<String>,
    /// Most sign-ins started within one `login_ttl` (each keeps a login state in the store).
    pub max_pending_logins: u64,
}

/// Why a sign-in step failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Discovery is not loaded yet, or lacks an endpoint.
    #[error("the provider is not ready: {0}")]
    NotReady(&'static str),
    /// The provider could not be reached, timed out or failed (5xx).
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request (`invalid_grant`, `invalid_client`, ...).
    #[error("the provider refused the grant: {0}")]
    Refused(String),
    /// The token-endpoint budget is spent or the provider answered 429; try again after this.
    #[error("the token endpoint is rate-limited for {0:?}")]
    RateLimited(Duration),
    /// Randomness failed.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// A session or login state could not be sealed.
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// A prepared redirect to the provider.
#[derive(Debug)]
pub struct AuthorizationRequest {
    /// Where to send the browser.
    pub url: String,
    /// The `state` (the key of the stored login).
    pub state: String,
    /// What to store under it.
    pub login: LoginState,
}

/// Builds the authorization request: fresh `state`, `nonce` and PKCE verifier (256 bits each).
/// Nothing from the client's request goes into the URL; `return_to` only into the stored state.
pub fn authorization_request(
    discovery: &Discovery,
    settings: &LoginSettings,
    redirect_uri: &str,
    return_to: String,
    browser: [u8; 32],
    now: u64,
) -> Result<AuthorizationRequest, LoginError> {
    let endpoint =
        discovery.authorization_endpoint.as_deref().ok_or(LoginError::NotReady("authorization_endpoint"))?;
    let state = random_token(32)?;
    let nonce = random_token(32)?;
    let verifier = random_token(32)?;
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let mut url = url::Url::parse(endpoint).map_err(|_| LoginError::NotReady("authorization_endpoint"))?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in &settings.extra_params {
            q.append_pair(k, v);
        }
        q.append_pair("response_type", "code")
            .append_pair("client_id", &settings.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &settings.scopes)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
    }
    let login = LoginState {
        verifier,
        nonce,
        return_to,
        redirect_uri: redirect_uri.to_owned(),
        browser,
        created_at: now,
    };
    Ok(AuthorizationRequest { url: url.into(), state, login })
}

/// The token endpoint's answer to a code exchange.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// The id_token.
    pub id_token: Option<String>,
    /// The refresh token.
    pub refresh_token: Option<String>,
    /// Seconds until the access token expires (a number, or a numeric string as some
    /// providers send).
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub expires_in: Option<u64>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}

/// Redeems a code with its PKCE verifier. Sign-ins come first in the token-endpoint budget,
/// and a 429 is waited out and retried while the code can still be redeemed.
pub async fn exchange_code(
    fetcher: &Fetcher,
    discovery: &Discovery,
    settings: &LoginSettings,
    budget: &TokenBudget,
    code: &str,
    login: &LoginState,
) -> Result<TokenResponse, LoginError> {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", login.redirect_uri.as_str()),
        ("code_verifier", login.verifier.as_str()),
    ];
    // providers keep a code for about a minute; the user has already waited for part of it
    let deadline = Instant::now() + CODE_PATIENCE;
    loop {
        let wait = match budget.try_take(Grant::CodeExchange) {
            Ok(()) => {
                match token_request(fetcher, discovery, settings, budget, Grant::CodeExchange, &form).await {
                    Err(LoginError::RateLimited(pause)) => pause,
                    other => return other,
                }
            }
            Err(wait) => {
                crate::metrics::METRICS
                    .token_budget_waits
                    .with_label_values(&[Grant::CodeExchange.label()])
                    .inc();
                wait
            }
        };
        if Instant::now() + wait > deadline {
            return Err(LoginError::RateLimited(wait));
        }
        tokio::time::sleep(wait).await;
    }
}

/// How long a code exchange may wait for the token-endpoint budget or a 429's `Retry-After`.
const CODE_PATIENCE: Duration = Duration::from_secs(40);

/// Redeems a refresh token (the caller has taken budget for it).
pub async fn refresh_grant(
    fetcher: &Fetcher,
    discovery: &Discovery,
    settings: &LoginSettings,
    budget: &TokenBudget,
    refresh_token: &str,
) -> Result<TokenResponse, LoginError> {
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
    token_request(fetcher, discovery, settings, budget, Grant::Refresh, &form).await
}

/// One call to the token endpoint. Client authentication follows discovery:
/// `client_secret_basic` unless the provider only supports `client_secret_post`.
async fn token_request(
    fetcher: &Fetcher,
    discovery: &Discovery,
    settings: &LoginSettings,
    budget: &TokenBudget,
    grant: Grant,
    form: &[(&str, &str)],
) -> Result<TokenResponse, LoginError> {
    let endpoint = discovery.token_endpoint.as_deref().ok_or(LoginError::NotReady("token_endpoint"))?;
    let mut form = form.to_vec();
    let methods = &discovery.token_endpoint_auth_methods_supported;
    let use_post = !methods.is_empty()
        && !methods.iter().any(|m| m == "client_secret_basic")
        && methods.iter().any(|m| m == "client_secret_post");
    let result = match (&settings.client_secret, use_post) {
        (Some(secret), false) => {
            fetcher.post_form(endpoint, &settings.client_id, secret.expose(), &form).await
        }
        (Some(secret), true) => {
            form.push(("client_id", &settings.client_id));
            form.push(("client_secret", secret.expose()));
            fetcher.post_form_anonymous(endpoint, &form).await
        }
        (None, _) => {
            form.push(("client_id", &settings.client_id));
            fetcher.post_form_anonymous(endpoint, &form).await
        }
    };
    let outcome =
        |o: &str| crate::metrics::METRICS.token_requests.with_label_values(&[grant.label(), o]).inc();
    let fetched = match result {
        Ok(f) => f,
        Err(FetchError::Status { status: 429, retry_after, .. }) => {
            outcome("throttled");
            let pause = budget.throttled(retry_after);
            tracing::warn!(
                grant = grant.label(),
                pause_ms = pause.as_millis() as u64,
                "the token endpoint answered 429"
            );
            return Err(LoginError::RateLimited(pause));
        }
        Err(FetchError::Status { status, body, .. }) if (400..500).contains(&status) => {
            outcome("refused");
            return Err(LoginError::Refused(oauth_error(&body).unwrap_or_else(|| format!("HTTP {status}"))));
        }
        Err(e) => {
            outcome("failed");
            return Err(LoginError::Unavailable(e.to_string()));
        }
    };
    budget.succeeded();
    outcome("ok");
    serde_json::from_slice(&fetched.body)
        .map_err(|_| LoginError::Unavailable("malformed token response".into()))
}

fn lenient_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    })
}

/// The `error` code of an OAuth error body (never its free-text description).
fn oauth_error(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = v["error"].as_str()?;
    code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_').then(|| code.to_owned())
}

/// The claims of a JWT access token as received from the token endpoint. It came straight
/// from the provider over TLS, so its signature need not be checked to read it (OIDC Core
/// §3.1.3.8); an opaque token has none.
pub fn access_token_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery() -> Discovery {
        serde_json::from_value(serde_json::json!({
            "issuer": "https://idp.example.com",
            "jwks_uri": "https://idp.example.com/jwks",
            "authorization_endpoint": "https://idp.example.com/auth?tenant=acme",
            "token_endpoint": "https://idp.example.com/token",
        }))
        .unwrap()
    }

    #[test]
    fn authorization_requests_carry_fresh_secrets_and_nothing_from_the_client() {
        let settings = LoginSettings {
            client_id: "authgate".into(),
            client_secret: None,
            scopes: "openid profile".into(),
            extra_params: vec![("kc_idp_hint".into(), "google".into())],
            login_ttl: Duration::from_secs(600),
            trust_unverified_email: false,
            session_lifetime: 3600,
            max_pending_logins: 20_000,
            post_logout_redirect_uri: None,
        };
        let a = authorization_request(
            &discovery(),
            &settings,
            "https://app/oauth2/callback",
            "/x?y=<1>".into(),
            [0; 32],
            5,
        )
        .unwrap();
        let b = authorization_request(
            &discovery(),
            &settings,
            "https://app/oauth2/callback",
            "/".into(),
            [0; 32],
            5,
        )
        .unwrap();
        let url = url::Url::parse(&a.url).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(url.path(), "/auth");
        assert_eq!(q["tenant"], "acme");
        assert_eq!(q["kc_idp_hint"], "google");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["state"], a.state);
        assert_eq!(q["nonce"], a.login.nonce);
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(a.login.verifier.as_bytes()));
        assert_eq!(q["code_challenge"], challenge);
        assert!(a.state.len() >= 43 && a.login.nonce.len() >= 43 && a.login.verifier.len() >= 43);
        assert_ne!(a.state, b.state);
        assert_ne!(a.login.nonce, b.login.nonce);
        assert!(!a.url.contains("%3C1%3E") && !a.url.contains("<1>"), "return-to leaked into the URL");
    }

    #[test]
    fn only_the_error_code_of_a_refusal_is_kept() {
        assert_eq!(
            oauth_error(br#"{"error":"invalid_grant","error_description":"<script>"}"#).as_deref(),
            Some("invalid_grant")
        );
        assert_eq!(oauth_error(br#"{"error":"<script>"}"#), None);
        assert_eq!(oauth_error(b"garbage"), None);
    }
}
