//! Opaque access tokens, checked by RFC 7662 introspection (off by default). Answers are
//! cached by token hash, for at most the configured TTL and never past the token's `exp`, so
//! the provider is asked once per token and TTL, not once per request.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{TokenError, UntilTokenExpiry, VerifiedToken};
use crate::clock::unix_now;
use crate::config::Secret;
use crate::identity::{AccessClaims, ClaimsError, Identity, TokenContext};
use crate::oidc::fetch::Fetcher;

/// At most this many introspection calls are in flight; others queue (each bounded by the
/// provider time limit), so a flood of made-up tokens cannot open unbounded connections.
const MAX_CONCURRENT: usize = 16;

/// How long a refused token is remembered as refused.
const NEGATIVE_TTL: Duration = Duration::from_secs(60);

/// One token to introspect, and how to judge the answer.
#[derive(Debug, Clone, Copy)]
pub struct IntrospectionRequest<'a> {
    /// The provider's introspection endpoint.
    pub endpoint: &'a str,
    /// The expected `iss`.
    pub issuer: &'a str,
    /// The opaque token.
    pub token: &'a str,
    /// SHA-256 of the token (the cache key).
    pub hash: [u8; 32],
    /// Clock skew tolerated, in seconds.
    pub leeway: u64,
    /// The gateway's own client id.
    pub own_client_id: &'a str,
    /// Claims kept for `[headers.claims]`.
    pub extra_claims: &'a [String],
}

/// Asks the provider about opaque tokens.
pub struct Introspector {
    client_id: String,
    client_secret: Secret,
    ttl: Duration,
    active: moka::sync::Cache<[u8; 32], Arc<VerifiedToken>>,
    /// Refused tokens, apart from the active ones so that a flood of junk cannot evict them.
    refused: moka::sync::Cache<[u8; 32], ()>,
    in_flight: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector").field("client_id", &self.client_id).field("ttl", &self.ttl).finish()
    }
}

impl Introspector {
    /// Introspects as `client_id`, caching answers for up to `ttl` (`capacity` tokens).
    pub fn new(client_id: String, client_secret: Secret, ttl: Duration, capacity: u64) -> Self {
        Self {
            client_id,
            client_secret,
            ttl,
            active: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .weigher(|_, v: &Arc<VerifiedToken>| v.weight())
                .expire_after(UntilTokenExpiry { leeway: 0, cap: ttl })
                .build(),
            refused: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl.min(NEGATIVE_TTL))
                .build(),
            in_flight: tokio::sync::Semaphore::new(MAX_CONCURRENT),
        }
    }

    /// The identity behind an opaque token, from the cache or the provider.
    pub async fn introspect(
        &self,
        fetcher: &Fetcher,
        req: IntrospectionRequest<'_>,
    ) -> Result<Arc<VerifiedToken>, TokenError> {
        if let Some(id) = self.active.get(&req.hash) {
            return Ok(id);
        }
        if self.refused.contains_key(&req.hash) {
            return Err(TokenError::Inactive);
        }
        let _permit = self.in_flight.acquire().await.map_err(|_| TokenError::IntrospectionFailed)?;
        let form = [("token", req.token), ("token_type_hint", "access_token")];
        let fetched = fetcher
            .post_form(req.endpoint, &self.client_id, self.client_secret.expose(), &form)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "token introspection failed");
                TokenError::IntrospectionFailed
            })?;
        let body: Value =
            serde_json::from_slice(&fetched.body).map_err(|_| TokenError::IntrospectionFailed)?;
        match identity_from_response(body, req) {
            Ok(identity) => {
                let verified = Arc::new(VerifiedToken::new(identity, req.token));
                self.active.insert(req.hash, verified.clone());
                Ok(verified)
            }
            Err(e) => {
                self.refused.insert(req.hash, ());
                Err(e)
            }
        }
    }
}

/// Reads an introspection response: active, an access token (not a refresh token), this
/// issuer, with the claims an access token must have.
fn identity_from_response(mut body: Value, req: IntrospectionRequest<'_>) -> Result<Identity, TokenError> {
    if body.get("active") != Some(&Value::Bool(true)) {
        return Err(TokenError::Inactive);
    }
    let is_access = ["token_type", "typ"].iter().any(|k| {
        body.get(*k)
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer") || t == "access_token")
    });
    if !is_access {
        return Err(TokenError::Claims(ClaimsError::NotAnAccessToken));
    }
    if body.get("iss").is_some_and(|i| i.as_str() != Some(req.issuer)) {
        return Err(TokenError::Invalid("issuer"));
    }
    // a client-credentials token has no user: its subject is the client
    if body.get("sub").is_none() {
        if let Some(client) = body.get("client_id").cloned() {
            body["sub"] = client;
        }
    }
    let claims: AccessClaims =
        serde_json::from_value(body).map_err(|_| TokenError::Invalid("claim types"))?;
    // the provider itself said it is an access token (token_type), as an at+jwt header would
    let ctx = TokenContext { at_jwt: true, own_client_id: req.own_client_id, extra_claims: req.extra_claims };
    let identity = claims.into_identity(unix_now(), req.leeway, ctx)?;
    if identity.expires_at + req.leeway < unix_now() {
        return Err(TokenError::Expired);
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISS: &str = "https://idp.example.com";

    fn judge(body: Value) -> Result<Identity, TokenError> {
        let req = IntrospectionRequest {
            endpoint: "",
            issuer: ISS,
            token: "t",
            hash: [0; 32],
            leeway: 60,
            own_client_id: "authgate",
            extra_claims: &[],
        };
        identity_from_response(body, req)
    }

    fn response(extra: Value) -> Value {
        let mut v = json!({
            "active": true, "token_type": "Bearer", "iss": ISS, "sub": "u1", "aud": "authgate",
            "client_id": "authgate", "exp": unix_now() + 300, "iat": unix_now(), "licenses": ["wiki"], "scope": "openid",
        });
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v
    }

    #[test]
    fn active_access_tokens_become_identities() {
        let id = judge(response(json!({}))).unwrap();
        assert_eq!((id.subject.as_str(), id.licenses.as_slice()), ("u1", &["wiki".to_string()][..]));
        let mut m2m = response(json!({ "client_id": "reporting-service" }));
        m2m.as_object_mut().unwrap().remove("sub");
        let id = judge(m2m).unwrap();
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
            assert!(judge(body).is_err(), "{extra}");
        }
    }
}
