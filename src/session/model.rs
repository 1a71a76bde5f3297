//! What a session and a pending login hold (serialised, then encrypted, before storage).

use serde::{Deserialize, Serialize};

use crate::identity::Identity;

/// A signed-in browser.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// Who signed in.
    pub identity: Identity,
    /// The provider's tokens (never sent to the browser).
    pub tokens: SessionTokens,
    /// The provider's session id (`sid`), for back-channel logout.
    pub sid: Option<String>,
    /// Sign-in time, seconds since the epoch.
    pub created_at: u64,
    /// The session ends then at the latest (absolute lifetime).
    pub expires_at: u64,
    /// The provider it was signed in at, by name (empty: the first provider, as sessions
    /// stored before several providers were possible).
    #[serde(default)]
    pub provider: String,
}

/// The provider's tokens of a session.
#[derive(Clone, Serialize, Deserialize)]
pub struct SessionTokens {
    /// The access token.
    pub access_token: String,
    /// The refresh token, if the provider issued one.
    pub refresh_token: Option<String>,
    /// The id_token (for `id_token_hint` at logout).
    pub id_token: String,
    /// When the access token expires, seconds since the epoch.
    pub access_expires_at: u64,
    /// When the access token was issued (its lifetime bounds how early it is refreshed).
    #[serde(default)]
    pub access_issued_at: u64,
}

impl std::fmt::Debug for SessionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTokens")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "<redacted>"))
            .field("id_token", &"<redacted>")
            .field("access_expires_at", &self.access_expires_at)
            .field("access_issued_at", &self.access_issued_at)
            .finish()
    }
}

/// A sign-in in progress, kept server-side under its `state` until the callback (single use).
#[derive(Clone, Serialize, Deserialize)]
pub struct LoginState {
    /// The PKCE code verifier.
    pub verifier: String,
    /// The nonce the id_token must carry.
    pub nonce: String,
    /// Where to go after sign-in (same origin, checked).
    pub return_to: String,
    /// The redirect URI used (the token request must repeat it).
    pub redirect_uri: String,
    /// Hash of the browser-binding cookie that started this login.
    pub browser: [u8; 32],
    /// When the login started, seconds since the epoch.
    pub created_at: u64,
    /// The provider it signs in at, by name (empty: the first provider).
    #[serde(default)]
    pub provider: String,
}

impl std::fmt::Debug for LoginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginState").field("return_to", &self.return_to).finish_non_exhaustive()
    }
}
