//! Hot reload: SIGHUP and `POST /reload` swap routes in without dropping requests; a bad
//! config is refused and the running one stays.

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
    let ready = admin(&gate, "GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").json();
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
    let ready = || admin(&gate, "GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").json();
    while ready()["checks"]["config"]["failed_reloads"] != 1 {
        assert!(Instant::now() < deadline, "the reload was never refused: {}", gate.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gate.is_running());
    assert_eq!(backend(&gate, "/x").as_deref(), Some("old"));
    assert!(gate.log().contains("configuration reload refused"), "{}", gate.log());

    // the admin endpoint says why
    let r =
        admin(&gate, "POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 422);
    assert!(
        r.json()["error"].as_str().unwrap().contains("`routes[0].surprise`: unknown field"),
        "{:?}",
        r.json()
    );

    // listeners only change with a restart
    gate.rewrite_config(&good.replace("listen = [\"{listen}\"]", "listen = [\"{listen}\", \"127.0.0.1:1\"]"));
    let r =
        admin(&gate, "POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 422);
    assert!(r.json()["error"].as_str().unwrap().contains("restart"), "{:?}", r.json());

    // a good one goes through the admin endpoint too
    gate.rewrite_config(&config(&[("/", &old.url()), ("/more", &old.url())], ""));
    let r =
        admin(&gate, "POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    let ready = admin(&gate, "GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").json();
    assert_eq!(ready["checks"]["config"]["routes"], 2);
    assert_eq!(ready["checks"]["config"]["failed_reloads"], 3);
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    let echo = Echo::start("app");
    let mut gate = Gate::start(&config(&[("/", &echo.url())], "grace_period = \"2s\""));
    let port = gate.port;
    let slow = std::thread::spawn(move || {
        try_raw(port, "GET /__slow?ms=1000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    });
    std::thread::sleep(Duration::from_millis(200));
    let stopped = Instant::now();
    gate.signal("TERM");
    let resp = slow.join().unwrap().unwrap();
    assert_eq!(resp.status, 200, "the request in flight finished");
    std::thread::sleep(Duration::from_millis(200));
    assert!(std::net::TcpStream::connect(("127.0.0.1", gate.port)).is_err(), "new connections are refused");
    while gate.is_running() {
        assert!(stopped.elapsed() < Duration::from_secs(15), "did not exit after the grace period");
        std::thread::sleep(Duration::from_millis(100));
    }
}
