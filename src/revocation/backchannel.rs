//! OIDC Back-Channel Logout 1.0: the provider POSTs a signed `logout_token` when a user's
//! provider session ends; authgate ends the sessions it names (by `sid`, else every session of
//! the `sub` begun before the token was issued). Each token is accepted once (`jti`).

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::Revocations;
use crate::identity::user_key;
use crate::jwt::TokenVerifier;
use crate::reply::Reply;

/// The `events` member a logout token must carry.
const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How long a logout token's `jti` is remembered (tokens older than this are refused anyway).
const JTI_WINDOW: Duration = Duration::from_secs(10 * 60);

/// What a valid logout token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    /// The provider session, if named.
    pub sid: Option<String>,
    /// The user, if named.
    pub sub: Option<String>,
    /// When the provider issued the token (seconds).
    pub issued_at: u64,
    /// Its unique id.
    pub jti: String,
}

/// Checks the claims of a logout token whose signature, `iss`, `exp` and `iat` are verified.
pub fn read_logout_claims(
    claims: &serde_json::Value,
    client_id: &str,
    now: u64,
) -> Result<LogoutRequest, &'static str> {
    let audiences: Vec<&str> = match &claims["aud"] {
        serde_json::Value::String(a) => vec![a.as_str()],
        serde_json::Value::Array(v) => v.iter().filter_map(serde_json::Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&client_id) {
        return Err("aud");
    }
    if claims.get("nonce").is_some() {
        return Err("nonce"); // an id_token must never pass as a logout token
    }
    let event = claims.get("events").and_then(|e| e.get(LOGOUT_EVENT));
    if !event.is_some_and(serde_json::Value::is_object) {
        return Err("events");
    }
    let jti = claims
        .get("jti")
        .and_then(|j| j.as_str())
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or("jti")?;
    let issued_at = claims.get("iat").and_then(|v| crate::identity::numeric_date(v, true)).ok_or("iat")?;
    if issued_at + JTI_WINDOW.as_secs() < now {
        return Err("iat"); // older than the replay window
    }
    let text = |n: &str| claims.get(n).and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(String::from);
    let (sid, sub) = (text("sid"), text("sub"));
    if sid.is_none() && sub.is_none() {
        return Err("sid/sub");
    }
    Ok(LogoutRequest { sid, sub, issued_at, jti: jti.to_owned() })
}

/// Answers `POST /oauth2/backchannel-logout` with the form `body`: the token is judged by the
/// provider whose issuer it names (and verified by it), and ends only that provider's sessions.
pub async fn handle(revocations: &Revocations, verifiers: &[Arc<TokenVerifier>], body: &[u8]) -> Reply {
    let token =
        url::form_urlencoded::parse(body).find(|(k, _)| k == "logout_token").map(|(_, v)| v.into_owned());
    let Some(token) = token else { return refused("no logout_token") };
    let named = crate::oidc::login::access_token_claims(&token);
    let iss = named.as_ref().and_then(|c| c.get("iss")).and_then(|i| i.as_str());
    let Some(verifier) = verifiers.iter().find(|v| Some(v.issuer()) == iss) else {
        return refused("iss");
    };
    let ns = verifier.namespace();
    let request = match verifier.verify_logout_token(&token).await {
        Ok(claims) => match read_logout_claims(&claims, verifier.client_id(), crate::clock::unix_now()) {
            Ok(r) => r,
            Err(why) => return refused(why),
        },
        Err(e) => {
            tracing::warn!(reason = %e, "logout token refused");
            return refused("signature");
        }
    };
    let store = revocations.store();
    // one provider's token ids are not another's
    let jti_key = revocations.sealer().index("authgate logout jti", user_key(ns, &request.jti).as_bytes());
    match store.remember(&jti_key, JTI_WINDOW * 2).await {
        Ok(true) => {}
        Ok(false) => return refused("replayed jti"),
        Err(e) => return unavailable(&e),
    }
    let before = request.issued_at.saturating_add(1);
    let ended = match (&request.sid, &request.sub) {
        (Some(sid), sub) => {
            let sid = revocations.sealer().sid_index(&user_key(ns, sid));
            match (store.delete_sid(&sid).await, sub) {
                // a sid no session knows: it may be one whose id_token named no sid, so the
                // user's sessions stored without one end, never those of their other provider
                // sessions (signing out in one browser must not sign the others out)
                (Ok(0), Some(sub)) => {
                    store.delete_user_without_sid(&revocations.user_index(&user_key(ns, sub)), before).await
                }
                (other, _) => other,
            }
        }
        (None, Some(sub)) => store.delete_user(&revocations.user_index(&user_key(ns, sub)), before).await,
        (None, None) => Ok(0),
    };
    match ended {
        Ok(n) => {
            count("applied");
            tracing::info!(sessions = n, "back-channel logout applied");
            let mut reply = Reply::json(StatusCode::OK, &serde_json::json!({ "ok": true }));
            reply.header(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
            reply
        }
        Err(e) => {
            let _ = store.forget(&jti_key).await;
            unavailable(&e)
        }
    }
}

fn refused(why: &'static str) -> Reply {
    count("refused");
    tracing::warn!(reason = why, "back-channel logout refused");
    let mut reply = Reply::json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({ "error": "invalid_request", "error_description": "The logout token is invalid." }),
    );
    reply.header(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    reply
}

fn unavailable(e: &crate::session::StoreError) -> Reply {
    count("unavailable");
    tracing::warn!(error = %e, "back-channel logout not applied: the session store is unavailable");
    Reply::json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({ "error": "temporarily_unavailable" }))
}

fn count(outcome: &str) {
    crate::metrics::METRICS.events.with_label_values(&["backchannel", "logout", outcome]).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logout_claims_are_checked() {
        let now = 1_800_000_000;
        let good = serde_json::json!({
            "iss": "https://idp", "aud": "authgate", "iat": now - 5, "exp": now + 115, "jti": "j1",
            "sub": "u1", "sid": "s1", "events": { LOGOUT_EVENT: {} },
        });
        let r = read_logout_claims(&good, "authgate", now).unwrap();
        assert_eq!((r.sid.as_deref(), r.sub.as_deref(), r.jti.as_str()), (Some("s1"), Some("u1"), "j1"));
        let with = |k: &str, v: serde_json::Value| {
            let mut c = good.clone();
            c[k] = v;
            c
        };
        let without = |k: &str| {
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove(k);
            c
        };
        let cases = [
            (with("aud", serde_json::json!("other")), "aud"),
            (with("nonce", serde_json::json!("n")), "nonce"),
            (without("events"), "events"),
            (with("events", serde_json::json!({ LOGOUT_EVENT: "yes" })), "events"),
            (with("events", serde_json::json!({ "urn:other": {} })), "events"),
            (without("jti"), "jti"),
            (with("iat", serde_json::json!(now - 3600)), "iat"),
            (
                {
                    let mut c = without("sid");
                    c.as_object_mut().unwrap().remove("sub");
                    c
                },
                "sid/sub",
            ),
        ];
        for (claims, want) in cases {
            assert_eq!(read_logout_claims(&claims, "authgate", now), Err(want), "{claims}");
        }
    }
}
