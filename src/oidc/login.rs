//! The authorization-code flow with PKCE (RFC 7636, S256), the code exchange and the refresh
//! grant, through `openidconnect` (its HTTP calls go through the bounded client, `ProviderHttp`).
//! What stays ours: the token-endpoint budget and 429 handling around each call, and how a
//! refusal is read (only its OAuth error code, never its description).

use std::borrow::Cow;
use std::time::Duration;

use base64::Engine;
use openidconnect::core::CoreAuthenticationFlow;
use openidconnect::{
    AuthorizationCode, CsrfToken, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse as _,
};

use super::budget::{Grant, TokenBudget};
use super::discovery::Discovery;
use super::fetch::{FetchError, Fetcher, ProviderHttp};
use crate::config::Secret;
use crate::random::{RandomError, random_token};
use crate::session::{LoginState, SealError};

/// How the gateway signs users in at the provider.
#[derive(Debug, Clone, Default)]
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
    /// How long after its access token expired a session whose refresh is deferred is admitted.
    pub max_stale: Duration,
    /// The token-endpoint calls allowed per minute (per-address exchange shares derive from it).
    pub token_endpoint_rate: u32,
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
    // state, nonce and verifier come from the OS (`random`), not from the crate's thread RNG
    let state = random_token(32)?;
    let nonce = random_token(32)?;
    let verifier = random_token(32)?;
    let redirect =
        RedirectUrl::new(redirect_uri.to_owned()).map_err(|_| LoginError::NotReady("redirect_uri"))?;
    let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.clone()));
    let client =
        discovery.client(&settings.client_id, settings.client_secret.as_ref()).set_redirect_uri(redirect);
    let (given_state, given_nonce) = (state.clone(), nonce.clone());
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(given_state),
            move || Nonce::new(given_nonce),
        )
        .add_scopes(settings.scopes.split(' ').filter(|s| !s.is_empty()).map(|s| Scope::new(s.to_owned())))
        .set_pkce_challenge(challenge);
    for (k, v) in &settings.extra_params {
        request = request.add_extra_param(k.clone(), v.clone());
    }
    let (url, _, _) = request.url();
    let login = LoginState {
        verifier,
        nonce,
        return_to,
        redirect_uri: redirect_uri.to_owned(),
        browser,
        created_at: now,
        // the caller names the provider
        provider: String::new(),
    };
    Ok(AuthorizationRequest { url: url.into(), state, login })
}

/// The token endpoint's answer to a code exchange or a refresh.
#[derive(Clone)]
pub struct TokenResponse {
    /// The access token.
    pub access_token: String,
    /// The id_token.
    pub id_token: Option<String>,
    /// The refresh token.
    pub refresh_token: Option<String>,
    /// Seconds until the access token expires.
    pub expires_in: Option<u64>,
}

impl From<openidconnect::core::CoreTokenResponse> for TokenResponse {
    fn from(r: openidconnect::core::CoreTokenResponse) -> Self {
        Self {
            access_token: r.access_token().secret().clone(),
            id_token: r.id_token().map(ToString::to_string),
            refresh_token: r.refresh_token().map(|t| t.secret().clone()),
            expires_in: r.expires_in().map(|d| d.as_secs()),
        }
    }
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}

/// Redeems a code with its PKCE verifier: one token-endpoint call, for which the caller has
/// taken budget (`Grant::CodeExchange`). A 429 pauses the budget and comes back as
/// `RateLimited`.
pub async fn redeem_code(
    fetcher: &Fetcher,
    discovery: &Discovery,
    settings: &LoginSettings,
    budget: &TokenBudget,
    code: &str,
    login: &LoginState,
) -> Result<TokenResponse, LoginError> {
    let redirect =
        RedirectUrl::new(login.redirect_uri.clone()).map_err(|_| LoginError::NotReady("redirect_uri"))?;
    let client = discovery.client(&settings.client_id, settings.client_secret.as_ref());
    let request = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|_| LoginError::NotReady("token_endpoint"))?;
    let result = request
        .set_pkce_verifier(PkceCodeVerifier::new(login.verifier.clone()))
        .set_redirect_uri(Cow::Borrowed(&redirect))
        .request_async(&ProviderHttp(fetcher))
        .await;
    judge(result, budget, Grant::CodeExchange)
}

/// How long a code exchange may wait for the token-endpoint budget or a 429's `Retry-After`:
/// providers keep a code for about a minute, and the user has already spent part of it.
pub const CODE_PATIENCE: Duration = Duration::from_secs(40);

/// Redeems a refresh token (the caller has taken budget for it).
pub async fn refresh_grant(
    fetcher: &Fetcher,
    discovery: &Discovery,
    settings: &LoginSettings,
    budget: &TokenBudget,
    refresh_token: &str,
) -> Result<TokenResponse, LoginError> {
    let client = discovery.client(&settings.client_id, settings.client_secret.as_ref());
    let token = RefreshToken::new(refresh_token.to_owned());
    let request =
        client.exchange_refresh_token(&token).map_err(|_| LoginError::NotReady("token_endpoint"))?;
    judge(request.request_async(&ProviderHttp(fetcher)).await, budget, Grant::Refresh)
}

/// What a token-endpoint call came to, by authgate's rules: a 429 pauses the budget, a 4xx is a
/// refusal named by its OAuth error code, anything else a provider failure.
fn judge<E: openidconnect::ErrorResponse>(
    result: Result<openidconnect::core::CoreTokenResponse, RequestTokenError<FetchError, E>>,
    budget: &TokenBudget,
    grant: Grant,
) -> Result<TokenResponse, LoginError> {
    let outcome =
        |o: &str| crate::metrics::METRICS.token_requests.with_label_values(&[grant.label(), o]).inc();
    match result {
        Ok(response) => {
            budget.succeeded();
            outcome("ok");
            Ok(response.into())
        }
        Err(RequestTokenError::Request(FetchError::Status { status: 429, retry_after, .. })) => {
            outcome("throttled");
            let pause = budget.throttled(retry_after);
            tracing::warn!(
                grant = grant.label(),
                pause_ms = pause.as_millis() as u64,
                "the token endpoint answered 429"
            );
            Err(LoginError::RateLimited(pause))
        }
        Err(RequestTokenError::Request(FetchError::Status { status, body, .. }))
            if (400..500).contains(&status) =>
        {
            outcome("refused");
            Err(LoginError::Refused(oauth_error(&body).unwrap_or_else(|| format!("HTTP {status}"))))
        }
        Err(RequestTokenError::Request(e)) => {
            outcome("failed");
            Err(LoginError::Unavailable(e.to_string()))
        }
        // only a 200 reaches the crate (`ProviderHttp`): anything it cannot read is malformed
        Err(
            RequestTokenError::ServerResponse(_) | RequestTokenError::Parse(..) | RequestTokenError::Other(_),
        ) => {
            outcome("failed");
            Err(LoginError::Unavailable("malformed token response".into()))
        }
    }
}

/// Where to send a browser to end its provider session (OpenID Connect RP-Initiated Logout):
/// the end-session endpoint with the session's id_token as a hint (when it still parses), our
/// client id, where to come back, and a `state`.
pub fn end_session_url(
    endpoint: &openidconnect::EndSessionUrl,
    id_token: &str,
    settings: &LoginSettings,
    post_logout: &str,
    state: String,
) -> String {
    let mut request = openidconnect::LogoutRequest::from(endpoint.clone())
        .set_client_id(openidconnect::ClientId::new(settings.client_id.clone()))
        .set_state(CsrfToken::new(state));
    if let Ok(hint) = id_token.parse::<openidconnect::core::CoreIdToken>() {
        request = request.set_id_token_hint(&hint);
    }
    if let Ok(back) = openidconnect::PostLogoutRedirectUrl::new(post_logout.to_owned()) {
        request = request.set_post_logout_redirect_uri(back);
    }
    request.http_get_url().into()
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

    use sha2::{Digest, Sha256};

    fn discovery() -> Discovery {
        let doc = serde_json::json!({
            "issuer": "https://idp.example.com",
            "jwks_uri": "https://idp.example.com/jwks",
            "authorization_endpoint": "https://idp.example.com/auth?tenant=acme",
            "token_endpoint": "https://idp.example.com/token",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        Discovery::parse(&serde_json::to_vec(&doc).unwrap(), "https://idp.example.com").unwrap()
    }

    #[test]
    fn authorization_requests_carry_fresh_secrets_and_nothing_from_the_client() {
        let settings = LoginSettings {
            client_id: "authgate".into(),
            client_secret: None,
            scopes: "openid profile".into(),
            extra_params: vec![("kc_idp_hint".into(), "google".into())],
            login_ttl: Duration::from_secs(600),
            max_stale: Duration::from_secs(900),
            token_endpoint_rate: 20,
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
        assert_eq!(q["scope"], "openid profile", "the configured scopes, `openid` once");
        assert_eq!(q["redirect_uri"], "https://app/oauth2/callback");
        assert_eq!(q["client_id"], "authgate");
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
