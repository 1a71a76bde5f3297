//! Hot reload: SIGHUP and `POST /reload` swap routes in without dropping requests; a bad
//! config is refused and the running one stays.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use std::time::{Duration, Instant};

use common::{Echo, Gate, try_raw};

fn config(routes: &[(&str, &str)], extra_server: &str) -> String {
    let mut c =
        format!("[server]\nlisten = [\"{{listen}}\"]\nadmin_listen = \"{{admin}}\"\n{extra_server}\n");
    for (path, upstream) in routes {
        c.push_str(&format!(
            "\n[[routes]]\npath = \"{path}\"\nupstream = \"{upstream}\"\nauth = \"public\"\n"
        ));
    }
    c
}

fn backend(gate: &Gate, path: &str) -> Option<String> {
    let r = gate.get("app.example.com", path, &[]);
    (r.status == 200).then(|| r.json()["backend"].as_str().unwrap().to_owned())
}

fn admin(gate: &Gate, request: &str) -> common::Response {
    try_raw(gate.admin_port, request).unwrap()
}

#[test]
fn sighup_swaps_routes_without_dropping_requests() {
    let old = Echo::start("old");
    let new = Echo::start("new");
    let mut gate = Gate::start(&config(&[("/", &old.url())], ""));
    assert_eq!(backend(&gate, "/x").as_deref(), Some("old"));

    // a slow request in flight across the reload
    let port = gate.port;
    let slow = std::thread::spawn(move || {
        try_raw(port, "GET /__slow?ms=1500 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    });
    std::thread::sleep(Duration::from_millis(200));
    // `/` moves to the new backend: the request in flight must still finish on the old one
    gate.rewrite_config(&config(&[("/", &new.url()), ("/old", &old.url())], ""));
    gate.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while backend(&gate, "/x").as_deref() != Some("new") {
        assert!(Instant::now() < deadline, "the new route never took over: {}", gate.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gate.is_running(), "SIGHUP must not end the process");
    assert_eq!(backend(&gate, "/old/y").as_deref(), Some("old"));
    let slow = slow.join().unwrap().unwrap();
    assert_eq!(slow.status, 200, "the in-flight request completed");
    assert_eq!(slow.json()["backend"], "old", "and on the configuration it started with");
    let ready = admin(&gate, "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").json();
    assert_eq!(ready["checks"]["config"]["reloads"], 1);
    assert_eq!(ready["checks"]["config"]["routes"], 2);
}

#[test]
fn a_bad_config_is_refused_and_the_running_one_stays() {
    let old = Echo::start("old");
    let mut gate = Gate::start(&config(&[("/", &old.url())], ""));
    let good = config(&[("/", &old.url())], "");

    gate.rewrite_config(&good.replace("auth = \"public\"", "auth = \"public\"\nsurprise = 1"));
    gate.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    let ready =
        || admin(&gate, "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").json();
    while ready()["checks"]["config"]["failed_reloads"] != 1 {
        assert!(Instant::now() < deadline, "the reload was never refused: {}", gate.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gate.is_running());
    assert_eq!(backend(&gate, "/x").as_deref(), Some("old"));
    assert!(gate.log().contains("configuration reload refused"), "{}", gate.log());

    // the admin endpoint says why
    let r = admin(
        &gate,
        "POST /reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 422);
    assert!(
        r.json()["error"].as_str().unwrap().contains("`routes[0].surprise`: unknown field"),
        "{:?}",
        r.json()
    );

    // listeners only change with a restart
    gate.rewrite_config(&good.replace("listen = [\"{listen}\"]", "listen = [\"{listen}\", \"127.0.0.1:1\"]"));
    let r = admin(
        &gate,
        "POST /reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 422);
    assert!(r.json()["error"].as_str().unwrap().contains("restart"), "{:?}", r.json());

    // a good one goes through the admin endpoint too
    gate.rewrite_config(&config(&[("/", &old.url()), ("/more", &old.url())], ""));
    let r = admin(
        &gate,
        "POST /reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let ready = admin(&gate, "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").json();
    assert_eq!(ready["checks"]["config"]["routes"], 2);
    assert_eq!(ready["checks"]["config"]["failed_reloads"], 3);
}

/// A config with browser sign-in; `crm_license` is what the crm route requires, and `extra`
/// adds routes.
fn session_config(base: &str, idp: &common::Idp, echo: &Echo, crm_license: &str, extra: &str) -> String {
    format!(
        r#"{tables}
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
licenses = ["{crm_license}"]
{extra}"#,
        tables = common::gateway_tables(base, &idp.issuer, ""),
        echo = echo.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_drops_nothing_and_keeps_sessions() {
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let redirect = format!("{base}/oauth2/callback");
    let idp = common::Idp::start(&[("REDIRECT_URIS", &redirect)]);
    let echo = Echo::start("app");
    let gate = Gate::start_on(port, &session_config(&base, &idp, &echo, "crm", ""));
    gate.wait_ready();
    let mut b = common::Browser::new();
    let (page, _) = b.navigate(&format!("{base}/wiki/"), Some("bob")).await;
    assert_eq!(page.status, 200);
    let cookie = format!("authgate_session={}", b.cookie(&base, "authgate_session").unwrap());
    let client = reqwest::Client::new();
    let get = |path: &str| {
        client
            .get(format!("{base}{path}"))
            .header("cookie", &cookie)
            .header("accept", "application/json")
            .send()
    };
    assert_eq!(get("/crm/").await.unwrap().status(), 403, "bob has no crm license");

    // concurrent signed-in traffic across the reload
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (client, url, cookie, stop) =
            (client.clone(), format!("{base}/wiki/x"), cookie.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client
                    .get(&url)
                    .header("cookie", &cookie)
                    .header("accept", "application/json")
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // a new route, and crm now admits wiki holders
    let new_route = format!(
        "\n[[routes]]\nname = \"new\"\npath = \"/new\"\nupstream = \"{}\"\nauth = \"public\"\n",
        echo.url()
    );
    gate.rewrite_config(&session_config(&base, &idp, &echo, "wiki", &new_route));
    gate.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while get("/new/").await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "the new route never answered: {}", gate.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // a broken config is refused while the load goes on
    gate.rewrite_config("[server]\nlisten = [");
    gate.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        let (ok, failed) = w.await.unwrap();
        assert!(failed.is_empty(), "requests failed across the reload: {failed:?}");
        total += ok;
    }
    assert!(total > 100, "too little load to mean anything: {total}");
    assert_eq!(
        get("/crm/").await.unwrap().status(),
        200,
        "the license change applies to the existing session"
    );
    assert_eq!(get("/new/").await.unwrap().status(), 200, "the refused config left the new routes in place");
    let ready = admin(&gate, "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").json();
    assert_eq!(
        (ready["checks"]["config"]["reloads"].as_u64(), ready["checks"]["config"]["failed_reloads"].as_u64()),
        (Some(1), Some(1))
    );
}

/// The admin listener is for probes, scrapers and operators, never for browsers: a page's form
/// or fetch (it carries `Origin`) and a DNS-rebound name are refused, and with an admin token
/// `POST /reload` needs it (`authgate reload` sends it from the config).
#[test]
fn the_admin_listener_is_closed_to_browsers_and_reloads_need_the_token() {
    let echo = Echo::start("app");
    let token = "k7Qw9zP3xL2mN8vB4cR6tY1uH5jD0sFgA3eW";
    let extra = format!("admin_token = \"{token}\"\nadmin_hosts = [\"gw-admin.internal\"]");
    let gate = Gate::start(&config(&[("/", &echo.url())], &extra));
    let request = |method: &str, path: &str, headers: &str| {
        let len = if method == "POST" { "Content-Length: 0\r\n" } else { "" };
        admin(&gate, &format!("{method} {path} HTTP/1.1\r\n{headers}{len}Connection: close\r\n\r\n"))
    };
    let bearer = format!("Authorization: Bearer {token}\r\n");

    // a web page posting a form to the admin listener (even with the right token)
    let r =
        request("POST", "/reload", &format!("Host: 127.0.0.1\r\nOrigin: http://evil.example\r\n{bearer}"));
    assert_eq!(r.status, 403);
    // a page whose name was rebound to 127.0.0.1 reading the metrics
    let r = request("GET", "/metrics", "Host: rebind.attacker.example\r\n");
    assert_eq!(r.status, 421);
    // addresses, localhost and configured names are served
    for host in ["127.0.0.1", "localhost", "gw-admin.internal"] {
        assert_eq!(request("GET", "/metrics", &format!("Host: {host}\r\n")).status, 200, "{host}");
    }
    // reloads need the token
    assert_eq!(request("POST", "/reload", "Host: 127.0.0.1\r\n").status, 401);
    assert_eq!(request("POST", "/reload", "Host: 127.0.0.1\r\nAuthorization: Bearer wrong\r\n").status, 401);
    assert_eq!(request("POST", "/reload", &format!("Host: 127.0.0.1\r\n{bearer}")).status, 200);
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["reload", "--config"])
        .arg(gate.dir.path().join("authgate.toml"))
        .output()
        .unwrap();
    assert!(cli.status.success(), "authgate reload: {}", String::from_utf8_lossy(&cli.stderr));
    let ready = admin(&gate, "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").json();
    assert_eq!(
        ready["checks"]["config"]["reloads"], 2,
        "the token-less and wrong-token posts did not reload"
    );
}
