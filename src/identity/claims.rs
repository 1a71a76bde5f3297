//! Who a verified token or a sign-in speaks for: the claims authgate uses, with their types
//! checked.
//!
//! Calimatic's claims (`licenses`, `permissions`, `organization_id`, `user_type`) are read
//! strictly: a `licenses` that is not an array of strings grants nothing, so `"wiki"` (a
//! string), `["Wiki"]` or `["wiki "]` never grant `wiki`.

use serde::Deserialize;
use serde_json::Value;

/// The caller a token or a session stands for.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Identity {
    /// `sub`: a user id, or for client-credentials tokens the client id.
    pub subject: String,
    /// True for a client-credentials (machine-to-machine) token.
    pub machine: bool,
    /// The client the token was issued to (`client_id`, else `azp`).
    pub client_id: Option<String>,
    /// `email`.
    pub email: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `given_name`.
    #[serde(default)]
    pub given_name: Option<String>,
    /// `family_name`.
    #[serde(default)]
    pub family_name: Option<String>,
    /// `organization_id`.
    pub organization_id: Option<String>,
    /// `user_type`.
    pub user_type: Option<String>,
    /// `licenses`: exact, case-sensitive names.
    pub licenses: Vec<String>,
    /// `permissions`.
    pub permissions: Vec<String>,
    /// `scope`, split on spaces.
    pub scopes: Vec<String>,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// `aud`.
    pub audiences: Vec<String>,
    /// The configured extra claims (`[headers.claims]`) the token had: name → values.
    #[serde(default)]
    pub claims: Vec<(String, Vec<String>)>,
}

/// The access-token claims authgate reads beyond what `jsonwebtoken` validates.
#[derive(Debug, Deserialize)]
pub(crate) struct AccessClaims {
    /// A string: an array would pass jsonwebtoken's any-of issuer check.
    #[allow(dead_code)] // compared by jsonwebtoken; typed here so that only a string passes
    iss: Option<String>,
    sub: String,
    #[serde(deserialize_with = "one_or_many")]
    aud: Vec<String>,
    #[serde(deserialize_with = "expiry")]
    exp: u64,
    #[serde(default, deserialize_with = "issue_time")]
    iat: Option<u64>,
    client_id: Option<String>,
    azp: Option<String>,
    scope: Option<String>,
    email: Option<Value>,
    name: Option<Value>,
    given_name: Option<Value>,
    family_name: Option<Value>,
    organization_id: Option<Value>,
    user_type: Option<Value>,
    licenses: Option<Value>,
    permissions: Option<Value>,
    // present only in id_tokens
    nonce: Option<Value>,
    at_hash: Option<Value>,
    c_hash: Option<Value>,
    /// Keycloak marks token kinds in a `typ` claim (`Bearer`, `ID`, `Refresh`, `Logout`).
    typ: Option<Value>,
    /// Only in logout tokens (OIDC Back-Channel Logout).
    events: Option<Value>,
    /// Microsoft's scope claim.
    scp: Option<Value>,
    /// Every other claim, for `[headers.claims]`.
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
    /// Auth0 marks client-credentials tokens with `gty`.
    gty: Option<String>,
    /// Entra ID marks application tokens with `idtyp: app`.
    idtyp: Option<String>,
    /// Keycloak's service-account users are `service-account-<client>`.
    preferred_username: Option<String>,
}

/// What the verifier knows about the token beyond its claims.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenContext<'a> {
    /// The token says it is an access token: JOSE header `typ: at+jwt` (RFC 9068), or an
    /// introspection answer's `token_type`.
    pub at_jwt: bool,
    /// The gateway's own client id: an id_token issued to it carries it as `aud`.
    pub own_client_id: &'a str,
    /// Extra claims to keep for `[headers.claims]`.
    pub extra_claims: &'a [String],
}

/// Why verified claims are still not an access token authgate accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// An id_token (or a refresh token) presented as an access token.
    #[error("not an access token")]
    NotAnAccessToken,
    /// `iat` lies in the future.
    #[error("issued in the future")]
    IssuedInFuture,
    /// `exp` is further away than any real token lives.
    #[error("expiry is absurdly far away")]
    AbsurdExpiry,
    /// `sub` is empty.
    #[error("no subject")]
    NoSubject,
}

/// Longest token lifetime believed: anything further is a forgery or a misconfiguration.
pub const MAX_LIFETIME_SECS: u64 = 366 * 24 * 3600;

impl AccessClaims {
    /// Checks what `jsonwebtoken` does not, and builds the identity.
    pub(crate) fn into_identity(
        self,
        now: u64,
        leeway: u64,
        ctx: TokenContext<'_>,
    ) -> Result<Identity, ClaimsError> {
        if !self.is_access_token(ctx) {
            return Err(ClaimsError::NotAnAccessToken);
        }
        if self.iat.is_some_and(|iat| iat > now + leeway) {
            return Err(ClaimsError::IssuedInFuture);
        }
        if self.exp > now + MAX_LIFETIME_SECS {
            return Err(ClaimsError::AbsurdExpiry);
        }
        if self.sub.is_empty() {
            return Err(ClaimsError::NoSubject);
        }
        let client_id = self.client_id.or(self.azp);
        // client-credentials tokens, as the common providers mark them
        let machine = client_id.as_deref() == Some(self.sub.as_str())
            || self.gty.as_deref() == Some("client-credentials")
            || self.idtyp.as_deref() == Some("app")
            || self.preferred_username.as_deref().is_some_and(|u| u.starts_with("service-account-"));
        Ok(Identity {
            machine,
            subject: self.sub,
            client_id,
            email: string(self.email),
            name: string(self.name),
            given_name: string(self.given_name),
            family_name: string(self.family_name),
            organization_id: string(self.organization_id),
            user_type: string(self.user_type),
            licenses: strings(self.licenses),
            permissions: strings(self.permissions),
            scopes: self
                .scope
                .map(|s| s.split(' ').filter(|x| !x.is_empty()).map(String::from).collect())
                .unwrap_or_default(),
            expires_at: self.exp,
            audiences: self.aud,
            claims: extra_claims(ctx.extra_claims, |name| self.rest.get(name)),
        })
    }
}

impl AccessClaims {
    /// An id_token, refresh or logout token is not an access token, although the same provider
    /// signed it. RFC 9068 tokens say so in their header; for others: no id_token-only claims,
    /// no `typ` claim other than `Bearer`, and a token for the gateway's own client id must
    /// carry a scope (an id_token never does).
    fn is_access_token(&self, ctx: TokenContext<'_>) -> bool {
        if self.events.is_some() || self.nonce.is_some() || self.at_hash.is_some() || self.c_hash.is_some() {
            return false;
        }
        match self.typ.as_ref() {
            None => {}
            Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
            Some(_) => return false,
        }
        let has_scope = self.scope.is_some() || self.scp.is_some();
        ctx.at_jwt || has_scope || !self.aud.iter().any(|a| a == ctx.own_client_id)
    }
}

impl Identity {
    /// A signed-in user's identity: who they are from the verified id_token; licenses,
    /// organization, permissions and type from the access token when it carries them (as
    /// Calimatic's does), else from the id_token. `access` holds the access token's claims as
    /// received from the token endpoint over the back channel.
    pub fn from_login(
        id_token: &Value,
        access: Option<&Value>,
        expires_at: u64,
        extra: &[String],
    ) -> Identity {
        let pick = |name: &str| {
            access.and_then(|a| a.get(name)).filter(|v| !v.is_null()).or_else(|| id_token.get(name)).cloned()
        };
        let own = |name: &str| id_token.get(name).cloned();
        Identity {
            subject: id_token["sub"].as_str().unwrap_or_default().to_owned(),
            machine: false,
            client_id: string(own("azp")),
            email: string(own("email")),
            name: string(own("name")),
            given_name: string(own("given_name")),
            family_name: string(own("family_name")),
            organization_id: string(pick("organization_id")),
            user_type: string(pick("user_type")),
            licenses: strings(pick("licenses")),
            permissions: strings(pick("permissions")),
            scopes: access
                .and_then(|a| a["scope"].as_str())
                .map(|s| s.split(' ').filter(|x| !x.is_empty()).map(String::from).collect())
                .unwrap_or_default(),
            expires_at,
            audiences: Vec::new(),
            claims: extra_claims(extra, |name| {
                access.and_then(|a| a.get(name)).filter(|v| !v.is_null()).or_else(|| id_token.get(name))
            }),
        }
    }
}

/// The values of the configured extra claims: a string, a number or a boolean as one value,
/// an array of those as several; other shapes are left out.
fn extra_claims<'a>(names: &[String], get: impl Fn(&str) -> Option<&'a Value>) -> Vec<(String, Vec<String>)> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    names
        .iter()
        .filter_map(|name| {
            let values = match get(name)? {
                Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>()?,
                v => vec![scalar(v)?],
            };
            Some((name.clone(), values))
        })
        .collect()
}

/// An RFC 7519 NumericDate in whole seconds. It may be fractional (`1796405346.5`): an
/// expiry is rounded down and a start (`iat`, `nbf`) up, so no token lives longer than it says.
/// Negative, non-finite and absurd (past 2^53) values are `None`.
pub fn numeric_date(v: &Value, round_up: bool) -> Option<u64> {
    let Value::Number(n) = v else { return None };
    if let Some(whole) = n.as_u64() {
        return Some(whole);
    }
    let f = n.as_f64().filter(|f| f.is_finite() && *f >= 0.0 && *f < 9_007_199_254_740_992.0)?;
    // in range and finite: the conversion is exact for whole seconds
    Some(if round_up { f.ceil() } else { f.floor() } as u64)
}

fn expiry<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    numeric_date(&Value::deserialize(d)?, false)
        .ok_or_else(|| serde::de::Error::custom("exp is not a NumericDate"))
}

fn issue_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => numeric_date(&v, true)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("iat is not a NumericDate")),
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Aud::deserialize(d)? {
        Aud::One(a) => vec![a],
        Aud::Many(v) => v,
    })
}

fn string(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// An array of strings, or nothing: a claim of any other shape grants nothing.
fn strings(v: Option<Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            items.into_iter().filter_map(|i| if let Value::String(s) = i { Some(s) } else { None }).collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const CTX: TokenContext<'static> =
        TokenContext { at_jwt: false, own_client_id: "authgate", extra_claims: &[] };

    fn claims(extra: serde_json::Value) -> Result<Identity, ClaimsError> {
        let mut base = serde_json::json!({
            "sub": "u1", "aud": "authgate", "exp": NOW + 300, "iat": NOW, "client_id": "authgate", "scope": "openid",
        });
        base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value::<AccessClaims>(base).unwrap().into_identity(NOW, 60, CTX)
    }

    #[test]
    fn licenses_must_be_an_array_of_strings() {
        let cases = [
            (serde_json::json!(["wiki", "crm"]), vec!["wiki", "crm"]),
            (serde_json::json!("wiki"), vec![]),
            (serde_json::json!(["wiki", 7]), vec![]),
            (serde_json::json!({"wiki": true}), vec![]),
            (serde_json::json!(null), vec![]),
            (serde_json::json!(["Wiki", "wiki "]), vec!["Wiki", "wiki "]),
        ];
        for (value, want) in cases {
            let id = claims(serde_json::json!({ "licenses": value })).unwrap();
            assert_eq!(id.licenses, want, "{value}");
        }
    }

    #[test]
    fn id_and_refresh_tokens_are_not_access_tokens() {
        for extra in [
            serde_json::json!({"nonce": "n"}),
            serde_json::json!({"at_hash": "x"}),
            serde_json::json!({"c_hash": "x"}),
            serde_json::json!({"typ": "ID"}),
            serde_json::json!({"typ": "Refresh"}),
            serde_json::json!({"typ": "Logout"}),
            serde_json::json!({"typ": 5}),
            serde_json::json!({"events": {"http://schemas.openid.net/event/backchannel-logout": {}}}),
        ] {
            assert_eq!(claims(extra.clone()), Err(ClaimsError::NotAnAccessToken), "{extra}");
        }
        assert!(claims(serde_json::json!({"typ": "Bearer"})).is_ok());
        // a nonce-less id_token: audience = our client, no scope
        assert_eq!(claims(serde_json::json!({"scope": null})), Err(ClaimsError::NotAnAccessToken));
        assert!(claims(serde_json::json!({})).is_ok());
        assert!(claims(serde_json::json!({"scope": null, "aud": "some-api"})).is_ok(), "a token for an API");
        let at_jwt = TokenContext { at_jwt: true, ..CTX };
        let base = serde_json::json!({ "sub": "u1", "aud": "authgate", "exp": NOW + 300 });
        assert!(serde_json::from_value::<AccessClaims>(base).unwrap().into_identity(NOW, 60, at_jwt).is_ok());
    }

    #[test]
    fn numeric_dates_may_be_fractional_but_never_negative_or_absurd() {
        use serde_json::json;
        let t = |v: Value, up| numeric_date(&v, up);
        assert_eq!(t(json!(1796405346), false), Some(1796405346));
        assert_eq!(t(json!(1796405346.5), false), Some(1796405346), "an expiry rounds down");
        assert_eq!(t(json!(1796405346.5), true), Some(1796405347), "a start rounds up");
        for bad in [json!(-1), json!(-0.5), json!(1e300), json!("1796405346"), json!(null), json!([1])] {
            assert_eq!(t(bad.clone(), false), None, "{bad}");
        }
        // in a token: accepted as a number with a fraction
        let id = claims(json!({"exp": (NOW + 600) as f64 + 0.5, "iat": NOW as f64 - 0.25})).unwrap();
        assert_eq!(id.expires_at, NOW + 600);
        assert!(serde_json::from_value::<AccessClaims>(json!({"sub": "u", "aud": "a", "exp": -5})).is_err());
    }

    #[test]
    fn times_and_subject_are_checked() {
        assert_eq!(claims(serde_json::json!({"iat": NOW + 3600})), Err(ClaimsError::IssuedInFuture));
        assert!(claims(serde_json::json!({"iat": NOW + 30})).is_ok(), "within leeway");
        assert_eq!(
            claims(serde_json::json!({"exp": NOW + 10 * 366 * 86400})),
            Err(ClaimsError::AbsurdExpiry)
        );
        assert_eq!(claims(serde_json::json!({"sub": ""})), Err(ClaimsError::NoSubject));
    }

    #[test]
    fn configured_extra_claims_are_kept() {
        let names =
            ["department".to_string(), "groups".to_string(), "nested".to_string(), "absent".to_string()];
        let ctx = TokenContext { extra_claims: &names, ..CTX };
        let base = serde_json::json!({
            "sub": "u1", "aud": "authgate", "exp": NOW + 300, "scope": "openid",
            "department": "R&D", "groups": ["a", "b"], "nested": {"x": 1}, "other": "not kept",
        });
        let id = serde_json::from_value::<AccessClaims>(base).unwrap().into_identity(NOW, 60, ctx).unwrap();
        assert_eq!(
            id.claims,
            vec![
                ("department".to_string(), vec!["R&D".to_string()]),
                ("groups".to_string(), vec!["a".to_string(), "b".to_string()]),
            ]
        );
    }

    #[test]
    fn client_credentials_tokens_are_machines() {
        let m2m = claims(serde_json::json!({"sub": "reporting-service", "client_id": "reporting-service"}))
            .unwrap();
        assert!(m2m.machine);
        let user =
            claims(serde_json::json!({"scope": "openid  profile", "preferred_username": "alice"})).unwrap();
        assert!(!user.machine);
        assert_eq!(user.scopes, ["openid", "profile"]);
        assert_eq!(user.client_id.as_deref(), Some("authgate"));
    }
}
