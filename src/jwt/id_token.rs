//! id_tokens from the token endpoint (OIDC Core §3.1.3.7), verified by `openidconnect`'s
//! `IdTokenVerifier` fed from the one `JwksCache` (same keys, a key not seen before fetched as
//! for access tokens), with the same algorithm allowlist and leeway. What the crate leaves out
//! stays ours: the header rules every token passes, `nbf`, `azp`, an exact `iss`, a `sub`.

use std::str::FromStr;

use base64::Engine;
use jsonwebtoken::Algorithm;
use openidconnect::core::{CoreIdToken, CoreIdTokenVerifier, CoreJwsSigningAlgorithm};
use openidconnect::{ClaimsVerificationError, ClientId, IssuerUrl, Nonce, SignatureVerificationError};
use serde_json::Value;

use super::{TokenError, TokenVerifier};
use crate::clock::unix_now;
use crate::identity::{ClaimsError, numeric_date};

/// The allowlist as `openidconnect` names the algorithms (ones it does not know are left out).
pub(super) fn algorithms(allowed: &[Algorithm]) -> Vec<CoreJwsSigningAlgorithm> {
    allowed.iter().filter_map(|a| serde_json::from_value(Value::String(format!("{a:?}"))).ok()).collect()
}

impl TokenVerifier {
    /// Verifies an id_token from the token endpoint: signature by the provider's keys, `iss`,
    /// `aud` containing our client id, `azp` when present or needed, `exp`, `nbf`, `iat`, and
    /// the `nonce` of this login. Returns all its claims.
    pub async fn verify_id_token(&self, token: &str, nonce: &str) -> Result<Value, TokenError> {
        let header = self.checked_header(token)?;
        // a key not seen before is fetched now (bounded and cooled down, as for access tokens)
        let key = self.provider.key_for(header.kid.as_deref()).await.ok_or(TokenError::UnknownKey)?;
        if !key.algorithms.contains(&header.alg) {
            return Err(TokenError::KeyMismatch);
        }
        let id_token = CoreIdToken::from_str(token).map_err(|_| TokenError::Malformed)?;
        let issuer =
            IssuerUrl::new(self.provider.issuer.clone()).map_err(|_| TokenError::Invalid("issuer"))?;
        let leeway = i64::try_from(self.settings.leeway).unwrap_or(i64::MAX);
        let client_id = self.settings.client_id.as_str();
        let verifier = CoreIdTokenVerifier::new_public_client(
            ClientId::new(client_id.to_owned()),
            issuer,
            self.provider.jwks.current().as_openid(),
        )
        .set_allowed_algs(self.id_token_algorithms.clone())
        // other audiences beside ours are judged by `azp` below
        .set_other_audience_verifier_fn(|_| true)
        // `exp` with the leeway: the crate compares it with this clock
        .set_time_fn(move || chrono::Utc::now() - chrono::Duration::seconds(leeway))
        .set_issue_time_verifier_fn(move |iat| {
            if iat > chrono::Utc::now() + chrono::Duration::seconds(leeway) {
                Err("issued in the future".to_owned())
            } else {
                Ok(())
            }
        });
        id_token.claims(&verifier, &Nonce::new(nonce.to_owned())).map_err(refusal)?;
        // verified: its claims may be read, all of them (the identity uses more than the crate models)
        let claims = payload(token).ok_or(TokenError::Malformed)?;
        if claims["iss"].as_str() != Some(self.provider.issuer.as_str()) {
            return Err(TokenError::Invalid("issuer"));
        }
        let audiences: Vec<&str> = match &claims["aud"] {
            Value::String(a) => vec![a.as_str()],
            Value::Array(v) => v.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        match claims.get("azp").map(Value::as_str) {
            Some(Some(azp)) if azp == client_id => {}
            None if audiences.len() == 1 => {}
            _ => return Err(TokenError::Invalid("azp")),
        }
        match claims.get("nbf") {
            None => {}
            Some(nbf) if numeric_date(nbf, true).is_some_and(|t| t <= unix_now() + self.settings.leeway) => {}
            Some(_) => return Err(TokenError::Invalid("not yet valid")),
        }
        if claims["sub"].as_str().is_none_or(str::is_empty) {
            return Err(TokenError::Claims(ClaimsError::NoSubject));
        }
        Ok(claims)
    }
}

/// Why the crate refused an id_token, as a category (its messages quote claim values).
fn refusal(e: ClaimsVerificationError) -> TokenError {
    match e {
        ClaimsVerificationError::Expired(_) => TokenError::Expired,
        ClaimsVerificationError::InvalidAudience(_) => TokenError::WrongAudience,
        ClaimsVerificationError::InvalidIssuer(_) => TokenError::Invalid("issuer"),
        ClaimsVerificationError::InvalidNonce(_) => TokenError::Invalid("nonce"),
        ClaimsVerificationError::SignatureVerification(SignatureVerificationError::DisallowedAlg(_)) => {
            TokenError::AlgorithmNotAllowed
        }
        ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey) => {
            TokenError::UnknownKey
        }
        ClaimsVerificationError::SignatureVerification(_) => TokenError::Invalid("signature"),
        _ => TokenError::Invalid("claims"),
    }
}

/// The claims of a JWT whose signature has been verified.
fn payload(token: &str) -> Option<Value> {
    let part = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowlist_keeps_its_names() {
        let algs = algorithms(&[Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA, Algorithm::PS256]);
        let names: Vec<String> = algs.iter().map(|a| serde_json::to_value(a).unwrap().to_string()).collect();
        assert_eq!(names, ["\"RS256\"", "\"ES256\"", "\"EdDSA\"", "\"PS256\""]);
    }
}
