//! Claim rules on any claim (Keycloak-shaped `groups`, `realm_access.roles`,
//! `resource_access.<client>.roles`) and e-mail rules, with real tokens and sessions from the
//! test IdP: the right users admitted and refused, for bearer tokens and signed-in browsers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use common::{Browser, Echo, Gate, Idp, echoed, free_port, login};

const ALICE: &str = "a1b2c3d4-0000-4000-8000-00000000a11c";

fn routes(echo: &Echo) -> String {
    let e = echo.url();
    format!(
        r#"
[[routes]]
name = "editors"
path = "/editors"
upstream = "{e}"
auth = "any"
claims = [{{ claim = "groups", any = ["wiki-editors"] }}]

[[routes]]
name = "realm-users"
path = "/realm-users"
upstream = "{e}"
auth = "api"
claims = [{{ claim = "realm_access.roles", all = ["user"] }}]
email_domains = ["acme.test"]

[[routes]]
name = "wiki-editor-role"
path = "/wiki-role"
upstream = "{e}"
auth = "api"
claims = [{{ claim = "/resource_access/wiki/roles", any = ["editor"] }}]

[[routes]]
name = "one-address"
path = "/one-address"
upstream = "{e}"
auth = "api"
emails = ["bob@ACME.test"]
"#
    )
}

#[tokio::test]
async fn claim_and_email_rules_admit_and_refuse_the_right_users() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let redirects = format!("{base}/oauth2/callback,{}", common::REDIRECT_URI);
    let idp =
        Idp::start(&[("REDIRECT_URIS", &redirects), ("POST_LOGOUT_REDIRECT_URIS", &format!("{base}/"))]);
    let echo = Echo::start("app");
    let config = format!("{}{}", common::gateway_tables(&base, &idp.issuer, ""), routes(&echo));
    let gate = Gate::start_on(port, &config);
    gate.wait_ready();

    let token = |user: &'static str| {
        let issuer = idp.issuer.clone();
        async move { login(&issuer, user).await.access_token }
    };
    let (alice, bob, carol) = (token("alice").await, token("bob").await, token("carol").await);
    let call = |path: &str, t: &str| {
        gate.get("127.0.0.1", path, &[("Authorization", &format!("Bearer {t}"))]).status
    };
    let cases = [
        ("/editors/x", &alice, 200),
        ("/editors/x", &bob, 403),
        ("/editors/x", &carol, 403),
        ("/realm-users/x", &alice, 200),
        ("/realm-users/x", &bob, 200),
        // no realm_access, and an e-mail address the IdP never verified
        ("/realm-users/x", &carol, 403),
        ("/wiki-role/x", &alice, 200),
        ("/wiki-role/x", &bob, 403),
        ("/one-address/x", &bob, 200),
        ("/one-address/x", &alice, 403),
    ];
    for (path, t, want) in cases {
        assert_eq!(call(path, t), want, "{path}");
    }

    // a signed-in browser is judged on its session's tokens the same way
    let mut a = Browser::new();
    let (page, _) = a.navigate(&format!("{base}/editors/page"), Some("alice")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(echoed(&page.json(), "x-user-id"), [ALICE]);
    let mut b = Browser::new();
    let (page, _) = b.navigate(&format!("{base}/editors/page"), Some("bob")).await;
    assert_eq!(page.status, 403, "signed in, refused, never a login loop");
}

#[test]
fn claim_rules_are_validated_with_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[server]
public_url = "http://127.0.0.1:8080"
[provider]
issuer = "https://auth.example.com"
client_id = "authgate"
audience = "authgate"
[[routes]]
path = "/"
upstream = "http://127.0.0.1:3000"
auth = "api"
claims = [{ claim = "realm_access..roles", any = ["user"] }, { claim = "groups" }]
email_domains = ["*.acme.test"]
"#;
    std::fs::write(dir.path().join("gate.toml"), text).unwrap();
    let (code, _, err) = common::authgate(&["check", "--config", "gate.toml"], &[], dir.path());
    assert_ne!(code, 0);
    for want in [
        "`routes[0].claims[0].claim`: \"realm_access..roles\" is not a claim path",
        "`routes[0].claims[1]`: needs `any` or `all` values",
        "`routes[0].email_domains[0]`: \"*.acme.test\" is not a domain",
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
}
