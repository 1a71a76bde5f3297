//! id_token verification (OIDC Core §3.1.3.7) through `openidconnect`'s verifier fed from the
//! gateway's JWKS cache: every rule a sign-in depends on, one row each. Tokens are signed here
//! with a throwaway ES256 key whose public half the cache holds, as after loading the
//! provider's JWK Set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test: failing loudly is the point

mod common;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use authgate::clock::unix_now;
use authgate::jwt::{TokenError, TokenVerifier};

const ISSUER: &str = "https://idp.example.com";

fn verifier() -> (TokenVerifier, EncodingKey) {
    let config = authgate::config::load_str(
        "[provider]\nissuer = \"https://idp.example.com\"\nclient_id = \"authgate\"\n\
         [[routes]]\npath = \"/\"\nupstream = \"http://127.0.0.1:1\"\nauth = \"public\"\n",
        "test.toml",
        std::path::Path::new("."),
        &|_| None,
    )
    .unwrap();
    common::es256_verifier(&config)
}

fn claims(changes: Value) -> Value {
    let now = unix_now();
    let mut c = json!({
        "iss": ISSUER, "sub": "alice", "aud": "authgate", "iat": now, "exp": now + 300,
        "nonce": "n-1", "email": "alice@acme.test", "licenses": ["wiki"],
    });
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn signed(key: &EncodingKey, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

#[test]
fn id_tokens_are_held_to_every_rule() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (v, key) = verifier();
    let now = unix_now();
    let ok = |t: &str| rt.block_on(v.verify_id_token(t, "n-1"));

    let good = ok(&signed(&key, "k1", &claims(json!({})))).expect("a good id_token");
    assert_eq!(good["sub"], "alice");
    assert_eq!(good["licenses"], json!(["wiki"]), "every claim is returned, not only those the crate knows");

    // within the leeway is fine both ways
    assert!(
        ok(&signed(&key, "k1", &claims(json!({"exp": now - 30})))).is_ok(),
        "expired 30 s ago, leeway 60"
    );
    assert!(ok(&signed(&key, "k1", &claims(json!({"iat": now + 30})))).is_ok(), "clock 30 s ahead");
    // RFC 7519 NumericDate may be fractional
    let fractional =
        claims(json!({"exp": now as f64 + 300.5, "iat": now as f64 - 0.5, "nbf": now as f64 - 1.5}));
    assert!(ok(&signed(&key, "k1", &fractional)).is_ok(), "fractional exp, iat, nbf");
    // more audiences are fine when azp names us
    assert!(ok(&signed(&key, "k1", &claims(json!({"aud": ["authgate", "api"], "azp": "authgate"})))).is_ok());

    type Case<'a> = (&'a str, Value, fn(&TokenError) -> bool);
    let cases: Vec<Case> = vec![
        ("another nonce", json!({"nonce": "n-2"}), |e| *e == TokenError::Invalid("nonce")),
        ("no nonce", json!({"nonce": null}), |e| *e == TokenError::Invalid("nonce")),
        ("another audience", json!({"aud": "someone-else"}), |e| *e == TokenError::WrongAudience),
        ("another issuer", json!({"iss": "https://evil.example.com"}), |e| {
            *e == TokenError::Invalid("issuer")
        }),
        ("expired past the leeway", json!({"exp": now - 120}), |e| *e == TokenError::Expired),
        ("issued in the future", json!({"iat": now + 600}), |e| *e == TokenError::Expired),
        ("not yet valid", json!({"nbf": now + 600}), |e| *e == TokenError::Invalid("not yet valid")),
        ("azp of another client", json!({"azp": "other"}), |e| *e == TokenError::Invalid("azp")),
        ("two audiences, no azp", json!({"aud": ["authgate", "api"]}), |e| *e == TokenError::Invalid("azp")),
        ("empty subject", json!({"sub": ""}), |e| matches!(e, TokenError::Claims(_))),
        ("no exp", json!({"exp": null}), |e| *e == TokenError::Malformed),
        ("negative exp", json!({"exp": -1}), |e| matches!(e, TokenError::Malformed | TokenError::Expired)),
    ];
    for (name, change, expected) in cases {
        let e = ok(&signed(&key, "k1", &claims(change))).expect_err(name);
        assert!(expected(&e), "{name}: {e:?}");
    }

    // an unknown key (no discovery here, so no refetch) and a forged signature
    let e = ok(&signed(&key, "k9", &claims(json!({})))).unwrap_err();
    assert_eq!(e, TokenError::UnknownKey);
    let other =
        EncodingKey::from_ec_pem(authgate::assertion::keys::generate_pem("ES256").unwrap().as_bytes())
            .unwrap();
    let e = ok(&signed(&other, "k1", &claims(json!({})))).unwrap_err();
    assert_eq!(e, TokenError::Invalid("signature"));
    // a MAC keyed with something public, and alg none
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let hmac = jsonwebtoken::encode(&h, &claims(json!({})), &EncodingKey::from_secret(b"authgate")).unwrap();
    assert_eq!(ok(&hmac).unwrap_err(), TokenError::AlgorithmNotAllowed);
    let good = signed(&key, "k1", &claims(json!({})));
    let payload = good.split('.').nth(1).unwrap();
    let none = format!("{}.{payload}.", b64(r#"{"alg":"none","kid":"k1"}"#));
    assert!(ok(&none).is_err(), "alg none");
    // a header that points elsewhere for its key
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("k1".into());
    h.jku = Some("https://evil.example.com/jwks".into());
    let jku = jsonwebtoken::encode(&h, &claims(json!({})), &key).unwrap();
    assert_eq!(ok(&jku).unwrap_err(), TokenError::ForbiddenHeader("jku"));
    // a JWE's header field on a validly signed JWS
    let jwe_like: Header =
        serde_json::from_value(json!({"alg": "ES256", "kid": "k1", "enc": "A256GCM"})).unwrap();
    let enc = jsonwebtoken::encode(&jwe_like, &claims(json!({})), &key).unwrap();
    assert_eq!(ok(&enc).unwrap_err(), TokenError::ForbiddenHeader("enc"));
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}
