//! The command line: `--version`, and `check` on good and bad configs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use common::{authgate, repo};

#[test]
fn version_prints_the_package_version() {
    let (code, out, _) = authgate(&["--version"], &[], &repo());
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("authgate {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_accepts_the_reference_config_and_prints_the_route_table() {
    let (code, out, err) = authgate(&["check", "--config", "config/authgate.toml"], &[], &repo());
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ROUTE") && lines[0].contains("UPSTREAM"), "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("wiki ") && l.contains("browser") && l.contains("licenses any [wiki]")),
        "{out}"
    );
    assert!(out.trim_end().ends_with("config/authgate.toml: OK"), "{out}");
}

#[test]
fn check_reads_the_config_path_from_the_environment() {
    let (code, out, err) = authgate(&["check"], &[("AUTHGATE_CONFIG", "config/authgate.toml")], &repo());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("public-assets"));
}

#[test]
fn every_example_passes_check() {
    let mut checked = 0;
    let dirs = [repo().join("examples"), repo().join("examples/forward-auth")];
    for entry in dirs.iter().flat_map(|d| std::fs::read_dir(d).unwrap()) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (code, _, err) = authgate(&["check", "--config", path.to_str().unwrap()], &[], &repo());
            assert_eq!(code, 0, "{}: {err}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 1, "no examples found");
}

const BASE: &str = r#"
[server]
public_url = "http://127.0.0.1:8080"

[provider]
issuer = "https://auth.example.com"
client_id = "authgate"

[session]
secret = "0123456789abcdefghijklmnopqrstuvwxyzABCDEF"

[[routes]]
path = "/"
upstream = "http://127.0.0.1:3000"
auth = "browser"
"#;

/// Writes `text` to a temp file, runs `check` on it, and returns (exit code, stderr).
fn check(text: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gate.toml"), text).unwrap();
    let (code, _, err) = authgate(&["check", "--config", "gate.toml"], env, dir.path());
    (code, err)
}

#[test]
fn the_base_config_is_valid() {
    assert_eq!(check(BASE, &[]), (0, String::new()));
    // RFC 6761 loopback names may serve a plain-http provider (a development IdP)
    for issuer in
        ["http://idp.localhost:9400", "http://localhost:9400", "http://127.0.0.2:9400", "http://[::1]:9400"]
    {
        let (code, out) = check(&BASE.replace("https://auth.example.com", issuer), &[]);
        assert_eq!(code, 0, "{issuer}: {out}");
    }
}

/// Each bad config must fail, naming the key and its `line:column`.
#[test]
fn bad_configs_name_the_key_and_the_line() {
    let cases: &[(&str, String, &str)] = &[
        (
            "unknown key",
            BASE.replace("client_id = \"authgate\"", "client_id = \"authgate\"\nclient_secert = \"x\""),
            "gate.toml:8:1: `provider.client_secert`: unknown field `client_secert`",
        ),
        (
            "missing environment variable",
            BASE.replace("https://auth.example.com", "${AUTHGATE_TEST_UNSET_ISSUER}"),
            "gate.toml:6:10: `provider.issuer`: environment variable ${AUTHGATE_TEST_UNSET_ISSUER} is not set",
        ),
        (
            "plain http issuer off loopback",
            BASE.replace("https://auth.example.com", "http://idp.localhost.example.com"),
            "gate.toml:6:1: `provider.issuer`: must be an https URL (http is allowed only on loopback)",
        ),
        (
            "forward-auth without a trusted front proxy",
            format!("{BASE}\n[forward_auth]\nenabled = true\n"),
            "gate.toml:18:1: `forward_auth.enabled`: needs server.trusted_proxies",
        ),
        (
            "a route without upstream while forward-auth is off",
            BASE.replace("upstream = \"http://127.0.0.1:3000\"\n", ""),
            "gate.toml:12:1: `routes[0].upstream`: needs at least one upstream URL",
        ),
        (
            "bad duration",
            format!("{BASE}read_timeout = \"10 fortnights\"\n"),
            "gate.toml:16:16: `routes[0].read_timeout`: invalid duration \"10 fortnights\"",
        ),
        (
            "weak secret",
            BASE.replace("0123456789abcdefghijklmnopqrstuvwxyzABCDEF", "changeme"),
            "gate.toml:10:1: `session.secret`: is 8 bytes; use at least 32",
        ),
        (
            "short admin token",
            BASE.replace("public_url = \"http://127.0.0.1:8080\"", "public_url = \"http://127.0.0.1:8080\"\nadmin_token = \"short\""),
            "gate.toml:4:1: `server.admin_token`: use at least 32 random bytes",
        ),
        (
            "named admin tokens that cannot be told apart",
            format!(
                "{BASE}\n[server.admin_tokens]\noncall = \"{t}\"\nci = \"{t}\"\n",
                t = "x".repeat(40)
            ),
            "gate.toml:18:1: `server.admin_tokens.oncall`: the same token as another",
        ),
        (
            "an admin token's name the audit log cannot print",
            format!("{BASE}\n[server.admin_tokens]\n\"on call\" = \"{}\"\n", "x".repeat(40)),
            "gate.toml:18:1: `server.admin_tokens.on call`: a token's name is 1-64 letters",
        ),
        (
            "admin host with a path",
            BASE.replace(
                "public_url = \"http://127.0.0.1:8080\"",
                "public_url = \"http://127.0.0.1:8080\"\nadmin_hosts = [\"gw.internal/x\"]",
            ),
            "gate.toml:4:16: `server.admin_hosts[0]`: \"gw.internal/x\" is not a host name",
        ),
        (
            "duplicate route",
            format!(
                "{BASE}\n[[routes]]\npath = \"/\"\nupstream = \"http://127.0.0.1:3001\"\nauth = \"public\"\n"
            ),
            "gate.toml:18:1: `routes[1].path`: host * path / is already routed by routes[0]",
        ),
        (
            "malformed upstream",
            BASE.replace("http://127.0.0.1:3000", "http://127.0.0.1:3000/app"),
            "gate.toml:14:1: `routes[0].upstream[0]`: \"http://127.0.0.1:3000/app\" must be an origin only",
        ),
        (
            "policy on a public route",
            BASE.replace("auth = \"browser\"", "auth = \"public\"\nlicenses = [\"wiki\"]"),
            "gate.toml:16:1: `routes[0].licenses`: has no effect on a `public` route",
        ),
        (
            "browser route without provider",
            BASE.replace("[provider]\nissuer = \"https://auth.example.com\"\nclient_id = \"authgate\"\n", ""),
            "gate.toml:12:1: `routes[0].auth`: `browser` routes need a [provider] section",
        ),
        (
            "guessable secret",
            BASE.replace("0123456789abcdefghijklmnopqrstuvwxyzABCDEF", "changeme-changeme-changeme-changeme"),
            "gate.toml:10:1: `session.secret`: looks guessable",
        ),
        (
            "duplicate route spelled differently",
            format!(
                "{BASE}\n[[routes]]\nhost = \"*\"\npath = \"/app/\"\nupstream = \"http://127.0.0.1:3001\"\nauth = \"public\"\n\n[[routes]]\npath = \"/app\"\nupstream = \"http://127.0.0.1:3001\"\nauth = \"public\"\n"
            ),
            "gate.toml:24:1: `routes[2].path`: host * path /app is already routed by routes[1]",
        ),
        (
            "timeout beyond a day",
            format!("{BASE}read_timeout = \"2d\"\n"),
            "gate.toml:16:1: `routes[0].read_timeout`: 2days is longer than the 24h maximum",
        ),
        (
            "impossible timeout",
            format!("{BASE}connect_timeout = \"0s\"\n"),
            "gate.toml:16:1: `routes[0].connect_timeout`: must be longer than 0s",
        ),
        (
            "redis store without a URL",
            BASE.replace("[session]\n", "[session]\nstore = \"redis\"\n"),
            "gate.toml:9:2: `session.redis_url`: is required when store = \"redis\"",
        ),
        (
            "redis URL of another scheme, password not echoed",
            BASE.replace(
                "[session]\n",
                "[session]\nstore = \"redis\"\nredis_url = \"http://user:hunter2hunter2@cache:6379\"\n",
            ),
            "gate.toml:11:1: `session.redis_url`: is not a redis://, rediss:// or redis+sentinel:// URL",
        ),
        (
            "a sentinel URL naming no primary, password not echoed",
            BASE.replace(
                "[session]\n",
                "[session]\nstore = \"redis\"\nredis_url = \"redis+sentinel://:hunter2@s1:26379,s2:26379\"\n",
            ),
            "gate.toml:11:1: `session.redis_url`: is not a usable redis+sentinel:// URL: names no primary",
        ),
        (
            "sentinel credentials without sentinels",
            BASE.replace(
                "[session]\n",
                "[session]\nstore = \"redis\"\nredis_url = \"redis://cache:6379\"\nredis_sentinel_password = \"x\"\n",
            ),
            "gate.toml:12:1: `session.redis_sentinel_password`: only applies to a redis+sentinel:// redis_url",
        ),
        (
            "redis certificate checks turned off",
            BASE.replace(
                "[session]\n",
                "[session]\nstore = \"redis\"\nredis_url = \"rediss://:hunter2hunter2@cache:6380/#insecure\"\n",
            ),
            "gate.toml:11:1: `session.redis_url`: #insecure would turn off the server certificate check",
        ),
        (
            "redis CA file for a plain-text URL",
            BASE.replace(
                "[session]\n",
                "[session]\nstore = \"redis\"\nredis_url = \"redis://cache:6379\"\nredis_ca_file = \"gate.toml\"\n",
            ),
            "gate.toml:12:1: `session.redis_ca_file`: only applies to a rediss:// (TLS) redis_url",
        ),
        (
            "redis CA file that is no certificate",
            BASE.replace(
                "[session]\n",
                "[session]\nstore = \"redis\"\nredis_url = \"rediss://cache:6380\"\nredis_ca_file = \"gate.toml\"\n",
            ),
            "gate.toml: holds no PEM certificate",
        ),
        (
            "redis CA file missing",
            BASE.replace(
                "[session]\n",
                "[session]\nstore = \"redis\"\nredis_url = \"rediss://cache:6380\"\nredis_ca_file = \"ca.pem\"\n",
            ),
            "gate.toml:12:1: `session.redis_ca_file`: cannot read",
        ),
        (
            "redis client certificate without its key",
            BASE.replace(
                "[session]\n",
                "[session]\nstore = \"redis\"\nredis_url = \"rediss://cache:6380\"\nredis_client_cert_file = \"c.pem\"\n",
            ),
            "`session.redis_client_key_file`: is needed too",
        ),
        (
            "redis client key that is no key",
            BASE.replace(
                "[session]\n",
                "[session]\nstore = \"redis\"\nredis_url = \"rediss://cache:6380\"\nredis_client_key_file = \"gate.toml\"\n",
            ),
            "gate.toml: holds no PEM private key",
        ),
        (
            "short webhook secret",
            format!("{BASE}\n[webhooks]\nsecret = \"whsec_short\"\n"),
            "gate.toml:18:1: `webhooks.secret`: is 11 bytes; use at least 32",
        ),
        (
            "webhook path outside /oauth2/",
            format!(
                "{BASE}\n[webhooks]\nsecret = \"whsec_0123456789abcdefghijklmnopqrstuvwxyz\"\npath = \"/hooks\"\n"
            ),
            "gate.toml:19:1: `webhooks.path`: must be a path under /oauth2/",
        ),
        (
            "assertion algorithm",
            format!("{BASE}\n[assertion]\nenabled = true\nalgorithm = \"HS256\"\n"),
            "`assertion.algorithm`: \"HS256\" is not supported",
        ),
        (
            "assertion on a public route",
            BASE.replace("auth = \"browser\"", "auth = \"public\"\nassertion = true"),
            "`routes[0].assertion`: has no effect on a `public` route",
        ),
        (
            "token endpoint rate of zero",
            BASE.replace("client_id = \"authgate\"", "client_id = \"authgate\"\ntoken_endpoint_rate = 0"),
            "gate.toml:8:1: `provider.token_endpoint_rate`: must be between 1 and 100000",
        ),
        ("syntax error", BASE.replace("auth = \"browser\"", "auth = browser"), "gate.toml:15:8:"),
    ];
    for (what, text, want) in cases {
        let (code, err) = check(text, &[]);
        assert_ne!(code, 0, "{what}: accepted");
        assert!(err.contains(want), "{what}: expected {want:?} in:\n{err}");
        assert!(!err.contains("hunter2"), "{what}: a password in the error:\n{err}");
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = BASE
        .replace("0123456789abcdefghijklmnopqrstuvwxyzABCDEF", "short")
        .replace("http://127.0.0.1:3000", "ftp://x")
        .replace("client_id = \"authgate\"", "client_id = \"\"");
    let (code, err) = check(&text, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("3 problems"), "{err}");
    for key in ["`provider.client_id`", "`session.secret`", "`routes[0].upstream[0]`"] {
        assert!(err.contains(key), "{key} not reported:\n{err}");
    }
}

#[test]
fn secrets_come_from_files_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), "from-a-file-0123456789abcdefghijklmnop\n").unwrap();
    let text = BASE
        .replace("secret = \"0123456789abcdefghijklmnopqrstuvwxyzABCDEF\"", "secret_file = \"secret.txt\"");
    std::fs::write(dir.path().join("gate.toml"), &text).unwrap();
    let (code, _, err) = authgate(&["check", "--config", "gate.toml"], &[], dir.path());
    assert_eq!(code, 0, "{err}");

    std::fs::write(dir.path().join("secret.txt"), "too-short\n").unwrap();
    let (code, _, err) = authgate(&["check", "--config", "gate.toml"], &[], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("`session.secret`: is 9 bytes"), "{err}");

    let text = BASE.replace("0123456789abcdefghijklmnopqrstuvwxyzABCDEF", "${SESSION_KEY}");
    let (code, err) = check(&text, &[("SESSION_KEY", "an-environment-secret-of-enough-length-42")]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_redis_client_certificate_must_go_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &str| {
        let out =
            std::process::Command::new("openssl").args(args.split(' ')).current_dir(dir.path()).output();
        assert!(out.unwrap().status.success(), "openssl {args}");
    };
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1";
    openssl(&format!("req -x509 {key} -keyout mine.key -out mine.pem -subj /CN=authgate"));
    openssl(&format!("req -x509 {key} -keyout other.key -out other.pem -subj /CN=other"));
    let text = |key_file: &str| {
        BASE.replace(
            "[session]\n",
            &format!(
                "[session]\nstore = \"redis\"\nredis_url = \"rediss://cache:6380\"\n\
                 redis_client_cert_file = \"mine.pem\"\nredis_client_key_file = \"{key_file}\"\n"
            ),
        )
    };
    for (key_file, ok) in [("mine.key", true), ("other.key", false)] {
        std::fs::write(dir.path().join("gate.toml"), text(key_file)).unwrap();
        let (code, _, err) = authgate(&["check", "--config", "gate.toml"], &[], dir.path());
        assert_eq!(code == 0, ok, "{key_file}: {err}");
        if !ok {
            assert!(err.contains("gate.toml:13:1: `session.redis_client_key_file`"), "{err}");
            assert!(err.contains("cannot be used with session.redis_client_cert_file"), "{err}");
            assert!(!err.contains("PRIVATE KEY"), "the key is never quoted: {err}");
        }
    }
}

/// What validation parsed is carried in the model, so the runtime never parses it again (and
/// never drops a value it could not parse).
#[test]
fn validation_carries_what_it_parsed() {
    let text = BASE
        .replace(
            "public_url = \"http://127.0.0.1:8080\"",
            "public_url = [\"https://App.Example.com:443/\", \"http://gw.test:8080\"]\nadmin_listen = \"127.0.0.1:9191\"",
        )
        .replace("[provider]", "[provider]\nalgorithms = [\"ES256\", \"EdDSA\"]");
    let config =
        authgate::config::load_str(&text, "gate.toml", std::path::Path::new("."), &|_| None).unwrap();
    assert_eq!(
        config.server.public_origins,
        [
            ("app.example.com".to_owned(), "https://app.example.com".to_owned()),
            ("gw.test".to_owned(), "http://gw.test:8080".to_owned())
        ]
    );
    assert_eq!(config.server.admin_addr, Some("127.0.0.1:9191".parse().unwrap()));
    let algorithms = &config.provider.as_ref().unwrap().signature_algorithms;
    assert_eq!(algorithms, &[jsonwebtoken::Algorithm::ES256, jsonwebtoken::Algorithm::EdDSA]);
}
