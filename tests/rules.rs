//! Rules inside a route, end to end with the test IdP: a public health check, webhooks public
//! for POST only, a stricter admin area, CORS preflights through without credentials, allowed
//! and denied networks behind a trusted proxy; and their config errors with key and line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use common::{Browser, Echo, Gate, Idp, echoed, free_port, login};

const ALICE: &str = "a1b2c3d4-0000-4000-8000-00000000a11c";

fn routes(echo: &Echo) -> String {
    let e = echo.url();
    format!(
        r#"
[[routes]]
name = "wiki"
path = "/"
upstream = "{e}"
auth = "any"
licenses = ["wiki"]
cors_preflight = true
allow_networks = ["198.51.100.0/24"]
deny_networks = ["203.0.113.0/24"]

[[routes.rules]]
paths = ["/health"]
access = "public"

[[routes.rules]]
methods = ["POST"]
paths = ["/hooks/*"]
access = "public"

[[routes.rules]]
paths = ["/hooks/*"]
access = "deny"

[[routes.rules]]
paths = ["/admin/*"]
permissions = ["org:manage"]
"#
    )
}

/// The client the trusted proxy (the test) speaks for, unless a request names another.
const OUTSIDE: &str = "192.0.2.50";

fn get(gate: &Gate, path: &str, headers: &[(&str, &str)]) -> common::Response {
    let mut all = headers.to_vec();
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("x-forwarded-for")) {
        all.push(("X-Forwarded-For", OUTSIDE));
    }
    gate.get("127.0.0.1", path, &all)
}

fn post(gate: &Gate, path: &str, headers: &str) -> common::Response {
    gate.raw(&format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: {OUTSIDE}\r\n{headers}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    ))
}

#[tokio::test]
async fn rules_networks_and_preflights_judge_requests_before_sign_in() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let redirects = format!("{base}/oauth2/callback,{}", common::REDIRECT_URI);
    let idp =
        Idp::start(&[("REDIRECT_URIS", &redirects), ("POST_LOGOUT_REDIRECT_URIS", &format!("{base}/"))]);
    let echo = Echo::start("app");
    // the test client is the trusted proxy: its X-Forwarded-For names the client
    let tables = common::gateway_tables(&base, &idp.issuer, "")
        .replace("public_url =", "trusted_proxies = [\"127.0.0.1/32\"]\npublic_url =");
    let gate = Gate::start_on(port, &format!("{tables}{}", routes(&echo)));
    gate.wait_ready();

    // the health check is public, and a forged identity header never reaches the app
    let r = get(&gate, "/health", &[("X-User-Id", "forged")]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["path"], "/health");
    assert!(echoed(&r.json(), "x-user-id").is_empty());
    // whatever its case (paths are case-insensitive by default) and with a trailing slash
    assert_eq!(get(&gate, "/HEALTH/", &[]).status, 200);
    // only the health check: the rest of the app needs sign-in
    assert_eq!(get(&gate, "/healthz", &[]).status, 401);

    // webhooks: POST is public, anything else is refused, signed in or not
    let r = post(&gate, "/hooks/github", "Content-Type: application/json\r\n");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["method"], "POST");
    assert_eq!(get(&gate, "/hooks/github", &[]).status, 403);
    // a method override would make the public POST run as another method
    let r = post(&gate, "/hooks/github", "X-HTTP-Method-Override: DELETE\r\n");
    assert_eq!(r.status, 400);
    // a `.json` spelling is the same path to Rails and Spring: still refused
    assert_eq!(get(&gate, "/hooks/github.json", &[]).status, 403);
    let alice_token = login(&idp.issuer, "alice").await.access_token;
    let bearer = format!("Bearer {alice_token}");
    let r = get(&gate, "/Hooks/github", &[("Authorization", &bearer)]);
    assert_eq!(r.status, 403, "a denying rule holds for everyone");
    assert!(!String::from_utf8_lossy(&r.body).contains("\"backend\""), "the app is never reached");

    // the admin area is stricter: bob has the wiki license but not org:manage
    let bob_token = login(&idp.issuer, "bob").await.access_token;
    let bob_bearer = format!("Bearer {bob_token}");
    assert_eq!(get(&gate, "/wiki/page", &[("Authorization", &bob_bearer)]).status, 200);
    assert_eq!(get(&gate, "/admin/users", &[("Authorization", &bob_bearer)]).status, 403);
    assert_eq!(get(&gate, "/admin", &[("Authorization", &bob_bearer)]).status, 403);
    assert_eq!(get(&gate, "/admin.json", &[("Authorization", &bob_bearer)]).status, 403);
    assert_eq!(get(&gate, "/ADMIN/users", &[("Authorization", &bob_bearer)]).status, 403);
    let r = get(&gate, "/admin/users", &[("Authorization", &bearer)]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(echoed(&r.json(), "x-user-id"), [ALICE]);
    // and so for a signed-in browser: bob sees the wiki, not the admin area (403, no login loop)
    let mut b = Browser::new().with_header("x-forwarded-for", OUTSIDE);
    let (page, _) = b.navigate(&format!("{base}/wiki/start"), Some("bob")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let (page, _) = b.navigate(&format!("{base}/admin/users"), None).await;
    assert_eq!(page.status, 403);

    // a real CORS preflight reaches the app without credentials; any other OPTIONS does not
    let preflight = |extra: &str| {
        gate.raw(&format!(
            "OPTIONS /api/items HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 192.0.2.50\r\nOrigin: https://ui.example.com\r\n{extra}Connection: close\r\n\r\n"
        ))
    };
    let r = preflight("Access-Control-Request-Method: PUT\r\n");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["method"], "OPTIONS");
    assert_eq!(preflight("").status, 401, "OPTIONS without Access-Control-Request-Method");
    let r = gate.raw("OPTIONS /api/items HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 192.0.2.50\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 401);

    // an allowed network passes without sign-in and without identity headers, even carrying a
    // session: the app sees an anonymous request
    let session = b.cookie(&base, "authgate_session").unwrap();
    let cookie = format!("authgate_session={session}");
    let r = get(&gate, "/wiki/page", &[("X-Forwarded-For", "198.51.100.7"), ("Cookie", &cookie)]);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(echoed(&r.json(), "x-user-id").is_empty());
    let r = get(&gate, "/wiki/page", &[("X-Forwarded-For", "198.51.100.7"), ("Authorization", &bearer)]);
    assert_eq!(r.status, 200);
    assert!(echoed(&r.json(), "x-user-id").is_empty());
    // the admin area stays stricter from the allowed network: sign-in needed
    let r = get(&gate, "/admin/users", &[("X-Forwarded-For", "198.51.100.7")]);
    assert_eq!(r.status, 401);
    // a denied network is refused everywhere, the public health check included
    for path in ["/health", "/wiki/page"] {
        let r = get(&gate, path, &[("X-Forwarded-For", "203.0.113.5"), ("Authorization", &bearer)]);
        assert_eq!(r.status, 403, "{path}");
    }
    // the address judged is the client's as the trusted proxy reports it, not the proxy's own
    let r = get(&gate, "/wiki/page", &[("X-Forwarded-For", "192.0.2.1")]);
    assert_eq!(r.status, 401);
    // and when the trusted proxy names no client, the address is unknown: refused where
    // networks are denied, never judged as the proxy's own
    assert_eq!(gate.get("127.0.0.1", "/health", &[]).status, 403);
    assert_eq!(gate.get("127.0.0.1", "/health", &[("X-Forwarded-For", "garbage")]).status, 403);
    let metrics = gate.admin_get("/metrics").1;
    assert!(metrics.contains("decision=\"denied_by_rule\""), "{metrics}");
    assert!(metrics.contains("decision=\"network_denied\""), "{metrics}");
}

#[test]
fn rules_are_validated_with_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[server]
public_url = "http://127.0.0.1:8080"
[provider]
issuer = "https://auth.example.com"
client_id = "authgate"
audience = "authgate"
[[routes]]
path = "/app"
upstream = "http://127.0.0.1:3000"
auth = "browser"
[[routes.rules]]
methods = ["get"]
paths = ["/app/a/../b"]
access = "public"
[[routes.rules]]
paths = ["/other/*"]
access = "deny"
[[routes.rules]]
paths = ["/app/admin/*"]
access = "public"
permissions = ["admin"]
[[routes.rules]]
paths = ["/app/x"]
[[routes.rules]]
access = "deny"
[[routes.rules]]
paths = ["/app/**x"]
licenses = ["wiki"]
[[routes.rules]]
paths = ["/app/*"]
access = "public"
"#;
    std::fs::write(dir.path().join("gate.toml"), text).unwrap();
    let (code, _, err) = common::authgate(&["check", "--config", "gate.toml"], &[], dir.path());
    assert_ne!(code, 0);
    for want in [
        ":13:12: `routes[0].rules[0].methods[0]`: methods are upper case: write \"GET\"",
        ":14:10: `routes[0].rules[0].paths[0]`: \"/app/a/../b\" is not in normal form",
        ":17:10: `routes[0].rules[1].paths[0]`: \"/other/*\" is outside the route's path",
        ":22:1: `routes[0].rules[2].permissions`: a rule with `access` applies no policy",
        "`routes[0].rules[3]`",
        "needs `access = \"public\"`, `access = \"deny\"` or policy keys",
        "`routes[0].rules[4]`",
        "matches every request",
        ":28:10: `routes[0].rules[5].paths[0]`: \"/app/**x\": `**` must be a whole segment",
        ":31:10: `routes[0].rules[6].paths[0]`: \"/app/*\" covers the whole route",
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
}
