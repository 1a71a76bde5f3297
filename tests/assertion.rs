//! The signed identity assertion against the real test IdP and echo app: what the app receives
//! after a browser sign-in and with bearer tokens (user and M2M), verified with the JWK Set the
//! running gateway publishes; opt-out routes; forged client copies; key rotation; and the
//! example verifier refusing tampered, expired, wrong-audience and `alg: none` assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use common::{Browser, Echo, Gate, Idp, echoed, free_port};
use jsonwebtoken::jwk::JwkSet;

const BOB: &str = "b0b0b0b0-0000-4000-8000-000000000b0b";
const ALICE: &str = "a1b2c3d4-0000-4000-8000-00000000a11c";
const HEADER: &str = "x-authgate-assertion";

struct Stack {
    idp: Idp,
    gate: Gate,
    echo: Echo,
    base: String,
}

fn stack() -> Stack {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let redirects = format!("{base}/oauth2/callback,{}", common::REDIRECT_URI);
    let logout = format!("{base}/");
    let idp = Idp::start(&[("REDIRECT_URIS", &redirects), ("POST_LOGOUT_REDIRECT_URIS", &logout)]);
    let echo = Echo::start("app");
    let config = format!(
        r#"{tables}
[assertion]
enabled = true
key_file = "assertion-key.pem"

[[routes]]
name = "app"
path = "/app"
upstream = "{echo}"
auth = "browser"

[[routes]]
name = "plain"
path = "/plain"
upstream = "{echo}"
auth = "browser"
assertion = false

[[routes]]
name = "public"
path = "/public"
upstream = "{echo}"
auth = "public"

[[routes]]
name = "api"
path = "/api"
upstream = "{echo}"
auth = "api"
assertion_audience = "urn:wiki-api"

[[routes]]
name = "m2m"
path = "/m2m"
upstream = "{echo}"
auth = "api"
clients = ["reporting-service"]
"#,
        tables = common::gateway_tables(&base, &idp.issuer, ""),
        echo = echo.url()
    );
    let gate = Gate::start_on(port, &config);
    gate.wait_ready();
    Stack { idp, gate, echo, base }
}

async fn jwks(url: &str) -> JwkSet {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Verifies `token` with the gateway's published keys; returns (kid, claims).
async fn verify(s: &Stack, token: &str, audience: &str) -> (String, serde_json::Value) {
    let set = jwks(&format!("{}/.well-known/authgate/jwks.json", s.base)).await;
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let kid = header.kid.unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(set.find(&kid).expect("kid published")).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[audience]);
    v.set_issuer(&[&s.base]);
    v.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
    (kid, jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).unwrap().claims)
}

fn one(seen: &serde_json::Value) -> String {
    let values = echoed(seen, HEADER);
    assert_eq!(values.len(), 1, "{seen}");
    values[0].clone()
}

#[tokio::test]
async fn apps_receive_a_verifiable_assertion_of_the_real_caller() {
    let s = stack();
    let mut b = Browser::new();
    let (page, _) = b.navigate(&format!("{}/app/x", s.base), Some("bob")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let token = one(&page.json());
    let (kid, c) = verify(&s, &token, &s.echo.url()).await;
    assert_eq!(c["sub"], BOB);
    assert_eq!(c["email"], "bob@acme.test");
    assert_eq!(c["name"], "Bob Brown");
    assert_eq!(c["licenses"], serde_json::json!(["wiki"]));
    assert_eq!(c["organization_id"], "5f0c8a52-1d8e-4a43-9a54-6f1f5c0d2a11");
    assert_eq!(c["user_type"], "customer_user");
    assert_eq!(c["permissions"], serde_json::json!(["org:users:read"]));
    let (iat, exp) = (c["iat"].as_u64().unwrap(), c["exp"].as_u64().unwrap());
    assert_eq!(c["nbf"].as_u64(), Some(iat));
    assert!(exp > iat && exp - iat <= 300, "{c}");
    assert!(c.get("client_id").is_none());
    // the admin listener publishes the same keys
    let admin = jwks(&format!("http://127.0.0.1:{}/.well-known/authgate/jwks.json", s.gate.admin_port)).await;
    assert!(admin.find(&kid).is_some());
    // the key file was created for the owner only
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.gate.dir.path().join("assertion-key.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // reused for the next request (no signing per request)
    let again = b.request("GET", &format!("{}/app/y", s.base), None, &[]).await;
    assert_eq!(one(&again.json()), token);

    // forged client copies never arrive, on any route
    let forged = [("X-Authgate-Assertion", "eyJforged.x.y"), ("x_authgate_assertion", "eyJforged.x.y")];
    for path in ["/app/f", "/plain/f", "/public/f"] {
        let page = b.request("GET", &format!("{}{path}", s.base), None, &forged).await;
        let seen = page.json();
        let values = echoed(&seen, HEADER);
        assert!(values.iter().all(|v| !v.contains("forged")), "{path}: {values:?}");
        assert!(echoed(&seen, "x_authgate_assertion").is_empty(), "{path}");
        let want = usize::from(path == "/app/f");
        assert_eq!(values.len(), want, "{path}: {values:?}");
    }

    // bearer tokens: a user's, and a client's (M2M)
    let alice = common::login(&s.idp.issuer, "alice").await.access_token;
    let resp =
        reqwest::Client::new().get(format!("{}/api/z", s.base)).bearer_auth(&alice).send().await.unwrap();
    let (_, c) = verify(&s, &one(&resp.json().await.unwrap()), "urn:wiki-api").await;
    assert_eq!(c["sub"], ALICE);
    assert_eq!(c["licenses"], serde_json::json!(["wiki", "crm"]));
    let m2m =
        common::client_credentials(&s.idp.issuer, "reporting-service", "reporting-service-secret").await;
    let resp =
        reqwest::Client::new().get(format!("{}/m2m/z", s.base)).bearer_auth(&m2m).send().await.unwrap();
    let (_, c) = verify(&s, &one(&resp.json().await.unwrap()), &s.echo.url()).await;
    assert_eq!(
        (c["sub"].as_str(), c["client_id"].as_str()),
        (Some("reporting-service"), Some("reporting-service"))
    );
    assert!(c.get("licenses").is_none() && c.get("email").is_none(), "{c}");
}

#[tokio::test]
async fn rotated_keys_keep_earlier_assertions_valid() {
    let s = stack();
    let mut b = Browser::new();
    let (page, _) = b.navigate(&format!("{}/app/x", s.base), Some("bob")).await;
    let before = one(&page.json());
    let (old_kid, _) = verify(&s, &before, &s.echo.url()).await;

    let config = s.gate.dir.path().join("authgate.toml");
    let (code, out, err) =
        common::authgate(&["keys", "rotate", "--config", config.to_str().unwrap()], &[], s.gate.dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reloaded"), "{out}");

    let page = b.request("GET", &format!("{}/app/y", s.base), None, &[]).await;
    let after = one(&page.json());
    let (new_kid, c) = verify(&s, &after, &s.echo.url()).await;
    assert_ne!(new_kid, old_kid, "new assertions carry the new key");
    assert_eq!(c["sub"], BOB);
    let set = jwks(&format!("{}/.well-known/authgate/jwks.json", s.base)).await;
    assert_eq!(set.keys.len(), 2);
    let (kid, _) = verify(&s, &before, &s.echo.url()).await;
    assert_eq!(kid, old_kid, "an assertion signed before the rotation still verifies");
}

/// Runs the example verifier on `token`: (exit code, output).
fn example(jwks_url: &str, audience: &str, token: &str) -> (i32, String) {
    use std::io::Write;
    let exe = std::env::current_exe().unwrap();
    let examples = exe.parent().unwrap().parent().unwrap().join("examples/verify_assertion");
    if !examples.exists() {
        // `cargo test` builds examples; `cargo test --test assertion` alone does not
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = std::process::Command::new(cargo)
            .args(["build", "--example", "verify_assertion"])
            .current_dir(common::repo())
            .status()
            .unwrap();
        assert!(built.success(), "cannot build the example");
    }
    let mut child = std::process::Command::new(&examples)
        .args([jwks_url, audience])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (built by `cargo test`)", examples.display()));
    child.stdin.take().unwrap().write_all(token.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn the_example_verifier_refuses_what_it_must() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let s = stack();
    let mut b = Browser::new();
    let (page, _) = b.navigate(&format!("{}/app/x", s.base), Some("bob")).await;
    let token = one(&page.json());
    let url = format!("{}/.well-known/authgate/jwks.json", s.base);
    let audience = s.echo.url();

    let (code, out) = tokio::task::spawn_blocking({
        let (url, audience, token) = (url.clone(), audience.clone(), token.clone());
        move || example(&url, &audience, &token)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(BOB), "{out}");

    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    // tampered: a license added, the signature kept
    claims["licenses"] = serde_json::json!(["wiki", "admin-console"]);
    let tampered = format!("{}.{}.{}", parts[0], b64.encode(claims.to_string()), parts[2]);
    // alg none, no signature
    let none = format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    // expired, signed with the gateway's own key
    let key = std::fs::read(s.gate.dir.path().join("assertion-key.pem")).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = jsonwebtoken::decode_header(&token).unwrap().kid;
    let mut old = claims.clone();
    old["licenses"] = serde_json::json!(["wiki"]);
    old["exp"] = (old["iat"].as_u64().unwrap() - 600).into();
    old["nbf"] = (old["iat"].as_u64().unwrap() - 900).into();
    old["iat"] = old["nbf"].clone();
    let expired =
        jsonwebtoken::encode(&header, &old, &jsonwebtoken::EncodingKey::from_ec_pem(&key).unwrap()).unwrap();
    let cases = [
        ("tampered", tampered, audience.clone()),
        ("alg none", none, audience.clone()),
        ("expired", expired, audience.clone()),
        ("wrong audience", token.clone(), "http://another-app.example".to_owned()),
    ];
    for (what, t, aud) in cases {
        let url = url.clone();
        let (code, out) = tokio::task::spawn_blocking(move || example(&url, &aud, &t)).await.unwrap();
        assert_eq!(code, 1, "{what} accepted: {out}");
        assert!(out.contains("refused"), "{what}: {out}");
    }
}
