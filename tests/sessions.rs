//! Token lifecycle and scale-out against the real test IdP and a real `redis-server`: race-free
//! refresh with rotating refresh tokens, the token-endpoint budget under 429s, and sessions
//! shared by two authgate instances through Redis (sign-out, restarts, Redis outages).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use std::time::{Duration, Instant};

use common::{Browser, Echo, Gate, Idp, Redis, echoed, free_port};

const BOB: &str = "b0b0b0b0-0000-4000-8000-000000000b0b";

/// authgate's config for one instance at `base`; `store` is the `[session]` store setting.
fn config(base: &str, idp: &Idp, echo: &Echo, store: &str) -> String {
    format!(
        r#"{tables}
[[routes]]
name = "app"
path = "/app"
upstream = "{echo}"
auth = "browser"
pass_access_token = true

[[routes]]
name = "public"
path = "/public"
upstream = "{echo}"
auth = "public"
"#,
        tables = common::gateway_tables(base, &idp.issuer, store),
        echo = echo.url()
    )
}

/// An IdP that knows the callback and post-logout addresses of every base in `bases`.
fn idp_for(bases: &[String], extra: &[(&str, &str)]) -> Idp {
    let redirects = bases.iter().map(|b| format!("{b}/oauth2/callback")).collect::<Vec<_>>().join(",");
    let logouts = bases.iter().map(|b| format!("{b}/")).collect::<Vec<_>>().join(",");
    let mut env =
        vec![("REDIRECT_URIS", redirects.as_str()), ("POST_LOGOUT_REDIRECT_URIS", logouts.as_str())];
    env.extend_from_slice(extra);
    Idp::start(&env)
}

fn base_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// One gateway on a free port (`session` lines in its `[session]`, `server` lines in its
/// `[server]`) with its own IdP (started with `idp_env`) and echo app, ready.
struct Single {
    base: String,
    idp: Idp,
    gate: Gate,
    echo: Echo,
}

fn single(idp_env: &[(&str, &str)], session: &str, server: &str) -> Single {
    let port = free_port();
    let base = base_url(port);
    let idp = idp_for(std::slice::from_ref(&base), idp_env);
    let echo = Echo::start("app");
    let text = config(&base, &idp, &echo, session).replace("[server]\n", &format!("[server]\n{server}\n"));
    let gate = Gate::start_on(port, &text);
    gate.wait_ready();
    Single { base, idp, gate, echo }
}

/// Signs bob in through `base` and returns the session cookie's value.
async fn sign_in(base: &str) -> String {
    let mut b = Browser::new();
    let (page, redirects) = b.navigate(&format!("{base}/app/"), Some("bob")).await;
    assert_eq!(page.status, 200, "{redirects:?} {}", page.body);
    b.cookie(base, "authgate_session").expect("a session cookie")
}

/// A non-navigation request with the session cookie: (status, echoed JSON when 200).
async fn call(client: &reqwest::Client, base: &str, cookie: &str) -> (u16, serde_json::Value) {
    let resp = client
        .get(format!("{base}/app/data"))
        .header("cookie", format!("authgate_session={cookie}"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

fn bearer(seen: &serde_json::Value) -> String {
    echoed(seen, "authorization").first().cloned().unwrap_or_default()
}

/// 50 requests at once on a session whose access token is due: all succeed, and together they
/// cause exactly one refresh at the IdP.
async fn fifty_at_once(client: &reqwest::Client, bases: &[&str], cookie: &str) -> Vec<String> {
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (client, base, cookie) = (client.clone(), bases[i % bases.len()].to_owned(), cookie.to_owned());
        tasks.push(tokio::spawn(async move { call(&client, &base, &cookie).await }));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        let (status, seen) = t.await.unwrap();
        assert_eq!(status, 200, "{seen}");
        assert_eq!(echoed(&seen, "x-user-id"), [BOB]);
        tokens.push(bearer(&seen));
    }
    tokens
}

#[tokio::test]
async fn concurrent_requests_share_one_refresh_and_keep_the_rotated_token() {
    // 6 s access tokens: refreshed in their last 3 s (half their lifetime)
    let Single { base, idp, gate, echo: _echo } = single(&[("AT_TTL", "6")], "", "");
    let client = reqwest::Client::new();

    let cookie = sign_in(&base).await;
    let (status, seen) = call(&client, &base, &cookie).await;
    assert_eq!(status, 200);
    let first = bearer(&seen);
    assert!(first.starts_with("Bearer ey"), "{first}");
    assert_eq!(idp.token_calls("refresh_token", "ok").await, 0, "nothing is due yet");

    tokio::time::sleep(Duration::from_millis(3500)).await;
    let tokens = fifty_at_once(&client, &[&base], &cookie).await;
    assert_eq!(idp.token_calls("refresh_token", "ok").await, 1, "exactly one refresh reached the IdP");
    let new_ones = tokens.iter().filter(|t| **t == tokens[0] && **t != first).count();
    assert_eq!(new_ones, 50, "every request used the one new token");

    // the rotated refresh token was kept: the next refresh succeeds (the spent one would be
    // refused with invalid_grant, and oidc-provider would revoke the whole grant)
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (status, seen) = call(&client, &base, &cookie).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(idp.token_calls("refresh_token", "ok").await, 2);
    assert_eq!(idp.token_calls("refresh_token", "invalid_grant").await, 0);
    assert_ne!(bearer(&seen), tokens[0]);
    let metrics = gate.admin_get("/metrics").1;
    assert!(metrics.contains(r#"authgate_refreshes_total{outcome="refreshed"} 2"#), "{metrics}");
    assert!(
        metrics.contains(r#"authgate_token_requests_total{grant="refresh_token",outcome="ok"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_grant_the_idp_forgot_ends_the_session() {
    let Single { base, mut idp, gate: _gate, echo: _echo } = single(&[("AT_TTL", "6")], "", "");
    let client = reqwest::Client::new();
    let cookie = sign_in(&base).await;
    assert_eq!(call(&client, &base, &cookie).await.0, 200);

    // the IdP keeps grants in memory: after a restart the refresh token is unknown
    let redirects = format!("{base}/oauth2/callback");
    let logout = format!("{base}/");
    idp.restart(&[("AT_TTL", "6"), ("REDIRECT_URIS", &redirects), ("POST_LOGOUT_REDIRECT_URIS", &logout)]);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (status, _) = call(&client, &base, &cookie).await;
    assert_eq!(status, 401, "an API call on an ended session gets 401");
    assert_eq!(idp.token_calls("refresh_token", "invalid_grant").await, 1);
    // a browser navigation is sent to sign in again
    let mut b = Browser::new();
    b.set_cookie(&base, "authgate_session", &cookie);
    let page = b.request("GET", &format!("{base}/app/"), None, &[]).await;
    assert_eq!(page.status, 302);
    assert!(page.location().starts_with(&format!("{}/auth?", idp.issuer)), "{}", page.location());
}

#[tokio::test]
async fn a_throttled_token_endpoint_delays_but_never_fails_users() {
    let Single { base, idp, gate, echo: _echo } = single(&[("AT_TTL", "10")], "", "");
    let client = reqwest::Client::new();

    // the code exchange meets a 429: it is retried after Retry-After, within the code's life
    idp.throttle_token_endpoint(1, 2).await;
    let started = Instant::now();
    let cookie = sign_in(&base).await;
    assert!(started.elapsed() >= Duration::from_secs(2), "Retry-After was honoured");
    assert_eq!(idp.token_calls("any", "throttled").await, 1);
    assert_eq!(idp.token_calls("authorization_code", "ok").await, 1);
    let (status, seen) = call(&client, &base, &cookie).await;
    assert_eq!(status, 200);
    let first = bearer(&seen);

    // a refresh meets a 429: deferred, and the still-valid token keeps working meanwhile
    tokio::time::sleep(Duration::from_millis(5500)).await;
    idp.throttle_token_endpoint(1, 2).await;
    let (status, seen) = call(&client, &base, &cookie).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(bearer(&seen), first, "the current token is used while the refresh waits");
    assert_eq!(idp.token_calls("any", "throttled").await, 2);
    let (status, _) = call(&client, &base, &cookie).await;
    assert_eq!(status, 200);
    assert_eq!(idp.token_calls("any", "throttled").await, 2, "no retry before Retry-After");

    // after Retry-After the refresh goes through
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, seen) = call(&client, &base, &cookie).await;
    assert_eq!(status, 200);
    assert_ne!(bearer(&seen), first);
    assert_eq!(idp.token_calls("refresh_token", "ok").await, 1);
    let metrics = gate.admin_get("/metrics").1;
    assert!(metrics.contains(r#"authgate_refreshes_total{outcome="deferred"} 1"#), "{metrics}");
    assert!(
        metrics
            .contains(r#"authgate_token_requests_total{grant="authorization_code",outcome="throttled"} 1"#),
        "{metrics}"
    );
}

fn redis_store(redis: &Redis) -> String {
    format!("store = \"redis\"\nredis_url = \"{}\"", redis.url())
}

#[tokio::test]
async fn two_instances_share_sessions_through_redis() {
    let redis = Redis::start();
    let (port_a, port_b) = (free_port(), free_port());
    let (a, b) = (base_url(port_a), base_url(port_b));
    let idp = idp_for(&[a.clone(), b.clone()], &[]);
    let echo = Echo::start("app");
    let gate_a = Gate::start_on(port_a, &config(&a, &idp, &echo, &redis_store(&redis)));
    let gate_b = Gate::start_on(port_b, &config(&b, &idp, &echo, &redis_store(&redis)));
    gate_a.wait_ready();
    gate_b.wait_ready();
    let client = reqwest::Client::new();

    // signed in through A, used through B
    let cookie = sign_in(&a).await;
    let (status, seen) = call(&client, &b, &cookie).await;
    assert_eq!(status, 200);
    assert_eq!(echoed(&seen, "x-user-id"), [BOB]);
    let keys = redis.cli(&["--scan", "--pattern", "authgate:*"]);
    assert!(keys.contains("authgate:s:") && keys.contains("authgate:u:"), "{keys}");
    let dump =
        redis.cli(&["--scan"]) + &redis.cli(&["HGETALL", keys.lines().find(|k| k.contains(":s:")).unwrap()]);
    assert!(!dump.contains(BOB) && !dump.contains("bob@") && !dump.contains(&cookie), "plaintext in Redis");

    // both restarted: the session is still there
    drop(gate_a);
    drop(gate_b);
    let gate_a = Gate::start_on(port_a, &config(&a, &idp, &echo, &redis_store(&redis)));
    let gate_b = Gate::start_on(port_b, &config(&b, &idp, &echo, &redis_store(&redis)));
    gate_a.wait_ready();
    gate_b.wait_ready();
    assert_eq!(call(&client, &a, &cookie).await.0, 200);
    assert_eq!(call(&client, &b, &cookie).await.0, 200);

    // signed out through B: A (which has the session cached) refuses it within a second
    let mut browser = Browser::new();
    browser.set_cookie(&b, "authgate_session", &cookie);
    let out = browser.request("POST", &format!("{b}/oauth2/sign_out"), Some(vec![]), &[("origin", &b)]).await;
    assert_eq!(out.status, 302);
    let signed_out = Instant::now();
    loop {
        let (status, _) = call(&client, &a, &cookie).await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(signed_out.elapsed() < Duration::from_secs(1), "A still accepts the session after 1 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(call(&client, &b, &cookie).await.0, 401);
}

#[tokio::test]
async fn two_instances_refresh_a_session_once() {
    let redis = Redis::start();
    let (port_a, port_b) = (free_port(), free_port());
    let (a, b) = (base_url(port_a), base_url(port_b));
    let idp = idp_for(&[a.clone(), b.clone()], &[("AT_TTL", "6")]);
    let echo = Echo::start("app");
    let gate_a = Gate::start_on(port_a, &config(&a, &idp, &echo, &redis_store(&redis)));
    let gate_b = Gate::start_on(port_b, &config(&b, &idp, &echo, &redis_store(&redis)));
    gate_a.wait_ready();
    gate_b.wait_ready();
    let client = reqwest::Client::new();
    let cookie = sign_in(&a).await;
    let first = bearer(&call(&client, &b, &cookie).await.1);

    tokio::time::sleep(Duration::from_millis(3500)).await;
    let tokens = fifty_at_once(&client, &[&a, &b], &cookie).await;
    assert_eq!(idp.token_calls("refresh_token", "ok").await, 1, "one refresh for both instances");
    // the other instance goes on with the still-valid token rather than wait for the refresh
    let renewed: Vec<&String> = tokens.iter().filter(|t| **t != first).collect();
    assert!(!renewed.is_empty() && renewed.iter().all(|t| *t == renewed[0]), "more than one new token");
    let (status, seen) = call(&client, &b, &cookie).await;
    assert_eq!(status, 200);
    assert_eq!(bearer(&seen), *renewed[0], "instance B uses the tokens A stored");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(call(&client, &b, &cookie).await.0, 200);
    assert_eq!(idp.token_calls("refresh_token", "ok").await, 2, "the rotated token was shared");
    assert_eq!(idp.token_calls("refresh_token", "invalid_grant").await, 0);
}

#[tokio::test]
async fn a_redis_outage_gives_503_for_sessions_and_heals_by_itself() {
    let mut redis = Redis::start();
    let Single { base, gate, idp: _idp, echo: _echo } = single(&[], &redis_store(&redis), "");
    let client = reqwest::Client::new();
    let cookie = sign_in(&base).await;
    assert_eq!(call(&client, &base, &cookie).await.0, 200);

    redis.stop();
    let stopped = Instant::now();
    loop {
        let (status, _) = call(&client, &base, &cookie).await;
        if status == 503 {
            break;
        }
        assert_eq!(status, 200);
        assert!(stopped.elapsed() < Duration::from_secs(3), "sessions still served without Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = Browser::new().request("GET", &format!("{base}/app/"), None, &[]).await;
    assert_eq!(page.status, 503, "a browser gets a 503 page, not a login loop");
    assert!(page.body.contains("try again"), "{}", page.body);
    let public = client.get(format!("{base}/public/x")).send().await.unwrap();
    assert_eq!(public.status(), 200, "public routes do not need Redis");
    let ready = gate.admin_get("/readyz");
    assert_eq!(ready.0, 503);
    assert!(ready.1.contains(r#""session_store":{"error""#), "{}", ready.1);

    redis.restart();
    let restarted = Instant::now();
    loop {
        let (status, seen) = call(&client, &base, &cookie).await;
        if status == 200 {
            assert_eq!(echoed(&seen, "x-user-id"), [BOB]);
            break;
        }
        assert!(restarted.elapsed() < Duration::from_secs(10), "no recovery: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gate.wait_ready();
}

#[tokio::test]
async fn sessions_work_over_mutual_tls_with_a_private_ca_and_never_with_an_unchecked_certificate() {
    let redis = Redis::start_tls();
    assert!(redis.url().starts_with("rediss://"));
    let ports = [free_port(), free_port(), free_port()];
    let bases = ports.map(base_url);
    let idp = idp_for(&bases, &[]);
    let echo = Echo::start("app");
    let (cert, key) = redis.client_files();
    let ca = format!("redis_ca_file = \"{}\"", redis.ca_file().display());
    let client = format!(
        "redis_client_cert_file = \"{}\"\nredis_client_key_file = \"{}\"",
        cert.display(),
        key.display()
    );
    let store = |tls: &str| format!("store = \"redis\"\nredis_url = \"{}\"\n{tls}", redis.url());
    let gate = Gate::start_on(ports[0], &config(&bases[0], &idp, &echo, &store(&format!("{ca}\n{client}"))));
    gate.wait_ready();
    let cookie = sign_in(&bases[0]).await;
    let (status, seen) = call(&reqwest::Client::new(), &bases[0], &cookie).await;
    assert_eq!(status, 200);
    assert_eq!(echoed(&seen, "x-user-id"), [BOB]);
    let keys = redis.cli(&["--scan", "--pattern", "authgate:s:*"]);
    assert!(!keys.trim().is_empty(), "the session is in the TLS Redis");

    // without the CA, the server's certificate is refused; without a client certificate, the
    // server refuses authgate: either way no session is served and readiness says why
    for (port, base, tls, why) in [
        (ports[1], &bases[1], client.clone(), "invalid peer certificate: UnknownIssuer"),
        (ports[2], &bases[2], ca.clone(), "CertificateRequired"),
    ] {
        let other = Gate::start_on(port, &config(base, &idp, &echo, &store(&tls)));
        let started = Instant::now();
        let ready = loop {
            let request = "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
            let answer = common::try_raw(other.admin_port, request)
                .map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()));
            match answer {
                Ok(r) if r.1.contains(r#""session_store":{"error""#) => break r,
                _ if started.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                r => panic!("the store check never failed: {r:?}"),
            }
        };
        assert_eq!(ready.0, 503, "{}", ready.1);
        assert!(ready.1.contains(why), "{why}: {}", ready.1);
        let page = Browser::new().request("GET", &format!("{base}/app/"), None, &[]).await;
        assert_eq!(page.status, 503, "no sign-in without the store: {}", page.body);
    }

    // and `#insecure` (no certificate check at all) is refused before it can start
    let insecure = format!("store = \"redis\"\nredis_url = \"{}/#insecure\"", redis.url());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("authgate.toml");
    std::fs::write(&file, config(&bases[1], &idp, &echo, &insecure)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("session.redis_url") && stderr.contains("#insecure"), "{stderr}");
}

#[tokio::test]
async fn hundreds_of_forged_session_cookies_cost_a_few_store_reads() {
    let redis = Redis::start();
    let Single { base, gate: _gate, idp: _idp, echo: _echo } = single(&[], &redis_store(&redis), "");
    let client = reqwest::Client::new();
    let cookie = sign_in(&base).await;
    // every Redis command but the test's own INFO and the change channel's heartbeat
    let commands = || -> u64 {
        redis
            .cli(&["INFO", "commandstats"])
            .lines()
            .filter(|l| {
                l.starts_with("cmdstat_")
                    && !l.starts_with("cmdstat_info:")
                    && !l.starts_with("cmdstat_ping:")
            })
            .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
            .sum()
    };
    // ticket-shaped values (43 base64url characters), so each would be a store read
    let forged: Vec<String> = (0..500).map(|i| format!("authgate_session={i:042}A")).collect();
    let before = commands();
    let resp = client
        .get(format!("{base}/app/data"))
        .header("accept", "application/json")
        .header("cookie", forged.join("; "))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let spent = commands() - before;
    // a session read is one or two commands; 4 values are looked at (500 would be ~1000)
    assert!(spent <= 10, "{spent} Redis commands for one request");
    // the signed-in user, whose cookie a browser sends first, is not disturbed
    let resp = client
        .get(format!("{base}/app/data"))
        .header("cookie", format!("authgate_session={cookie}; {}", forged.join("; ")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn anonymous_visits_cannot_fill_the_store_with_sign_ins() {
    let Single { base, idp, gate, echo: _echo } = single(&[], "max_pending_logins = 3", "");
    let cookie = sign_in(&base).await; // the first of the three
    for _ in 0..2 {
        let visit = Browser::new().request("GET", &format!("{base}/app/page"), None, &[]).await;
        assert_eq!(visit.status, 302, "{}", visit.body);
        assert!(visit.location().starts_with(&idp.issuer), "{}", visit.location());
    }
    let refused = Browser::new().request("GET", &format!("{base}/app/page"), None, &[]).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("Too many sign-ins"), "{}", refused.body);
    let retry: u64 = refused.header_all("retry-after").first().and_then(|v| v.parse().ok()).unwrap();
    assert!((1..=3600).contains(&retry), "Retry-After {retry}");
    // whoever is signed in already is not affected
    let (status, seen) = call(&reqwest::Client::new(), &base, &cookie).await;
    assert_eq!(status, 200);
    assert_eq!(echoed(&seen, "x-user-id"), [BOB]);
    let metrics = gate.admin_get("/metrics").1;
    assert!(metrics.contains(r#"authgate_logins_total{outcome="throttled"} 1"#), "{metrics}");
}

#[tokio::test]
async fn one_client_cannot_spend_everyone_s_sign_ins() {
    // behind a trusted load balancer (this test), clients are told apart by X-Forwarded-For
    let proxies = "trusted_proxies = [\"127.0.0.0/8\"]";
    let Single { base, idp, gate: _gate, echo: _echo } = single(&[], "max_pending_logins = 40", proxies);
    let visit = |client: &'static str| {
        let base = base.clone();
        async move {
            let page = format!("{base}/app/page");
            Browser::new().request("GET", &page, None, &[("x-forwarded-for", client)]).await
        }
    };
    // a twentieth of 40 is 2, but every client may start at least 10
    for _ in 0..10 {
        assert_eq!(visit("203.0.113.7").await.status, 302);
    }
    let refused = visit("203.0.113.7").await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("Too many sign-ins"));
    let other = visit("198.51.100.4").await;
    assert_eq!(other.status, 302, "another client still signs in: {}", other.body);
    assert!(other.location().starts_with(&idp.issuer));
}
