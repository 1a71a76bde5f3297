//! Test harness: starts the real test IdP (oidc-provider), the echo upstream and authgate on
//! free loopback ports, and stops them when dropped.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn idp_dir() -> PathBuf {
    let dir = repo().join("tests/idp");
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "tests/idp/node_modules is missing: run `scripts/test` (or `npm ci --prefix tests/idp`)"
    );
    dir
}

/// A child process killed on drop.
pub struct Proc {
    child: Child,
    name: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts a node script in tests/idp and returns it with the JSON line it prints when ready.
    fn node(name: &'static str, script: &str, env: &[(&str, &str)]) -> (Proc, serde_json::Value) {
        let mut cmd = Command::new("node");
        cmd.arg(script).current_dir(idp_dir()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start node {script}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {} // keep draining so the child never blocks on a full pipe
        });
        let proc = Proc { child, name };
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{name} did not report readiness"));
        let ready = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{name} printed {line:?}: {e}"));
        (proc, ready)
    }
}

/// The test OpenID Provider.
pub struct Idp {
    _proc: Proc,
    /// Issuer URL, `http://127.0.0.1:<port>`.
    pub issuer: String,
}

impl Idp {
    /// Starts the IdP with extra environment (see tests/idp/idp.mjs for the settings).
    pub fn start(env: &[(&str, &str)]) -> Idp {
        let (proc, ready) = Proc::node("idp", "idp.mjs", env);
        Idp { _proc: proc, issuer: ready["issuer"].as_str().unwrap().to_owned() }
    }
}

/// The echo upstream.
pub struct Echo {
    _proc: Proc,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Echo {
    /// Starts an echo app that names itself `name` in every answer.
    pub fn start(name: &str) -> Echo {
        let (proc, ready) = Proc::node("echo", "echo.mjs", &[("ECHO_NAME", name)]);
        Echo { _proc: proc, port: ready["port"].as_u64().unwrap() as u16 }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A free TCP port on loopback (released for the caller to bind).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running authgate.
pub struct Gate {
    proc: Proc,
    /// Main listener port.
    pub port: u16,
    /// Admin listener port.
    pub admin_port: u16,
    /// Holds the config file and the log.
    pub dir: tempfile::TempDir,
}

impl Gate {
    /// Starts authgate with `config`, in which `{listen}` and `{admin}` are replaced by free
    /// addresses; waits until /healthz answers.
    pub fn start(config: &str) -> Gate {
        let port = free_port();
        let admin_port = free_port();
        let text = config
            .replace("{listen}", &format!("127.0.0.1:{port}"))
            .replace("{admin}", &format!("127.0.0.1:{admin_port}"))
            .replace("{port}", &port.to_string());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authgate.toml");
        std::fs::write(&path, text).unwrap();
        let log = std::fs::File::create(dir.path().join("authgate.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_authgate"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut gate = Gate { proc: Proc { child, name: "authgate" }, port, admin_port, dir };
        gate.wait_healthy();
        gate
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.proc.child.try_wait() {
                panic!("authgate exited ({status}); log:\n{}", self.log());
            }
            let health = try_raw(self.admin_port, "GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n");
            if health.is_ok_and(|r| r.status == 200) && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("authgate did not become healthy; log:\n{}", self.log());
    }

    /// Everything authgate has written.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("authgate.log")).unwrap_or_default()
    }

    /// Sends a raw HTTP/1.1 request (bytes exactly as given) to the main listener.
    pub fn raw(&self, request: &str) -> Response {
        try_raw(self.port, request).unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    /// `GET path` with `Host: host` and extra header lines.
    pub fn get(&self, host: &str, path: &str, extra_headers: &[(&str, &str)]) -> Response {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (k, v) in extra_headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        self.raw(&req)
    }

    /// The process id (for signals).
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The first value of a response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The headers the echo app received, as (name with original case, value).
pub fn echoed_headers(echo: &serde_json::Value) -> Vec<(String, String)> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_owned(), p[1].as_str().unwrap().to_owned()))
        .collect()
}

/// Values of an echoed header, by case-insensitive name.
pub fn echoed(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echoed_headers(echo).into_iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v).collect()
}

/// Writes `request` to `port` and reads one response (Content-Length, chunked or until close).
pub fn try_raw(port: u16, request: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(s);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).map_err(std::io::Error::other)?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if status != 204 && status != 304 && status >= 200 {
        reader.read_to_end(&mut body)?;
    }
    Ok(Response { status, headers, body })
}

/// Runs the authgate binary with `args` and returns (exit code, stdout, stderr).
pub fn authgate(args: &[&str], env: &[(&str, &str)], dir: &Path) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_authgate"));
    cmd.args(args).current_dir(dir).env_remove("AUTHGATE_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
