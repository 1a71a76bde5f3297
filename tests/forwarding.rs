//! Forwarding through `public` routes, against the real echo upstream: routing, path
//! normalisation, header hygiene, X-Forwarded-*, WebSocket, HTTP/2, load balancing, 502/504.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use common::{Echo, Gate, echoed, echoed_headers};
use futures_util::{SinkExt, StreamExt};

fn config(routes: &str, server_extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["{{listen}}"]
admin_listen = "{{admin}}"
public_url = "http://127.0.0.1:{{port}}"
threads = 2
{server_extra}

[provider]
issuer = "http://127.0.0.1:1"
client_id = "authgate"
audience = "authgate"

[session]
secret = "integration-test-secret-0123456789abcdef"

{routes}
"#
    )
}

fn route(name: &str, host: &str, path: &str, upstream: &str, auth: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nhost = \"{host}\"\npath = \"{path}\"\nupstream = {upstream}\nauth = \"{auth}\"\n"
    )
}

#[test]
fn public_routes_forward_with_clean_headers() {
    let echo = Echo::start("app");
    let gate = Gate::start(&config(&route("app", "*", "/", &format!("\"{}\"", echo.url()), "public"), ""));
    let resp = gate.raw(
        "GET /pub/page?q=1&x=%2F HTTP/1.1\r\n\
         Host: App.Example.com:8080\r\n\
         Connection: keep-alive, X-Hop-Secret\r\n\
         X-Hop-Secret: must-not-pass\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: trailers\r\n\
         Proxy-Connection: keep-alive\r\n\
         X-Forwarded-For: 6.6.6.6\r\n\
         X-Forwarded-Proto: https\r\n\
         X-Forwarded-Host: evil.example\r\n\
         Forwarded: for=6.6.6.6\r\n\
         X-Original-URL: /admin\r\n\
         X-Rewrite-URL: /admin\r\n\
         X-Forwarded-Uri: /admin\r\n\
         X-Forwarded-Prefix: /admin\r\n\
         X-User-Id: admin\r\n\
         x_user_email: boss@example.com\r\n\
         X-USER-LICENSES: wiki\r\n\
         X-Authgate-Assertion: forged\r\n\
         X-Envoy-Original-Path: /admin\r\n\
         x_envoy_internal: true\r\n\
         OIDC_CLAIM_email: ceo@example.com\r\n\
         OIDC-Access-Token: forged\r\n\
         X-Pomerium-Jwt-Assertion: forged\r\n\
         X-Amzn-Oidc-Identity: admin\r\n\
         Cf-Access-Authenticated-User-Email: ceo@example.com\r\n\
         X-Goog-Authenticated-User-Email: ceo@example.com\r\n\
         Remote-User: admin\r\n\
         Remote-Groups: admins\r\n\
         X-Webauth-User: admin\r\n\
         X-MS-CLIENT-PRINCIPAL: eyJhZG1pbiI6dHJ1ZX0=\r\n\
         X-MS-CLIENT-PRINCIPAL-NAME: admin@corp\r\n\
         X-MS-CLIENT-PRINCIPAL-ID: 1\r\n\
         X-MS-CLIENT-PRINCIPAL-IDP: aad\r\n\
         X-MS-TOKEN-AAD-ACCESS-TOKEN: forged\r\n\
         X-Consumer-Username: admin\r\n\
         X-Consumer-Custom-ID: 1\r\n\
         X-Authenticated-Userid: admin\r\n\
         X-Authenticated-Groups: admins\r\n\
         X-Authenticated-Scope: all\r\n\
         X-Credential-Identifier: admin\r\n\
         X-Anonymous-Consumer: false\r\n\
         X-Original-Host: intranet.corp\r\n\
         Front-End-Https: on\r\n\
         X-Url-Scheme: https\r\n\
         CF-Connecting-IP: 10.0.0.1\r\n\
         True-Client-IP: 10.0.0.1\r\n\
         Fastly-Client-IP: 10.0.0.1\r\n\
         X-Custom: kept\r\n\
         \r\n",
    );
    assert_eq!(resp.status, 200, "{}", gate.log());
    let echo = resp.json();
    assert_eq!(echo["path"], "/pub/page");
    assert_eq!(echo["query"], "q=1&x=%2F");
    assert_eq!(echoed(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(echoed(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(echoed(&echo, "x-forwarded-host"), ["app.example.com:8080"]);
    assert_eq!(echoed(&echo, "x-custom"), ["kept"]);
    for gone in [
        "x-hop-secret",
        "keep-alive",
        "te",
        "proxy-connection",
        "forwarded",
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-uri",
        "x-forwarded-prefix",
        "x-user-id",
        "x_user_email",
        "x-user-licenses",
        "x-authgate-assertion",
        "x-envoy-original-path",
        "x_envoy_internal",
        "oidc_claim_email",
        "oidc-access-token",
        "x-pomerium-jwt-assertion",
        "x-amzn-oidc-identity",
        "cf-access-authenticated-user-email",
        "x-goog-authenticated-user-email",
        "remote-user",
        "remote-groups",
        "x-webauth-user",
        "x-ms-client-principal",
        "x-ms-client-principal-name",
        "x-ms-client-principal-id",
        "x-ms-client-principal-idp",
        "x-ms-token-aad-access-token",
        "x-consumer-username",
        "x-consumer-custom-id",
        "x-authenticated-userid",
        "x-authenticated-groups",
        "x-authenticated-scope",
        "x-credential-identifier",
        "x-anonymous-consumer",
        "x-original-host",
        "front-end-https",
        "x-url-scheme",
        "cf-connecting-ip",
        "true-client-ip",
        "fastly-client-ip",
    ] {
        assert!(echoed(&echo, gone).is_empty(), "{gone} reached the upstream: {:?}", echoed_headers(&echo));
    }
}

#[test]
fn the_upstream_sees_its_own_host_unless_preserve_host() {
    let echo = Echo::start("app");
    let routes = format!(
        "{}{}preserve_host = true\n",
        route("own", "*", "/own", &format!("\"{}\"", echo.url()), "public"),
        route("kept", "*", "/kept", &format!("\"{}\"", echo.url()), "public"),
    );
    let gate = Gate::start(&config(&routes, ""));
    let own = gate.get("app.example.com", "/own", &[]).json();
    assert_eq!(echoed(&own, "host"), [format!("127.0.0.1:{}", echo.port)]);
    let kept = gate.get("app.example.com", "/kept", &[]).json();
    assert_eq!(echoed(&kept, "host"), ["app.example.com"]);
}

#[test]
fn trusted_proxies_extend_the_forwarded_chain() {
    let echo = Echo::start("app");
    let gate = Gate::start(&config(
        &route("app", "*", "/", &format!("\"{}\"", echo.url()), "public"),
        "trusted_proxies = [\"127.0.0.0/8\"]",
    ));
    let echo = gate
        .get(
            "app.example.com",
            "/",
            &[
                ("X-Forwarded-For", "203.0.113.9"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "app.example.com"),
            ],
        )
        .json();
    assert_eq!(echoed(&echo, "x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(echoed(&echo, "x-forwarded-proto"), ["https"]);
    assert_eq!(echoed(&echo, "x-forwarded-host"), ["app.example.com"]);
}

/// Each row: the request path, then the status and (for 200) the route and the path the app got.
#[test]
fn paths_are_normalised_before_routing_and_forwarded_as_matched() {
    let public = Echo::start("public");
    let admin = Echo::start("admin");
    let routes = format!(
        "{}{}{}",
        route("pub", "*", "/pub", &format!("\"{}\"", public.url()), "public"),
        route("root", "*", "/", &format!("\"{}\"", public.url()), "public"),
        route("admin", "*", "/admin", &format!("\"{}\"", admin.url()), "browser"),
    );
    let gate = Gate::start(&config(&routes, ""));
    type Case<'a> = (&'a str, u16, Option<(&'a str, &'a str)>);
    let cases: &[Case] = &[
        ("/pub/x", 200, Some(("public", "/pub/x"))),
        ("/pub/%2e%2e/admin", 401, None),
        ("/pub/../admin/", 401, None),
        ("//admin", 401, None),
        ("/%61dmin", 401, None),
        ("/admin;jsessionid=x/secret", 401, None),
        ("/pub;x/../admin", 401, None),
        ("/;/admin", 400, None),
        ("/;x=1/admin", 400, None),
        ("/admin%3bx/secret", 400, None),
        ("/pub/%25%32%65%25%32%65/admin", 400, None),
        ("/ADMIN", 401, None),
        ("/admin.json", 401, None),
        ("/Admin/x.csv", 401, None),
        ("/admin-x.json", 200, Some(("public", "/admin-x.json"))),
        ("/administrator", 200, Some(("public", "/administrator"))),
        ("/pub/./a//b", 200, Some(("public", "/pub/a/b"))),
        ("/pub/%7euser", 200, Some(("public", "/pub/~user"))),
        ("/admin%2fx", 400, None),
        ("/pub/..;/admin", 400, None),
        ("/pub/%252e%252e/admin", 400, None),
        ("/pub/..%5cadmin", 400, None),
        ("/pub/%00", 400, None),
        ("/../admin", 400, None),
        // a fragment never belongs in a request target: it is dropped before anything reads
        // the path, and never decides the route (Envoy CVE-2021-32779)
        ("/admin#/../pub/x", 401, None),
        ("/pub/x#/../../admin", 200, Some(("public", "/pub/x"))),
        // routes match the path: a query naming a public path changes nothing
        ("/admin?/pub/x", 401, None),
        ("/admin?x=/../pub", 401, None),
    ];
    for (path, status, forwarded) in cases {
        let resp = gate.get("app.example.com", path, &[("Accept", "application/json")]);
        assert_eq!(resp.status, *status, "{path}: {}", String::from_utf8_lossy(&resp.body));
        match forwarded {
            Some((backend, upstream_path)) => {
                let echo = resp.json();
                assert_eq!(echo["backend"], *backend, "{path}");
                assert_eq!(echo["path"], *upstream_path, "{path}");
            }
            None => {
                let body = resp.json();
                assert!(body["error"].is_string(), "{path}: {body}");
                assert!(body.get("backend").is_none(), "{path} reached an upstream");
            }
        }
    }
}

#[test]
fn hosts_pick_routes_and_unknown_places_get_404() {
    let a = Echo::start("exact");
    let b = Echo::start("wildcard");
    let routes = format!(
        "{}{}",
        route("exact", "app.example.com", "/", &format!("\"{}\"", a.url()), "public"),
        route("wild", "*.example.com", "/", &format!("\"{}\"", b.url()), "public"),
    );
    let gate = Gate::start(&config(&routes, ""));
    assert_eq!(gate.get("APP.example.com.", "/", &[]).json()["backend"], "exact");
    assert_eq!(gate.get("app.example.com:8443", "/", &[]).json()["backend"], "exact");
    assert_eq!(gate.get("other.example.com", "/", &[]).json()["backend"], "wildcard");
    let missing = gate.get("example.org", "/", &[("Accept", "application/json")]);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "no_route");
    let page = gate.get("example.org", "/", &[("Accept", "text/html")]);
    assert_eq!(page.status, 404);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(page.header("content-security-policy"), Some("default-src 'none'"));
    assert!(String::from_utf8_lossy(&page.body).contains("<h1>404 Not Found</h1>"));
    // a host that upstream frameworks would split differently never matches a route
    let split = gate.get("app.example.com:other.example.com:443", "/", &[("Accept", "application/json")]);
    assert_eq!(split.status, 400);
    assert_eq!(split.json()["error"], "bad_host");
}

#[test]
fn the_admin_endpoints_are_not_on_the_main_listener() {
    let echo = Echo::start("app");
    let gate = Gate::start(&config(&route("app", "*", "/app", &format!("\"{}\"", echo.url()), "public"), ""));
    // metrics, readiness and reload live on the admin listener only (Pomerium CVE-2022-24797)
    for (method, path) in [("GET", "/metrics"), ("GET", "/readyz"), ("POST", "/reload"), ("GET", "/healthz")]
    {
        let resp = gate.raw(&format!(
            "{method} {path} HTTP/1.1\r\nHost: app.example.com\r\nAccept: application/json\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(resp.status, 404, "{method} {path}");
        assert_eq!(resp.json()["error"], "no_route", "{method} {path}");
    }
    assert_eq!(gate.admin_get("/healthz").0, 200);
}

#[test]
fn paths_match_case_insensitively_by_default() {
    let echo = Echo::start("iis");
    let dead = format!("\"http://127.0.0.1:{}\"", common::free_port());
    let routes = format!(
        "{}{}",
        route("root", "*", "/", &format!("\"{}\"", echo.url()), "public"),
        route("admin", "*", "/Admin", &dead, "browser"),
    );
    let gate = Gate::start(&config(&routes, ""));
    for path in ["/admin", "/ADMIN/x", "/aDmIn;x/y"] {
        assert_eq!(gate.get("app.example.com", path, &[]).status, 401, "{path}");
    }
    let other = gate.get("app.example.com", "/Public/X", &[]).json();
    assert_eq!(other["path"], "/Public/X", "the forwarded path keeps its case");
}

#[test]
fn bad_requests_get_4xx_and_never_reach_the_upstream() {
    // the upstream port is closed: a request that reached it would get 502
    let dead = format!("\"http://127.0.0.1:{}\"", common::free_port());
    let gate = Gate::start(&config(
        &route("app", "*", "/", &dead, "public"),
        "[server.limits]\nmax_header_size = \"4KiB\"",
    ));
    let big = "x".repeat(5000);
    let resp = gate.get("app.example.com", "/", &[("X-Big", &big)]);
    assert_eq!(resp.status, 431);
    let resp =
        gate.raw("GET / HTTP/1.1\r\nHost: a.example.com\r\nHost: b.example.com\r\nConnection: close\r\n\r\n");
    assert_eq!(resp.status, 400);
    let resp = gate.raw("GET /x HTTP/1.1\r\nHost: a.example.com:bad\r\nConnection: close\r\n\r\n");
    assert_eq!(resp.status, 400);
    let resp = gate.raw("GET /a%2fb HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n");
    assert_eq!(resp.status, 400);
    // the control: a good request does reach the (closed) upstream
    assert_eq!(gate.get("app.example.com", "/", &[]).status, 502);
}

#[test]
fn non_public_routes_fail_closed_until_authenticated() {
    // the upstream port is closed: reaching it would give 502, not 401
    let dead = format!("\"http://127.0.0.1:{}\"", common::free_port());
    let routes = format!(
        "{}{}{}",
        route("b", "*", "/browser", &dead, "browser"),
        route("a", "*", "/api", &dead, "api"),
        route("y", "*", "/any", &dead, "any"),
    );
    let gate = Gate::start(&config(&routes, ""));
    for path in ["/browser", "/api/x", "/any"] {
        let resp = gate.get("app.example.com", path, &[("Accept", "application/json")]);
        assert_eq!(resp.status, 401, "{path}");
        assert_eq!(resp.json()["error"], "unauthenticated");
        assert!(resp.header("www-authenticate").is_some());
    }
}

#[test]
fn round_robin_skips_a_dead_backend_without_failing_requests() {
    let one = Echo::start("one");
    let two = Echo::start("two");
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let upstreams = format!("[\"{}\", \"{dead}\", \"{}\"]", one.url(), two.url());
    let gate = Gate::start(&config(&route("lb", "*", "/", &upstreams, "public"), ""));
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..12 {
        let resp = gate.get("app.example.com", "/", &[]);
        assert_eq!(resp.status, 200, "{}", gate.log());
        *seen.entry(resp.json()["backend"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["one", "two"]);
    assert!(seen.values().all(|&n| n >= 4), "unbalanced: {seen:?}");
}

#[test]
fn upstream_down_is_502_and_slow_is_504() {
    let echo = Echo::start("slow");
    let dead = format!("\"http://127.0.0.1:{}\"", common::free_port());
    let routes = format!(
        "{}{}read_timeout = \"1s\"\n",
        route("down", "*", "/down", &dead, "public"),
        route("slow", "*", "/__slow", &format!("\"{}\"", echo.url()), "public"),
    );
    let gate = Gate::start(&config(&routes, ""));
    let down = gate.get("app.example.com", "/down", &[("Accept", "application/json")]);
    assert_eq!(down.status, 502);
    assert_eq!(down.json()["error"], "upstream_unavailable");
    let slow = gate.get("app.example.com", "/__slow?ms=3000", &[("Accept", "text/html")]);
    assert_eq!(slow.status, 504);
    assert!(String::from_utf8_lossy(&slow.body).contains("504"));
    let quick = gate.get("app.example.com", "/__slow?ms=10", &[]);
    assert_eq!(quick.status, 200);
}

#[tokio::test]
async fn websockets_are_proxied() {
    let echo = Echo::start("ws");
    let gate = Gate::start(&config(&route("ws", "*", "/", &format!("\"{}\"", echo.url()), "public"), ""));
    let url = format!("ws://127.0.0.1:{}/socket?room=1", gate.port);
    let (mut ws, resp) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(resp.status(), 101);
    let hello = ws.next().await.unwrap().unwrap();
    let hello: serde_json::Value = serde_json::from_str(hello.to_text().unwrap()).unwrap();
    assert_eq!(hello["path"], "/socket?room=1");
    for text in ["ping", "second message"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(text)).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.to_text().unwrap(), text);
    }
}

#[tokio::test]
async fn http2_clients_are_served_over_h2c() {
    let echo = Echo::start("h2");
    let echo_port = echo.port;
    let routes = format!(
        "{}{}preserve_host = true\n",
        route("h2", "*", "/", &format!("\"{}\"", echo.url()), "public"),
        route("h2-kept", "*", "/kept", &format!("\"{}\"", echo.url()), "public"),
    );
    let gate = Gate::start(&config(&routes, "h2c = true"));
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let resp = client
        .get(format!("http://127.0.0.1:{}/h2/path?x=1", gate.port))
        .header("x-user-id", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["path"], "/h2/path");
    assert_eq!(echo["query"], "x=1");
    assert!(echoed(&echo, "x-user-id").is_empty());
    assert_eq!(echoed(&echo, "x-forwarded-host"), [format!("127.0.0.1:{}", gate.port)]);
    assert_eq!(echoed(&echo, "host"), [format!("127.0.0.1:{}", echo_port)]);
    let kept: serde_json::Value = client
        .get(format!("http://localhost:{}/kept", gate.port))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed(&kept, "host"), [format!("localhost:{}", gate.port)]);
}

#[tokio::test]
async fn tls_listeners_offer_http2_and_report_https_upstream() {
    let echo = Echo::start("tls");
    let certs = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-keyout", "key.pem", "-out", "cert.pem", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .current_dir(certs.path())
        .output()
        .expect("openssl is installed by scripts/setup");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let tls_port = common::free_port();
    let server_extra = format!(
        "[server.tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\ncert = \"{}\"\nkey = \"{}\"",
        certs.path().join("cert.pem").display(),
        certs.path().join("key.pem").display()
    );
    let gate = Gate::start(&config(
        &route("tls", "*", "/", &format!("\"{}\"", echo.url()), "public"),
        &server_extra,
    ));
    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs.path().join("cert.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder().add_root_certificate(ca).build().unwrap();
    let resp = client.get(format!("https://localhost:{tls_port}/secure?a=1")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN should pick h2");
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["path"], "/secure");
    assert_eq!(echoed(&echo, "x-forwarded-proto"), ["https"]);
    assert_eq!(echoed(&echo, "x-forwarded-host"), [format!("localhost:{tls_port}")]);
    // the plain listener still reports http
    let plain = gate.get("localhost", "/", &[]).json();
    assert_eq!(echoed(&plain, "x-forwarded-proto"), ["http"]);
}
