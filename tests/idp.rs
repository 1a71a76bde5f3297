//! The test IdP is a real, Calimatic-shaped OpenID Provider: later tests rely on every fact here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use base64::Engine;
use common::Idp;

fn jwt_part(token: &str, index: usize) -> serde_json::Value {
    let part = token.split('.').nth(index).expect("three JWT parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn discovery_document_describes_a_calimatic_like_provider() {
    let idp = Idp::start(&[]);
    let http = reqwest::Client::new();
    let doc: serde_json::Value = http
        .get(format!("{}/.well-known/openid-configuration", idp.issuer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], idp.issuer.as_str());
    assert_eq!(doc["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    for endpoint in [
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "userinfo_endpoint",
        "end_session_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
    ] {
        let url = doc[endpoint].as_str().unwrap_or_else(|| panic!("{endpoint} missing"));
        assert!(url.starts_with(&idp.issuer), "{endpoint}: {url}");
    }
    let grants = doc["grant_types_supported"].as_array().unwrap();
    for g in ["authorization_code", "refresh_token", "client_credentials"] {
        assert!(grants.iter().any(|x| x == g), "grant {g} not supported: {grants:?}");
    }
    let claims = doc["claims_supported"].as_array().unwrap();
    for c in ["licenses", "organization_id", "organization_memberships", "permissions", "user_type"] {
        assert!(claims.iter().any(|x| x == c), "claim {c} not supported");
    }
    assert_eq!(doc["backchannel_logout_supported"], true);

    let jwks: serde_json::Value =
        http.get(doc["jwks_uri"].as_str().unwrap()).send().await.unwrap().json().await.unwrap();
    let algs: Vec<&str> =
        jwks["keys"].as_array().unwrap().iter().map(|k| k["alg"].as_str().unwrap()).collect();
    assert_eq!(algs, ["RS256", "ES256"]);
    assert!(
        jwks["keys"].as_array().unwrap().iter().all(|k| k.get("d").is_none()),
        "private key material published"
    );
}

#[tokio::test]
async fn client_credentials_tokens_are_jwts_for_the_client() {
    let idp = Idp::start(&[("CC_TTL", "120")]);
    let http = reqwest::Client::new();
    let token_url = format!("{}/token", idp.issuer);
    let resp = http
        .post(&token_url)
        .basic_auth("reporting-service", Some("reporting-service-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 120);
    let token = body["access_token"].as_str().unwrap();
    let header = jwt_part(token, 0);
    assert_eq!(header["alg"], "RS256");
    assert!(header["kid"].as_str().is_some_and(|k| k.starts_with("rs256-")));
    let claims = jwt_part(token, 1);
    assert_eq!(claims["iss"], idp.issuer.as_str());
    assert_eq!(claims["sub"], "reporting-service");
    assert_eq!(claims["client_id"], "reporting-service");
    assert_eq!(claims["aud"], "authgate");
    assert!(claims.get("licenses").is_none(), "M2M tokens carry no licenses");
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 120);

    let wrong = http
        .post(&token_url)
        .basic_auth("reporting-service", Some("not-the-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let err: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(err["error"], "invalid_client");
}
