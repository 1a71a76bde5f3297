//! Log lines are written off the request path: with stderr not read at all (a stalled pipe), every
//! request is still answered and the lines that do not fit are dropped and counted; at exit, what
//! is queued is written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Echo, Gate, free_port, try_raw};

fn config(echo: &Echo, extra_log: &str) -> String {
    format!(
        r#"
[server]
listen = ["{{listen}}"]
admin_listen = "{{admin}}"

[log]
level = "info"
{extra_log}

[[routes]]
name = "pub"
path = "/pub"
upstream = "{echo}"
auth = "public"
"#,
        echo = echo.url()
    )
}

/// Stops the gateway however the test ends.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dropped(admin_port: u16) -> u64 {
    let r =
        try_raw(admin_port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let text = String::from_utf8_lossy(&r.body).into_owned();
    text.lines()
        .find(|l| l.starts_with("authgate_log_lines_dropped_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no authgate_log_lines_dropped_total in\n{text}"))
}

#[tokio::test]
async fn a_stalled_stderr_costs_log_lines_never_requests() {
    let echo = Echo::start("app");
    let (port, admin_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authgate.toml");
    let text = config(&echo, "buffer_lines = 64")
        .replace("{listen}", &format!("127.0.0.1:{port}"))
        .replace("{admin}", &format!("127.0.0.1:{admin_port}"));
    std::fs::write(&path, text).unwrap();
    // stderr is a pipe nobody reads until the end: once its 64 KiB are full, no write completes
    let child = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Stopped(child);
    let child = &mut child.0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while try_raw(admin_port, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map(|r| r.status)
        .ok()
        != Some(200)
    {
        assert!(Instant::now() < deadline, "authgate did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(dropped(admin_port), 0);
    // 3000 access-log lines of ~200 bytes: ten times what the pipe and the queue hold (a request
    // waiting for its log line would time out here)
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    for i in 0..3000 {
        let resp = client.get(format!("http://127.0.0.1:{port}/pub/{i}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
    }
    let lost = dropped(admin_port);
    assert!(lost >= 1000, "{lost} lines dropped");
    // the gateway keeps answering, and its log resumes once stderr is read again
    let mut stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reading = std::sync::Arc::clone(&log);
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = stderr.read(&mut buf) {
            reading.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut after = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // a line queued while the writer still empties the full queue may be dropped too
        let resp = client.get(format!("http://127.0.0.1:{port}/pub/after-{after}")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        after += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if log.lock().unwrap().contains("/pub/after-") {
            break;
        }
        assert!(Instant::now() < deadline, "the log never resumed");
    }
    let lost = dropped(admin_port);
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    let lines = log.lines().filter(|l| l.contains("authgate::access")).count() as u64;
    // every request's line was written or counted as dropped (nothing else is logged at info
    // per request on a public route: a per-request warning would count here too)
    assert_eq!(lines + lost, 3000 + after, "{lines} written, {lost} dropped");
    assert!(log.lines().last().is_some_and(|l| l.contains("authgate stopped")), "{log}");
}

#[tokio::test]
async fn queued_lines_are_written_at_exit() {
    let echo = Echo::start("app");
    let mut gate = Gate::start(&config(&echo, ""));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    // a burst from 20 clients, then SIGINT right after the last answer: the lines of the last
    // few milliseconds are still queued when the gateway stops
    let port = gate.port;
    let bursts = (0..20).map(|c| {
        let client = client.clone();
        async move {
            for i in 0..10 {
                let resp = client.get(format!("http://127.0.0.1:{port}/pub/{c}-{i}")).send().await.unwrap();
                assert_eq!(resp.status(), 200);
            }
        }
    });
    futures_util::future::join_all(bursts).await;
    gate.signal("INT");
    let deadline = Instant::now() + Duration::from_secs(10);
    while gate.is_running() {
        assert!(Instant::now() < deadline, "authgate did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = gate.log();
    let access = log.lines().filter(|l| l.contains("authgate::access")).count();
    assert_eq!(access, 200, "{log}");
    // the last line, logged right before the writer is flushed
    assert!(log.lines().last().is_some_and(|l| l.contains("authgate stopped")), "{log}");
}
