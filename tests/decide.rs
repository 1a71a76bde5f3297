//! The request decision without a server: facts and target in, "forward as this caller" or
//! "answer this" out. Tokens are signed here with a throwaway ES256 key whose public half the
//! verifier holds, exactly as it would after loading the provider's JWK Set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use std::sync::Arc;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pingora::http::RequestHeader;

use authgate::gateway::Gateway;
use authgate::proxy::{Caller, Decision, Outcome, RequestFacts, decide, read_target};

const ISSUER: &str = "https://idp.example.com";

const CONFIG: &str = r#"
[server]
public_url = "https://gw.example.com"

[provider]
issuer = "https://idp.example.com"
client_id = "authgate"
audience = "api"
algorithms = ["ES256"]

[[routes]]
name = "pub"
path = "/pub"
upstream = "http://127.0.0.1:1"
auth = "public"

[[routes]]
name = "reports"
path = "/api"
upstream = "http://127.0.0.1:1"
auth = "api"
licenses = ["reports"]
"#;

struct Setup {
    gateway: Gateway,
    key: EncodingKey,
}

fn setup() -> Setup {
    let config =
        authgate::config::load_str(CONFIG, "test.toml", std::path::Path::new("."), &|_| None).unwrap();
    let (verifier, key) = common::es256_verifier(&config);
    let gateway = Gateway::build(Arc::new(config), vec![Arc::new(verifier)], None).unwrap();
    Setup { gateway, key }
}

fn token(key: &EncodingKey, licenses: &[&str]) -> String {
    let now = authgate::clock::unix_now();
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("k1".into());
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "alice", "aud": "api", "iat": now, "exp": now + 600,
        "scope": "openid", "licenses": licenses,
    });
    jsonwebtoken::encode(&h, &claims, key).unwrap()
}

fn request(target: &str, headers: &[(&str, &str)]) -> RequestHeader {
    let mut r = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
    for (k, v) in headers {
        r.append_header(k.to_string(), *v).unwrap();
    }
    r
}

fn decide_now(s: &Setup, req: &RequestHeader) -> Decision {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let facts = RequestFacts::read(req, Some("203.0.113.9".parse().unwrap()), false, 1, false);
    rt.block_on(decide(&s.gateway, &facts, read_target(req, 65536)))
}

/// The answer's status, outcome and one header.
fn answered(d: Decision, header: &str) -> (u16, Outcome, Option<String>) {
    match d {
        Decision::Answer(a) => {
            let value = a.reply.headers.iter().find(|(n, _)| n == header);
            (a.reply.status.as_u16(), a.outcome, value.map(|(_, v)| v.to_str().unwrap().to_owned()))
        }
        other => panic!("expected an answer, got {other:?}"),
    }
}

#[test]
fn public_routes_forward_anonymously_on_the_normalised_path() {
    let s = setup();
    let Decision::Forward(f) = decide_now(&s, &request("/api/../pub/x?q=1", &[("Host", "gw.example.com")]))
    else {
        panic!("not forwarded");
    };
    assert_eq!(f.route.name, "pub");
    assert!(matches!(f.caller, Caller::Anonymous));
    assert_eq!(f.target.path_and_query, "/pub/x?q=1");
    assert_eq!(f.outcome, Outcome::Public);
}

#[test]
fn bad_targets_and_unknown_paths_are_answered_here() {
    let s = setup();
    let (status, outcome, _) = answered(decide_now(&s, &request("/pub", &[])), "content-type");
    assert_eq!((status, outcome), (400, Outcome::Rejected("bad_host")));
    let (status, outcome, _) =
        answered(decide_now(&s, &request("/nowhere", &[("Host", "gw.example.com")])), "x");
    assert_eq!((status, outcome), (404, Outcome::Rejected("no_route")));
    // without a browser sign-in configured, /oauth2/ is reserved but answers 404
    let (status, outcome, _) =
        answered(decide_now(&s, &request("/oauth2/start", &[("Host", "gw.example.com")])), "x");
    assert_eq!((status, outcome), (404, Outcome::GatewayEndpoint));
}

#[test]
fn an_api_route_needs_a_valid_token_with_the_license() {
    let s = setup();
    let host = ("Host", "gw.example.com");
    let (status, outcome, challenge) =
        answered(decide_now(&s, &request("/api/r", &[host])), "www-authenticate");
    assert_eq!((status, outcome), (401, Outcome::Rejected("unauthenticated")));
    let challenge = challenge.unwrap();
    assert!(
        challenge.contains(
            "resource_metadata=\"https://gw.example.com/.well-known/oauth-protected-resource/api\""
        ),
        "{challenge}"
    );

    let good = format!("Bearer {}", token(&s.key, &["reports"]));
    let Decision::Forward(f) = decide_now(&s, &request("/api/r", &[host, ("Authorization", &good)])) else {
        panic!("a licensed token is forwarded");
    };
    let Caller::Bearer(verified) = &f.caller else { panic!("as its bearer") };
    assert_eq!(verified.identity.subject, "alice");
    assert_eq!(verified.token(), &good["Bearer ".len()..]);
    assert_eq!(f.outcome, Outcome::Allowed);

    let unlicensed = format!("Bearer {}", token(&s.key, &["wiki"]));
    let (status, outcome, challenge) = answered(
        decide_now(&s, &request("/api/r", &[host, ("Authorization", &unlicensed)])),
        "www-authenticate",
    );
    assert_eq!((status, outcome), (403, Outcome::Rejected("forbidden")));
    assert!(challenge.unwrap().contains("insufficient_scope"));

    let forged = format!("{}x", good);
    let (status, outcome, _) =
        answered(decide_now(&s, &request("/api/r", &[host, ("Authorization", &forged)])), "x");
    assert_eq!((status, outcome), (401, Outcome::Rejected("invalid_token")));
}

#[test]
fn protected_resource_metadata_names_the_provider() {
    let s = setup();
    let d =
        decide_now(&s, &request("/.well-known/oauth-protected-resource/api", &[("Host", "gw.example.com")]));
    let Decision::Answer(a) = d else { panic!("answered here") };
    assert_eq!(a.outcome, Outcome::GatewayEndpoint);
    let doc: serde_json::Value = serde_json::from_slice(&a.reply.body).unwrap();
    assert_eq!(doc["resource"], "https://gw.example.com/api");
    assert_eq!(doc["authorization_servers"][0], ISSUER);
}
