//! Bearer tokens on `api` routes against the real test IdP: real tokens work, and every forged,
//! stale or misdirected token is refused before the upstream is reached.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use base64::Engine;
use common::{Echo, Gate, Idp, Response, echoed, login};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const ALICE: &str = "a1b2c3d4-0000-4000-8000-00000000a11c";

fn gate_config(idp: &Idp, echo: &Echo) -> String {
    format!(
        r#"
[server]
listen = ["{{listen}}"]
admin_listen = "{{admin}}"
public_url = "http://127.0.0.1:{{port}}"

[provider]
issuer = "{issuer}"
client_id = "authgate"
client_secret = "authgate-test-secret"
audience = "authgate"
jwks_cooldown = "1s"

[[routes]]
name = "wiki-api"
path = "/wiki-api"
upstream = "{echo}"
auth = "api"
licenses = ["wiki"]

[[routes]]
name = "reports"
path = "/reports"
upstream = "{echo}"
auth = "api"
clients = ["reporting-service"]

[[routes]]
name = "other-audience"
path = "/other"
upstream = "{echo}"
auth = "api"
audience = "other-api"

[[routes]]
name = "admin-api"
path = "/admin-api"
upstream = "{echo}"
auth = "api"
user_types = ["platform_admin"]
pass_access_token = true
"#,
        issuer = idp.issuer,
        echo = echo.url()
    )
}

/// The gateway once its provider's keys are loaded (tokens are judged against them).
fn ready(gate: Gate) -> Gate {
    gate.wait_ready();
    gate
}

fn with_token(gate: &Gate, path: &str, token: &str) -> Response {
    gate.get("127.0.0.1", path, &[("Authorization", &format!("Bearer {token}")), ("X-User-Id", "spoofed")])
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Claims of a valid access token for alice, with `changes` applied (`null` removes a claim).
fn claims(idp: &Idp, changes: Value) -> Value {
    let mut c = json!({
        "iss": idp.issuer, "sub": ALICE, "aud": "authgate", "client_id": "authgate",
        "iat": now(), "exp": now() + 300, "scope": "openid profile",
        "licenses": ["wiki", "crm"], "email": "alice@acme.test",
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

fn sign(idp: &Idp, alg: Algorithm, claims: &Value) -> String {
    let (pem, kid) = match alg {
        Algorithm::ES256 => (idp.private_pem("es256.pem"), idp.kid("es")),
        _ => (idp.private_pem("rs256.pem"), idp.kid("rs")),
    };
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid);
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// A token assembled by hand: any header, any payload, any signature bytes.
fn raw_token(header: &Value, claims: &Value, signature: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{}.{}.{}", b64.encode(header.to_string()), b64.encode(claims.to_string()), b64.encode(signature))
}

/// Signs with the IdP's RS256 key under a custom header.
fn sign_with_header(idp: &Idp, mut header: Header, claims: &Value) -> String {
    header.kid = Some(idp.kid("rs"));
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(&idp.private_pem("rs256.pem")).unwrap())
        .unwrap()
}

fn hs256(secret: &[u8], kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn assert_refused(resp: &Response, status: u16, what: &str) {
    assert_eq!(resp.status, status, "{what}: {}", String::from_utf8_lossy(&resp.body));
    let body = resp.json();
    assert!(body.get("backend").is_none(), "{what}: reached the upstream");
    assert_eq!(resp.header("content-type"), Some("application/problem+json"), "{what}");
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    let want = if status == 401 { "invalid_token" } else { "insufficient_scope" };
    assert!(challenge.contains(want), "{what}: {challenge}");
}

#[tokio::test]
async fn real_tokens_from_the_idp_are_accepted_where_the_policy_allows() {
    let idp = Idp::start(&[]);
    let echo = Echo::start("api");
    let gate = ready(Gate::start(&gate_config(&idp, &echo)));

    let alice = login(&idp.issuer, "alice").await;
    let resp = with_token(&gate, "/wiki-api/pages?x=1", &alice.access_token);
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let seen = resp.json();
    assert_eq!(seen["path"], "/wiki-api/pages");
    assert_eq!(echoed(&seen, "x-user-id"), [ALICE]);
    assert_eq!(echoed(&seen, "x-user-email"), ["alice@acme.test"]);
    assert_eq!(echoed(&seen, "x-user-name"), ["Alice Anders"]);
    assert_eq!(echoed(&seen, "x-user-licenses"), ["wiki,crm"]);
    assert_eq!(echoed(&seen, "x-user-org"), ["5f0c8a52-1d8e-4a43-9a54-6f1f5c0d2a11"]);
    assert_eq!(echoed(&seen, "x-user-type"), ["customer_admin"]);
    assert_eq!(
        echoed(&seen, "x-user-permissions"),
        ["org:manage,org:users:read,org:users:manage,licenses:read"]
    );
    assert!(echoed(&seen, "authorization").is_empty(), "the token must not reach the app");
    assert!(echoed(&seen, "x-forwarded-access-token").is_empty());
    assert_eq!(echoed(&seen, "x-user-given-name"), ["Alice"]);
    assert_eq!(echoed(&seen, "x-user-family-name"), ["Anders"]);
    assert!(echoed(&seen, "x-client-id").is_empty());

    // carol has no license: a valid token, refused by policy
    let carol = login(&idp.issuer, "carol").await;
    assert_refused(&with_token(&gate, "/wiki-api/pages", &carol.access_token), 403, "carol on wiki-api");
    // alice is no platform admin; the admin is, and that route passes the token on
    assert_refused(&with_token(&gate, "/admin-api", &alice.access_token), 403, "alice on admin-api");
    let admin = login(&idp.issuer, "admin").await;
    let seen = with_token(&gate, "/admin-api", &admin.access_token).json();
    assert_eq!(echoed(&seen, "authorization"), [format!("Bearer {}", admin.access_token)]);
    // a person's token is not a machine's
    assert_refused(&with_token(&gate, "/reports", &alice.access_token), 403, "alice on reports");
    // an id_token is not an access token, although the IdP signed it
    assert_refused(&with_token(&gate, "/wiki-api", &alice.id_token), 401, "id_token as access token");
}

#[tokio::test]
async fn client_credentials_tokens_work_only_where_their_client_is_listed() {
    let idp = Idp::start(&[]);
    let echo = Echo::start("api");
    let gate = ready(Gate::start(&gate_config(&idp, &echo)));
    let token =
        common::client_credentials(&idp.issuer, "reporting-service", "reporting-service-secret").await;

    let resp = with_token(&gate, "/reports/daily", &token);
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let seen = resp.json();
    assert_eq!(echoed(&seen, "x-client-id"), ["reporting-service"]);
    for h in ["x-user-id", "x-user-email", "x-user-licenses", "authorization"] {
        assert!(echoed(&seen, h).is_empty(), "{h} reached the app");
    }
    assert_refused(&with_token(&gate, "/wiki-api", &token), 403, "m2m on wiki-api");
    assert_refused(&with_token(&gate, "/admin-api", &token), 403, "m2m on admin-api");
}

#[tokio::test]
async fn forged_stale_and_misdirected_tokens_are_refused() {
    let idp = Idp::start(&[]);
    let echo = Echo::start("api");
    let gate = ready(Gate::start(&gate_config(&idp, &echo)));
    let rs_kid = idp.kid("rs");

    // the control: a token signed with the IdP's own key, as the IdP would
    let good = sign(&idp, Algorithm::RS256, &claims(&idp, json!({})));
    assert_eq!(with_token(&gate, "/wiki-api", &good).status, 200);
    assert_eq!(
        with_token(&gate, "/wiki-api", &sign(&idp, Algorithm::ES256, &claims(&idp, json!({})))).status,
        200
    );

    let c = claims(&idp, json!({}));
    let jwks: Value = reqwest::get(format!("{}/jwks", idp.issuer)).await.unwrap().json().await.unwrap();
    let public_jwk = jwks["keys"][0].to_string();
    let other_key = {
        let out = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
            .output()
            .unwrap();
        EncodingKey::from_rsa_pem(&out.stdout).unwrap()
    };
    let mut other_header = Header::new(Algorithm::RS256);
    other_header.kid = Some(rs_kid.clone());

    let mut cases: Vec<(&str, String, u16)> = vec![
        ("alg none", raw_token(&json!({"alg": "none", "kid": rs_kid}), &c, b""), 401),
        ("alg None", raw_token(&json!({"alg": "None", "kid": rs_kid}), &c, b""), 401),
        ("alg NONE", raw_token(&json!({"alg": "NONE", "kid": rs_kid}), &c, b""), 401),
        ("alg nOnE", raw_token(&json!({"alg": "nOnE"}), &c, b""), 401),
        ("HS256 with the public key as secret", hs256(public_jwk.as_bytes(), &rs_kid, &c), 401),
        ("another key, the IdP's kid", jsonwebtoken::encode(&other_header, &c, &other_key).unwrap(), 401),
        (
            "unknown kid",
            {
                let mut h = Header::new(Algorithm::RS256);
                h.kid = Some("no-such-kid".into());
                jsonwebtoken::encode(&h, &c, &other_key).unwrap()
            },
            401,
        ),
        (
            "signature stripped",
            {
                let mut parts: Vec<&str> = good.split('.').collect();
                parts[2] = "";
                parts.join(".")
            },
            401,
        ),
        (
            // same signature, so the same last bytes as `good`, which is cached by now
            "payload swapped",
            {
                let evil = claims(&idp, json!({"sub": "someone-else"}));
                let mut parts: Vec<String> = good.split('.').map(String::from).collect();
                parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(evil.to_string());
                parts.join(".")
            },
            401,
        ),
        ("crit header", raw_token(&json!({"alg": "RS256", "kid": rs_kid, "crit": ["exp"]}), &c, b"x"), 401),
        (
            "jku header",
            raw_token(&json!({"alg": "RS256", "kid": rs_kid, "jku": "http://evil/jwks"}), &c, b"x"),
            401,
        ),
        (
            "expired",
            sign(&idp, Algorithm::RS256, &claims(&idp, json!({"exp": now() - 120, "iat": now() - 600}))),
            401,
        ),
        ("nbf in the future", sign(&idp, Algorithm::RS256, &claims(&idp, json!({"nbf": now() + 600}))), 401),
        ("iat in the future", sign(&idp, Algorithm::RS256, &claims(&idp, json!({"iat": now() + 600}))), 401),
        (
            "wrong iss",
            sign(&idp, Algorithm::RS256, &claims(&idp, json!({"iss": "http://evil.example"}))),
            401,
        ),
        (
            "iss with trailing slash",
            sign(&idp, Algorithm::RS256, &claims(&idp, json!({"iss": format!("{}/", idp.issuer)}))),
            401,
        ),
        ("wrong aud", sign(&idp, Algorithm::RS256, &claims(&idp, json!({"aud": "other-api"}))), 401),
        ("missing aud", sign(&idp, Algorithm::RS256, &claims(&idp, json!({"aud": null}))), 401),
        ("missing exp", sign(&idp, Algorithm::RS256, &claims(&idp, json!({"exp": null}))), 401),
        (
            "exp as a string",
            sign(&idp, Algorithm::RS256, &claims(&idp, json!({"exp": (now() + 300).to_string()}))),
            401,
        ),
        (
            "exp null",
            sign(&idp, Algorithm::RS256, &{
                let mut c = claims(&idp, json!({}));
                c["exp"] = Value::Null;
                c
            }),
            401,
        ),
        ("exp a float string", sign(&idp, Algorithm::RS256, &claims(&idp, json!({"exp": "1e12"}))), 401),
        // RFC 7519 NumericDate may be fractional
        (
            "fractional exp, iat, nbf",
            sign(
                &idp,
                Algorithm::RS256,
                &claims(
                    &idp,
                    json!({"exp": now() as f64 + 300.5, "iat": now() as f64 - 0.5, "nbf": now() as f64 - 1.5}),
                ),
            ),
            200,
        ),
        ("negative exp", sign(&idp, Algorithm::RS256, &claims(&idp, json!({"exp": -1}))), 401),
        // a JWE's header fields on a validly signed JWS: another kind of token
        (
            "enc in the header",
            sign_with_header(
                &idp,
                serde_json::from_value(json!({"alg": "RS256", "typ": "at+jwt", "enc": "A256GCM"})).unwrap(),
                &c,
            ),
            401,
        ),
        (
            "zip in the header",
            sign_with_header(
                &idp,
                serde_json::from_value(json!({"alg": "RS256", "typ": "at+jwt", "zip": "DEF"})).unwrap(),
                &c,
            ),
            401,
        ),
        (
            "iss as an array",
            sign(&idp, Algorithm::RS256, &claims(&idp, json!({"iss": [idp.issuer, "x"]}))),
            401,
        ),
        (
            "id_token without nonce",
            sign_with_header(&idp, Header::new(Algorithm::RS256), &claims(&idp, json!({"scope": null}))),
            401,
        ),
        (
            "logout token",
            sign(
                &idp,
                Algorithm::RS256,
                &claims(&idp, json!({"events": {"http://schemas.openid.net/event/backchannel-logout": {}}})),
            ),
            401,
        ),
        (
            "huge kid",
            {
                let mut h = Header::new(Algorithm::RS256);
                h.kid = Some("k".repeat(1000));
                jsonwebtoken::encode(&h, &c, &other_key).unwrap()
            },
            401,
        ),
        (
            "exp absurd",
            sign(&idp, Algorithm::RS256, &claims(&idp, json!({"exp": now() + 100 * 365 * 86400}))),
            401,
        ),
        ("nonce (an id_token)", sign(&idp, Algorithm::RS256, &claims(&idp, json!({"nonce": "n"}))), 401),
        (
            "licenses as a string",
            sign(&idp, Algorithm::RS256, &claims(&idp, json!({"licenses": "wiki"}))),
            403,
        ),
        (
            "licenses in other case",
            sign(&idp, Algorithm::RS256, &claims(&idp, json!({"licenses": ["Wiki"]}))),
            403,
        ),
        (
            "licenses with a space",
            sign(&idp, Algorithm::RS256, &claims(&idp, json!({"licenses": ["wiki "]}))),
            403,
        ),
        (
            "licenses superstring",
            sign(&idp, Algorithm::RS256, &claims(&idp, json!({"licenses": ["wikiadmin"]}))),
            403,
        ),
        ("not a JWT", "not-a-jwt".into(), 401),
        (
            "20 KB token, validly signed",
            sign(&idp, Algorithm::RS256, &claims(&idp, json!({"pad": "p".repeat(20_000)}))),
            401,
        ),
    ];
    cases.push(("the good token still works", good.clone(), 200));
    for (what, token, status) in &cases {
        let resp = with_token(&gate, "/wiki-api", token);
        if *status == 200 {
            assert_eq!(resp.status, 200, "{what}");
        } else {
            assert_refused(&resp, *status, what);
        }
    }
    // no token at all: a challenge without an error code, pointing at the metadata
    let resp = gate.get("127.0.0.1", "/wiki-api", &[]);
    assert_eq!(resp.status, 401);
    let challenge = resp.header("www-authenticate").unwrap();
    assert!(!challenge.contains("error="), "{challenge}");
    assert!(challenge.contains("resource_metadata=\""), "{challenge}");
    // oversized tokens never reach anything either: above the header limit authgate answers
    // 431; a 1 MB one is already refused (400) by Pingora's HTTP parser, whose limit is 1 MiB
    for (size, status) in [(200 * 1024, 431), (1024 * 1024, 400)] {
        let huge = "a".repeat(size);
        let resp = gate.raw(&format!(
            "GET /wiki-api HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {huge}\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(resp.status, status, "{size}-byte token");
    }
}

#[tokio::test]
async fn protected_resource_metadata_is_published_and_readiness_waits_for_keys() {
    let idp = Idp::start(&[]);
    let echo = Echo::start("api");
    let gate = ready(Gate::start(&gate_config(&idp, &echo)));
    let resp = gate.get("127.0.0.1", "/wiki-api", &[("Accept", "application/json")]);
    let challenge = resp.header("www-authenticate").unwrap().to_owned();
    let url = challenge.split("resource_metadata=\"").nth(1).unwrap().split('"').next().unwrap();
    assert_eq!(url, format!("http://127.0.0.1:{}/.well-known/oauth-protected-resource/wiki-api", gate.port));
    let path = url.split_once(&format!(":{}", gate.port)).unwrap().1;
    let doc = gate.get("127.0.0.1", path, &[]).json();
    assert_eq!(doc["resource"], format!("http://127.0.0.1:{}/wiki-api", gate.port));
    assert_eq!(doc["authorization_servers"], json!([idp.issuer]));
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    // the browser-less root has no metadata
    assert_eq!(gate.get("127.0.0.1", "/.well-known/oauth-protected-resource", &[]).status, 404);

    let mut ready = Value::Null;
    for _ in 0..50 {
        let r = common::try_raw(
            gate.admin_port,
            "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        ready = r.json();
        if r.status == 200 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["checks"]["provider_keys"]["keys"], 2);
}

#[tokio::test]
async fn readiness_reports_an_unreachable_provider() {
    let echo = Echo::start("api");
    let dead_issuer = format!("http://127.0.0.1:{}", common::free_port());
    let config = format!(
        "[server]\nlisten = [\"{{listen}}\"]\nadmin_listen = \"{{admin}}\"\n\n[provider]\nissuer = \"{dead_issuer}\"\nclient_id = \"authgate\"\naudience = \"authgate\"\n\n[[routes]]\npath = \"/\"\nupstream = \"{}\"\nauth = \"api\"\n",
        echo.url()
    );
    let gate = Gate::start(&config);
    let r = common::try_raw(
        gate.admin_port,
        "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 503);
    let body = r.json();
    assert_eq!(body["checks"]["provider_discovery"]["ready"], false);
    assert_eq!(body["checks"]["provider_keys"]["ready"], false);
    // liveness is unaffected, and tokens cannot be checked: 401, never a 5xx
    assert_eq!(
        common::try_raw(
            gate.admin_port,
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap()
        .status,
        200
    );
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("some-kid".into());
    let key = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .output()
        .unwrap()
        .stdout;
    let well_formed = jsonwebtoken::encode(
        &h,
        &json!({"iss": dead_issuer, "sub": "u", "aud": "authgate", "exp": now() + 60, "scope": "x"}),
        &EncodingKey::from_rsa_pem(&key).unwrap(),
    )
    .unwrap();
    let resp = gate.get("127.0.0.1", "/", &[("Authorization", &format!("Bearer {well_formed}"))]);
    assert_eq!(resp.status, 401);
}

#[tokio::test]
async fn cached_tokens_still_expire_and_stay_bound_to_their_audience() {
    let idp = Idp::start(&[]);
    let echo = Echo::start("api");
    let gate = ready(Gate::start(
        &gate_config(&idp, &echo)
            .replace("jwks_cooldown = \"1s\"", "jwks_cooldown = \"1s\"\nleeway = \"0s\""),
    ));
    let short = sign(&idp, Algorithm::RS256, &claims(&idp, json!({"exp": now() + 2})));
    assert_eq!(with_token(&gate, "/wiki-api", &short).status, 200);
    assert_refused(&with_token(&gate, "/other", &short), 401, "token for authgate on an other-api route");
    assert_eq!(with_token(&gate, "/wiki-api", &short).status, 200, "cached and still valid");
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert_refused(&with_token(&gate, "/wiki-api", &short), 401, "expired while cached");
    let other = sign(&idp, Algorithm::RS256, &claims(&idp, json!({"aud": ["other-api"]})));
    assert_eq!(with_token(&gate, "/other", &other).status, 200);
}

#[tokio::test]
async fn claim_values_cannot_forge_headers_or_list_entries() {
    let idp = Idp::start(&[]);
    let echo = Echo::start("api");
    let gate = ready(Gate::start(&gate_config(&idp, &echo)));
    let evil = claims(
        &idp,
        json!({
            "name": "Mallory\r\nX-User-Id: admin",
            "email": "mallory@evil.test\u{0}",
            "licenses": ["wiki", "crm,admin-console"],
            "user_type": "Zoë",
        }),
    );
    let resp = with_token(&gate, "/wiki-api", &sign(&idp, Algorithm::RS256, &evil));
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    let seen = resp.json();
    assert_eq!(echoed(&seen, "x-user-id"), [ALICE]);
    assert_eq!(echoed(&seen, "x-user-name"), ["Mallory%0D%0AX-User-Id: admin"]);
    assert_eq!(echoed(&seen, "x-user-email"), ["mallory@evil.test%00"]);
    assert_eq!(echoed(&seen, "x-user-licenses"), ["wiki,crm%2Cadmin-console"]);
    assert_eq!(echoed(&seen, "x-user-type"), ["Zo%C3%AB"]);
}

#[tokio::test]
async fn opaque_tokens_are_introspected_when_enabled() {
    let idp = Idp::start(&[("ACCESS_TOKEN_FORMAT", "opaque")]);
    let echo = Echo::start("api");
    let config = gate_config(&idp, &echo);
    let gate = ready(Gate::start(
        &config.replace("jwks_cooldown = \"1s\"", "jwks_cooldown = \"1s\"\nintrospection = true"),
    ));
    let without = ready(Gate::start(&config));

    let alice = login(&idp.issuer, "alice").await;
    assert_eq!(alice.access_token.matches('.').count(), 0, "the IdP should issue opaque tokens here");
    for _ in 0..3 {
        let resp = with_token(&gate, "/wiki-api/x", &alice.access_token);
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        assert_eq!(echoed(&resp.json(), "x-user-licenses"), ["wiki,crm"]);
    }
    let m2m = common::client_credentials(&idp.issuer, "reporting-service", "reporting-service-secret").await;
    let seen = with_token(&gate, "/reports", &m2m).json();
    assert_eq!(echoed(&seen, "x-client-id"), ["reporting-service"]);

    let refresh = alice.refresh_token.clone().expect("a refresh token");
    assert_refused(&with_token(&gate, "/wiki-api", &refresh), 401, "refresh token as access token");
    assert_refused(&with_token(&gate, "/wiki-api", "made-up-opaque-token"), 401, "unknown opaque token");
    let carol = login(&idp.issuer, "carol").await;
    assert_refused(&with_token(&gate, "/wiki-api", &carol.access_token), 403, "carol, opaque");
    // introspection is off by default: opaque tokens are simply not accepted
    assert_refused(&with_token(&without, "/wiki-api", &alice.access_token), 401, "introspection off");
}

/// Express, ASP.NET and IIS route `/ADMIN` as `/admin`; Rails and Spring serve `/admin.json` as
/// `/admin`: every such alias is judged by the licensed `/admin` route, never by the `/` route
/// any signed-in user passes (issue 19 item 13). The path is forwarded as sent.
#[tokio::test]
async fn legacy_path_aliases_are_judged_by_the_stricter_route() {
    let idp = Idp::start(&[]);
    let echo = Echo::start("legacy");
    let config = format!(
        r#"
[server]
listen = ["{{listen}}"]
admin_listen = "{{admin}}"
public_url = "http://127.0.0.1:{{port}}"

[provider]
issuer = "{issuer}"
client_id = "authgate"
client_secret = "authgate-test-secret"
audience = "authgate"

[[routes]]
name = "app"
path = "/"
upstream = "{echo}"
auth = "api"

[[routes]]
name = "admin"
path = "/admin"
upstream = "{echo}"
auth = "api"
licenses = ["crm"]
"#,
        issuer = idp.issuer,
        echo = echo.url()
    );
    let gate = ready(Gate::start(&config));
    let carol = login(&idp.issuer, "carol").await;
    let alice = login(&idp.issuer, "alice").await;
    for alias in
        ["/admin", "/ADMIN", "/Admin/Users", "/admin.json", "/ADMIN.JSON", "/admin/users.csv", "/aDmIn;x.xml"]
    {
        assert_refused(&with_token(&gate, alias, &carol.access_token), 403, &format!("carol on {alias}"));
        let resp = with_token(&gate, alias, &alice.access_token);
        assert_eq!(resp.status, 200, "alice on {alias}");
        assert_eq!(resp.json()["path"], *alias, "the path is forwarded as sent");
    }
    for other in ["/administrator", "/admin-old.json", "/home.json"] {
        let resp = with_token(&gate, other, &carol.access_token);
        assert_eq!(resp.status, 200, "carol on {other}: another page, the / route");
    }

    // the opt-out: an upstream that really serves /Admin and /admin apart
    gate.rewrite_config(&config.replace("[provider]", "case_insensitive_paths = false\n\n[provider]"));
    let (status, body) = gate.admin_post_reload();
    assert_eq!(status, 200, "{body}");
    assert_eq!(with_token(&gate, "/ADMIN", &carol.access_token).status, 200);
    assert_refused(&with_token(&gate, "/admin.json", &carol.access_token), 403, "carol on /admin.json");
}
