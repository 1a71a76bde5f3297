//! The signed identity assertion: a short-lived JWT, signed with the gateway's own key, that
//! tells the upstream app who is calling in a form it can verify (against the JWK Set at
//! `/.well-known/authgate/jwks.json`) even when the network to it is not trusted.
//!
//! Signing costs tens of microseconds, so a signed assertion is reused for the same identity
//! and route until `reuse_fraction` of its lifetime has passed. The cache is keyed by a hash
//! of everything the assertion says about the caller, so a changed identity (refresh, revoked
//! license) never gets an old assertion.

pub mod keys;

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use serde::Serialize;

use crate::clock::unix_now;
use crate::config::AssertionConfig;
use crate::identity::{AssertionSubject, Identity, PreparedIdentity, SignedAssertion};
use keys::{KeyError, KeySet};

/// Where the JWK Set is served (main and admin listeners).
pub const JWKS_PATH: &str = "/.well-known/authgate/jwks.json";

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    #[serde(flatten)]
    subject: AssertionSubject<'a>,
    iat: u64,
    nbf: u64,
    exp: u64,
}

/// Tells signers apart (a reload builds a new one, perhaps with a new key).
static SIGNERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Signs assertions and serves the gateway's JWK Set.
pub struct AssertionSigner {
    keys: KeySet,
    /// The header it travels in.
    pub header: http::HeaderName,
    lifetime: u64,
    reuse_for: u64,
    cache: moka::sync::Cache<([u8; 32], usize), Arc<SignedAssertion>>,
    id: u64,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner").field("kid", &self.keys.current.kid).finish_non_exhaustive()
    }
}

impl AssertionSigner {
    /// Loads (or creates) the keys named by `config`.
    pub fn new(config: &AssertionConfig) -> Result<Self, KeyError> {
        let lifetime = config.lifetime.get();
        let keys = KeySet::load(&config.key_file, &config.algorithm, lifetime)?;
        let header = http::HeaderName::from_bytes(config.header.as_bytes())
            .map_err(|_| KeyError::Generate(format!("bad header name {:?}", config.header)))?;
        let reuse_for = (lifetime.as_secs_f64() * config.reuse_fraction).floor() as u64;
        Ok(Self {
            keys,
            header,
            lifetime: lifetime.as_secs(),
            reuse_for,
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(lifetime.max(Duration::from_secs(1)))
                .build(),
            id: SIGNERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// The `kid` new assertions carry.
    pub fn kid(&self) -> &str {
        &self.keys.current.kid
    }

    /// The JWK Set (current key, and the previous one while its assertions may be valid).
    pub fn jwks(&self) -> serde_json::Value {
        self.keys.jwks()
    }

    fn fresh(&self, s: &SignedAssertion, route: usize, issuer: &str, now: u64) -> bool {
        s.signer == self.id
            && s.route == route
            && now < s.issued_at + self.reuse_for
            && now + 1 < s.expires_at
            && &*s.issuer == issuer
    }

    /// The assertion for `who` on route number `route` with `audience`, issued by `issuer`: a
    /// cached one while it is fresh enough, else a new one. `prepared` (the caller's, made once
    /// per opened session or verified token) gives the cache key and remembers the last one, in
    /// front of the shared cache.
    pub fn assertion(
        &self,
        route: usize,
        audience: &str,
        issuer: &str,
        who: &Identity,
        prepared: &PreparedIdentity,
    ) -> Option<HeaderValue> {
        let now = unix_now();
        let slot = &prepared.assertion.0;
        // a guard, not a clone of the Arc: both worker threads would bounce its count
        if let Some(s) = &*slot.load() {
            if self.fresh(s, route, issuer, now) {
                return Some(s.value.clone());
            }
        }
        let key = (prepared.fingerprint, route);
        if let Some(s) = self.cache.get(&key) {
            if self.fresh(&s, route, issuer, now) {
                prepared.assertion.store(s.clone());
                return Some(s.value.clone());
            }
        }
        let exp = now.saturating_add(self.lifetime).min(who.expires_at);
        if exp <= now {
            return None;
        }
        let claims = Claims {
            iss: issuer,
            aud: audience,
            subject: AssertionSubject::of(who),
            iat: now,
            nbf: now,
            exp,
        };
        let mut header = jsonwebtoken::Header::new(self.keys.current.algorithm);
        header.typ = Some("JWT".into());
        header.kid = Some(self.keys.current.kid.clone());
        let token = match jsonwebtoken::encode(&header, &claims, &self.keys.current.encoding) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign an identity assertion");
                return None;
            }
        };
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(token)).ok()?;
        let signed = Arc::new(SignedAssertion {
            value: value.clone(),
            issuer: issuer.into(),
            issued_at: now,
            expires_at: exp,
            signer: self.id,
            route,
        });
        prepared.assertion.store(signed.clone());
        self.cache.insert(key, signed);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(licenses: &[&str]) -> Identity {
        Identity {
            subject: "u1".into(),
            client_id: Some("authgate".into()),
            email: Some("u1@example.com".into()),
            name: Some("U One".into()),
            organization_id: Some("org".into()),
            user_type: Some("customer_user".into()),
            licenses: licenses.iter().map(|s| s.to_string()).collect(),
            expires_at: unix_now() + 3600,
            ..Identity::default()
        }
    }

    fn signer(dir: &std::path::Path) -> AssertionSigner {
        let config =
            AssertionConfig { enabled: true, key_file: dir.join("k.pem"), ..AssertionConfig::default() };
        AssertionSigner::new(&config).unwrap()
    }

    #[test]
    fn assertions_are_reused_for_the_same_identity_and_renewed_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer(dir.path());
        let wiki = identity(&["wiki"]);
        let first = PreparedIdentity::of(&wiki);
        let a = s.assertion(0, "http://app", "https://gw", &wiki, &first).unwrap();
        assert_eq!(
            s.assertion(0, "http://app", "https://gw", &wiki, &first).unwrap(),
            a,
            "reused by its slot"
        );
        // another session of the same identity: a fresh slot, found in the shared cache
        let b = s.assertion(0, "http://app", "https://gw", &wiki, &PreparedIdentity::of(&wiki)).unwrap();
        assert_eq!(a, b, "reused from the cache");
        let other_route = s.assertion(1, "http://other", "https://gw", &wiki, &first).unwrap();
        assert_ne!(a, other_route);
        assert_eq!(s.assertion(0, "http://app", "https://gw", &wiki, &first).unwrap(), a, "back on route 0");
        let none = identity(&[]);
        let c = s.assertion(0, "http://app", "https://gw", &none, &PreparedIdentity::of(&none)).unwrap();
        assert_ne!(a, c, "a revoked license means a new assertion");

        // verify with the published key
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(s.jwks()).unwrap();
        let jwk = jwks.find(s.kid()).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.set_audience(&["http://app"]);
        v.set_issuer(&["https://gw"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            a.to_str().unwrap(),
            &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
            &v,
        )
        .unwrap();
        assert_eq!(data.claims["licenses"], serde_json::json!(["wiki"]));
        assert_eq!(data.header.typ.as_deref(), Some("JWT"));
    }

    #[test]
    fn an_assertion_never_outlives_its_session() {
        let dir = tempfile::tempdir().unwrap();
        let s = signer(dir.path());
        let mut who = identity(&["wiki"]);
        who.expires_at = unix_now() + 30;
        let t = s.assertion(0, "a", "i", &who, &PreparedIdentity::of(&who)).unwrap();
        let payload = t.to_str().unwrap().split('.').nth(1).unwrap().to_owned();
        use base64::Engine;
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap(),
        )
        .unwrap();
        assert_eq!(claims["exp"].as_u64(), Some(who.expires_at));
        who.expires_at = unix_now();
        assert!(s.assertion(0, "a", "i", &who, &PreparedIdentity::of(&who)).is_none());
    }
}
