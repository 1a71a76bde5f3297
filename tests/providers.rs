//! Several providers: the Calimatic-like test IdP as `[provider]` and a Keycloak-shaped one
//! (`PROFILE=keycloak`: groups, realm and client roles, no Calimatic claims) as
//! `[providers.partners]`, both started here. Group and role policies admit and refuse the right
//! users; a route that accepts one provider refuses the other's tokens and sessions; a route
//! that accepts both admits each, signing in through the chooser in a real Chromium.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use common::{Browser, Echo, Gate, Idp, echoed, free_port, login};

const ALICE: &str = "a1b2c3d4-0000-4000-8000-00000000a11c";
const KIM: &str = "7c1e2f3a-0000-4000-8000-0000000000k1";
const STAFF_HOOKS: &str = "staff-webhook-secret-0123456789abcdefghij";
const PARTNER_HOOKS: &str = "partner-webhook-secret-0123456789abcdefgh";

struct Stack {
    staff: Idp,
    partners: Idp,
    gate: Gate,
    _echo: Echo,
    base: String,
}

fn stack(gate_host: &str, idp_host: Option<&str>) -> Stack {
    let port = free_port();
    let base = format!("http://{gate_host}:{port}");
    let redirects = format!("{base}/oauth2/callback,{}", common::REDIRECT_URI);
    let logout = format!("{base}/");
    let mut env = vec![("REDIRECT_URIS", redirects.as_str()), ("POST_LOGOUT_REDIRECT_URIS", logout.as_str())];
    if let Some(h) = idp_host {
        env.push(("IDP_ISSUER_HOST", h));
    }
    let staff = Idp::start(&env);
    env.push(("PROFILE", "keycloak"));
    let partners = Idp::start(&env);
    let echo = Echo::start("app");
    let e = echo.url();
    let config = format!(
        r#"{tables}
[providers.partners]
issuer = "{partners}"
client_id = "authgate"
client_secret = "authgate-test-secret"
audience = "authgate"
display_name = "Partner login"
scopes = ["openid", "profile", "email"]

[providers.partners.webhooks]
secret = "{PARTNER_HOOKS}"

[webhooks]
secret = "{STAFF_HOOKS}"

[[routes]]
name = "staff"
path = "/staff"
upstream = "{e}"
auth = "any"
licenses = ["wiki"]

[[routes]]
name = "editors"
path = "/kc-editors"
upstream = "{e}"
auth = "any"
providers = ["partners"]
claims = [{{ claim = "groups", any = ["/staff/wiki-editors"] }}]

[[routes]]
name = "realm-admins"
path = "/kc-admin"
upstream = "{e}"
auth = "any"
providers = "partners"
claims = [{{ claim = "realm_access.roles", all = ["wiki-admin"] }}]

[[routes]]
name = "client-role"
path = "/kc-wiki"
upstream = "{e}"
auth = "api"
providers = "partners"
claims = [{{ claim = "resource_access.wiki.roles", any = ["editor"] }}]

[[routes]]
name = "both"
path = "/both"
upstream = "{e}"
auth = "any"
providers = ["default", "partners"]
"#,
        tables = common::gateway_tables(&base, &staff.issuer, ""),
        partners = partners.issuer,
    );
    let gate = Gate::start_on(port, &config);
    gate.wait_ready();
    Stack { staff, partners, gate, _echo: echo, base }
}

#[tokio::test]
async fn each_route_takes_the_providers_it_names_and_their_groups_and_roles() {
    let s = stack("127.0.0.1", None);
    let token = |issuer: String, user: &'static str| async move { login(&issuer, user).await.access_token };
    let alice = token(s.staff.issuer.clone(), "alice").await;
    let kim = token(s.partners.issuer.clone(), "kim").await;
    let lee = token(s.partners.issuer.clone(), "lee").await;
    let call = |path: &str, t: &str| {
        let r = s.gate.get("127.0.0.1", path, &[("Authorization", &format!("Bearer {t}"))]);
        let who = if r.status == 200 { echoed(&r.json(), "x-user-id") } else { Vec::new() };
        (r.status, who)
    };
    let cases: [(&str, &str, u16); 14] = [
        // a group (Keycloak's full path), realm and client roles of the Keycloak-shaped provider
        ("/kc-editors/x", &kim, 200),
        ("/kc-editors/x", &lee, 403),
        ("/kc-admin/x", &kim, 200),
        ("/kc-admin/x", &lee, 403),
        ("/kc-wiki/x", &kim, 200),
        ("/kc-wiki/x", &lee, 403),
        // a route that accepts one provider: the other's tokens are not tokens here
        ("/kc-editors/x", &alice, 401),
        ("/kc-admin/x", &alice, 401),
        ("/staff/x", &kim, 401),
        ("/staff/x", &lee, 401),
        ("/staff/x", &alice, 200),
        // a route that accepts both admits each, by the issuer its token names
        ("/both/x", &alice, 200),
        ("/both/x", &kim, 200),
        ("/both/x", &lee, 200),
    ];
    for (path, t, want) in cases {
        assert_eq!(call(path, t).0, want, "{path}");
    }
    assert_eq!(call("/both/x", &alice).1, [ALICE]);
    assert_eq!(call("/both/x", &kim).1, [KIM]);
    // an opaque token names no issuer, and no provider of the route introspects
    assert_eq!(call("/both/x", "an-opaque-token").0, 401);

    // a navigation to the shared route is redirected to the chooser (a redirect, never a page a
    // front proxy would read as "allowed"), which offers the route's providers
    let mut c = Browser::new();
    let r = c.request("GET", &format!("{}/both/x", s.base), None, &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(r.location(), "/oauth2/start?providers=default,partners&rd=%2Fboth%2Fx");
    let chooser = c.request("GET", &format!("{}{}", s.base, r.location()), None, &[]).await;
    assert_eq!(chooser.status, 200);
    assert!(chooser.body.contains("Choose how to sign in"), "{}", chooser.body);
    assert!(
        chooser
            .body
            .contains("href=\"/oauth2/start?provider=partners&amp;rd=%2Fboth%2Fx\">Partner login</a>"),
        "{}",
        chooser.body
    );

    // a session is bound to its provider: kim's is accepted where partners are, nowhere else
    let mut b = Browser::new();
    let (page, _) = b.navigate(&format!("{}/kc-editors/page", s.base), Some("kim")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(echoed(&page.json(), "x-user-id"), [KIM]);
    assert_eq!(echoed(&page.json(), "x-user-email"), ["kim@partner.test"]);
    let r = b.request("GET", &format!("{}/both/x", s.base), None, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(echoed(&r.json(), "x-user-id"), [KIM]);
    // her realm role holds for her session too
    assert_eq!(api_status(&mut b, &s.base, "/kc-admin/x").await, 200);
    // on the staff route it is no session: a navigation is sent to the staff provider
    let r = b.request("GET", &format!("{}/staff/x", s.base), None, &[]).await;
    assert_eq!(r.status, 302);
    assert!(r.location().starts_with(&format!("{}/auth?", s.staff.issuer)), "{}", r.location());
    let json = [("accept", "application/json"), ("sec-fetch-mode", "cors")];
    let r = b.request("GET", &format!("{}/staff/x", s.base), None, &json).await;
    assert_eq!(r.status, 401, "not a navigation: 401, and the session cookie stays");
    let r = b.request("GET", &format!("{}/kc-editors/x", s.base), None, &[]).await;
    assert_eq!(r.status, 200, "the partner session still works where it is accepted");
    // and the other way round: a staff session is no session on a partners-only route, and a
    // session on the route that accepts both
    let mut a = Browser::new();
    let (page, _) = a.navigate(&format!("{}/staff/page", s.base), Some("alice")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(api_status(&mut a, &s.base, "/kc-editors/x").await, 401);
    let r = a.request("GET", &format!("{}/kc-editors/x", s.base), None, &[]).await;
    assert!(r.location().starts_with(&format!("{}/auth?", s.partners.issuer)), "{}", r.location());
    let r = a.request("GET", &format!("{}/both/x", s.base), None, &[]).await;
    assert_eq!(echoed(&r.json(), "x-user-id"), [ALICE]);

    // a sign-in started for one provider cannot be completed by the other's answer: the state
    // names the provider, whose issuer must answer
    let start = Browser::new().request("GET", &format!("{}/staff/y", s.base), None, &[]).await;
    assert!(start.location().starts_with(&format!("{}/auth?", s.staff.issuer)));
    let start = Browser::new().request("GET", &format!("{}/kc-editors/y", s.base), None, &[]).await;
    assert!(start.location().starts_with(&format!("{}/auth?", s.partners.issuer)));
    // an unknown provider is refused at the start
    let r = Browser::new().request("GET", &format!("{}/oauth2/start?provider=nope", s.base), None, &[]).await;
    assert_eq!(r.status, 400);
    // the resource metadata of the shared route names both issuers
    let meta = s.gate.get("127.0.0.1", "/.well-known/oauth-protected-resource/both", &[]).json();
    assert_eq!(meta["authorization_servers"], serde_json::json!([s.staff.issuer, s.partners.issuer]));
}

/// The chooser in a real headless Chromium: a route accepting both providers offers both; the
/// user picks the partner login, signs in there, and lands where they started.
#[test]
fn a_real_browser_signs_in_through_the_chooser() {
    let s = stack("app.localhost", Some("idp.localhost"));
    let out = std::process::Command::new("node")
        .arg("e2e-chooser.mjs")
        .current_dir(common::repo().join("tests/idp"))
        .env("GATE_URL", &s.base)
        .env("APP_PATH", "/both/welcome")
        .env("CHOICE", "Partner login")
        .env("USER", "kim")
        .env("USER_SUB", KIM)
        .output()
        .expect("node runs the Chromium test");
    assert!(
        out.status.success(),
        "Chromium chooser test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("chooser ok"));
}

/// A request of a signed-in browser as a script makes it (not a navigation): the status.
async fn api_status(b: &mut Browser, base: &str, path: &str) -> u16 {
    let json = [("accept", "application/json"), ("sec-fetch-mode", "cors")];
    b.request("GET", &format!("{base}{path}"), None, &json).await.status
}

/// A signed `user.suspended` for `sub`, delivered to `path` signed with `secret`: the status.
async fn suspend(base: &str, path: &str, secret: &str, sub: &str, id: &str) -> u16 {
    use hmac::Mac;
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let body = serde_json::to_vec(&serde_json::json!({
        "id": id, "event": "user.suspended", "timestamp": now, "data": { "userId": sub },
    }))
    .unwrap();
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .header("x-webhook-signature", format!("sha256={hex}"))
        .body(body)
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

/// Webhooks are per provider: each endpoint has its provider's secret, and an event ends only
/// that provider's user, even under the same `sub`.
#[tokio::test]
async fn each_provider_has_its_own_webhooks() {
    let s = stack("127.0.0.1", None);
    let mut b = Browser::new();
    let (page, _) = b.navigate(&format!("{}/kc-editors/page", s.base), Some("kim")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(api_status(&mut b, &s.base, "/kc-editors/x").await, 200);
    // the staff endpoint refuses the partners' signature, and a staff event naming kim's `sub`
    // is about a staff user: kim stays signed in
    assert_eq!(suspend(&s.base, "/oauth2/webhooks", PARTNER_HOOKS, KIM, "e1").await, 401);
    assert_eq!(suspend(&s.base, "/oauth2/webhooks", STAFF_HOOKS, KIM, "e2").await, 200);
    assert_eq!(api_status(&mut b, &s.base, "/kc-editors/x").await, 200);
    // the partners' own endpoint, with their secret, ends her session
    assert_eq!(suspend(&s.base, "/oauth2/webhooks/partners", STAFF_HOOKS, KIM, "e3").await, 401);
    assert_eq!(suspend(&s.base, "/oauth2/webhooks/partners", PARTNER_HOOKS, KIM, "e4").await, 200);
    assert_eq!(api_status(&mut b, &s.base, "/kc-editors/x").await, 401);
}

#[test]
fn providers_are_validated_with_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[server]
public_url = "http://127.0.0.1:8080"
[providers.staff]
issuer = "https://staff.example.com"
client_id = "authgate"
audience = "authgate"
[providers.Partners]
issuer = "ftp://partners.example.com"
client_id = "authgate"
[providers.default]
issuer = "https://staff.example.com/"
client_id = "authgate"
[[routes]]
path = "/"
upstream = "http://127.0.0.1:3000"
auth = "api"
[[routes]]
path = "/p"
upstream = "http://127.0.0.1:3000"
auth = "api"
providers = ["staff", "nobody"]
"#;
    std::fs::write(dir.path().join("gate.toml"), text).unwrap();
    let (code, _, err) = common::authgate(&["check", "--config", "gate.toml"], &[], dir.path());
    assert_ne!(code, 0);
    for want in [
        "`providers.Partners`: a provider's name is 1 to 32 lower-case letters",
        "`providers.Partners.issuer`: must be an https URL",
        "`routes[0].providers`: several providers are configured and none is [provider]",
        "`routes[1].providers[1]`: no provider is named \"nobody\" (configured: Partners, default, staff)",
        "`providers.default`: \"default\" is [provider]'s name: write the table as [provider]",
        "`providers.staff.issuer`: is already the issuer of [providers.default]",
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
}
