//! Bearer-token verification: the JWKS cache, the checks every access token must pass, and a
//! cache of verified tokens so a client that repeats its token pays for one signature check.

mod id_token;
pub mod introspection;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation};
use sha2::{Digest, Sha256};

use crate::clock::unix_now;
use crate::identity::{AccessClaims, ClaimsError, Identity, PreparedIdentity, TokenContext, numeric_date};
use crate::oidc::OidcProvider;
use introspection::{IntrospectionRequest, Introspector};

/// Longest token accepted (a JWT of real claims is 1-4 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a bearer token is refused. The caller answers 401 `invalid_token` with a generic
/// description; the variant is for logs and metrics only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or too large.
    #[error("malformed token")]
    Malformed,
    /// A header that is never accepted (`crit`, `jku`, `jwk`, `x5u`).
    #[error("forbidden header {0}")]
    ForbiddenHeader(&'static str),
    /// `alg` not in the allowlist (this includes `none` and every HMAC).
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// No key with that `kid`, even after a refetch.
    #[error("unknown signing key")]
    UnknownKey,
    /// The key exists but is not for this algorithm.
    #[error("key does not match the algorithm")]
    KeyMismatch,
    /// Bad signature, issuer, audience presence, nbf, or claim types.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// Past `exp` (+ leeway).
    #[error("token expired")]
    Expired,
    /// No configured audience in `aud`.
    #[error("wrong audience")]
    WrongAudience,
    /// Verified, but not an access token authgate accepts.
    #[error(transparent)]
    Claims(#[from] ClaimsError),
    /// Introspection says the opaque token is not active.
    #[error("token not active")]
    Inactive,
    /// Introspection could not be done (provider down, bad answer).
    #[error("introspection failed")]
    IntrospectionFailed,
}

/// Longest a verified identity is reused before its token is checked again (so that a key the
/// provider withdrew stops being trusted within this time).
const MAX_CACHE_LIFETIME: Duration = Duration::from_secs(600);

/// Longest `kid` accepted: real ones are short, and unknown ones are remembered.
const MAX_KID_BYTES: usize = 256;

/// How a `TokenVerifier` judges tokens.
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    /// Accepted signature algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated, in seconds.
    pub leeway: u64,
    /// Verified tokens remembered.
    pub cache_size: u64,
    /// The gateway's own client id (an id_token issued to it is not an access token).
    pub client_id: String,
    /// Claims kept for `[headers.claims]`.
    pub extra_claims: Vec<String>,
    /// The provider's name in the config (`default` for `[provider]`).
    pub name: String,
    /// What its users' revocation keys are qualified with: none for `[provider]` (named
    /// `default`), its name for the others (see `identity::user_key`).
    pub namespace: Option<String>,
}

/// A verified bearer token: who it speaks for, prepared for forwarding once (not per request).
pub struct VerifiedToken {
    /// The identity its claims give.
    pub identity: Identity,
    /// Its identity headers and assertion cache key.
    pub prepared: PreparedIdentity,
    /// The token itself: compared on a cache hit of a JWT (whose cache key is only its last
    /// bytes), and sent upstream on `pass_access_token` routes.
    token: Box<str>,
    /// Its claims, parsed when a route's claim rules first ask (never for an opaque token).
    claims: std::sync::OnceLock<Option<std::sync::Arc<serde_json::Value>>>,
}

impl VerifiedToken {
    /// `identity`, verified from `token` (a JWT, or an opaque token by introspection).
    pub(crate) fn new(identity: Identity, token: &str) -> Self {
        let prepared = PreparedIdentity::of(&identity);
        Self { identity, prepared, token: token.into(), claims: std::sync::OnceLock::new() }
    }

    /// The token's claims (verified with it), for claim rules; `None` for an opaque token.
    pub fn claims(&self) -> Option<std::sync::Arc<serde_json::Value>> {
        self.claims
            .get_or_init(|| crate::oidc::login::access_token_claims(&self.token).map(std::sync::Arc::new))
            .clone()
    }

    /// The token, as the caller sent it.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Is this the verification of exactly `token`? In constant time: timing must not tell how
    /// much of a cached token a guess got right.
    fn is_of(&self, token: &str) -> bool {
        crate::codec::constant_time_eq(self.token.as_bytes(), token.as_bytes())
    }

    /// Its weight in the verified-token cache: one per started `CACHE_UNIT_BYTES` of token, so
    /// that large tokens (whose claims, and so identity and header values, grow with them)
    /// cannot make the cache take more memory than `token_cache_size` ordinary ones.
    pub(crate) fn weight(&self) -> u32 {
        u32::try_from(self.token.len().div_ceil(CACHE_UNIT_BYTES).max(1)).unwrap_or(u32::MAX)
    }
}

impl std::fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedToken")
            .field("identity", &self.identity)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Token bytes that count as one entry of the verified-token cache (a Keycloak access token is
/// 1-2 KiB).
const CACHE_UNIT_BYTES: usize = 2048;

/// The verified-token cache key of a JWT: its last 32 bytes, which lie in its signature (at
/// least 86 characters for every accepted algorithm). A SHA-256 of the whole token was 0.75% of
/// a bearer request's CPU; an entry holds the token, so a hit is only one comparison more.
fn jwt_cache_key(token: &str) -> [u8; 32] {
    let tail = &token.as_bytes()[token.len().saturating_sub(32)..];
    let mut key = [0u8; 32];
    key[..tail.len()].copy_from_slice(tail);
    key
}

/// Verifies access tokens of one provider.
pub struct TokenVerifier {
    provider: Arc<OidcProvider>,
    settings: VerifierSettings,
    /// `settings.algorithms` as `openidconnect` names them, for id_tokens.
    id_token_algorithms: Vec<openidconnect::core::CoreJwsSigningAlgorithm>,
    verified: moka::sync::Cache<[u8; 32], Arc<VerifiedToken>>,
    introspector: Option<Introspector>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Cached identities (verified tokens, introspection answers) live until their token expires
/// (plus `leeway` seconds), and at most `cap`.
pub(crate) struct UntilTokenExpiry {
    /// Seconds past `exp` still accepted.
    pub leeway: u64,
    /// Longest an entry is kept.
    pub cap: Duration,
}

impl moka::Expiry<[u8; 32], Arc<VerifiedToken>> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<VerifiedToken>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        let expires_at = value.identity.expires_at;
        let until_expiry = Duration::from_secs((expires_at + self.leeway).saturating_sub(unix_now()));
        Some(until_expiry.min(self.cap))
    }
}

impl TokenVerifier {
    /// A verifier judging tokens by `settings`; it caches up to `cache_size` verified tokens
    /// of up to 2 KiB (a larger one counts as several).
    pub fn new(provider: Arc<OidcProvider>, settings: VerifierSettings) -> Self {
        let verified = moka::sync::Cache::builder()
            .max_capacity(settings.cache_size)
            .weigher(|_, v: &Arc<VerifiedToken>| v.weight())
            .expire_after(UntilTokenExpiry { leeway: settings.leeway, cap: MAX_CACHE_LIFETIME })
            .build();
        let id_token_algorithms = id_token::algorithms(&settings.algorithms);
        Self { provider, settings, id_token_algorithms, verified, introspector: None }
    }

    /// The provider's name in the config.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// What its users' revocation keys are qualified with (`identity::user_key`).
    pub fn namespace(&self) -> Option<&str> {
        self.settings.namespace.as_deref()
    }

    /// The provider's issuer.
    pub fn issuer(&self) -> &str {
        &self.provider.issuer
    }

    /// Has it verified `token` (still cached)? Only the provider whose issuer a JWT names
    /// verifies it, so this tells a token's provider without reading the token.
    pub fn has_verified(&self, token: &str) -> bool {
        self.verified.get(&jwt_cache_key(token)).is_some_and(|v| v.is_of(token))
    }

    /// Does it accept opaque tokens (by introspection)?
    pub fn introspects(&self) -> bool {
        self.introspector.is_some()
    }

    /// Also accepts opaque (non-JWT) tokens, by asking the provider (RFC 7662).
    pub fn with_introspection(mut self, introspector: Introspector) -> Self {
        self.introspector = Some(introspector);
        self
    }

    /// Verifies `token` and checks that its `aud` holds one of `audiences`.
    pub async fn verify(&self, token: &str, audiences: &[String]) -> Result<Arc<VerifiedToken>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let key = jwt_cache_key(token);
        let tokens = &crate::metrics::METRICS.tokens;
        let verified = match self.verified.get(&key).filter(|v| v.is_of(token)) {
            // only a JWT that verified is ever cached under its tail
            Some(verified) => {
                crate::metrics::METRICS.tokens_cached.inc();
                verified
            }
            None if token.bytes().filter(|&b| b == b'.').count() == 2 => {
                let outcome = self.verify_uncached(token).await;
                tokens.with_label_values(&[if outcome.is_ok() { "verified" } else { "refused" }]).inc();
                let verified = Arc::new(VerifiedToken::new(outcome?, token));
                self.verified.insert(key, verified.clone());
                verified
            }
            None => {
                let Some(introspector) = &self.introspector else { return Err(TokenError::Malformed) };
                let endpoint = self
                    .provider
                    .discovery()
                    .and_then(|d| d.introspection_endpoint().map(str::to_owned))
                    .ok_or(TokenError::IntrospectionFailed)?;
                let request = IntrospectionRequest {
                    endpoint: &endpoint,
                    issuer: &self.provider.issuer,
                    token,
                    hash: Sha256::digest(token.as_bytes()).into(),
                    leeway: self.settings.leeway,
                    own_client_id: &self.settings.client_id,
                    extra_claims: &self.settings.extra_claims,
                };
                introspector.introspect(self.provider.fetcher(), request).await?
            }
        };
        let identity = &verified.identity;
        if identity.expires_at + self.settings.leeway < unix_now() {
            return Err(TokenError::Expired);
        }
        if !identity.audiences.iter().any(|a| audiences.contains(a)) {
            return Err(TokenError::WrongAudience);
        }
        Ok(verified)
    }

    async fn verify_uncached(&self, token: &str) -> Result<Identity, TokenError> {
        let (header, claims) =
            self.decode_verified::<AccessClaims>(token, &["exp", "iss", "aud", "sub"]).await?;
        let ctx = TokenContext {
            at_jwt: header.typ.as_deref().is_some_and(|t| {
                t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
            }),
            own_client_id: &self.settings.client_id,
            extra_claims: &self.settings.extra_claims,
        };
        Ok(claims.into_identity(unix_now(), self.settings.leeway, ctx)?)
    }

    /// Verifies a back-channel logout token's header, signature, `iss`, `exp` and `iat`; the
    /// caller checks the logout-specific claims (`revocation::backchannel::read_logout_claims`).
    pub async fn verify_logout_token(&self, token: &str) -> Result<serde_json::Value, TokenError> {
        let (header, claims) =
            self.decode_verified::<serde_json::Value>(token, &["exp", "iss", "aud", "iat"]).await?;
        // `logout+jwt` is recommended; an explicit other type (e.g. `at+jwt`) is a different token
        if header
            .typ
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("logout+jwt") && !t.eq_ignore_ascii_case("JWT"))
        {
            return Err(TokenError::Invalid("typ"));
        }
        let iat = numeric_date(&claims["iat"], true).ok_or(TokenError::Invalid("iat"))?;
        if iat > unix_now() + self.settings.leeway {
            return Err(TokenError::Claims(ClaimsError::IssuedInFuture));
        }
        Ok(claims)
    }

    /// The gateway's client id (the audience of id_tokens and logout tokens).
    pub fn client_id(&self) -> &str {
        &self.settings.client_id
    }

    /// The JOSE header, if it passes the checks every token must: no `crit`, no key or key URL
    /// to follow, a short `kid`, an algorithm of the allowlist.
    fn checked_header(&self, token: &str) -> Result<jsonwebtoken::Header, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.crit.is_some() {
            return Err(TokenError::ForbiddenHeader("crit"));
        }
        // never followed; a legitimate provider has no reason to send them
        if header.jku.is_some() {
            return Err(TokenError::ForbiddenHeader("jku"));
        }
        if header.jwk.is_some() {
            return Err(TokenError::ForbiddenHeader("jwk"));
        }
        if header.x5u.is_some() {
            return Err(TokenError::ForbiddenHeader("x5u"));
        }
        // a JWE's header fields on a JWS: a token of another kind, whatever its signature says
        if header.enc.is_some() {
            return Err(TokenError::ForbiddenHeader("enc"));
        }
        if header.zip.is_some() {
            return Err(TokenError::ForbiddenHeader("zip"));
        }
        if header.kid.as_ref().is_some_and(|k| k.len() > MAX_KID_BYTES) {
            return Err(TokenError::Malformed);
        }
        if !self.settings.algorithms.contains(&header.alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        Ok(header)
    }

    /// Header checks, key lookup, signature, `iss`, `exp`, `nbf` and the `required` claims.
    async fn decode_verified<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        required: &[&str],
    ) -> Result<(jsonwebtoken::Header, T), TokenError> {
        let header = self.checked_header(token)?;
        let key = self.provider.key_for(header.kid.as_deref()).await.ok_or(TokenError::UnknownKey)?;
        if !key.algorithms.contains(&header.alg) {
            return Err(TokenError::KeyMismatch);
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.settings.leeway;
        validation.validate_nbf = true;
        validation.validate_aud = false; // checked by the callers, which know what to expect
        validation.set_issuer(&[self.provider.issuer.as_str()]);
        validation.set_required_spec_claims(required);
        let data = jsonwebtoken::decode::<T>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            // categories only: error details can quote claim values into the log
            TokenError::Invalid(match e.kind() {
                K::ExpiredSignature => return TokenError::Expired,
                K::InvalidSignature => "signature",
                K::InvalidIssuer => "issuer",
                K::ImmatureSignature => "not yet valid",
                K::MissingRequiredClaim(_) => "missing claim",
                K::InvalidClaimFormat(_) | K::Json(_) => "claim types",
                _ => "malformed",
            })
        })?;
        Ok((header, data.claims))
    }

    /// The provider this verifier trusts.
    pub fn provider(&self) -> &Arc<OidcProvider> {
        &self.provider
    }

    /// Claims kept for `[headers.claims]`.
    pub fn extra_claims(&self) -> &[String] {
        &self.settings.extra_claims
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn someone() -> Identity {
        Identity {
            subject: "u1".into(),
            licenses: vec!["wiki".into()],
            expires_at: unix_now() + 60,
            audiences: vec!["api".into()],
            ..Identity::default()
        }
    }

    #[test]
    fn a_cached_verification_belongs_to_exactly_its_token() {
        let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJlLW9mLXRoZS1wcm92aWRlci0xMjM0NTY3ODk";
        let v = VerifiedToken::new(someone(), token);
        assert!(v.is_of(token));
        // the same last bytes (so the same cache key), another payload
        let forged = token.replacen("eyJzdWIiOiJ1MSJ9", "eyJzdWIiOiJ1MiJ9", 1);
        assert_eq!(jwt_cache_key(&forged), jwt_cache_key(token));
        assert!(!v.is_of(&forged));
        assert!(!v.is_of(&token[1..]), "a shorter token");
        assert!(!v.is_of(&format!("{token}x")), "a longer token");
        assert!(!v.is_of(""));
        // a token shorter than the key is padded (the comparison decides, not the key)
        let mut padded = [0u8; 32];
        padded[..5].copy_from_slice(b"a.b.c");
        assert_eq!(jwt_cache_key("a.b.c"), padded);
    }

    #[test]
    fn large_tokens_weigh_more_and_no_token_is_printed() {
        assert_eq!(VerifiedToken::new(someone(), "").weight(), 1);
        assert_eq!(VerifiedToken::new(someone(), &"a".repeat(1500)).weight(), 1);
        assert_eq!(VerifiedToken::new(someone(), &"a".repeat(2049)).weight(), 2);
        assert_eq!(VerifiedToken::new(someone(), &"a".repeat(MAX_TOKEN_BYTES)).weight(), 8);
        let printed = format!("{:?}", VerifiedToken::new(someone(), "secret-token-value.x.y"));
        assert!(!printed.contains("secret-token-value"), "{printed}");
        assert!(printed.contains("u1"));
    }
}
