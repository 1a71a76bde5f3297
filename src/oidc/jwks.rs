//! The provider's signing keys: parsed strictly, held in memory, replaced whole on refresh.
//!
//! Reads on the request path are one atomic load. A token with an unknown `kid` may trigger a
//! refetch, at most once per cooldown, and concurrent misses share that one fetch.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::fetch::{FetchError, Fetcher};
use crate::clock::monotonic_ms;

/// A public key and the algorithms it may verify.
pub struct VerifyingKey {
    /// Algorithms this key may be used with (from its `alg`, else from its type and curve).
    pub algorithms: Vec<Algorithm>,
    /// The key material.
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey").field("algorithms", &self.algorithms).finish_non_exhaustive()
    }
}

/// A parsed JWK Set: usable signing keys by `kid` (`""` for a key without one).
#[derive(Debug, Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<VerifyingKey>>,
    /// The usable keys as `openidconnect` reads them (for its id_token verifier), parsed once.
    openid: Vec<openidconnect::core::CoreJsonWebKey>,
    /// Keys in the document that were not usable, with why (for the log).
    pub skipped: Vec<String>,
}

/// Why a JWK Set cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// It could not be fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// It is not a JWK Set, or has no usable signing key.
    #[error("the JWK Set is unusable: {0}")]
    Unusable(String),
    /// The provider's discovery document is not loaded yet.
    #[error("the provider's discovery document is not loaded")]
    NoDiscovery,
}

impl KeySet {
    /// Parses a JWK Set document, keeping every usable public signing key. Symmetric keys,
    /// encryption keys and keys whose `alg` contradicts their type are skipped.
    pub fn parse(body: &[u8]) -> Result<KeySet, JwksError> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_slice(body).map_err(|e| JwksError::Unusable(e.to_string()))?;
        let mut set = KeySet::default();
        for (i, raw) in doc.keys.into_iter().enumerate() {
            let jwk: Jwk = match serde_json::from_value(raw.clone()) {
                Ok(j) => j,
                Err(e) => {
                    set.skipped.push(format!("key {i}: {e}"));
                    continue;
                }
            };
            let kid = jwk.common.key_id.clone().unwrap_or_default();
            match verifying_key(&jwk) {
                Ok(k) => {
                    set.keys.insert(kid, Arc::new(k));
                    // a key the crate cannot read is only left out of id_token verification
                    if let Ok(key) = serde_json::from_value(raw) {
                        set.openid.push(key);
                    }
                }
                Err(why) => set.skipped.push(format!("key {kid:?}: {why}")),
            }
        }
        if set.keys.is_empty() {
            return Err(JwksError::Unusable(format!("no usable signing key ({})", set.skipped.join("; "))));
        }
        Ok(set)
    }

    /// The key for a token's `kid`; a token without `kid` only matches a set of one key.
    pub fn get(&self, kid: Option<&str>) -> Option<&Arc<VerifyingKey>> {
        match kid {
            Some(k) => self.keys.get(k),
            None if self.keys.len() == 1 => self.keys.values().next(),
            None => None,
        }
    }

    /// The usable keys as `openidconnect`'s verifier takes them (by value).
    pub fn as_openid(&self) -> openidconnect::core::CoreJsonWebKeySet {
        openidconnect::core::CoreJsonWebKeySet::new(self.openid.clone())
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is usable (only before the first load).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn verifying_key(jwk: &Jwk) -> Result<VerifyingKey, String> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return Err("not a signing key".into());
    }
    // what the key's type allows; symmetric keys are never usable from a JWKS
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => jsonwebtoken::AlgorithmFamily::Rsa.algorithms(),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return Err("unsupported curve".into()),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => return Err("symmetric keys are never accepted".into()),
        _ => return Err("unsupported key type".into()),
    };
    let algorithms = match jwk.common.key_algorithm {
        Some(declared) => {
            let alg = Algorithm::from_str(&declared.to_string())
                .map_err(|_| format!("unsupported alg {declared:?}"))?;
            if !by_type.contains(&alg) {
                return Err(format!("alg {alg:?} does not match the key type"));
            }
            vec![alg]
        }
        None => by_type.to_vec(),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    Ok(VerifyingKey { algorithms, key })
}

/// Bounds and pacing of JWKS fetches.
#[derive(Debug, Clone, Copy)]
pub struct JwksTiming {
    /// Least time between refetches triggered by unknown `kid`s.
    pub cooldown: Duration,
    /// Background refresh interval bounds (the provider's `max-age` is clamped into them).
    pub min_refresh: Duration,
    /// See `min_refresh`.
    pub max_refresh: Duration,
}

/// The current keys of the provider, refreshed in the background and on demand.
pub struct JwksCache {
    keys: ArcSwap<KeySet>,
    timing: JwksTiming,
    /// Serialises fetches so that concurrent misses share one.
    fetch_lock: tokio::sync::Mutex<()>,
    /// Bumped when a fetch ends (well or not): a waiter that sees it move uses that fetch.
    fetch_generation: AtomicU64,
    /// When the last fetch for an unknown `kid` started (`monotonic_ms`); 0 = never. Only
    /// these count against the cooldown, so a key rotated in just after a scheduled refresh is
    /// still picked up at once.
    last_unknown_fetch_ms: AtomicU64,
    /// `kid`s a refetch did not find, not worth another fetch until the cooldown passes.
    unknown_kids: moka::sync::Cache<String, ()>,
    /// Failed fetches since start.
    failures: AtomicU64,
    /// When keys were last loaded (`monotonic_ms`); 0 = never.
    loaded_at_ms: AtomicU64,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache").field("keys", &self.keys.load().len()).finish_non_exhaustive()
    }
}

impl JwksCache {
    /// An empty cache (not ready until the first successful fetch).
    pub fn new(timing: JwksTiming) -> Self {
        Self {
            keys: ArcSwap::from_pointee(KeySet::default()),
            timing,
            fetch_lock: tokio::sync::Mutex::new(()),
            fetch_generation: AtomicU64::new(0),
            last_unknown_fetch_ms: AtomicU64::new(0),
            unknown_kids: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(timing.cooldown)
                .build(),
            failures: AtomicU64::new(0),
            loaded_at_ms: AtomicU64::new(0),
        }
    }

    /// How long ago the keys were loaded, if ever.
    pub fn age(&self) -> Option<Duration> {
        match self.loaded_at_ms.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_millis(monotonic_ms().saturating_sub(at))),
        }
    }

    /// True once keys have been loaded.
    pub fn is_loaded(&self) -> bool {
        !self.keys.load().is_empty()
    }

    /// Replaces the keys with `set` (as a successful fetch would).
    pub fn install(&self, set: KeySet) {
        self.keys.store(Arc::new(set));
        self.unknown_kids.invalidate_all();
    }

    /// How many fetches have failed since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The current key set.
    pub fn current(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Fetches the set at `uri` and, if it is usable, replaces the current one. On failure the
    /// last good keys stay. Returns how long until the next background refresh.
    pub async fn refresh(&self, fetcher: &Fetcher, uri: &str) -> Result<Duration, JwksError> {
        let _guard = self.fetch_lock.lock().await;
        self.fetch_locked(fetcher, uri).await
    }

    async fn fetch_locked(&self, fetcher: &Fetcher, uri: &str) -> Result<Duration, JwksError> {
        let loaded = match fetcher.get(uri).await {
            Ok(fetched) => KeySet::parse(&fetched.body).map(|set| (set, fetched.max_age)),
            Err(e) => Err(e.into()),
        };
        self.fetch_generation.fetch_add(1, Ordering::Release);
        let outcome = if loaded.is_ok() { "ok" } else { "error" };
        crate::metrics::METRICS.jwks_fetches.with_label_values(&[outcome]).inc();
        let (set, max_age) = loaded.inspect_err(|_| {
            self.failures.fetch_add(1, Ordering::Relaxed);
        })?;
        self.loaded_at_ms.store(monotonic_ms(), Ordering::Relaxed);
        if !set.skipped.is_empty() {
            tracing::warn!(skipped = ?set.skipped, "JWKS: some keys are not usable");
        }
        tracing::debug!(keys = set.len(), "JWKS loaded");
        self.keys.store(Arc::new(set));
        self.unknown_kids.invalidate_all();
        let t = self.timing;
        Ok(max_age.unwrap_or(t.max_refresh).clamp(t.min_refresh, t.max_refresh))
    }

    /// The key for `kid`. An unknown `kid` refetches the set, at most once per cooldown; a
    /// request arriving during a fetch waits for that one (bounded by the fetcher's time limit)
    /// and never starts another. A `kid` still unknown after a fetch is remembered as unknown
    /// for the cooldown.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        fetcher: &Fetcher,
        uri: Option<&str>,
    ) -> Option<Arc<VerifyingKey>> {
        if let Some(k) = self.keys.load().get(kid) {
            return Some(k.clone());
        }
        let kid_key = kid.unwrap_or("");
        if self.unknown_kids.contains_key(kid_key) {
            return None;
        }
        let generation = self.fetch_generation.load(Ordering::Acquire);
        let _guard = self.fetch_lock.lock().await;
        let fetched = if self.fetch_generation.load(Ordering::Acquire) != generation {
            true // a fetch ended while we waited: judge by its result
        } else {
            let last = self.last_unknown_fetch_ms.load(Ordering::Relaxed);
            let now = monotonic_ms();
            let cooled = last == 0 || now.saturating_sub(last) >= self.timing.cooldown.as_millis() as u64;
            match (cooled, uri) {
                (true, Some(uri)) => {
                    self.last_unknown_fetch_ms.store(now, Ordering::Relaxed);
                    if let Err(e) = self.fetch_locked(fetcher, uri).await {
                        tracing::warn!(error = %e, "JWKS refetch for an unknown key failed; keeping the last good keys");
                    }
                    true
                }
                _ => false,
            }
        };
        let found = self.keys.load().get(kid).cloned();
        if found.is_none() && fetched {
            self.unknown_kids.insert(kid_key.to_owned(), ());
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_N: &str = "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw";

    fn set(keys: serde_json::Value) -> Result<KeySet, JwksError> {
        KeySet::parse(serde_json::json!({ "keys": keys }).to_string().as_bytes())
    }

    #[test]
    fn usable_keys_are_kept_and_the_rest_skipped() {
        let s = set(serde_json::json!([
            { "kty": "RSA", "kid": "rsa", "alg": "RS256", "use": "sig", "n": RSA_N, "e": "AQAB" },
            { "kty": "RSA", "kid": "rsa-any", "n": RSA_N, "e": "AQAB" },
            { "kty": "RSA", "kid": "enc", "use": "enc", "n": RSA_N, "e": "AQAB" },
            { "kty": "RSA", "kid": "liar", "alg": "ES256", "n": RSA_N, "e": "AQAB" },
            { "kty": "RSA", "kid": "hmac-alg", "alg": "HS256", "n": RSA_N, "e": "AQAB" },
            { "kty": "oct", "kid": "oct", "k": "c2VjcmV0" },
            { "kty": "XYZ", "kid": "weird" },
        ]))
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.get(Some("rsa")).unwrap().algorithms, [Algorithm::RS256]);
        assert!(s.get(Some("rsa-any")).unwrap().algorithms.contains(&Algorithm::PS256));
        for gone in ["enc", "liar", "hmac-alg", "oct", "weird"] {
            assert!(s.get(Some(gone)).is_none(), "{gone}");
        }
        assert_eq!(s.skipped.len(), 5, "{:?}", s.skipped);
        assert!(s.get(None).is_none(), "no kid with several keys is ambiguous");
    }

    #[test]
    fn garbage_is_unusable() {
        for body in ["", "null", "{}", "{\"keys\": 5}", "<html>", "{\"keys\": []}"] {
            assert!(KeySet::parse(body.as_bytes()).is_err(), "{body}");
        }
        assert!(set(serde_json::json!([{ "kty": "oct", "k": "c2VjcmV0" }])).is_err());
    }
}
