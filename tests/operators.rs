//! Session administration (issue 17 part 3) against the real test IdP and a real Redis: an
//! operator lists a user's sessions, ends one or all of them on every instance within a second,
//! and refuses the user's bearer tokens for a while, through `authgate sessions` / `authgate
//! deny` and the admin listener; every action is in the audit log under the token's name.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use std::time::{Duration, Instant};

use common::{Echo, Gate, Idp, Redis, free_port, try_raw};

const ALICE: &str = "a1b2c3d4-0000-4000-8000-00000000a11c";
const BOB: &str = "b0b0b0b0-0000-4000-8000-000000000b0b";
const ONCALL_TOKEN: &str = "oncall-token-0123456789abcdefghijklmnopqrstuvwxyz";

fn config(base: &str, idp: &Idp, echo: &Echo, session: &str) -> String {
    format!(
        r#"{tables}
[server.admin_tokens]
oncall = "{ONCALL_TOKEN}"

[[routes]]
name = "app"
path = "/app"
upstream = "{echo}"
auth = "browser"

[[routes]]
name = "api"
path = "/api"
upstream = "{echo}"
auth = "api"
"#,
        tables = common::gateway_tables(base, &idp.issuer, session),
        echo = echo.url()
    )
}

async fn sign_in(base: &str, user: &str) -> String {
    common::try_sign_in(base, &format!("{base}/app/"), user).await.expect("signed in")
}

async fn with_cookie(base: &str, cookie: &str) -> u16 {
    common::session_status(&format!("{base}/app/data"), cookie).await
}

async fn with_bearer(base: &str, token: &str) -> u16 {
    common::bearer_status(&format!("{base}/api/data"), token).await
}

/// `authgate <args> --config <gate's config>` with the on-call token: (exit code, stdout).
fn operator(gate: &Gate, args: &[&str]) -> (i32, String) {
    let config = gate.dir.path().join("authgate.toml");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", config.to_str().unwrap()]);
    let (code, out, err) = common::authgate(&all, &[("AUTHGATE_ADMIN_TOKEN", ONCALL_TOKEN)], gate.dir.path());
    (code, format!("{out}{err}"))
}

/// The admin listener's JSON answer to `method path` with `token`.
fn admin(gate: &Gate, method: &str, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let r = try_raw(
        gate.admin_port,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    )
    .unwrap();
    (r.status, serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null))
}

/// Waits until `check` gives `want` on every base; panics after `within`. Returns how long.
async fn until_all<F, Fut>(bases: &[&str], want: u16, within: Duration, check: F) -> Duration
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let started = Instant::now();
    for base in bases {
        loop {
            let got = check((*base).to_owned()).await;
            if got == want {
                break;
            }
            assert!(started.elapsed() < within, "{base} still answers {got} after {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_end_sessions_and_deny_tokens_on_every_instance() {
    let redis = Redis::start();
    let (port_a, port_b) = (free_port(), free_port());
    let (a, b) = (format!("http://127.0.0.1:{port_a}"), format!("http://127.0.0.1:{port_b}"));
    let redirects = format!("{a}/oauth2/callback,{b}/oauth2/callback,{}", common::REDIRECT_URI);
    let idp = Idp::start(&[("REDIRECT_URIS", &redirects)]);
    let echo = Echo::start("app");
    let store = format!("store = \"redis\"\nredis_url = \"{}\"", redis.url());
    let gate_a = Gate::start_on(port_a, &config(&a, &idp, &echo, &store));
    let gate_b = Gate::start_on(port_b, &config(&b, &idp, &echo, &store));
    gate_a.wait_ready();
    gate_b.wait_ready();

    // alice signed in on both instances, bob on one; every session used (and cached) on both
    let alice_1 = sign_in(&a, "alice").await;
    let alice_2 = sign_in(&b, "alice").await;
    let bob = sign_in(&a, "bob").await;
    for base in [&a, &b] {
        for cookie in [&alice_1, &alice_2, &bob] {
            assert_eq!(with_cookie(base, cookie).await, 200);
        }
    }

    // the list: counts, times, provider; never a cookie or token
    let (status, list) = admin(&gate_b, "GET", &format!("/sessions?user={ALICE}"), Some(ONCALL_TOKEN));
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["count"], 2, "{list}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for s in list["sessions"].as_array().unwrap() {
        assert_eq!(s["provider"], "default");
        assert_eq!(s["id"].as_str().unwrap().len(), 16, "{s}");
        let (created, used, expires) = (
            s["created"].as_u64().unwrap(),
            s["last_used"].as_u64().unwrap(),
            s["expires"].as_u64().unwrap(),
        );
        assert!(created <= used && used <= now + 1 && now - created < 120 && expires > now + 3000, "{s}");
    }
    // last use moves with use, past an instance's 5 s reuse of a read
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(with_cookie(&a, &alice_1).await, 200);
    let (_, later) = admin(&gate_a, "GET", &format!("/sessions?user={ALICE}"), Some(ONCALL_TOKEN));
    assert!(
        later["sessions"].as_array().unwrap().iter().any(|s| s["last_used"].as_u64() > s["created"].as_u64()),
        "{later}"
    );
    let text = list.to_string();
    for secret in [&alice_1, &alice_2, &bob] {
        assert!(!text.contains(secret.as_str()), "a cookie value in the list");
    }
    let (code, out) = operator(&gate_a, &["sessions", "list", "--user", ALICE]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("{ALICE}: 2 session(s)")) && out.matches(" default ").count() == 2,
        "{out}"
    );
    let (code, out) = operator(&gate_a, &["sessions", "list", "--user", BOB]);
    assert!(code == 0 && out.contains("1 session(s)"), "{out}");

    // without the token, or with another, nothing is told or done
    assert_eq!(admin(&gate_a, "GET", &format!("/sessions?user={ALICE}"), None).0, 401);
    assert_eq!(
        admin(&gate_a, "POST", &format!("/sessions/revoke?user={ALICE}"), Some("x".repeat(48).as_str())).0,
        401
    );
    let (code, _, err) = common::authgate(
        &[
            "sessions",
            "revoke",
            "--user",
            ALICE,
            "--config",
            gate_a.dir.path().join("authgate.toml").to_str().unwrap(),
        ],
        &[],
        gate_a.dir.path(),
    );
    assert!(code != 0 && err.contains("admin_token_required"), "no token: refused ({err})");
    assert_eq!(with_cookie(&a, &alice_1).await, 200);

    // one session ended: exactly one of alice's cookies stops working, on both instances
    let one = list["sessions"][0]["id"].as_str().unwrap().to_owned();
    let (code, out) = operator(&gate_a, &["sessions", "revoke", "--user", ALICE, "--session", &one]);
    assert!(code == 0 && out.contains("ended 1 session(s)"), "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for base in [&a, &b] {
        let mut statuses = [with_cookie(base, &alice_1).await, with_cookie(base, &alice_2).await];
        statuses.sort();
        assert_eq!(statuses, [200, 401], "{base}");
    }
    let (code, out) = operator(&gate_a, &["sessions", "revoke", "--user", ALICE, "--session", &one]);
    assert!(code != 0 && out.contains("no_such_session"), "{out}");

    // sign out everywhere, through B: A, which holds her session cached (used just now),
    // refuses it within 1 s
    let still = if with_cookie(&a, &alice_1).await == 200 { &alice_1 } else { &alice_2 };
    assert_eq!(with_cookie(&a, still).await, 200);
    let (code, out) = operator(&gate_b, &["sessions", "revoke", "--user", ALICE]);
    assert!(code == 0 && out.contains("ended 1 session(s)"), "{out}");
    let took = until_all(&[&a, &b], 401, Duration::from_secs(1), |base| {
        let (c1, c2) = (alice_1.clone(), alice_2.clone());
        async move {
            // refused only when both are (one already is: the session ended above)
            let both = [with_cookie(&base, &c1).await, with_cookie(&base, &c2).await];
            if both == [401, 401] { 401 } else { 200 }
        }
    })
    .await;
    println!("sign-out everywhere reached both instances in {took:?}");
    for base in [&a, &b] {
        assert_eq!(with_cookie(base, &alice_1).await, 401);
        assert_eq!(with_cookie(base, &alice_2).await, 401);
        assert_eq!(with_cookie(base, &bob).await, 200, "bob's session is not alice's");
    }
    assert_eq!(admin(&gate_a, "GET", &format!("/sessions?user={ALICE}"), Some(ONCALL_TOKEN)).1["count"], 0);

    // her bearer token: refused on both within 1 s of `deny`, accepted again after the lift
    let token = common::login(&idp.issuer, "alice").await.access_token;
    let bob_token = common::login(&idp.issuer, "bob").await.access_token;
    for base in [&a, &b] {
        assert_eq!(with_bearer(base, &token).await, 200);
    }
    let (code, out) = operator(&gate_a, &["deny", "--user", ALICE, "--for", "1h"]);
    assert!(code == 0 && out.contains("refused until"), "{out}");
    let took = until_all(&[&a, &b], 401, Duration::from_secs(1), |base| {
        let token = token.clone();
        async move { with_bearer(&base, &token).await }
    })
    .await;
    println!("the deny-list entry reached both instances in {took:?}");
    assert_eq!(with_bearer(&b, &bob_token).await, 200, "only alice is denied");
    let (code, out) = operator(&gate_b, &["deny", "--user", ALICE, "--lift"]);
    assert!(code == 0 && out.contains("accepted again"), "{out}");
    until_all(&[&a, &b], 200, Duration::from_secs(1), |base| {
        let token = token.clone();
        async move { with_bearer(&base, &token).await }
    })
    .await;

    // the audit trail names the token's holder, the action and how many sessions
    let log = gate_a.log() + &gate_b.log();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("audit")).collect();
    assert!(
        audit.iter().any(|l| l.contains("oncall")
            && l.contains("sessions.revoke")
            && l.contains("session=\"*\"")
            && l.contains("sessions=1")),
        "{audit:#?}"
    );
    assert!(audit.iter().any(|l| l.contains("oncall") && l.contains("sessions.list")), "{audit:#?}");
    assert!(
        audit.iter().any(|l| l.contains("admin request refused") && l.contains("status=401")),
        "{audit:#?}"
    );
    assert!(audit.iter().any(|l| l.contains("oncall") && l.contains("action=\"deny\"")), "{audit:#?}");
    assert!(audit.iter().any(|l| l.contains("oncall") && l.contains("deny.lift")), "{audit:#?}");
    for secret in [token.as_str(), alice_1.as_str(), ONCALL_TOKEN] {
        assert!(!log.contains(secret), "a token or cookie in the log");
    }

    // a named token reloads too (`authgate reload` sends AUTHGATE_ADMIN_TOKEN)
    let (code, out) = operator(&gate_a, &["reload"]);
    assert!(code == 0 && out.contains("\"reloaded\":true"), "{out}");
    assert_eq!(admin(&gate_a, "POST", "/reload?user=x", Some(ONCALL_TOKEN)).0, 200, "a reload is a reload");
}

/// With the memory store an operator acts on this instance; without any admin token configured
/// session administration is closed to everyone.
#[tokio::test]
async fn the_memory_store_is_administered_too_and_never_without_a_token() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let idp = Idp::start(&[("REDIRECT_URIS", &format!("{base}/oauth2/callback"))]);
    let echo = Echo::start("app");
    let gate = Gate::start_on(port, &config(&base, &idp, &echo, ""));
    gate.wait_ready();
    let cookie = sign_in(&base, "alice").await;
    let (code, out) = operator(&gate, &["sessions", "list", "--user", ALICE]);
    assert!(code == 0 && out.contains("1 session(s)"), "{out}");
    let (code, out) = operator(&gate, &["sessions", "revoke", "--user", ALICE, "--provider", "nosuch"]);
    assert!(code != 0 && out.contains("unknown_provider"), "{out}");
    let (code, out) = operator(&gate, &["sessions", "revoke", "--user", ALICE, "--provider", "default"]);
    assert!(code == 0 && out.contains("ended 1 session(s)"), "{out}");
    assert_eq!(with_cookie(&base, &cookie).await, 401, "ended at once");

    // no admin token in the config: nobody
    let open = Gate::start(
        &config(&base, &idp, &echo, "")
            .replace(&format!("[server.admin_tokens]\noncall = \"{ONCALL_TOKEN}\"\n"), ""),
    );
    let (status, body) = admin(&open, "GET", &format!("/sessions?user={ALICE}"), Some(ONCALL_TOKEN));
    assert_eq!((status, body["error"].as_str()), (403, Some("admin_token_not_configured")));
    assert_eq!(open.admin_get("/healthz").0, 200, "probes stay open");
}
