//! Bearer-token verification: the JWKS cache, the checks every access token must pass, and a
//! cache of verified tokens so a client that repeats its token pays for one signature check.

pub mod identity;
pub mod jwks;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Validation};
use sha2::{Digest, Sha256};

pub use identity::Identity;
use identity::{AccessClaims, ClaimsError};

use crate::oidc::OidcProvider;
use crate::oidc::introspection::Introspector;

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
    Invalid(String),
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

/// Verifies access tokens of one provider.
pub struct TokenVerifier {
    provider: Arc<OidcProvider>,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    verified: moka::sync::Cache<[u8; 32], Arc<Identity>>,
    introspector: Option<Introspector>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").field("algorithms", &self.algorithms).finish_non_exhaustive()
    }
}

/// Cached identities live until their token expires (plus leeway).
struct UntilExpiry(u64);

impl moka::Expiry<[u8; 32], Arc<Identity>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<Identity>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs((value.expires_at + self.0).saturating_sub(unix_now())))
    }
}

impl TokenVerifier {
    /// A verifier that accepts `algorithms` with `leeway` seconds of clock skew and caches up
    /// to `cache_size` verified tokens.
    pub fn new(
        provider: Arc<OidcProvider>,
        algorithms: Vec<Algorithm>,
        leeway: u64,
        cache_size: u64,
    ) -> Self {
        let verified =
            moka::sync::Cache::builder().max_capacity(cache_size).expire_after(UntilExpiry(leeway)).build();
        Self { provider, algorithms, leeway, verified, introspector: None }
    }

    /// Also accepts opaque (non-JWT) tokens, by asking the provider (RFC 7662).
    pub fn with_introspection(mut self, introspector: Introspector) -> Self {
        self.introspector = Some(introspector);
        self
    }

    /// Verifies `token` and checks that its `aud` holds one of `audiences`.
    pub async fn verify(&self, token: &str, audiences: &[String]) -> Result<Arc<Identity>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let is_jwt = token.bytes().filter(|&b| b == b'.').count() == 2;
        let identity = match (is_jwt, &self.introspector) {
            (true, _) => match self.verified.get(&hash) {
                Some(id) => id,
                None => {
                    let id = Arc::new(self.verify_uncached(token).await?);
                    self.verified.insert(hash, id.clone());
                    id
                }
            },
            (false, Some(introspector)) => {
                let endpoint = self
                    .provider
                    .discovery()
                    .and_then(|d| d.introspection_endpoint.clone())
                    .ok_or(TokenError::IntrospectionFailed)?;
                introspector
                    .introspect(
                        self.provider.fetcher(),
                        &endpoint,
                        &self.provider.issuer,
                        token,
                        hash,
                        self.leeway,
                    )
                    .await?
            }
            (false, None) => return Err(TokenError::Malformed),
        };
        if identity.expires_at + self.leeway < unix_now() {
            return Err(TokenError::Expired);
        }
        if !identity.audiences.iter().any(|a| audiences.contains(a)) {
            return Err(TokenError::WrongAudience);
        }
        Ok(identity)
    }

    async fn verify_uncached(&self, token: &str) -> Result<Identity, TokenError> {
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
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        let key = self.provider.key_for(header.kid.as_deref()).await.ok_or(TokenError::UnknownKey)?;
        if !key.algorithms.contains(&header.alg) {
            return Err(TokenError::KeyMismatch);
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.validate_aud = false; // checked per route, against the identity's audiences
        validation.set_issuer(&[self.provider.issuer.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            kind => TokenError::Invalid(format!("{kind:?}")),
        })?;
        Ok(data.claims.into_identity(unix_now(), self.leeway)?)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
