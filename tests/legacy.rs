//! What legacy backends need from the gateway: request bodies read whole before the backend is
//! contacted (`server.limits.request_buffer`), and header names in the case they were written.
//! The backend here is a raw socket that records the bytes it receives, and when.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Gate;

/// One connection the backend accepted: when its first byte arrived, and every byte.
#[derive(Debug, Clone)]
struct Received {
    first_byte: Instant,
    bytes: Vec<u8>,
}

/// A backend that records what it receives and answers each request `200 ok` once it has read
/// the request's body by its `Content-Length` (or to the end of a chunked body).
struct RawUpstream {
    port: u16,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl RawUpstream {
    fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let record = record.clone();
                std::thread::spawn(move || serve(stream, &record));
            }
        });
        RawUpstream { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn connections(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, record: &Mutex<Vec<Received>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut index = None;
    let mut push = |bytes: &[u8]| {
        let mut all = record.lock().unwrap();
        let i = *index.get_or_insert_with(|| {
            all.push(Received { first_byte: Instant::now(), bytes: Vec::new() });
            all.len() - 1
        });
        all[i].bytes.extend_from_slice(bytes);
    };
    loop {
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            push(line.as_bytes());
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
            if line == "\r\n" {
                break;
            }
        }
        if chunked {
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                push(line.as_bytes());
                if line == "0\r\n" {
                    let mut end = String::new();
                    let _ = reader.read_line(&mut end);
                    push(end.as_bytes());
                    break;
                }
            }
        } else {
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            push(&body);
        }
        if writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
            return;
        }
    }
}

fn gate_for(upstream: &RawUpstream, extra: &str) -> Gate {
    gate_with(upstream, extra, "")
}

/// A gateway with one public route to `upstream`, `extra` in `[server]` and more `tables`.
fn gate_with(upstream: &RawUpstream, extra: &str, tables: &str) -> Gate {
    Gate::start(&format!(
        r#"
[server]
listen = ["{{listen}}"]
admin_listen = "{{admin}}"
public_url = "http://127.0.0.1:{{port}}"
{extra}

{tables}

[[routes]]
name = "legacy"
path = "/"
upstream = "{}"
auth = "public"
"#,
        upstream.url()
    ))
}

/// Sends `head` then each of `body_parts` after `pause`; returns the status line's code and when
/// the last part began to go out (nothing can have it before).
fn send_slowly(port: u16, head: &str, body_parts: &[&[u8]], pause: Duration) -> (u16, Instant) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut last = Instant::now();
    for part in body_parts {
        std::thread::sleep(pause);
        last = Instant::now();
        if s.write_all(part).is_err() {
            break; // the gateway answered and closed already
        }
    }
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let code = status.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, last)
}

#[test]
fn malformed_chunked_bodies_get_400_and_never_reach_the_backend() {
    let upstream = RawUpstream::start();
    let gate = gate_for(&upstream, "");
    let framings = [
        ("a 0x chunk size", "0x5\r\nhello\r\n0\r\n\r\n"),
        ("a chunk size that overflows", "fffffffffffffffffffffffff1\r\nhello\r\n0\r\n\r\n"),
        ("a chunk longer than its size", "2\r\nhello\r\n0\r\n\r\n"),
        ("no hex digits", "zz\r\nhello\r\n0\r\n\r\n"),
    ];
    for (what, body) in framings {
        let resp = gate.raw(&format!(
            "POST /form HTTP/1.1\r\nHost: app.example.com\r\nAccept: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n{body}"
        ));
        assert_eq!(resp.status, 400, "{what}: {}", String::from_utf8_lossy(&resp.body));
        assert_eq!(resp.json()["error"], "bad_request", "{what}");
    }
    assert!(upstream.connections().is_empty(), "the backend saw {:?}", upstream.connections());
    // a well-formed chunked body goes through whole
    let resp = gate.raw(
        "POST /form HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    let seen = upstream.connections();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].bytes.ends_with(b"5\r\nhello\r\n0\r\n\r\n"),
        "{}",
        String::from_utf8_lossy(&seen[0].bytes)
    );
}

#[test]
fn a_slow_body_reaches_the_backend_only_when_complete() {
    let upstream = RawUpstream::start();
    let gate = gate_for(&upstream, "[server.limits]\nrequest_body_timeout = \"2s\"");
    // ten bytes at one every 100 ms: the backend hears nothing until the last one is in
    let parts: Vec<&[u8]> = b"0123456789".chunks(1).collect();
    let head =
        "POST /upload HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 10\r\nConnection: close\r\n\r\n";
    let (status, last_sent) = send_slowly(gate.port, head, &parts, Duration::from_millis(100));
    assert_eq!(status, 200);
    let seen = upstream.connections();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].first_byte >= last_sent, "the backend was contacted before the body was complete");
    assert!(seen[0].bytes.ends_with(b"\r\n\r\n0123456789"));

    // too slow for request_body_timeout: 408, and the backend is never contacted
    let parts: Vec<&[u8]> = b"0123".chunks(1).collect();
    let (status, _) = send_slowly(gate.port, head, &parts, Duration::from_millis(900));
    assert_eq!(status, 408);
    assert_eq!(upstream.connections().len(), 1, "the slow request reached the backend");
}

#[test]
fn large_bodies_arrive_whole_and_bodies_past_the_buffer_stream() {
    let upstream = RawUpstream::start();
    let gate = gate_for(&upstream, "[server.limits]\nrequest_buffer = \"512KiB\"");
    for size in [1, 65_535, 65_536, 65_537, 300_000, 524_288, 2_000_000] {
        let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let mut s = TcpStream::connect(("127.0.0.1", gate.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let head = format!(
            "PUT /blob HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body).unwrap();
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{size}: {answer}");
        let seen = upstream.connections();
        let got = &seen.last().unwrap().bytes;
        assert!(got.ends_with(&body), "{size}: the body did not arrive intact");
        let head_len = got.len() - body.len();
        let head = String::from_utf8_lossy(&got[..head_len]).to_ascii_lowercase();
        assert!(head.contains(&format!("content-length: {size}\r\n")), "{size}: {head}");
    }
}

#[test]
fn expect_continue_is_answered_by_the_gateway_when_it_buffers() {
    let upstream = RawUpstream::start();
    let gate = gate_for(&upstream, "");
    let mut s = TcpStream::connect(("127.0.0.1", gate.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"POST /form HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\
          Connection: close\r\n\r\n",
    )
    .unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line}");
    s.write_all(b"hello").unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("HTTP/1.1 200"), "{rest}");
    let seen = String::from_utf8_lossy(&upstream.connections()[0].bytes).to_ascii_lowercase();
    assert!(!seen.contains("expect:"), "the backend was asked to continue: {seen}");
    assert!(seen.ends_with("\r\n\r\nhello"));
}

/// The header lines of the last request the backend received (names as sent).
fn header_lines(upstream: &RawUpstream) -> Vec<String> {
    let seen = upstream.connections();
    let bytes = &seen.last().unwrap().bytes;
    let text = String::from_utf8_lossy(bytes);
    let head = text.split("\r\n\r\n").next().unwrap();
    head.lines().skip(1).map(str::to_owned).collect()
}

fn names(lines: &[String]) -> Vec<&str> {
    lines.iter().filter_map(|l| l.split_once(':').map(|(n, _)| n)).collect()
}

const CASED_REQUEST: &str = "GET /page HTTP/1.1\r\nHost: app.example.com\r\nX-Custom-Thing: a\r\nx-lower: b\r\n\
    ACCEPT: */*\r\nX-Multi: 1\r\nx-MULTI: 2\r\nX-User-Id: forged\r\nConnection: close\r\n\r\n";

/// Header names reach the backend as the client wrote them and as the configuration spells the
/// gateway's own, byte for byte; `preserve_case = false` sends them in lower case (issue 19
/// item 16).
#[test]
fn header_names_keep_their_case_unless_lower_case_is_chosen() {
    let upstream = RawUpstream::start();
    let gate = gate_for(&upstream, "");
    assert_eq!(gate.raw(CASED_REQUEST).status, 200);
    let lines = header_lines(&upstream);
    for line in ["X-Custom-Thing: a", "x-lower: b", "ACCEPT: */*", "X-Multi: 1", "x-MULTI: 2"] {
        assert!(lines.iter().any(|l| l == line), "{line:?} not in {lines:?}");
    }
    let sent = names(&lines);
    for name in ["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Host"] {
        assert!(sent.contains(&name), "{name} not in {sent:?}");
    }
    assert!(!sent.iter().any(|n| n.eq_ignore_ascii_case("x-user-id")), "a forged identity header passed");

    let upstream = RawUpstream::start();
    let gate = gate_with(&upstream, "", "[headers]\npreserve_case = false\n");
    assert_eq!(gate.raw(CASED_REQUEST).status, 200);
    let lines = header_lines(&upstream);
    let sent = names(&lines);
    for name in ["x-custom-thing", "x-lower", "accept", "x-multi", "x-forwarded-for", "x-forwarded-proto"] {
        assert!(sent.contains(&name), "{name} not in {sent:?}");
    }
    assert!(!sent.iter().any(|n| n.starts_with("X-") || *n == "ACCEPT"), "{sent:?}");
}

/// The identity headers are spelled exactly as configured, for a real token from the test IdP.
#[tokio::test]
async fn identity_header_names_are_sent_as_configured() {
    let idp = common::Idp::start(&[]);
    let alice = common::login(&idp.issuer, "alice").await;
    for (preserve, want_id, want_email) in
        [(true, "X-Legacy-UserID", "X-User-Email"), (false, "x-legacy-userid", "x-user-email")]
    {
        let upstream = RawUpstream::start();
        let gate = Gate::start(&format!(
            r#"
[server]
listen = ["{{listen}}"]
admin_listen = "{{admin}}"
public_url = "http://127.0.0.1:{{port}}"

[provider]
issuer = "{issuer}"
client_id = "authgate"
client_secret = "authgate-test-secret"
audience = "authgate"

[headers]
user_id = "X-Legacy-UserID"
preserve_case = {preserve}

[[routes]]
name = "api"
path = "/"
upstream = "{upstream}"
auth = "api"
"#,
            issuer = idp.issuer,
            upstream = upstream.url()
        ));
        gate.wait_ready();
        let resp =
            gate.get("127.0.0.1", "/x", &[("Authorization", &format!("Bearer {}", alice.access_token))]);
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        let lines = header_lines(&upstream);
        assert!(lines.iter().any(|l| l.starts_with(&format!("{want_id}: a1b2c3d4-"))), "{lines:?}");
        assert!(lines.contains(&format!("{want_email}: alice@acme.test")), "{lines:?}");
    }
}

/// A backend that drops every kept-alive connection at its second request (as a backend whose
/// idle timeout just expired does), and records each whole request it answers.
fn flaky_upstream() -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answered: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let record = answered.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let record = record.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                for n in 0.. {
                    let mut head = Vec::new();
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        head.extend_from_slice(line.as_bytes());
                        if line == "\r\n" {
                            break;
                        }
                    }
                    if n == 1 {
                        return; // the kept-alive connection goes away under the second request
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    head.extend_from_slice(&body);
                    record.lock().unwrap().push(head);
                    if writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, answered)
}

/// Pingora retries an idempotent request whose reused upstream connection failed; a body read
/// whole before the upstream (past the 64 KiB Pingora keeps itself) goes whole on the retry too.
#[test]
fn a_retried_request_sends_the_whole_buffered_body_again() {
    let (port, answered) = flaky_upstream();
    let gate = Gate::start(&format!(
        r#"
[server]
listen = ["{{listen}}"]
admin_listen = "{{admin}}"
public_url = "http://127.0.0.1:{{port}}"
threads = 1

[[routes]]
name = "legacy"
path = "/"
upstream = "http://127.0.0.1:{port}"
auth = "public"
"#
    ));
    // the first request leaves a kept-alive connection in the pool
    let first = gate.raw("GET /warm HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n");
    assert_eq!(first.status, 200);
    let body: Vec<u8> = (0..300_000).map(|i| b'a' + (i % 26) as u8).collect();
    let mut s = TcpStream::connect(("127.0.0.1", gate.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let head =
        "PUT /blob HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 300000\r\nConnection: close\r\n\r\n";
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body).unwrap();
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answered = answered.lock().unwrap();
    assert_eq!(answered.len(), 2, "the warm-up and the retried PUT");
    assert!(answered[1].ends_with(&body), "the retry carried {} bytes", answered[1].len());
}
