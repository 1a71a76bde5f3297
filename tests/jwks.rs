//! The JWKS cache under key rotation, provider outages and faults: known keys keep working,
//! new keys are picked up at once, and no fault makes other requests wait.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use std::time::{Duration, Instant};

use common::{Echo, FaultIdp, Gate, Idp, JwksFault};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

fn config(issuer: &str, echo: &Echo, extra_provider: &str) -> String {
    format!(
        "[server]\nlisten = [\"{{listen}}\"]\nadmin_listen = \"{{admin}}\"\n\n\
         [provider]\nissuer = \"{issuer}\"\nclient_id = \"authgate\"\naudience = \"authgate\"\n{extra_provider}\n\n\
         [[routes]]\npath = \"/\"\nupstream = \"{}\"\nauth = \"api\"\n",
        echo.url()
    )
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn token(issuer: &str, pem: &[u8], kid: &str, sub: &str) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.into());
    let claims = json!({ "iss": issuer, "sub": sub, "aud": "authgate", "scope": "openid", "iat": now(), "exp": now() + 600 });
    jsonwebtoken::encode(&h, &claims, &EncodingKey::from_rsa_pem(pem).unwrap()).unwrap()
}

fn call(gate: &Gate, token: &str) -> u16 {
    gate.get("127.0.0.1", "/", &[("Authorization", &format!("Bearer {token}"))]).status
}

async fn wait_ready(gate: &Gate) {
    for _ in 0..100 {
        let r = common::try_raw(
            gate.admin_port,
            "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        );
        if r.is_ok_and(|r| r.status == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never ready: {}", gate.log());
}

#[tokio::test]
async fn rotated_keys_are_picked_up_at_once_and_old_tokens_live_on() {
    let mut idp = Idp::start(&[]);
    let echo = Echo::start("api");
    let gate = Gate::start(&config(&idp.issuer, &echo, "jwks_cooldown = \"30s\""));
    wait_ready(&gate).await;
    let old_kid = idp.kid("rs");
    let old = token(&idp.issuer, &idp.private_pem("rs256.pem"), &old_kid, "before-rotation");
    assert_eq!(call(&gate, &old), 200);

    idp.restart(&[("ROTATE_KEYS", "1")]);
    let new_kid = idp.kid("rs");
    assert_ne!(new_kid, old_kid);
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the refetch cooldown
    // a token from the IdP itself, signed with the new key: no window of 401s
    let fresh =
        common::client_credentials(&idp.issuer, "reporting-service", "reporting-service-secret").await;
    assert!(fresh.len() > 100);
    let by_new_key = token(&idp.issuer, &idp.private_pem("rs256.pem"), &new_kid, "after-rotation");
    assert_eq!(call(&gate, &by_new_key), 200, "{}", gate.log());
    // a token signed by the old key, never seen before, still verifies (the IdP keeps publishing it)
    let old_unseen =
        token(&idp.issuer, &idp.private_pem("rs256-previous.pem"), &old_kid, "old-key-new-token");
    assert_eq!(call(&gate, &old_unseen), 200);
    assert_eq!(call(&gate, &old), 200);
    // and tokens the IdP issues itself now (client credentials, new key) verify too
    let fresh =
        common::client_credentials(&idp.issuer, "reporting-service", "reporting-service-secret").await;
    let header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            fresh.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], new_kid.as_str());
    // verified with the new key (a bad one would be 401); a machine token is not admitted on
    // this people's route, hence 403
    assert_eq!(call(&gate, &fresh), 403);
}

#[tokio::test]
async fn a_stopped_idp_does_not_stop_known_keys() {
    let mut idp = Idp::start(&[]);
    let echo = Echo::start("api");
    let gate = Gate::start(&config(&idp.issuer, &echo, "jwks_cooldown = \"1s\""));
    wait_ready(&gate).await;
    let kid = idp.kid("rs");
    let pem = idp.private_pem("rs256.pem");
    idp.stop();
    // never-seen tokens signed with a known key verify without the IdP
    for i in 0..5 {
        assert_eq!(call(&gate, &token(&idp.issuer, &pem, &kid, &format!("user-{i}"))), 200);
    }
    // an unknown kid cannot be fetched: refused, quickly, and nothing else breaks
    let started = Instant::now();
    assert_eq!(call(&gate, &token(&idp.issuer, &pem, "unknown-kid", "x")), 401);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(call(&gate, &token(&idp.issuer, &pem, &kid, "after")), 200);
}

#[tokio::test]
async fn unknown_kids_cause_at_most_one_refetch_per_cooldown() {
    let idp = Idp::start(&[]);
    let jwks = reqwest::get(format!("{}/jwks", idp.issuer)).await.unwrap().text().await.unwrap();
    let fault = FaultIdp::start(JwksFault::Serve(jwks));
    let echo = Echo::start("api");
    let gate = Gate::start(&config(&fault.issuer, &echo, "jwks_cooldown = \"30s\""));
    wait_ready(&gate).await;
    let pem = idp.private_pem("rs256.pem");
    let kid = idp.kid("rs");
    assert_eq!(call(&gate, &token(&fault.issuer, &pem, &kid, "known")), 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = fault.jwks_hits();
    for i in 0..20 {
        assert_eq!(call(&gate, &token(&fault.issuer, &pem, &format!("attacker-kid-{i}"), "x")), 401);
    }
    let refetches = fault.jwks_hits() - before;
    assert_eq!(refetches, 1, "JWKS fetches for 20 unknown kids within one cooldown");
}

#[tokio::test]
async fn a_hanging_or_garbage_jwks_does_not_slow_other_requests() {
    let idp = Idp::start(&[]);
    let jwks = reqwest::get(format!("{}/jwks", idp.issuer)).await.unwrap().text().await.unwrap();
    let fault = FaultIdp::start(JwksFault::Serve(jwks));
    let echo = Echo::start("api");
    let gate = Gate::start(&config(&fault.issuer, &echo, "jwks_cooldown = \"1s\"\nhttp_timeout = \"3s\""));
    wait_ready(&gate).await;
    let pem = idp.private_pem("rs256.pem");
    let kid = idp.kid("rs");

    for fault_kind in [JwksFault::Hang, JwksFault::Garbage, JwksFault::Status(500)] {
        fault.set(fault_kind.clone());
        tokio::time::sleep(Duration::from_millis(1100)).await; // past the cooldown
        // an unknown kid starts a fetch that hangs (or fails) in the background of this request
        let gate_port = gate.port;
        let unknown = token(&fault.issuer, &pem, "rotated-away", "x");
        let slow = std::thread::spawn(move || {
            common::try_raw(
                gate_port,
                &format!("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {unknown}\r\nConnection: close\r\n\r\n"),
            )
            .map(|r| r.status)
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // meanwhile, requests with known keys are served at once
        let started = Instant::now();
        for i in 0..5 {
            assert_eq!(
                call(&gate, &token(&fault.issuer, &pem, &kid, &format!("u{i}"))),
                200,
                "{fault_kind:?}"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(2), "{fault_kind:?}: known keys waited on the fetch");
        assert_eq!(slow.join().unwrap().unwrap(), 401, "{fault_kind:?}");
    }
    // the last good keys are still in use, readiness holds, and the failures were counted
    assert_eq!(call(&gate, &token(&fault.issuer, &pem, &kid, "end")), 200);
    let ready = common::try_raw(
        gate.admin_port,
        "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(ready.status, 200);
    let failures = ready.json()["checks"]["provider_keys"]["fetch_failures"].as_u64().unwrap();
    assert!(failures >= 3, "{failures} failures counted");
}
