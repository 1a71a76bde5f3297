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
    proc: Proc,
    /// Issuer URL, `http://127.0.0.1:<port>`.
    pub issuer: String,
    /// Holds the IdP's signing keys (`rs256.pem`, `es256.pem`, `kids.json`).
    pub keys: tempfile::TempDir,
}

impl Idp {
    /// Starts the IdP with extra environment (see tests/idp/idp.mjs for the settings).
    pub fn start(env: &[(&str, &str)]) -> Idp {
        let keys = tempfile::tempdir().unwrap();
        let keys_dir = keys.path().to_str().unwrap().to_owned();
        let mut env = env.to_vec();
        env.push(("KEYS_DIR", &keys_dir));
        let (proc, ready) = Proc::node("idp", "idp.mjs", &env);
        Idp { proc, issuer: ready["issuer"].as_str().unwrap().to_owned(), keys }
    }

    /// Stops the IdP (its keys stay in `keys`).
    pub fn stop(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }

    /// Starts it again on the same port with the same keys, plus `env`
    /// (`ROTATE_KEYS=1` rotates the RS256 key).
    pub fn restart(&mut self, env: &[(&str, &str)]) {
        self.stop();
        let port = self.issuer.rsplit(':').next().unwrap().to_owned();
        let keys_dir = self.keys.path().to_str().unwrap().to_owned();
        let mut env = env.to_vec();
        env.push(("KEYS_DIR", &keys_dir));
        env.push(("IDP_PORT", &port));
        let (proc, ready) = Proc::node("idp", "idp.mjs", &env);
        assert_eq!(ready["issuer"].as_str(), Some(self.issuer.as_str()));
        self.proc = proc;
    }

    /// The `kid` of the IdP's `rs` or `es` key.
    pub fn kid(&self, which: &str) -> String {
        let kids: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.keys.path().join("kids.json")).unwrap()).unwrap();
        kids[which].as_str().unwrap().to_owned()
    }

    /// The IdP's private key `rs256.pem` or `es256.pem`.
    pub fn private_pem(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.keys.path().join(file)).unwrap()
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

/// A free TCP port on loopback (released for the caller to bind). Taken below the kernel's
/// ephemeral range (32768+), where node's `listen(0)` and outgoing connections pick theirs,
/// so that nothing else started by the tests can grab it before authgate binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 60) as u16 * 200;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + (base - 20_000 + offset) % 12_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
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
        Self::start_on(free_port(), config)
    }

    /// Like `start`, on a port chosen beforehand (the IdP must know the redirect URI).
    pub fn start_on(port: u16, config: &str) -> Gate {
        Self::start_logging(port, config, "info")
    }

    /// Like `start_on`, logging at `level` (`RUST_LOG`).
    pub fn start_logging(port: u16, config: &str, level: &str) -> Gate {
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
            .env("RUST_LOG", level)
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
            let health = try_raw(self.admin_port, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            if health.is_ok_and(|r| r.status == 200) && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("authgate did not become healthy; log:\n{}", self.log());
    }

    /// Waits until `/readyz` says ready (the provider's discovery and keys are loaded).
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ready = try_raw(
                self.admin_port,
                "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            );
            if ready.is_ok_and(|r| r.status == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("authgate never became ready; log:\n{}", self.log());
    }

    /// Rewrites the config file (same placeholders as `start`), for reload tests.
    pub fn rewrite_config(&self, config: &str) {
        let text = config
            .replace("{listen}", &format!("127.0.0.1:{}", self.port))
            .replace("{admin}", &format!("127.0.0.1:{}", self.admin_port))
            .replace("{port}", &self.port.to_string());
        std::fs::write(self.dir.path().join("authgate.toml"), text).unwrap();
    }

    /// Sends a signal to the authgate process.
    pub fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").args([&format!("-{signal}"), &self.pid().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(None))
    }

    /// Everything authgate has written. Its log lines are written by a thread of their own
    /// every 10 ms: read once the file has not grown for two windows of 50 ms (at most 2 s).
    pub fn log(&self) -> String {
        let path = self.dir.path().join("authgate.log");
        let size = || std::fs::metadata(&path).map_or(0, |m| m.len());
        let deadline = Instant::now() + Duration::from_secs(2);
        let (mut last, mut still) = (size(), 0);
        while still < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let now = size();
            still = if now == last { still + 1 } else { 0 };
            last = now;
        }
        std::fs::read_to_string(&path).unwrap_or_default()
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

/// A request to `url` with the session cookie, as a script makes it (JSON, no redirects): its
/// status, 0 when no answer came (a gateway mid-failover).
pub async fn session_status(url: &str, cookie: &str) -> u16 {
    reqwest::Client::new()
        .get(url)
        .header("cookie", format!("authgate_session={cookie}"))
        .header("accept", "application/json")
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// A request to `url` with a bearer token: its status, 0 when no answer came.
pub async fn bearer_status(url: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Signs `user` in by opening `url` (a browser route) in a fresh browser: the session cookie
/// for `base` when the sign-in ended on the page.
pub async fn try_sign_in(base: &str, url: &str, user: &str) -> Option<String> {
    let mut b = Browser::new();
    let (page, _) = b.navigate(url, Some(user)).await;
    (page.status == 200).then(|| b.cookie(base, "authgate_session")).flatten()
}

/// Tokens from the test IdP's token endpoint.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// The JWT access token.
    pub access_token: String,
    /// The id_token.
    pub id_token: String,
    /// The refresh token.
    pub refresh_token: Option<String>,
}

/// The redirect URI registered for the gateway's client by default.
pub const REDIRECT_URI: &str = "http://127.0.0.1:8080/oauth2/callback";

/// Signs `user` in at the IdP the way a browser would (authorization request, login form,
/// automatic consent), then redeems the code with PKCE as the `authgate` client.
pub async fn login(issuer: &str, user: &str) -> Tokens {
    use base64::Engine;
    use sha2::Digest;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = b64.encode(rand_bytes());
    let challenge = b64.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut jar: std::collections::BTreeMap<String, String> = Default::default();
    let mut url = reqwest::Url::parse_with_params(
        &format!("{issuer}/auth"),
        &[
            ("client_id", "authgate"),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid profile email organization permissions"),
            ("state", "test-state"),
            ("nonce", "test-nonce"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap();
    let mut form: Option<Vec<(&str, &str)>> = None;
    for _ in 0..10 {
        let cookie = jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let req = match form.take() {
            Some(f) => http.post(url.clone()).form(&f),
            None => http.get(url.clone()),
        };
        let resp = req.header("cookie", cookie).send().await.unwrap();
        for sc in resp.headers().get_all("set-cookie") {
            let pair = sc.to_str().unwrap().split(';').next().unwrap();
            if let Some((k, v)) = pair.split_once('=') {
                jar.insert(k.trim().to_owned(), v.to_owned());
            }
        }
        if resp.status().is_redirection() {
            let location = resp.headers()["location"].to_str().unwrap().to_owned();
            url = url.join(&location).unwrap();
            if location.starts_with(REDIRECT_URI) {
                break;
            }
        } else {
            assert_eq!(resp.status(), 200, "IdP answered {} at {url}", resp.status());
            let page = resp.text().await.unwrap();
            assert!(page.contains("Sign in"), "unexpected page at {url}: {page}");
            url = url.join(&format!("{}/login", url.path())).unwrap();
            form = Some(vec![("username", user), ("password", "password")]);
        }
    }
    assert!(url.as_str().starts_with(REDIRECT_URI), "login did not reach the redirect URI: {url}");
    let code = url.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()).expect("a code");
    let resp = http
        .post(format!("{issuer}/token"))
        .basic_auth("authgate", Some("authgate-test-secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "token endpoint: {}", resp.text().await.unwrap());
    let body: serde_json::Value = resp.json().await.unwrap();
    Tokens {
        access_token: body["access_token"].as_str().unwrap().to_owned(),
        id_token: body["id_token"].as_str().unwrap().to_owned(),
        refresh_token: body["refresh_token"].as_str().map(String::from),
    }
}

/// A client-credentials token for `client`.
pub async fn client_credentials(issuer: &str, client: &str, secret: &str) -> String {
    let resp = reqwest::Client::new()
        .post(format!("{issuer}/token"))
        .basic_auth(client, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

fn rand_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut b).unwrap();
    b
}

/// What the fault-injecting provider does when its JWKS is fetched.
#[derive(Debug, Clone)]
pub enum JwksFault {
    /// Serve this JWK Set.
    Serve(String),
    /// Accept the connection and never answer.
    Hang,
    /// Answer 200 with a body that is not a JWK Set.
    Garbage,
    /// Answer with this status.
    Status(u16),
}

/// A scripted provider for faults a real IdP will not produce: it serves a discovery document
/// naming itself as issuer, and a JWKS endpoint whose behaviour the test switches.
pub struct FaultIdp {
    /// `http://127.0.0.1:<port>`.
    pub issuer: String,
    fault: std::sync::Arc<std::sync::Mutex<JwksFault>>,
    jwks_hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FaultIdp {
    /// Starts serving `fault` for the JWKS.
    pub fn start(fault: JwksFault) -> FaultIdp {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let fault = std::sync::Arc::new(std::sync::Mutex::new(fault));
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (f, h, iss) = (fault.clone(), hits.clone(), issuer.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (f, h, iss) = (f.clone(), h.clone(), iss.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    let _ = reader.read_line(&mut line);
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                            break;
                        }
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let (status, body) = if path == "/.well-known/openid-configuration" {
                        // every field OpenID Connect Discovery requires, as a real provider sends
                        let doc = serde_json::json!({
                            "issuer": iss,
                            "jwks_uri": format!("{iss}/jwks"),
                            "authorization_endpoint": format!("{iss}/auth"),
                            "response_types_supported": ["code"],
                            "subject_types_supported": ["public"],
                            "id_token_signing_alg_values_supported": ["RS256"],
                        });
                        (200, doc.to_string())
                    } else if path == "/jwks" {
                        h.fetch_add(1, Ordering::SeqCst);
                        let current = f.lock().unwrap().clone();
                        match current {
                            JwksFault::Serve(doc) => (200, doc),
                            JwksFault::Garbage => (200, "<html>this is not a JWK Set</html>".into()),
                            JwksFault::Status(s) => (s, String::new()),
                            JwksFault::Hang => {
                                std::thread::sleep(Duration::from_secs(60));
                                return;
                            }
                        }
                    } else {
                        (404, String::new())
                    };
                    let mut s = stream;
                    let _ = write!(
                        s,
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        FaultIdp { issuer, fault, jwks_hits: hits }
    }

    /// Switches what the JWKS endpoint does.
    pub fn set(&self, fault: JwksFault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// How many times the JWKS was requested.
    pub fn jwks_hits(&self) -> usize {
        self.jwks_hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A scripted browser: a cookie jar per `host:port`, manual redirects, and form submission
/// (the IdP's login form, and the auto-submitting logout form that a real browser's script
/// would post).
pub struct Browser {
    http: reqwest::Client,
    jars: std::collections::HashMap<String, std::collections::BTreeMap<String, String>>,
    /// Extra headers sent with every request (e.g. `Accept`).
    pub headers: Vec<(String, String)>,
}

/// One response as the browser saw it.
#[derive(Debug, Clone)]
pub struct Page {
    /// Final URL.
    pub url: reqwest::Url,
    /// Status.
    pub status: u16,
    /// Response headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub body: String,
}

impl Page {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The `Location` of a redirect.
    pub fn location(&self) -> String {
        self.header_all("location")
            .first()
            .map(|l| l.to_string())
            .unwrap_or_else(|| panic!("no Location: {self:?}"))
    }

    /// All values of a header.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    /// A browser with empty cookie jars that asks for HTML, as a navigation does.
    pub fn new() -> Self {
        Browser {
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            jars: Default::default(),
            headers: vec![
                ("accept".into(), "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8".into()),
                ("sec-fetch-mode".into(), "navigate".into()),
            ],
        }
    }

    /// Sends `name: value` with every request from now on (e.g. the `X-Forwarded-For` of a
    /// trusted proxy in front of this browser).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    fn origin_key(url: &reqwest::Url) -> String {
        format!("{}:{}", url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0))
    }

    /// Sets a cookie in the jar of `url`'s host and port.
    pub fn set_cookie(&mut self, url: &str, name: &str, value: &str) {
        let url = reqwest::Url::parse(url).unwrap();
        self.jars.entry(Self::origin_key(&url)).or_default().insert(name.into(), value.into());
    }

    /// The value of a cookie in the jar of `url`.
    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let url = reqwest::Url::parse(url).unwrap();
        self.jars.get(&Self::origin_key(&url)).and_then(|j| j.get(name).cloned())
    }

    /// One request, no redirect following.
    pub async fn request(
        &mut self,
        method: &str,
        url: &str,
        form: Option<Vec<(String, String)>>,
        extra: &[(&str, &str)],
    ) -> Page {
        let url = reqwest::Url::parse(url).unwrap();
        let key = Self::origin_key(&url);
        let cookie = self
            .jars
            .get(&key)
            .map(|j| j.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "));
        let mut req = match method {
            "POST" => self.http.post(url.clone()),
            _ => self.http.get(url.clone()),
        };
        for (k, v) in &self.headers {
            if !extra.iter().any(|(e, _)| e.eq_ignore_ascii_case(k)) {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        if let Some(c) = cookie.filter(|c| !c.is_empty()) {
            req = req.header("cookie", c);
        }
        if let Some(f) = form {
            req = req.form(&f);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        for (k, v) in &headers {
            if k == "set-cookie" {
                let pair = v.split(';').next().unwrap_or("");
                if let Some((name, value)) = pair.split_once('=') {
                    let jar = self.jars.entry(key.clone()).or_default();
                    if value.is_empty() || v.to_ascii_lowercase().contains("max-age=0") {
                        jar.remove(name.trim());
                    } else {
                        jar.insert(name.trim().to_owned(), value.to_owned());
                    }
                }
            }
        }
        let body = resp.text().await.unwrap_or_default();
        Page { url, status, headers, body }
    }

    /// Navigates to `url`, following redirects; on the IdP's login form signs in as `user`
    /// (if given), and posts auto-submitting forms. Returns the last page and the redirects seen.
    pub async fn navigate(&mut self, url: &str, user: Option<&str>) -> (Page, Vec<String>) {
        self.navigate_until(url, user, None).await
    }

    /// Like `navigate`, but stops before following a redirect to a URL starting with `stop`
    /// (the last element of the returned redirects is that URL).
    pub async fn navigate_until(
        &mut self,
        url: &str,
        user: Option<&str>,
        stop: Option<&str>,
    ) -> (Page, Vec<String>) {
        let mut seen = Vec::new();
        let mut next: (String, String, Option<Vec<(String, String)>>) = ("GET".into(), url.into(), None);
        for _ in 0..25 {
            let page = self.request(&next.0, &next.1, next.2.take(), &[]).await;
            if (300..400).contains(&page.status) {
                let loc = page.headers.iter().find(|(k, _)| k == "location").map(|(_, v)| v.clone()).unwrap();
                let target = page.url.join(&loc).unwrap().to_string();
                seen.push(target.clone());
                if stop.is_some_and(|s| target.starts_with(s)) {
                    return (page, seen);
                }
                next = ("GET".into(), target, None);
                continue;
            }
            if page.status == 200 && page.body.contains("name=\"password\"") {
                let Some(user) = user else { return (page, seen) };
                let action = form_action(&page.body).unwrap();
                let target = page.url.join(&action).unwrap().to_string();
                next = (
                    "POST".into(),
                    target,
                    Some(vec![("username".into(), user.into()), ("password".into(), "password".into())]),
                );
                continue;
            }
            // `Refresh: N;url=U` (a page that continues by itself): wait N s and go on, as
            // browsers do
            if let Some((_, refresh)) = page.headers.iter().find(|(k, _)| k == "refresh") {
                let (secs, target) = refresh.split_once(";url=").unwrap();
                seen.push(format!("refresh after {secs} s"));
                tokio::time::sleep(Duration::from_secs(secs.trim().parse().unwrap())).await;
                next = ("GET".into(), page.url.join(target).unwrap().to_string(), None);
                continue;
            }
            if page.status == 200 && page.body.contains("document.forms[0].submit()") {
                let action = form_action(&page.body).unwrap();
                let target = page.url.join(&action).unwrap().to_string();
                next = ("POST".into(), target, Some(hidden_inputs(&page.body)));
                continue;
            }
            return (page, seen);
        }
        panic!("too many redirects from {url}: {seen:?}");
    }
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let end = tag[start..].find('"')? + start;
    Some(tag[start..end].replace("&amp;", "&"))
}

fn form_action(html: &str) -> Option<String> {
    let start = html.find("<form")?;
    let end = html[start..].find('>')? + start;
    attr(&html[start..end], "action")
}

fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    html.split("<input")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>').unwrap_or(rest.len())];
            Some((attr(tag, "name")?, attr(tag, "value").unwrap_or_default()))
        })
        .collect()
}

impl Idp {
    /// Token-endpoint calls the IdP saw, by grant type and outcome (`ok`, or the error code).
    pub async fn token_calls(&self, grant: &str, outcome: &str) -> u64 {
        let stats: serde_json::Value =
            reqwest::get(format!("{}/__stats", self.issuer)).await.unwrap().json().await.unwrap();
        stats[grant][outcome].as_u64().unwrap_or(0)
    }

    /// Makes the next `count` token-endpoint calls answer 429 with `Retry-After: retry_after`.
    pub async fn throttle_token_endpoint(&self, count: u32, retry_after: u32) {
        let url = format!("{}/__faults?token429={count}&retry_after={retry_after}", self.issuer);
        let resp = reqwest::Client::new().post(url).send().await.unwrap();
        assert!(resp.status().is_success());
    }
}

/// A real `redis-server` on a free port, persisting to a temporary directory (append-only file,
/// synced on every write) so that a restart keeps its data.
pub struct Redis {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    /// It speaks only TLS, with a certificate from the CA at `ca_file()`.
    tls: bool,
}

impl Redis {
    /// Starts it and waits until it answers.
    pub fn start() -> Redis {
        let mut redis =
            Redis { child: None, port: free_port(), dir: tempfile::tempdir().unwrap(), tls: false };
        redis.run();
        redis
    }

    /// Starts one that speaks only TLS (`rediss://`), with a certificate for 127.0.0.1 issued
    /// by a private CA made for it (`ca_file`), and that accepts only clients showing a
    /// certificate from that CA (`client_files`), as redis-server does by default.
    pub fn start_tls() -> Redis {
        let mut redis =
            Redis { child: None, port: free_port(), dir: tempfile::tempdir().unwrap(), tls: true };
        let dir = redis.dir.path();
        std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        std::fs::write(dir.join("client.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
        let openssl = |args: &str| {
            let out = Command::new("openssl").args(args.split(' ')).current_dir(dir).output().unwrap();
            assert!(out.status.success(), "openssl {args}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        openssl(&format!("req -x509 {key} -keyout ca.key -out ca.pem -days 1 -subj /CN=authgate-test-ca"));
        openssl(&format!("req {key} -keyout server.key -out server.csr -subj /CN=127.0.0.1"));
        openssl(
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 \
             -extfile ext.cnf",
        );
        openssl(&format!("req {key} -keyout client.key -out client.csr -subj /CN=authgate"));
        openssl(
            "x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 1 \
             -extfile client.cnf",
        );
        redis.run();
        redis
    }

    /// The PEM file of the CA that issued a TLS server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A client certificate and key (PEM files) that a TLS server accepts.
    pub fn client_files(&self) -> (PathBuf, PathBuf) {
        (self.dir.path().join("client.pem"), self.dir.path().join("client.key"))
    }

    fn run(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", ""]);
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "yes"]);
            cmd.arg("--tls-cert-file").arg(self.dir.path().join("server.pem"));
            cmd.arg("--tls-key-file").arg(self.dir.path().join("server.key"));
            cmd.arg("--tls-ca-cert-file").arg(self.ca_file());
        } else {
            cmd.args(["--port", &port]);
        }
        let child = cmd
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server (run scripts/test to install it): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.tls {
                if self.cli(&["PING"]).trim() == "PONG" {
                    return;
                }
            } else if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.write_all(b"PING\r\n");
                let mut buf = [0u8; 7];
                if s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", if self.tls { "rediss" } else { "redis" }, self.port)
    }

    /// Stops it (its data stays on disk).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Runs one command with `redis-cli` and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()]);
        if self.tls {
            let (cert, key) = self.client_files();
            cmd.arg("--tls")
                .arg("--cacert")
                .arg(self.ca_file())
                .arg("--cert")
                .arg(cert)
                .arg("--key")
                .arg(key);
        }
        let out = cmd.args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The session secret of `gateway_tables`.
pub const SESSION_SECRET: &str = "test-session-secret-0123456789abcdefghijklmn";

/// The `[server]`, `[provider]` and `[session]` tables of a gateway at `base` that signs users in
/// at `issuer` as the test IdP's `authgate` client; `session` lines go into `[session]` (e.g. the
/// Redis store). Callers add `[[routes]]` and any other table.
pub fn gateway_tables(base: &str, issuer: &str, session: &str) -> String {
    format!(
        r#"
[server]
listen = ["{{listen}}"]
admin_listen = "{{admin}}"
public_url = "{base}"

[provider]
issuer = "{issuer}"
client_id = "authgate"
client_secret = "authgate-test-secret"
audience = "authgate"
scopes = ["openid", "profile", "email", "organization", "permissions"]

[session]
secret = "{SESSION_SECRET}"
{session}
"#
    )
}

impl Gate {
    /// The admin listener's answer to `GET path`: (status, body as text).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let r = try_raw(
            self.admin_port,
            &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        )
        .unwrap();
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    }

    /// `POST /reload` on the admin listener (no admin token): status and body.
    pub fn admin_post_reload(&self) -> (u16, String) {
        let r = try_raw(
            self.admin_port,
            "POST /reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    }
}

/// A bearer-token verifier for `config`'s provider that holds the public half of a throwaway
/// ES256 key (kid `k1`), as after loading the provider's JWK Set (ES256 and RS256 allowed,
/// 60 s leeway, client id `authgate`); and the private key, to sign tokens with.
pub fn es256_verifier(
    config: &authgate::config::Config,
) -> (authgate::jwt::TokenVerifier, jsonwebtoken::EncodingKey) {
    use jsonwebtoken::Algorithm;
    let pem = authgate::assertion::keys::generate_pem("ES256").unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("k1".into());
    let provider =
        std::sync::Arc::new(authgate::oidc::OidcProvider::new(config.provider.as_ref().unwrap()).unwrap());
    let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
    provider.jwks.install(authgate::oidc::jwks::KeySet::parse(jwks.as_bytes()).unwrap());
    let settings = authgate::jwt::VerifierSettings {
        algorithms: vec![Algorithm::ES256, Algorithm::RS256],
        leeway: 60,
        cache_size: 1000,
        client_id: "authgate".into(),
        extra_claims: vec![],
        name: "default".into(),
        namespace: None,
    };
    (authgate::jwt::TokenVerifier::new(provider, settings), key)
}

/// The headers (lower case, sorted) authgate answers a forward-auth request with under the
/// default configuration, for a front proxy to copy: the identity headers, the assertion and
/// `Authorization` (on pass_access_token routes).
pub fn headers_authgate_sends() -> Vec<String> {
    let defaults = authgate::config::HeaderNames::default();
    let mut names: Vec<String> = defaults.entries().iter().map(|(_, n)| n.to_ascii_lowercase()).collect();
    names.push(authgate::config::AssertionConfig::default().header.to_ascii_lowercase());
    names.push("authorization".into());
    names.sort();
    names
}
