//! `/metrics` on the admin listener counts what users and operators care about, with bounded
//! labels (route names, status classes, decisions; never paths or users).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

mod common;

use common::{Echo, Gate, Idp, try_raw};

fn metric(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(line_prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn requests_tokens_and_keys_are_counted() {
    let idp = Idp::start(&[]);
    let echo = Echo::start("app");
    let gate = Gate::start(&format!(
        r#"
[server]
listen = ["{{listen}}"]
admin_listen = "{{admin}}"
# the test client stands for the load balancer, whose X-Request-Id is taken
trusted_proxies = ["127.0.0.1/32"]

[provider]
issuer = "{issuer}"
client_id = "authgate"
audience = "authgate"

[[routes]]
name = "pub"
path = "/pub"
upstream = "{echo}"
auth = "public"

[[routes]]
name = "api"
path = "/api"
upstream = "{echo}"
auth = "api"
clients = ["reporting-service"]
"#,
        issuer = idp.issuer,
        echo = echo.url()
    ));
    let token =
        common::client_credentials(&idp.issuer, "reporting-service", "reporting-service-secret").await;
    let bearer = format!("Bearer {token}");
    for _ in 0..2 {
        assert_eq!(gate.get("a", "/pub/secret-path?user=alice", &[]).status, 200);
        assert_eq!(gate.get("a", "/api/x", &[("Authorization", &bearer)]).status, 200);
    }
    assert_eq!(gate.get("a", "/nowhere", &[("Accept", "application/json")]).status, 404);
    assert_eq!(gate.get("a", "/api/x", &[]).status, 401);
    assert_eq!(gate.get("a", "/api/x", &[("Authorization", "Bearer a.b.c")]).status, 401);

    // requests are counted once answered (Pingora's logging phase): wait for the last one
    let scrape = || {
        let r =
            try_raw(gate.admin_port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .unwrap();
        assert_eq!(r.status, 200);
        String::from_utf8(r.body).unwrap()
    };
    let last = r#"authgate_requests_total{decision="invalid_token",mode="inline",route="api",status="4xx"}"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut text = scrape();
    while metric(&text, last).is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        text = scrape();
    }
    let expect = [
        (r#"authgate_requests_total{decision="public",mode="inline",route="pub",status="2xx"}"#, 2.0),
        (r#"authgate_requests_total{decision="allowed",mode="inline",route="api",status="2xx"}"#, 2.0),
        (r#"authgate_requests_total{decision="no_route",mode="inline",route="-",status="4xx"}"#, 1.0),
        (
            r#"authgate_requests_total{decision="unauthenticated",mode="inline",route="api",status="4xx"}"#,
            1.0,
        ),
        (r#"authgate_requests_total{decision="invalid_token",mode="inline",route="api",status="4xx"}"#, 1.0),
        (r#"authgate_bearer_tokens_total{result="verified"}"#, 1.0),
        (r#"authgate_bearer_tokens_total{result="cached"}"#, 1.0),
        (r#"authgate_upstream_seconds_count{route="pub"}"#, 2.0),
        (r#"authgate_gateway_seconds_count{route="api"}"#, 4.0),
    ];
    for (line, value) in expect {
        assert_eq!(metric(&text, line), Some(value), "{line} in:\n{text}");
    }
    assert!(
        metric(&text, r#"authgate_jwks_fetches_total{outcome="ok"}"#).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(metric(&text, "authgate_jwks_age_seconds").is_some(), "{text}");
    for leak in ["secret-path", "alice", "nowhere", &token[..20]] {
        assert!(!text.contains(leak), "{leak} leaked into metrics");
    }

    // one access-log line per request: request id (the load balancer's, or one made here), route,
    // method, path without its query, status, decision, user or client, latencies
    assert_eq!(
        gate.get("a", "/api/x", &[("Authorization", &bearer), ("X-Request-Id", "lb-4711")]).status,
        200
    );
    let access_lines = |log: &str| log.lines().filter(|l| l.contains("authgate::access")).count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while access_lines(&gate.log()) < 8 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let log = gate.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("authgate::access")).collect();
    assert_eq!(lines.len(), 8, "{log}");
    let tagged =
        lines.iter().find(|l| l.contains("lb-4711")).unwrap_or_else(|| panic!("no request id in {lines:#?}"));
    for field in [
        "route=\"api\"",
        "method=GET",
        "path=\"/api/x\"",
        "status=200",
        "decision=\"allowed\"",
        "user=\"reporting-service\"",
        "duration_us=",
        "upstream_us=",
    ] {
        assert!(tagged.contains(field), "{field} missing in {tagged}");
    }
    let public = lines.iter().find(|l| l.contains("route=\"pub\"")).unwrap();
    assert!(public.contains("user=\"-\"") && public.contains("request_id="), "{public}");
    assert!(!log.contains("user=alice"), "a query string reached the log");
}
