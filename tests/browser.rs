//! Browser sign-in over HTTP against the real test IdP: the whole flow with a cookie jar, the
//! license decision, sign-out, and the attacks on cookies, state and return-to addresses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use common::{Browser, Echo, Gate, Idp, echoed, free_port};

const BOB: &str = "b0b0b0b0-0000-4000-8000-000000000b0b";

struct Stack {
    idp: Idp,
    _gate: Gate,
    _echo: Echo,
    base: String,
}

fn stack(idp_env: &[(&str, &str)]) -> Stack {
    stack_with(idp_env, "authgate-test-secret")
}

fn stack_with(idp_env: &[(&str, &str)], client_secret: &str) -> Stack {
    stack_logging(idp_env, client_secret, "info")
}

fn stack_logging(idp_env: &[(&str, &str)], client_secret: &str, log_level: &str) -> Stack {
    stack_at("127.0.0.1", idp_env, client_secret, log_level)
}

/// The stack with the gateway's public URL on `gate_host` (it listens on 127.0.0.1).
fn stack_at(gate_host: &str, idp_env: &[(&str, &str)], client_secret: &str, log_level: &str) -> Stack {
    let port = free_port();
    let base = format!("http://{gate_host}:{port}");
    let redirect = format!("{base}/oauth2/callback");
    let post_logout = format!("{base}/");
    let mut env =
        vec![("REDIRECT_URIS", redirect.as_str()), ("POST_LOGOUT_REDIRECT_URIS", post_logout.as_str())];
    env.extend_from_slice(idp_env);
    let idp = Idp::start(&env);
    let echo = Echo::start("legacy-app");
    // the test IdP's client, with `client_secret` (a wrong one in one test)
    let tables = common::gateway_tables(&base, &idp.issuer, "")
        .replace("client_secret = \"authgate-test-secret\"", &format!("client_secret = \"{client_secret}\""));
    let config = format!(
        r#"{tables}
[headers.claims]
department = "X-User-Department"

[[routes]]
name = "wiki"
path = "/wiki"
upstream = "{echo}"
auth = "browser"
licenses = ["wiki"]

[[routes]]
name = "home"
path = "/"
upstream = "{echo}"
auth = "browser"
"#,
        echo = echo.url()
    );
    let gate = Gate::start_logging(port, &config, log_level);
    gate.wait_ready();
    Stack { idp, _gate: gate, _echo: echo, base }
}

#[tokio::test]
async fn a_licensed_user_signs_in_and_the_app_sees_who_they_are() {
    let s = stack(&[]);
    let mut b = Browser::new();
    let (page, redirects) = b.navigate(&format!("{}/wiki/page?x=1", s.base), Some("bob")).await;
    assert!(redirects[0].starts_with(&format!("{}/auth?", s.idp.issuer)), "{redirects:?}");
    assert!(redirects.iter().any(|r| r.starts_with(&format!("{}/oauth2/callback?", s.base))));
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.url.as_str(), format!("{}/wiki/page?x=1", s.base), "back where the user started");
    let seen = page.json();
    assert_eq!(seen["path"], "/wiki/page");
    assert_eq!(echoed(&seen, "x-user-id"), [BOB]);
    assert_eq!(echoed(&seen, "x-user-email"), ["bob@acme.test"]);
    assert_eq!(echoed(&seen, "x-user-name"), ["Bob Brown"]);
    assert_eq!(echoed(&seen, "x-user-given-name"), ["Bob"]);
    assert_eq!(echoed(&seen, "x-user-family-name"), ["Brown"]);
    assert_eq!(echoed(&seen, "x-user-licenses"), ["wiki"]);
    assert_eq!(echoed(&seen, "x-user-org"), ["5f0c8a52-1d8e-4a43-9a54-6f1f5c0d2a11"]);
    assert_eq!(echoed(&seen, "x-user-type"), ["customer_user"]);
    assert_eq!(echoed(&seen, "x-user-department"), ["Teaching"], "a configured extra claim");
    assert!(echoed(&seen, "authorization").is_empty(), "no token reaches the app");
    let cookies = echoed(&seen, "cookie").join("; ");
    assert!(!cookies.contains("authgate_session"), "the session cookie reached the app: {cookies}");

    // spoofed identity headers never arrive, in any spelling
    let page = b
        .request(
            "GET",
            &format!("{}/wiki/x", s.base),
            None,
            &[
                ("X-User-Id", "admin"),
                ("x-user-id", "admin2"),
                ("X_User_Id", "admin3"),
                ("X-User-Licenses", "admin-console"),
            ],
        )
        .await;
    let seen = page.json();
    assert_eq!(echoed(&seen, "x-user-id"), [BOB]);
    assert!(echoed(&seen, "x_user_id").is_empty());
    // a browser route judges the session only: an Authorization header changes nothing
    let with_header = b
        .request("GET", &format!("{}/wiki/x", s.base), None, &[("Authorization", "Bearer not-a-token")])
        .await;
    assert_eq!(with_header.status, 200);
    assert!(
        echoed(&with_header.json(), "authorization").is_empty(),
        "the client's Authorization reached the app"
    );
    assert_eq!(echoed(&seen, "x-user-licenses"), ["wiki"]);
    assert_eq!(echoed(&seen, "x-user-department"), ["Teaching"]);

    // userinfo tells who is signed in, never the tokens
    let info = b.request("GET", &format!("{}/oauth2/userinfo", s.base), None, &[]).await;
    assert_eq!(info.status, 200);
    let info = info.json();
    assert_eq!(info["sub"], BOB);
    assert_eq!(info["licenses"], serde_json::json!(["wiki"]));
    assert!(!info.to_string().contains("eyJ"), "a token in userinfo: {info}");

    let session_cookie = b.cookie(&s.base, "authgate_session").unwrap();
    assert_eq!(session_cookie.len(), 43);
}

#[tokio::test]
async fn cookies_carry_the_right_attributes_and_callbacks_refuse_duplicates() {
    let s = stack(&[]);
    let mut b = Browser::new();
    let start = b.request("GET", &format!("{}/wiki/", s.base), None, &[]).await;
    let binding = start
        .header_all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("authgate_session_login="))
        .unwrap()
        .to_owned();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=600"] {
        assert!(binding.contains(attr), "{binding}");
    }
    let auth_url = start.location();
    let callback_prefix = format!("{}/oauth2/callback", s.base);
    let (_, redirects) = b.navigate_until(&auth_url, Some("bob"), Some(&callback_prefix)).await;
    let callback = redirects.last().unwrap().clone();
    let state = reqwest::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();

    // the valid state, given twice: refused as malformed, and no session
    let dup = b.request("GET", &format!("{callback}&state={state}"), None, &[]).await;
    assert_eq!(dup.status, 400);
    assert!(dup.body.contains("appears twice"), "{}", dup.body);
    assert!(b.cookie(&s.base, "authgate_session").is_none());

    // a fresh sign-in sets the session cookie with its attributes
    let mut b = Browser::new();
    let start = b.request("GET", &format!("{}/wiki/", s.base), None, &[]).await;
    let auth_url = start.location();
    let (_, redirects) = b.navigate_until(&auth_url, Some("bob"), Some(&callback_prefix)).await;
    let done = b.request("GET", redirects.last().unwrap(), None, &[]).await;
    assert_eq!(done.status, 302);
    let session = done
        .header_all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("authgate_session="))
        .unwrap()
        .to_owned();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=43200"] {
        assert!(session.contains(attr), "{session}");
    }
    assert!(!session.contains("Secure"), "plain-http demo origins cannot use Secure");
    assert_eq!(done.header_all("cache-control"), ["no-store"]);
}

#[tokio::test]
async fn a_user_without_the_license_gets_403_not_a_login_loop() {
    let s = stack(&[]);
    let mut b = Browser::new();
    let (page, redirects) = b.navigate(&format!("{}/wiki/", s.base), Some("carol")).await;
    assert_eq!(page.status, 403, "{redirects:?} {}", page.body);
    // who is signed in, what the app needs, and a way to another account; never tokens
    for want in [
        "You are signed in as Carol Clark.",
        "The “wiki” application needs the wiki license.",
        "contact your administrator",
        "action=\"/oauth2/sign_out\"",
        "Sign out and use another account",
    ] {
        assert!(page.body.contains(want), "{want} in {}", page.body);
    }
    assert!(!page.body.contains("eyJ"), "a token on the page: {}", page.body);
    // still signed in: other routes work, and the wiki stays a 403 without another login
    let home = b.request("GET", &format!("{}/", s.base), None, &[]).await;
    assert_eq!(home.status, 200);
    let again = b.request("GET", &format!("{}/wiki/", s.base), None, &[]).await;
    assert_eq!(again.status, 403);
    // carol's address is not verified at the IdP: it is not passed on as her identity
    let home = home.json();
    assert!(echoed(&home, "x-user-email").is_empty(), "{:?}", echoed(&home, "x-user-email"));
    assert_eq!(echoed(&home, "x-user-id"), ["c4c4c4c4-0000-4000-8000-0000000c4c41"]);
    // an API client gets JSON
    let json = b
        .request(
            "GET",
            &format!("{}/wiki/", s.base),
            None,
            &[("accept", "application/json"), ("sec-fetch-mode", "cors")],
        )
        .await;
    assert_eq!(json.status, 403);
    assert_eq!(json.json()["error"], "forbidden");
    assert_eq!(json.json()["detail"], "The “wiki” application needs the wiki license.");
}

#[tokio::test]
async fn the_provider_refusing_access_shows_the_friendly_page() {
    let s = stack(&[("APP_LICENSE", "wiki")]);
    let mut b = Browser::new();
    let (page, _) = b.navigate(&format!("{}/", s.base), Some("carol")).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(
        page.body.contains("The identity provider did not let this account sign in here."),
        "{}",
        page.body
    );
    assert!(b.cookie(&s.base, "authgate_session").is_none());
}

#[tokio::test]
async fn sign_out_ends_the_session_here_and_at_the_provider() {
    let s = stack(&[]);
    let mut b = Browser::new();
    let (page, _) = b.navigate(&format!("{}/wiki/", s.base), Some("bob")).await;
    assert_eq!(page.status, 200);
    let old_cookie = b.cookie(&s.base, "authgate_session").unwrap();

    // a GET never signs out; a cross-site POST is refused
    let get = b.request("GET", &format!("{}/oauth2/sign_out", s.base), None, &[]).await;
    assert_eq!(get.status, 200);
    assert!(get.body.contains("<form method=\"post\""));
    let cross = b
        .request(
            "POST",
            &format!("{}/oauth2/sign_out", s.base),
            Some(vec![]),
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(cross.status, 403);
    assert_eq!(
        b.request("GET", &format!("{}/wiki/", s.base), None, &[]).await.status,
        200,
        "still signed in"
    );

    // where the browser goes afterwards is configuration, never the request's to say (the
    // open redirects of mod_auth_openidc's logout, CVE-2019-14857, CVE-2021-32786, CVE-2022-23527)
    let lure =
        "rd=%2F%2Fevil.example&logout=%2F%5Cevil.example&post_logout_redirect_uri=https%3A%2F%2Fevil.example";
    let out = b
        .request("POST", &format!("{}/oauth2/sign_out?{lure}", s.base), Some(vec![]), &[("origin", &s.base)])
        .await;
    assert_eq!(out.status, 302);
    let location = out.location();
    assert!(location.starts_with(&format!("{}/session/end?", s.idp.issuer)), "{location}");
    assert!(!location.contains("evil"), "{location}");
    assert!(location.contains("id_token_hint="));
    assert!(b.cookie(&s.base, "authgate_session").is_none(), "cookie cleared");
    // the provider ends its session and sends the browser back to the app, which (the session
    // being gone) sends it to sign in again: the provider asks for a password
    let (after, redirects) = b.navigate(&location, None).await;
    assert!(
        redirects[0].starts_with(&format!("{}/?state=", s.base)),
        "not sent back to the app: {redirects:?}"
    );
    assert!(after.body.contains("name=\"password\""), "the IdP session survived: {}", after.url);

    // the old cookie is dead, and the next visit needs a new login at the IdP too
    let mut replay = Browser::new();
    replay.set_cookie(&s.base, "authgate_session", &old_cookie);
    let page = replay.request("GET", &format!("{}/wiki/", s.base), None, &[]).await;
    assert_eq!(page.status, 302, "the old session must be gone");
    let (page, _) = b.navigate(&format!("{}/wiki/", s.base), None).await;
    assert!(page.body.contains("name=\"password\""), "the IdP asked for a password again: {}", page.url);
}

#[tokio::test]
async fn scripts_get_401_json_and_create_no_login_state() {
    let s = stack(&[]);
    let mut b = Browser::new();
    b.headers = vec![("accept".into(), "application/json".into()), ("sec-fetch-mode".into(), "cors".into())];
    let page = b
        .request("GET", &format!("{}/wiki/data", s.base), None, &[("x-requested-with", "XMLHttpRequest")])
        .await;
    assert_eq!(page.status, 401);
    assert_eq!(page.json()["error"], "unauthenticated");
    assert!(page.header_all("www-authenticate").len() == 1);
    assert!(page.header_all("set-cookie").is_empty(), "no login binding for a script");
    assert!(page.header_all("location").is_empty());
    let post = b.request("POST", &format!("{}/wiki/form", s.base), Some(vec![]), &[]).await;
    assert_eq!(post.status, 401);
}

/// Cookie tossing: on plain http a page of a sibling host can set a second cookie of our name;
/// a request whose session cookies open two different sessions is treated as having none.
#[tokio::test]
async fn two_session_cookies_that_open_different_sessions_count_as_none() {
    let s = stack(&[]);
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let mut b = Browser::new();
        let (page, _) = b.navigate(&format!("{}/wiki/", s.base), Some("bob")).await;
        assert_eq!(page.status, 200);
        sessions.push(b.cookie(&s.base, "authgate_session").unwrap());
    }
    let url = format!("{}/wiki/", s.base);
    let with = |cookie: String| {
        let url = url.clone();
        async move {
            let json =
                [("accept", "application/json"), ("sec-fetch-mode", "cors"), ("cookie", cookie.as_str())];
            Browser::new().request("GET", &url, None, &json).await.status
        }
    };
    assert_eq!(with(format!("authgate_session={}", sessions[0])).await, 200);
    assert_eq!(with(format!("authgate_session={}", sessions[1])).await, 200);
    let same_twice = format!("authgate_session={0}; authgate_session={0}", sessions[0]);
    assert_eq!(with(same_twice).await, 200, "one session named twice is still that session");
    let two = format!("authgate_session={}; authgate_session={}", sessions[0], sessions[1]);
    assert_eq!(with(two).await, 401, "two different sessions: neither is used");
}

#[tokio::test]
async fn bad_session_cookies_are_anonymous_and_cleared() {
    let s = stack(&[]);
    let mut b = Browser::new();
    let (page, _) = b.navigate(&format!("{}/wiki/", s.base), Some("bob")).await;
    assert_eq!(page.status, 200);
    let good = b.cookie(&s.base, "authgate_session").unwrap();
    let mut flipped = good.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    // the same session id with another key: the id alone must never open (or hit a cache of) a session
    let mut other_key = good.clone().into_bytes();
    other_key[40] = if other_key[40] == b'A' { b'B' } else { b'A' };
    let cases = [
        ("tampered", String::from_utf8(flipped).unwrap()),
        ("same id, other key", String::from_utf8(other_key).unwrap()),
        ("truncated", good[..30].to_owned()),
        ("garbage", "%%%<script>".to_owned()),
        ("unknown", "A".repeat(43)),
        ("huge", "A".repeat(3000)),
    ];
    for (what, value) in cases {
        let mut other = Browser::new();
        other.set_cookie(&s.base, "authgate_session", &value);
        let nav = other.request("GET", &format!("{}/wiki/", s.base), None, &[]).await;
        assert_eq!(nav.status, 302, "{what}: a navigation is sent to sign in");
        assert!(
            nav.header_all("set-cookie")
                .iter()
                .any(|c| c.starts_with("authgate_session=;") && c.contains("Max-Age=0")),
            "{what}: cookie not cleared: {:?}",
            nav.headers
        );
        let xhr = other
            .request(
                "GET",
                &format!("{}/wiki/", s.base),
                None,
                &[("accept", "application/json"), ("sec-fetch-mode", "cors")],
            )
            .await;
        assert_eq!(xhr.status, 401, "{what}");
    }
}

#[tokio::test]
async fn callbacks_cannot_be_replayed_or_moved_to_another_browser() {
    let s = stack(&[]);
    // capture the callback URL instead of letting the browser follow it
    let mut a = Browser::new();
    let start = a.request("GET", &format!("{}/wiki/", s.base), None, &[]).await;
    let auth_url = start.location();
    let (first, redirects) = a.navigate(&auth_url, Some("bob")).await;
    let callback =
        redirects.iter().find(|r| r.starts_with(&format!("{}/oauth2/callback", s.base))).cloned().unwrap();
    // navigate used it once, as a browser would, and signed in
    assert_eq!(first.status, 200);
    assert!(a.cookie(&s.base, "authgate_session").is_some());

    let replay = a.request("GET", &callback, None, &[]).await;
    assert_eq!(replay.status, 400, "replayed callback: {}", replay.body);

    // a login started by one browser and completed in another (a login-CSRF attempt: the
    // attacker's browser signs in at the IdP and the callback lands elsewhere) is refused
    let mut victim = Browser::new();
    let start = victim.request("GET", &format!("{}/wiki/", s.base), None, &[]).await;
    let auth_url = start.location();
    let mut other = Browser::new();
    // the other browser has a binding of its own (it started a sign-in too): still refused
    let own = other.request("GET", &format!("{}/wiki/", s.base), None, &[]).await;
    assert_eq!(own.status, 302);
    assert!(other.cookie(&s.base, "authgate_session_login").is_some());
    let (page, redirects) = other.navigate(&auth_url, Some("bob")).await;
    assert!(redirects.last().unwrap().starts_with(&format!("{}/oauth2/callback?", s.base)), "{redirects:?}");
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("another browser"), "{}", page.body);
    assert!(other.cookie(&s.base, "authgate_session").is_none());
    // the refused attempt left the sign-in to its owner, who still completes it
    let (page, _) = victim.navigate(&auth_url, Some("bob")).await;
    assert_eq!(page.status, 200, "the owner's sign-in after a foreign callback: {}", page.body);
    assert!(victim.cookie(&s.base, "authgate_session").is_some());

    // duplicated parameters and a foreign issuer are refused outright
    let dup = Browser::new()
        .request("GET", &format!("{}/oauth2/callback?state=a&state=b&code=c", s.base), None, &[])
        .await;
    assert_eq!(dup.status, 400);
    let no_state =
        Browser::new().request("GET", &format!("{}/oauth2/callback?code=c", s.base), None, &[]).await;
    assert_eq!(no_state.status, 400);
    let unknown = Browser::new()
        .request("GET", &format!("{}/oauth2/callback?code=c&state=made-up", s.base), None, &[])
        .await;
    assert_eq!(unknown.status, 400);
    assert!(unknown.header_all("set-cookie").is_empty(), "no session from a bad callback");
    // a provider error for a sign-in nobody here started is the client's garbage: 400, never 5xx
    for q in ["error=server_error", "error=server_error&state=", "error=access_denied&state=made-up"] {
        let r = Browser::new().request("GET", &format!("{}/oauth2/callback?{q}", s.base), None, &[]).await;
        assert_eq!(r.status, 400, "{q}: {}", r.body);
    }
    // the browser that owns the state gets the retry page: the provider failed its sign-in
    let mut d = Browser::new();
    let start = d.request("GET", &format!("{}/wiki/", s.base), None, &[]).await;
    let auth_url = reqwest::Url::parse(&start.location()).unwrap();
    let state = auth_url.query_pairs().find(|(k, _)| k == "state").map(|(_, v)| v.into_owned()).unwrap();
    let failed = d
        .request("GET", &format!("{}/oauth2/callback?error=server_error&state={state}", s.base), None, &[])
        .await;
    assert_eq!(failed.status, 502, "{}", failed.body);
    assert!(failed.body.contains("Try again"), "{}", failed.body);
    // more parameters than any response has: refused at once
    let many = (0..65).map(|i| format!("p{i}=v")).collect::<Vec<_>>().join("&");
    for path in ["/oauth2/start", "/oauth2/callback"] {
        let r = Browser::new().request("GET", &format!("{}{path}?{many}", s.base), None, &[]).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
    }

    // a response that names another issuer (RFC 9207, the mix-up attack) is refused before its
    // code is exchanged, and its state is spent
    let mut c = Browser::new();
    let start = c.request("GET", &format!("{}/wiki/", s.base), None, &[]).await;
    let auth_url = reqwest::Url::parse(&start.location()).unwrap();
    let state = auth_url.query_pairs().find(|(k, _)| k == "state").map(|(_, v)| v.into_owned()).unwrap();
    let callback = |iss: &str| format!("{}/oauth2/callback?code=c0de&state={state}&iss={iss}", s.base);
    let mixed_up = c.request("GET", &callback("https%3A%2F%2Fevil.example"), None, &[]).await;
    assert_eq!(mixed_up.status, 400, "{}", mixed_up.body);
    assert!(mixed_up.body.contains("unexpected issuer"), "{}", mixed_up.body);
    assert!(c.cookie(&s.base, "authgate_session").is_none());
    let issuer = url_encode(&s.idp.issuer);
    let again = c.request("GET", &callback(&issuer), None, &[]).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("already used"), "{}", again.body);
    assert_eq!(
        s.idp.token_calls("authorization_code", "ok").await,
        2,
        "the first sign-in's and the victim's"
    );
    assert_eq!(s.idp.token_calls("authorization_code", "invalid_grant").await, 0, "c0de never exchanged");
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn a_planted_session_is_never_upgraded_by_a_sign_in() {
    let s = stack(&[]);
    // the attacker signs in and plants the session cookie in the victim's browser
    let mut attacker = Browser::new();
    let (page, _) = attacker.navigate(&format!("{}/wiki/", s.base), Some("alice")).await;
    assert_eq!(page.status, 200);
    let planted = attacker.cookie(&s.base, "authgate_session").unwrap();
    let mut victim = Browser::new();
    victim.set_cookie(&s.base, "authgate_session", &planted);
    // the victim signs in as herself: she gets a session of her own
    let (page, _) = victim.navigate(&format!("{}/oauth2/start?rd=/wiki/", s.base), Some("bob")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let own = victim.cookie(&s.base, "authgate_session").unwrap();
    assert_ne!(own, planted, "the sign-in kept the planted session (fixation)");
    let userinfo = format!("{}/oauth2/userinfo", s.base);
    assert_eq!(victim.request("GET", &userinfo, None, &[]).await.json()["sub"], BOB);
    // and the planted cookie still speaks for the attacker only
    let alice = attacker.request("GET", &userinfo, None, &[]).await.json()["sub"].clone();
    assert!(alice.as_str().is_some_and(|sub| sub != BOB), "{alice}");
}

#[tokio::test]
async fn return_to_addresses_stay_on_the_gateway() {
    let s = stack(&[]);
    for (rd, lands_on) in [
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/\\/evil.example", "/"),
        ("https://evil.example/", "/"),
        (" //evil.example", "/"),
        ("https://evil.example", "/"),
        ("/wiki/deep?x=1", "/wiki/deep?x=1"),
    ] {
        let mut b = Browser::new();
        let encoded: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        let (page, _) = b.navigate(&format!("{}/oauth2/start?rd={encoded}", s.base), Some("bob")).await;
        assert_eq!(page.url.as_str(), format!("{}{lands_on}", s.base), "rd={rd}");
        assert_eq!(page.status, 200);
    }
}

/// The happy path in a real headless Chromium (Debian `chromium`, npm `playwright-core`), with
/// the gateway and the IdP on host names of their own (`*.localhost` is loopback to the browser
/// and to authgate, RFC 6761): the app receives none of the IdP's cookies (issue 19 item 15).
#[test]
fn a_real_browser_signs_in_and_out() {
    let s =
        stack_at("app.localhost", &[("IDP_ISSUER_HOST", "idp.localhost")], "authgate-test-secret", "info");
    assert!(s.idp.issuer.starts_with("http://idp.localhost:"), "{}", s.idp.issuer);
    let out = std::process::Command::new("node")
        .arg("e2e-login.mjs")
        .current_dir(common::repo().join("tests/idp"))
        .env("GATE_URL", &s.base)
        .env("USER_SUB", BOB)
        .output()
        .expect("node runs the Chromium test");
    assert!(
        out.status.success(),
        "Chromium e2e failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("e2e ok"));
}

#[tokio::test]
async fn several_tabs_can_sign_in_at_once() {
    let s = stack(&[]);
    let mut b = Browser::new();
    // two tabs start a sign-in before either finishes
    let first = b.request("GET", &format!("{}/wiki/one", s.base), None, &[]).await;
    let second = b.request("GET", &format!("{}/wiki/two", s.base), None, &[]).await;
    let (a, b_auth) = (first.location(), second.location());
    assert_ne!(a, b_auth, "each tab has its own state");
    let (page, _) = b.navigate(&b_auth, Some("bob")).await;
    assert_eq!((page.status, page.url.path()), (200, "/wiki/two"));
    let (page, _) = b.navigate(&a, Some("bob")).await;
    assert_eq!((page.status, page.url.path()), (200, "/wiki/one"), "{}", page.body);
}

#[tokio::test]
async fn provider_failures_give_a_retry_page_and_a_log_line() {
    // the gateway's client secret is wrong: the IdP refuses the code exchange (invalid_client)
    let s = stack_with(&[], "not-the-right-secret");
    let mut b = Browser::new();
    let (page, _) = b.navigate(&format!("{}/wiki/", s.base), Some("bob")).await;
    assert_eq!(page.status, 502, "{}", page.body);
    assert!(page.body.contains("Try again") && page.body.contains("/oauth2/start"), "{}", page.body);
    assert!(!page.body.contains("invalid_client"), "details stay in the log");
    assert!(b.cookie(&s.base, "authgate_session").is_none());
    let log = s._gate.log();
    assert!(log.contains("code exchange failed") && log.contains("invalid_client"), "{log}");
}

/// With debug logging on, a whole sign-in, a few requests and a sign-out write none of the
/// secrets that passed through the gateway: codes, states, nonces, PKCE values, cookies,
/// tokens, the client secret.
#[tokio::test]
async fn nothing_secret_reaches_the_log_even_at_debug_level() {
    let s = stack_logging(&[], "authgate-test-secret", "debug");
    let mut b = Browser::new();
    let start = b.request("GET", &format!("{}/wiki/page?x=1", s.base), None, &[]).await;
    let auth_url = start.location();
    let auth = reqwest::Url::parse(&auth_url).unwrap();
    let param = |name: &str| auth.query_pairs().find(|(k, _)| k == name).unwrap().1.into_owned();
    let (state, nonce, challenge) = (param("state"), param("nonce"), param("code_challenge"));
    let callback_prefix = format!("{}/oauth2/callback", s.base);
    let (_, redirects) = b.navigate_until(&auth_url, Some("bob"), Some(&callback_prefix)).await;
    let callback = reqwest::Url::parse(redirects.last().unwrap()).unwrap();
    let code = callback.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let done = b.request("GET", callback.as_str(), None, &[]).await;
    assert_eq!(done.status, 302);
    let session = b.cookie(&s.base, "authgate_session").unwrap();
    let binding = b.cookie(&s.base, "authgate_session_login").unwrap();
    for path in ["/wiki/page?x=1", "/oauth2/userinfo", "/wiki/other"] {
        assert_eq!(b.request("GET", &format!("{}{path}", s.base), None, &[]).await.status, 200);
    }
    let out =
        b.request("POST", &format!("{}/oauth2/sign_out", s.base), Some(vec![]), &[("origin", &s.base)]).await;
    assert_eq!(out.status, 302);

    let log = s._gate.log();
    assert!(log.contains("DEBUG"), "debug logging was not on");
    assert!(log.contains("sign-in completed"));
    for (what, secret) in [
        ("code", code.as_str()),
        ("state", state.as_str()),
        ("nonce", nonce.as_str()),
        ("code_challenge", challenge.as_str()),
        ("session cookie", session.as_str()),
        ("binding cookie", binding.as_str()),
        ("client secret", "authgate-test-secret"),
        ("session secret", common::SESSION_SECRET),
        ("a JWT", "eyJ"),
    ] {
        assert!(!log.contains(secret), "the {what} was logged");
    }
}
