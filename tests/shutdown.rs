//! Stopping under load (a rolling update): SIGTERM turns readiness false at once while the
//! listeners keep accepting for `server.drain_period`; the load balancer, which follows
//! readiness, moves traffic away; requests in flight finish; only then are new connections
//! refused. Not one request fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{Echo, Gate, try_raw};

fn readyz(gate: &Gate) -> std::io::Result<common::Response> {
    try_raw(gate.admin_port, "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_under_load_fails_no_request() {
    let echo = Echo::start("app");
    let mut gate = Gate::start(&format!(
        "[server]\nlisten = [\"{{listen}}\"]\nadmin_listen = \"{{admin}}\"\n\
         drain_period = \"3s\"\ngrace_period = \"3s\"\n\n\
         [[routes]]\npath = \"/\"\nupstream = \"{}\"\nauth = \"public\"\n",
        echo.url()
    ));
    gate.wait_ready();
    let base = format!("http://127.0.0.1:{}", gate.port);

    // the load balancer: sends while the instance is in rotation, polls readiness like a
    // Kubernetes readiness probe (every 100 ms; one failure takes it out)
    let in_rotation = Arc::new(AtomicBool::new(true));
    let admin_port = gate.admin_port;
    let probe = {
        let in_rotation = in_rotation.clone();
        tokio::task::spawn_blocking(move || {
            while in_rotation.load(Ordering::Relaxed) {
                let ready = try_raw(
                    admin_port,
                    "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                );
                if !ready.is_ok_and(|r| r.status == 200) {
                    in_rotation.store(false, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let served = Arc::new(AtomicU32::new(0));
    let stopping = Arc::new(AtomicBool::new(false));
    let served_while_stopping = Arc::new(AtomicU32::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        // keep-alive connections, as a load balancer's pool holds them
        let (http, url, in_rotation) = (reqwest::Client::new(), format!("{base}/x"), in_rotation.clone());
        let (served, stopping, served_while_stopping) =
            (served.clone(), stopping.clone(), served_while_stopping.clone());
        clients.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            while in_rotation.load(Ordering::Relaxed) {
                let after_sigterm = stopping.load(Ordering::Relaxed);
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        served.fetch_add(1, Ordering::Relaxed);
                        if after_sigterm {
                            served_while_stopping.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(format!("{e:?}")),
                }
            }
            failed
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // a long request in flight when the stop begins, and one begun during the drain that is
    // still running when the listeners close
    let port = gate.port;
    let early = tokio::task::spawn_blocking(move || {
        try_raw(port, "GET /__slow?ms=2000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = served.load(Ordering::Relaxed);
    let stopped = Instant::now();
    stopping.store(true, Ordering::Relaxed);
    gate.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let ready = readyz(&gate).unwrap();
    assert_eq!(ready.status, 503, "readiness turns false at once");
    assert_eq!(ready.json()["checks"]["draining"]["ready"], false, "{:?}", ready.json());
    let during = gate.raw("GET /y HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(during.status, 200, "new connections are still served during the drain");
    assert_eq!(during.header("connection"), Some("close"), "keep-alive clients are told to go elsewhere");
    // runs past the end of the drain (3 s), into the grace period
    let late = tokio::task::spawn_blocking(move || {
        let r = try_raw(port, "GET /__slow?ms=4500 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        (r, stopped.elapsed())
    });

    // the balancer has taken the instance out; the load stops and failed nowhere
    probe.await.unwrap();
    let mut total_failed = Vec::new();
    for c in clients {
        total_failed.extend(c.await.unwrap());
    }
    assert!(total_failed.is_empty(), "requests failed during the stop: {total_failed:?}");
    assert!(before > 200, "too little load to mean anything: {before}");
    assert!(
        served_while_stopping.load(Ordering::Relaxed) > 0,
        "requests sent after SIGTERM, until readiness said no, were served"
    );

    assert_eq!(early.await.unwrap().unwrap().status, 200, "the request in flight at SIGTERM finished");
    // after the drain period, the listeners close; the request begun during it still finishes
    while stopped.elapsed() < Duration::from_millis(2800) {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", gate.port)).is_ok(),
            "connections refused {:?} after SIGTERM, before the drain period ended",
            stopped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(3300).saturating_sub(stopped.elapsed())).await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", gate.port)).is_err(), "new connections are refused");
    let (late, finished) = late.await.unwrap();
    assert_eq!(late.unwrap().status, 200, "the request begun during the drain finished");
    assert!(finished > Duration::from_secs(4), "it finished after the listeners closed: {finished:?}");
    while gate.is_running() {
        // drain 3 s + grace 3 s + Pingora's runtime stop (at most 5 s)
        assert!(stopped.elapsed() < Duration::from_secs(14), "did not exit after the grace period");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = gate.log();
    assert!(log.contains("SIGTERM: not ready any more"), "{log}");
}

/// SIGINT is the fast stop it always was, also in the middle of a drain.
#[test]
fn sigint_cuts_a_drain_short() {
    let echo = Echo::start("app");
    let mut gate = Gate::start(&format!(
        "[server]\nlisten = [\"{{listen}}\"]\nadmin_listen = \"{{admin}}\"\ndrain_period = \"30s\"\n\n\
         [[routes]]\npath = \"/\"\nupstream = \"{}\"\nauth = \"public\"\n",
        echo.url()
    ));
    gate.wait_ready();
    gate.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(readyz(&gate).unwrap().status, 503, "draining");
    assert!(gate.is_running());
    let stopped = Instant::now();
    gate.signal("INT");
    while gate.is_running() {
        assert!(stopped.elapsed() < Duration::from_secs(10), "SIGINT waited for the drain");
        std::thread::sleep(Duration::from_millis(50));
    }
}
