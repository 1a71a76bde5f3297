//! The pages people read when the gateway answers: the 403 page says who is signed in and why,
//! and offers another account, built in and from the operator's templates (`[pages] dir`,
//! taken up by a reload), checked in a real headless Chromium; templates are validated with
//! their file and line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use std::time::{Duration, Instant};

use common::{Echo, Gate, Idp, free_port};

const ALICE: &str = "a1b2c3d4-0000-4000-8000-00000000a11c";

fn config(tables: &str, echo: &Echo, pages: &str) -> String {
    format!(
        r#"{tables}
{pages}

[[routes]]
name = "wiki"
path = "/wiki"
upstream = "{echo}"
auth = "browser"
licenses = ["wiki"]

[[routes]]
name = "home"
path = "/"
upstream = "{echo}"
auth = "browser"
"#,
        echo = echo.url()
    )
}

/// Runs the Chromium script: `user` is refused at `/wiki/welcome`, the page must show `expect`,
/// then alice signs in through the page's button.
fn chromium_403(base: &str, expect: &[&str], shot: &std::path::Path) {
    let out = std::process::Command::new("node")
        .arg("e2e-forbidden.mjs")
        .current_dir(common::repo().join("tests/idp"))
        .env("GATE_URL", base)
        .env("APP_PATH", "/wiki/welcome")
        .env("USER", "carol")
        .env("OTHER_USER", "alice")
        .env("OTHER_SUB", ALICE)
        .env("EXPECT", serde_json::to_string(expect).unwrap())
        .env("SHOT", shot)
        .output()
        .expect("node runs the Chromium test");
    assert!(
        out.status.success(),
        "Chromium 403 page test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 2000, "no screenshot at {}", shot.display());
}

#[test]
fn the_403_page_says_who_and_why_built_in_and_from_templates() {
    let port = free_port();
    let base = format!("http://app.localhost:{port}");
    let idp = Idp::start(&[
        ("REDIRECT_URIS", &format!("{base}/oauth2/callback")),
        ("POST_LOGOUT_REDIRECT_URIS", &format!("{base}/")),
        ("IDP_ISSUER_HOST", "idp.localhost"),
    ]);
    let echo = Echo::start("app");
    let tables = common::gateway_tables(&base, &idp.issuer, "");
    let gate = Gate::start_on(port, &config(&tables, &echo, ""));
    gate.wait_ready();
    let shots = common::repo().join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    chromium_403(
        &base,
        &[
            "Access denied",
            "You are signed in as Carol Clark.",
            "The “wiki” application needs the wiki license.",
            "If you think you should have access, contact your administrator.",
            "Reference: ",
            "Sign out and use another account",
        ],
        &shots.join("forbidden-built-in.png"),
    );

    // the operator's own page, taken up by a reload
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("forbidden.html"),
        r#"<!doctype html><title>ACME access</title><style>body{font-family:sans-serif}</style>
<h1>ACME: no entry to {{ app }}</h1>
<p>Hello {{ user.name }}{% if user.email %} ({{ user.email }}){% endif %}. {{ reason }}</p>
<p>Ask {{ support_contact }} and quote {{ request_id }}.</p>
<form method="post" action="{{ sign_out_url }}"><button id="sign-out">Switch account</button></form>"#,
    )
    .unwrap();
    let pages = format!(
        "[pages]\ndir = {:?}\nsupport_contact = \"the ACME help desk <help@acme.test>\"",
        dir.path().display().to_string()
    );
    gate.rewrite_config(&config(&tables, &echo, &pages));
    gate.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let reloads = || {
        let ready: serde_json::Value = serde_json::from_str(&gate.admin_get("/readyz").1).unwrap();
        ready["checks"]["config"]["reloads"].as_u64()
    };
    while reloads() != Some(1) {
        assert!(Instant::now() < deadline, "the reload never happened: {}", gate.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // the sign-out page has no template: it stays the built-in one
    let r = gate.get("127.0.0.1", "/oauth2/sign_out", &[]);
    assert!(String::from_utf8_lossy(&r.body).contains("Do you want to sign out?"));
    chromium_403(
        &base,
        &[
            "ACME: no entry to wiki",
            "Hello Carol Clark. The “wiki” application needs the wiki license.",
            // escaped, not markup: the angle brackets are shown as text
            "Ask the ACME help desk <help@acme.test> and quote ",
            "Switch account",
        ],
        &shots.join("forbidden-custom.png"),
    );
}

#[test]
fn templates_are_validated_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("pages");
    std::fs::create_dir(&pages).unwrap();
    std::fs::write(pages.join("forbidden.html"), "<h1>{{ app }}</h1>\n<p>{% if user %}{{ user.name }}</p>\n")
        .unwrap();
    std::fs::write(pages.join("forbiden.html"), "typo").unwrap();
    let text = r#"
[server]
public_url = "http://127.0.0.1:8080"
[provider]
issuer = "https://auth.example.com"
client_id = "authgate"
[session]
secret = "test-session-secret-0123456789abcdefghijklmn"
[pages]
dir = "pages"
support_contact = "line one\nline two"
[[routes]]
path = "/"
upstream = "http://127.0.0.1:3000"
auth = "browser"
"#;
    std::fs::write(dir.path().join("gate.toml"), text).unwrap();
    let (code, _, err) = common::authgate(&["check", "--config", "gate.toml"], &[], dir.path());
    assert_ne!(code, 0);
    for want in [
        "`pages.dir`: forbidden.html line 2: unexpected end of input",
        "`pages.dir`: forbiden.html is not a page template (known: forbidden.html, sign_in_error.html, busy.html, sign_out.html, chooser.html)",
        "`pages.support_contact`: one line of at most 200 characters",
    ] {
        assert!(err.contains(want), "{want} in {err}");
    }
}
