//! Revocation that takes effect now, against the real test IdP and echo app: signed webhooks
//! (`license.revoked`, `user.suspended`, `user.reactivated`), forged and oversized deliveries,
//! OIDC Back-Channel Logout from the IdP itself, and both across two instances on Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{Browser, Echo, Gate, Idp, Redis, echoed, free_port};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const ALICE: &str = "a1b2c3d4-0000-4000-8000-00000000a11c";
const WEBHOOK_SECRET: &str = "whsec_events-test-0123456789abcdefghijklmnop";

fn config(base: &str, idp: &Idp, echo: &Echo, store: &str) -> String {
    format!(
        r#"{tables}
[webhooks]
secret = "{WEBHOOK_SECRET}"

[[routes]]
name = "wiki"
path = "/wiki"
upstream = "{echo}"
auth = "browser"
licenses = ["wiki"]

[[routes]]
name = "crm"
path = "/crm"
upstream = "{echo}"
auth = "browser"
licenses = ["crm"]

[[routes]]
name = "api"
path = "/api"
upstream = "{echo}"
auth = "api"
"#,
        tables = common::gateway_tables(base, &idp.issuer, store),
        echo = echo.url()
    )
}

/// An IdP that knows every base's callback and back-channel logout address.
fn idp_for(bases: &[&str]) -> Idp {
    let backchannel = format!("{}/oauth2/backchannel-logout", bases[0]);
    idp_with_backchannel(bases, &backchannel)
}

fn idp_with_backchannel(bases: &[&str], backchannel: &str) -> Idp {
    let mut redirects: Vec<String> = bases.iter().map(|b| format!("{b}/oauth2/callback")).collect();
    redirects.push(common::REDIRECT_URI.to_owned());
    let redirects = redirects.join(",");
    let logouts = bases.iter().map(|b| format!("{b}/")).collect::<Vec<_>>().join(",");
    Idp::start(&[
        ("REDIRECT_URIS", &redirects),
        ("POST_LOGOUT_REDIRECT_URIS", &logouts),
        ("BACKCHANNEL_LOGOUT_URI", backchannel),
    ])
}

/// A form POST of `body` to authgate's back-channel logout endpoint, as raw HTTP.
fn backchannel_request(body: &str) -> String {
    format!(
        "POST /oauth2/backchannel-logout HTTP/1.1\r\nHost: gate\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Passes the IdP's back-channel logout calls on to authgate on `gate_port`, keeping a copy of
/// each form body (so that a test can replay the IdP's own logout token). Returns its URL.
fn logout_relay(gate_port: u16, seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/backchannel", listener.local_addr().unwrap().port());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let body = String::from_utf8_lossy(&body).into_owned();
            seen.lock().unwrap().push(body.clone());
            let status =
                common::try_raw(gate_port, &backchannel_request(&body)).map(|r| r.status).unwrap_or(502);
            let mut out = stream;
            let _ = write!(out, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    url
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn signature(body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn event(id: &str, kind: &str, timestamp: &str, application: Option<&str>) -> Vec<u8> {
    let mut data = serde_json::json!({ "userId": ALICE, "email": "alice@acme.test" });
    if let Some(app) = application {
        data["application"] = app.into();
    }
    serde_json::to_vec(&serde_json::json!({ "id": id, "event": kind, "timestamp": timestamp, "data": data }))
        .unwrap()
}

/// Delivers `body` with the given signature headers; returns (status, body).
async fn deliver(base: &str, body: Vec<u8>, signatures: &[String]) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/oauth2/webhooks"))
        .header("content-type", "application/json")
        .body(body);
    for s in signatures {
        req = req.header("x-webhook-signature", s);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn signed(base: &str, body: Vec<u8>) -> (u16, String) {
    let sig = signature(&body);
    deliver(base, body, &[sig]).await
}

/// A session request as a script makes it (no redirects): the status.
async fn status(base: &str, path: &str, cookie: &str) -> u16 {
    common::session_status(&format!("{base}{path}"), cookie).await
}

async fn bearer_status(base: &str, token: &str) -> u16 {
    common::bearer_status(&format!("{base}/api/x"), token).await
}

async fn sign_in(base: &str) -> String {
    let mut b = Browser::new();
    let (page, _) = b.navigate(&format!("{base}/wiki/"), Some("alice")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(echoed(&page.json(), "x-user-id"), [ALICE]);
    b.cookie(base, "authgate_session").unwrap()
}

/// Polls `check` until it returns true, for at most `limit`.
async fn within<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn webhooks_revoke_licenses_suspend_and_reactivate_users() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let idp = idp_for(&[&base]);
    let echo = Echo::start("app");
    let gate = Gate::start_on(port, &config(&base, &idp, &echo, ""));
    gate.wait_ready();
    let cookie = sign_in(&base).await;
    let token = common::login(&idp.issuer, "alice").await.access_token;
    assert_eq!(status(&base, "/crm/", &cookie).await, 200);
    assert_eq!(bearer_status(&base, &token).await, 200);

    // license.revoked for wiki: wiki is gone at once, crm stays
    let revoked_at = now_rfc3339();
    let revoke = event("evt-revoke-1", "license.revoked", &revoked_at, Some("wiki"));
    let (code, body) = signed(&base, revoke.clone()).await;
    assert_eq!((code, body.contains("\"ok\":true")), (200, true), "{body}");
    assert_eq!(status(&base, "/wiki/", &cookie).await, 403);
    assert_eq!(status(&base, "/crm/", &cookie).await, 200);
    // a browser gets the no-access page, not a sign-in loop
    let mut b = Browser::new();
    b.set_cookie(&base, "authgate_session", &cookie);
    assert_eq!(b.request("GET", &format!("{base}/wiki/"), None, &[]).await.status, 403);
    // a delivered-again event is acknowledged and does nothing more
    let (code, body) = signed(&base, revoke.clone()).await;
    assert_eq!((code, body.contains("duplicate")), (200, true), "{body}");

    // user.suspended: the session is gone and the bearer token refused
    let (code, _) = signed(&base, event("evt-suspend-1", "user.suspended", &now_rfc3339(), None)).await;
    assert_eq!(code, 200);
    assert_eq!(status(&base, "/crm/", &cookie).await, 401);
    let page = b.request("GET", &format!("{base}/crm/"), None, &[]).await;
    assert_eq!(page.status, 302, "a browser signs in again");
    assert!(page.location().starts_with(&format!("{}/auth?", idp.issuer)));
    assert_eq!(bearer_status(&base, &token).await, 401);
    // signing in while suspended is refused (a provider may let them in until it catches up)
    let (page, _) = Browser::new().navigate(&format!("{base}/crm/"), Some("alice")).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("disabled"), "{}", page.body);

    // user.reactivated: a fresh sign-in works, and so does the token
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, _) = signed(&base, event("evt-reactivate-1", "user.reactivated", &now_rfc3339(), None)).await;
    assert_eq!(code, 200);
    assert_eq!(bearer_status(&base, &token).await, 200);
    let fresh = sign_in(&base).await;
    assert_eq!(status(&base, "/wiki/", &fresh).await, 200, "the new session has wiki again");

    // the old revocation delivered again (same id, or re-sent under a new id) leaves the
    // newer session alone
    assert_eq!(signed(&base, revoke).await.0, 200);
    assert_eq!(
        signed(&base, event("evt-revoke-2", "license.revoked", &revoked_at, Some("wiki"))).await.0,
        200
    );
    assert_eq!(status(&base, "/wiki/", &fresh).await, 200);
    // an old suspension re-sent after the reactivation changes nothing either
    let (code, _) = signed(&base, event("evt-suspend-old", "user.suspended", &revoked_at, None)).await;
    assert_eq!(code, 200);
    assert_eq!(status(&base, "/crm/", &fresh).await, 200);
    assert_eq!(bearer_status(&base, &token).await, 200);

    // user.updated: the next request refreshes the session's identity at the provider
    assert_eq!(idp.token_calls("refresh_token", "ok").await, 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(signed(&base, event("evt-updated", "user.updated", &now_rfc3339(), None)).await.0, 200);
    assert_eq!(status(&base, "/crm/", &fresh).await, 200);
    assert_eq!(idp.token_calls("refresh_token", "ok").await, 1, "the identity was refreshed");
    assert_eq!(status(&base, "/crm/", &fresh).await, 200);
    assert_eq!(idp.token_calls("refresh_token", "ok").await, 1, "once");

    let metrics = gate.admin_get("/metrics").1;
    assert!(
        metrics.contains(
            r#"authgate_events_total{event="license.revoked",outcome="applied",source="webhook"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"authgate_events_total{event="license.revoked",outcome="duplicate",source="webhook"} 2"#
        ),
        "{metrics}"
    );
}

/// The provider's time `ahead` seconds from ours, as RFC 3339.
fn provider_time(ahead: u64) -> String {
    humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(ahead)).to_string()
}

/// Status and license events are ordered by the provider's own timestamps: with its clock two
/// minutes ahead of ours, an older event delivered after a newer one changes nothing, in
/// either order, and events in order still take effect (issue 19 item 6).
#[tokio::test]
async fn webhooks_are_ordered_by_the_providers_clock() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let idp = idp_for(&[&base]);
    let echo = Echo::start("app");
    let gate = Gate::start_on(port, &config(&base, &idp, &echo, ""));
    gate.wait_ready();
    let cookie = sign_in(&base).await;
    let token = common::login(&idp.issuer, "alice").await.access_token;

    // suspended at provider time +120 s; a reactivation stamped +60 s arrives after it
    assert_eq!(signed(&base, event("o-suspend-1", "user.suspended", &provider_time(120), None)).await.0, 200);
    assert_eq!(status(&base, "/crm/", &cookie).await, 401);
    assert_eq!(
        signed(&base, event("o-react-old", "user.reactivated", &provider_time(60), None)).await.0,
        200
    );
    assert_eq!(bearer_status(&base, &token).await, 401, "an older reactivation lifted a newer suspension");
    let (page, _) = Browser::new().navigate(&format!("{base}/crm/"), Some("alice")).await;
    assert_eq!(page.status, 403, "still suspended: {}", page.body);
    // a reactivation newer than the suspension lifts it
    assert_eq!(signed(&base, event("o-react-1", "user.reactivated", &provider_time(125), None)).await.0, 200);
    assert_eq!(bearer_status(&base, &token).await, 200);
    let fresh = sign_in(&base).await;
    assert_eq!(status(&base, "/crm/", &fresh).await, 200);

    // the other order: reactivated at +170 s arrives first, a suspension of +140 s after it
    assert_eq!(signed(&base, event("o-react-2", "user.reactivated", &provider_time(170), None)).await.0, 200);
    assert_eq!(
        signed(&base, event("o-suspend-old", "user.suspended", &provider_time(140), None)).await.0,
        200
    );
    assert_eq!(status(&base, "/crm/", &fresh).await, 200, "an older suspension ended a session");
    assert_eq!(bearer_status(&base, &token).await, 200);

    // licenses the same way: revoked at +200 s, an assignment of +190 s arrives after it
    assert_eq!(
        signed(&base, event("o-revoke", "license.revoked", &provider_time(200), Some("wiki"))).await.0,
        200
    );
    assert_eq!(status(&base, "/wiki/", &fresh).await, 403);
    let older = event("o-assign-old", "license.assigned", &provider_time(190), Some("wiki"));
    assert_eq!(signed(&base, older).await.0, 200);
    assert_eq!(status(&base, "/wiki/", &fresh).await, 403, "an older assignment undid a newer revocation");
    let newer = event("o-assign", "license.assigned", &provider_time(210), Some("wiki"));
    assert_eq!(signed(&base, newer).await.0, 200);
    assert_eq!(status(&base, "/wiki/", &fresh).await, 200);
    // and a revocation older than that assignment, delivered last, changes nothing
    let late = event("o-revoke-old", "license.revoked", &provider_time(205), Some("wiki"));
    assert_eq!(signed(&base, late).await.0, 200);
    assert_eq!(status(&base, "/wiki/", &fresh).await, 200);

    // a tie (the same millisecond) goes to the restrictive event, whichever arrives last
    let same = provider_time(300);
    assert_eq!(signed(&base, event("o-suspend-tie", "user.suspended", &same, None)).await.0, 200);
    assert_eq!(signed(&base, event("o-react-tie", "user.reactivated", &same, None)).await.0, 200);
    assert_eq!(bearer_status(&base, &token).await, 401, "a reactivation tied with a suspension lifted it");
}

#[tokio::test]
async fn forged_or_oversized_webhooks_change_nothing() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let idp = idp_for(&[&base]);
    let echo = Echo::start("app");
    let gate = Gate::start_on(port, &config(&base, &idp, &echo, ""));
    gate.wait_ready();
    let cookie = sign_in(&base).await;

    let body = event("evt-forged", "license.revoked", &now_rfc3339(), Some("wiki"));
    let good = signature(&body);
    let hex = good.trim_start_matches("sha256=");
    let bytes: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
    let reserialised =
        serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(&body).unwrap()).unwrap();
    {
        use base64::Engine;
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("missing signature", vec![]),
            ("zeros", vec![format!("sha256={}", "0".repeat(64))]),
            ("sha1 prefix", vec![good.replacen("sha256=", "sha1=", 1)]),
            ("upper-case prefix", vec![good.replacen("sha256=", "SHA256=", 1)]),
            (
                "base64 instead of hex",
                vec![format!("sha256={}", base64::engine::general_purpose::STANDARD.encode(&bytes))],
            ),
            ("signature of the re-serialised JSON", vec![signature(&reserialised)]),
            ("two signature headers", vec![good.clone(), good.clone()]),
        ];
        for (what, sigs) in cases {
            let (code, _) = deliver(&base, body.clone(), &sigs).await;
            assert_eq!(code, 401, "{what}");
        }
    }
    assert_eq!(status(&base, "/wiki/", &cookie).await, 200, "no forged delivery had an effect");

    // 10 MiB: refused from its Content-Length, before the body is read or anything is done
    let sig = signature(&vec![b' '; 10 * 1024 * 1024]);
    let head = format!(
        "POST /oauth2/webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-webhook-signature: {sig}\r\nContent-Length: {}\r\n\r\n",
        10 * 1024 * 1024
    );
    assert_eq!(common::try_raw(port, &head).unwrap().status, 413);
    // and a body that grows past the limit without announcing its size
    let mut chunked = String::from(
        "POST /oauth2/webhooks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nx-webhook-signature: sha256=00\r\n\r\n",
    );
    for _ in 0..5 {
        chunked.push_str(&format!("10000\r\n{}\r\n", " ".repeat(0x10000)));
    }
    assert_eq!(common::try_raw(port, &chunked).unwrap().status, 413);
    // signed but not an event
    assert_eq!(signed(&base, b"{not json".to_vec()).await.0, 400);
    assert_eq!(signed(&base, br#"{"event":"user.suspended","data":{}}"#.to_vec()).await.0, 400);
    // an event older than the platform's retries is acknowledged and not applied
    let two_days_ago =
        humantime::format_rfc3339(SystemTime::now() - Duration::from_secs(48 * 3600)).to_string();
    let (code, body) =
        signed(&base, event("evt-ancient", "license.revoked", &two_days_ago, Some("wiki"))).await;
    assert_eq!((code, body.contains("stale")), (200, true), "{body}");
    assert_eq!(status(&base, "/wiki/", &cookie).await, 200);
    // unknown events are acknowledged
    let (code, body) = signed(&base, event("evt-x", "organization.updated", &now_rfc3339(), None)).await;
    assert_eq!((code, body.contains("ignored")), (200, true));
    // never proxied: GET is not allowed and reaches no app
    let resp = reqwest::get(format!("{base}/oauth2/webhooks")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(status(&base, "/wiki/", &cookie).await, 200);
    drop(gate);
}

/// A logout token signed with the IdP's own key.
fn logout_token(idp: &Idp, claims: serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(idp.kid("rs"));
    header.typ = Some("logout+jwt".into());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&idp.private_pem("rs256.pem")).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

async fn backchannel(base: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{base}/oauth2/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn back_channel_logout_from_the_idp_ends_the_session() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let delivered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let idp = idp_with_backchannel(&[&base], &logout_relay(port, delivered.clone()));
    let echo = Echo::start("app");
    let gate = Gate::start_on(port, &config(&base, &idp, &echo, ""));
    gate.wait_ready();

    // alice signs out at the IdP (not through authgate): the IdP calls back and the session ends
    let mut b = Browser::new();
    let (page, _) = b.navigate(&format!("{base}/wiki/"), Some("alice")).await;
    assert_eq!(page.status, 200);
    let cookie = b.cookie(&base, "authgate_session").unwrap();
    assert_eq!(status(&base, "/wiki/", &cookie).await, 200);
    b.navigate(&format!("{}/session/end", idp.issuer), None).await;
    assert!(
        within(Duration::from_secs(5), || async { status(&base, "/wiki/", &cookie).await == 401 }).await,
        "the IdP's back-channel logout did not end the session; log:\n{}",
        gate.log()
    );
    // the IdP's own logout token, delivered again, is refused (its jti was used)
    let original = delivered.lock().unwrap().first().cloned().expect("the IdP called back");
    assert!(original.starts_with("logout_token=ey"), "{original}");
    let replay = common::try_raw(port, &backchannel_request(&original)).unwrap();
    assert_eq!(replay.status, 400, "a replayed logout token");

    // a logout token is accepted once; malformed ones are refused
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({
        "iss": idp.issuer, "aud": "authgate", "iat": now, "exp": now + 120, "jti": "logout-1",
        "sub": ALICE, "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    });
    let token = logout_token(&idp, claims.clone());
    assert_eq!(backchannel(&base, &token).await, 200);
    assert_eq!(backchannel(&base, &token).await, 400, "the same jti again");
    let with = |k: &str, v: serde_json::Value| {
        let mut c = claims.clone();
        c[k] = v;
        c["jti"] = format!("logout-{k}").into();
        c
    };
    for (what, bad) in [
        ("nonce", with("nonce", "n".into())),
        ("audience", with("aud", "someone-else".into())),
        ("events", with("events", serde_json::json!({}))),
        ("issuer", with("iss", "http://evil.example".into())),
    ] {
        assert_eq!(backchannel(&base, &logout_token(&idp, bad)).await, 400, "{what}");
    }
    assert_eq!(backchannel(&base, "not-a-jwt").await, 400);
}

#[tokio::test]
async fn revocations_reach_every_instance_on_redis() {
    let redis = Redis::start();
    let (port_a, port_b) = (free_port(), free_port());
    let (a, b) = (format!("http://127.0.0.1:{port_a}"), format!("http://127.0.0.1:{port_b}"));
    let idp = idp_for(&[&a, &b]);
    let echo = Echo::start("app");
    let store = format!("store = \"redis\"\nredis_url = \"{}\"", redis.url());
    let gate_a = Gate::start_on(port_a, &config(&a, &idp, &echo, &store));
    let gate_b = Gate::start_on(port_b, &config(&b, &idp, &echo, &store));
    gate_a.wait_ready();
    gate_b.wait_ready();
    let cookie = sign_in(&a).await;
    let token = common::login(&idp.issuer, "alice").await.access_token;
    assert_eq!(status(&b, "/wiki/", &cookie).await, 200, "B has the session cached now");
    assert_eq!(bearer_status(&b, &token).await, 200);

    // delivered to A, seen by B within a second
    assert_eq!(signed(&a, event("evt-r", "license.revoked", &now_rfc3339(), Some("wiki"))).await.0, 200);
    assert!(within(Duration::from_secs(1), || async { status(&b, "/wiki/", &cookie).await == 403 }).await);
    assert_eq!(status(&b, "/crm/", &cookie).await, 200);
    // the dedup key is shared too
    let (code, body) = signed(&b, event("evt-r", "license.revoked", &now_rfc3339(), Some("wiki"))).await;
    assert_eq!((code, body.contains("duplicate")), (200, true));

    // suspended through B: A refuses the bearer token and the session within a second
    assert_eq!(signed(&b, event("evt-s", "user.suspended", &now_rfc3339(), None)).await.0, 200);
    assert!(within(Duration::from_secs(1), || async { bearer_status(&a, &token).await == 401 }).await);
    assert_eq!(status(&a, "/crm/", &cookie).await, 401);

    // back-channel logout through A ends a session B has cached
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(signed(&a, event("evt-u", "user.reactivated", &now_rfc3339(), None)).await.0, 200);
    let fresh = sign_in(&b).await;
    assert_eq!(status(&b, "/crm/", &fresh).await, 200);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let token = logout_token(
        &idp,
        serde_json::json!({
            "iss": idp.issuer, "aud": "authgate", "iat": now, "exp": now + 120, "jti": "logout-redis",
            "sub": ALICE, "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        }),
    );
    assert_eq!(backchannel(&a, &token).await, 200);
    assert!(within(Duration::from_secs(1), || async { status(&b, "/crm/", &fresh).await == 401 }).await);
    assert_eq!(backchannel(&b, &token).await, 400, "the jti is shared");
}

#[tokio::test]
async fn no_secret_reaches_the_debug_log_through_refresh_revocation_and_logout() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let delivered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let relay = logout_relay(port, delivered.clone());
    let redirects = format!("{base}/oauth2/callback,{}", common::REDIRECT_URI);
    let logout = format!("{base}/");
    let idp = Idp::start(&[
        ("REDIRECT_URIS", &redirects),
        ("POST_LOGOUT_REDIRECT_URIS", &logout),
        ("BACKCHANNEL_LOGOUT_URI", &relay),
        ("AT_TTL", "6"),
    ]);
    let echo = Echo::start("app");
    let config = config(&base, &idp, &echo, "")
        .replace("licenses = [\"crm\"]\n", "licenses = [\"crm\"]\npass_access_token = true\n")
        + "\n[assertion]\nenabled = true\nkey_file = \"assertion-key.pem\"\n";
    let gate = Gate::start_logging(port, &config, "debug");
    gate.wait_ready();

    // sign in, keeping the code and state the browser carried
    let mut b = Browser::new();
    let (page, seen) = b.navigate(&format!("{base}/crm/"), Some("alice")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let callback = seen.iter().find(|u| u.contains("/oauth2/callback?")).unwrap();
    let callback = reqwest::Url::parse(callback).unwrap();
    let param = |name: &str| callback.query_pairs().find(|(k, _)| k == name).unwrap().1.into_owned();
    let (code, state) = (param("code"), param("state"));
    let cookie = b.cookie(&base, "authgate_session").unwrap();
    let echoed_page = page.json();
    let access_token = echoed(&echoed_page, "authorization")[0].trim_start_matches("Bearer ").to_owned();
    let assertion = echoed(&echoed_page, "x-authgate-assertion")[0].clone();
    let bearer = common::login(&idp.issuer, "alice").await.access_token;
    assert_eq!(bearer_status(&base, &bearer).await, 200);

    // a refresh, webhooks, and a back-channel logout
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(status(&base, "/crm/", &cookie).await, 200);
    assert_eq!(idp.token_calls("refresh_token", "ok").await, 1);
    let body = event("evt-log-1", "license.revoked", &now_rfc3339(), Some("wiki"));
    let signature_value = signature(&body);
    assert_eq!(signed(&base, body).await.0, 200);
    assert_eq!(deliver(&base, b"{}".to_vec(), &[format!("sha256={}", "ab".repeat(32))]).await.0, 401);
    b.navigate(&format!("{}/session/end", idp.issuer), None).await;
    assert!(within(Duration::from_secs(5), || async { status(&base, "/crm/", &cookie).await == 401 }).await);
    let logout_token = delivered.lock().unwrap().first().cloned().unwrap();

    let log = gate.log();
    assert!(log.contains("DEBUG"), "debug logging was not on");
    assert!(log.contains("webhook applied") && log.contains("back-channel logout applied"), "{log}");
    for (what, secret) in [
        ("code", code.as_str()),
        ("state", state.as_str()),
        ("session cookie", cookie.as_str()),
        ("access token", access_token.as_str()),
        ("bearer token", bearer.as_str()),
        ("assertion", assertion.as_str()),
        ("logout token", logout_token.trim_start_matches("logout_token=")),
        ("webhook secret", WEBHOOK_SECRET),
        ("webhook signature", signature_value.trim_start_matches("sha256=")),
        ("client secret", "authgate-test-secret"),
        ("session secret", common::SESSION_SECRET),
        ("any JWT", "eyJ"),
    ] {
        if let Some(at) = log.find(secret) {
            let line_start = log[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = log[at..].find('\n').map_or(log.len(), |i| at + i);
            panic!("the {what} was logged: {}", &log[line_start..line_end.min(line_start + 400)]);
        }
    }
}

/// Signing out in one browser ends that browser's provider session; the provider's back-channel
/// logout for it then finds no session here (already gone) and must not fall back to every
/// session of the user: her other browser stays signed in, until its own provider session ends.
#[tokio::test]
async fn signing_out_in_one_browser_leaves_the_others_signed_in() {
    sign_out_in_one_browser("").await;
}

/// The same with the sessions in Redis (its script picks the sessions without a provider id).
#[tokio::test]
async fn signing_out_in_one_browser_leaves_the_others_signed_in_on_redis() {
    let redis = Redis::start();
    sign_out_in_one_browser(&format!("store = \"redis\"\nredis_url = \"{}\"", redis.url())).await;
}

async fn sign_out_in_one_browser(store: &str) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let delivered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let idp = idp_with_backchannel(&[&base], &logout_relay(port, delivered.clone()));
    let echo = Echo::start("app");
    let gate = Gate::start_on(port, &config(&base, &idp, &echo, store));
    gate.wait_ready();

    let (mut laptop, mut phone) = (Browser::new(), Browser::new());
    for b in [&mut laptop, &mut phone] {
        let (page, _) = b.navigate(&format!("{base}/wiki/"), Some("alice")).await;
        assert_eq!(page.status, 200);
    }
    let phone_cookie = phone.cookie(&base, "authgate_session").unwrap();
    // sign out on the laptop, through authgate, and follow it to the provider's end-session page
    let out =
        laptop.request("POST", &format!("{base}/oauth2/sign_out"), Some(vec![]), &[("origin", &base)]).await;
    assert_eq!(out.status, 302);
    laptop.navigate(&out.location(), None).await;
    // the provider's back-channel logout for the laptop arrives and is applied (ending nothing:
    // the laptop's session is already gone) ...
    assert!(
        within(Duration::from_secs(5), || async { gate.log().contains("back-channel logout applied") }).await,
        "the provider's back-channel logout for the laptop was not applied; log:\n{}",
        gate.log()
    );
    assert_eq!(delivered.lock().unwrap().len(), 1);
    // ... and the phone is still signed in
    assert_eq!(status(&base, "/wiki/", &phone_cookie).await, 200, "log:\n{}", gate.log());
    // the phone's own provider session ending still ends its session here
    phone.navigate(&format!("{}/session/end", idp.issuer), None).await;
    assert!(
        within(Duration::from_secs(5), || async { status(&base, "/wiki/", &phone_cookie).await == 401 })
            .await,
        "the phone's back-channel logout did not end its session; log:\n{}",
        gate.log()
    );
}

/// Opens a connection from `source` (another loopback address: another client) that posts to
/// `path` and then sends its body at one byte a second until dropped.
async fn trickle(source: &str, port: u16, path: &str) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(format!("{source}:0").parse().ok()?).ok()?;
    let mut stream = socket.connect(([127, 0, 0, 1], port).into()).await.ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         x-webhook-signature: sha256=00\r\nContent-Length: 4000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    Some(tokio::spawn(async move {
        loop {
            if stream.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }))
}

/// 200 connections trickling bodies at 1 byte/s into the webhook and back-channel endpoints do
/// not keep the provider's deliveries out: a signed webhook is applied within a second and the
/// IdP's own back-channel logout still ends its session (issue 19 item 3).
#[tokio::test]
async fn slow_senders_cannot_starve_the_event_endpoints() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let idp = idp_for(&[&base]);
    let echo = Echo::start("app");
    let gate = Gate::start_on(port, &config(&base, &idp, &echo, ""));
    gate.wait_ready();
    let cookie = sign_in(&base).await;
    // a second session, for the IdP to end
    let mut b = Browser::new();
    let (page, _) = b.navigate(&format!("{base}/wiki/"), Some("alice")).await;
    assert_eq!(page.status, 200);
    let second = b.cookie(&base, "authgate_session").unwrap();

    let mut held = Vec::new();
    for i in 0..200 {
        let path = if i % 2 == 0 { "/oauth2/webhooks" } else { "/oauth2/backchannel-logout" };
        held.extend(trickle("127.0.0.2", port, path).await);
    }
    assert_eq!(held.len(), 200, "the slow connections were not all opened");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let revoke = event("evt-starve", "license.revoked", &now_rfc3339(), Some("crm"));
    let (code, body) = signed(&base, revoke).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(status(&base, "/crm/", &cookie).await, 403);
    assert!(started.elapsed() < Duration::from_secs(1), "the webhook took {:?}", started.elapsed());

    // the IdP ends alice's sessions at its end and calls back
    b.navigate(&format!("{}/session/end", idp.issuer), None).await;
    assert!(
        within(Duration::from_secs(5), || async { status(&base, "/wiki/", &second).await == 401 }).await,
        "the back-channel logout did not end the session; log:\n{}",
        gate.log()
    );
    for h in held {
        h.abort();
    }
}
