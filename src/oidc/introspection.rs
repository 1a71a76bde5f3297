//! Opaque access tokens, checked by RFC 7662 introspection (off by default). Answers are
//! cached by token hash, for at most the configured TTL and never past the token's `exp`, so
//! the provider is asked once per token and TTL, not once per request.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::fetch::Fetcher;
use crate::config::Secret;
use crate::jwt::identity::AccessClaims;
use crate::jwt::{Identity, TokenError, unix_now};

/// Asks the provider about opaque tokens.
pub struct Introspector {
    client_id: String,
    client_secret: Secret,
    ttl: Duration,
    answers: moka::sync::Cache<[u8; 32], Option<Arc<Identity>>>,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector").field("client_id", &self.client_id).field("ttl", &self.ttl).finish()
    }
}

/// Keeps an answer for the TTL, and an active token's no longer than until its `exp`.
struct AnswerExpiry(Duration);

impl moka::Expiry<[u8; 32], Option<Arc<Identity>>> for AnswerExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Option<Arc<Identity>>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        let until_exp =
            value.as_ref().map(|id| Duration::from_secs(id.expires_at.saturating_sub(unix_now())));
        Some(until_exp.map_or(self.0, |d| d.min(self.0)))
    }
}

impl Introspector {
    /// Introspects as `client_id`, caching answers for up to `ttl` (`capacity` tokens).
    pub fn new(client_id: String, client_secret: Secret, ttl: Duration, capacity: u64) -> Self {
        let answers =
            moka::sync::Cache::builder().max_capacity(capacity).expire_after(AnswerExpiry(ttl)).build();
        Self { client_id, client_secret, ttl, answers }
    }

    /// The identity behind an opaque token, from the cache or the provider.
    pub async fn introspect(
        &self,
        fetcher: &Fetcher,
        endpoint: &str,
        issuer: &str,
        token: &str,
        hash: [u8; 32],
        leeway: u64,
    ) -> Result<Arc<Identity>, TokenError> {
        if let Some(answer) = self.answers.get(&hash) {
            return answer.ok_or(TokenError::Inactive);
        }
        let fetched = fetcher
            .post_form(
                endpoint,
                &self.client_id,
                self.client_secret.expose(),
                &[("token", token), ("token_type_hint", "access_token")],
            )
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "token introspection failed");
                TokenError::IntrospectionFailed
            })?;
        let answer = match serde_json::from_slice::<Value>(&fetched.body) {
            Ok(body) => identity_from_response(body, issuer, leeway).map(Arc::new),
            Err(_) => return Err(TokenError::IntrospectionFailed),
        };
        self.answers.insert(hash, answer.as_ref().ok().cloned());
        answer
    }
}

/// Reads an introspection response: active, an access token (not a refresh token), this
/// issuer, with the claims an access token must have.
fn identity_from_response(mut body: Value, issuer: &str, leeway: u64) -> Result<Identity, TokenError> {
    if body.get("active") != Some(&Value::Bool(true)) {
        return Err(TokenError::Inactive);
    }
    let is_access = ["token_type", "typ"].iter().any(|k| {
        body.get(*k)
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer") || t == "access_token")
    });
    if !is_access {
        return Err(TokenError::Claims(crate::jwt::identity::ClaimsError::NotAnAccessToken));
    }
    if body.get("iss").is_some_and(|i| i.as_str() != Some(issuer)) {
        return Err(TokenError::Invalid("issuer".into()));
    }
    // a client-credentials token has no user: its subject is the client
    if body.get("sub").is_none() {
        if let Some(client) = body.get("client_id").cloned() {
            body["sub"] = client;
        }
    }
    let claims: AccessClaims =
        serde_json::from_value(body).map_err(|e| TokenError::Invalid(e.to_string()))?;
    let identity = claims.into_identity(unix_now(), leeway)?;
    if identity.expires_at + leeway < unix_now() {
        return Err(TokenError::Expired);
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISS: &str = "https://idp.example.com";

    fn response(extra: Value) -> Value {
        let mut v = json!({
            "active": true, "token_type": "Bearer", "iss": ISS, "sub": "u1", "aud": "authgate",
            "client_id": "authgate", "exp": unix_now() + 300, "iat": unix_now(), "licenses": ["wiki"],
        });
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v
    }

    #[test]
    fn active_access_tokens_become_identities() {
        let id = identity_from_response(response(json!({})), ISS, 60).unwrap();
        assert_eq!((id.subject.as_str(), id.licenses.as_slice()), ("u1", &["wiki".to_string()][..]));
        let mut m2m = response(json!({ "client_id": "reporting-service" }));
        m2m.as_object_mut().unwrap().remove("sub");
        let id = identity_from_response(m2m, ISS, 60).unwrap();
        assert!(id.machine);
    }

    #[test]
    fn everything_else_is_refused() {
        let cases = [
            json!({ "active": false }),
            json!({ "active": "true" }),
            json!({ "token_type": null }),
            json!({ "token_type": "refresh_token" }),
            json!({ "iss": "https://evil.example.com" }),
            json!({ "exp": unix_now() - 600 }),
            json!({ "exp": null }),
            json!({ "aud": null }),
        ];
        for extra in cases {
            let mut body = response(json!({}));
            for (k, v) in extra.as_object().unwrap() {
                if v.is_null() {
                    body.as_object_mut().unwrap().remove(k);
                } else {
                    body[k] = v.clone();
                }
            }
            assert!(identity_from_response(body, ISS, 60).is_err(), "{extra}");
        }
    }
}
