//! Per-request costs of the foundation's hot path: path normalisation, route lookup and
//! request-header shaping. Run with `cargo bench --bench routing`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};

use authgate::forwarding::{ClientConnection, StrippedHeaders, shape_request_headers};
use authgate::proxy::read_target;
use authgate::routing::{HostPattern, RouteTable, normalize_path, normalize_route_path};
use pingora::http::RequestHeader;

struct BenchRoute {
    host: HostPattern,
    path: String,
}

fn table() -> RouteTable<BenchRoute> {
    let mut routes = Vec::new();
    for app in 0..20 {
        for prefix in ["/", "/api", "/admin", "/static/assets"] {
            routes.push(Arc::new(BenchRoute {
                host: HostPattern::parse(&format!("app{app}.example.com")).unwrap(),
                path: normalize_route_path(prefix).unwrap(),
            }));
        }
    }
    routes
        .push(Arc::new(BenchRoute { host: HostPattern::parse("*.example.com").unwrap(), path: "/".into() }));
    routes.push(Arc::new(BenchRoute { host: HostPattern::Any, path: "/".into() }));
    RouteTable::new(routes, |r| &r.host, |r| &r.path)
}

fn browser_request() -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/admin/reports/2026/q3.html?sort=desc&page=2", None).unwrap();
    for (k, v) in [
        ("Host", "app7.example.com"),
        ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0"),
        ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("Accept-Language", "en-US,en;q=0.9"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Cookie", "authgate_session=0123456789abcdef0123456789abcdef.0123456789abcdef"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Referer", "https://app7.example.com/admin/"),
    ] {
        req.append_header(k, v).unwrap();
    }
    req
}

fn bench(c: &mut Criterion) {
    c.bench_function("normalize_path/plain", |b| {
        b.iter(|| normalize_path(black_box(b"/admin/reports/2026/q3.html")))
    });
    c.bench_function("normalize_path/encoded_dots", |b| {
        b.iter(|| normalize_path(black_box(b"/pub/%2e%2e/admin//reports/./%7euser/q3%20final.html")))
    });

    let t = table();
    c.bench_function("route_table/find_exact_host", |b| {
        b.iter(|| t.find(black_box("app7.example.com"), black_box("/admin/reports/q3")).is_some())
    });
    c.bench_function("route_table/find_wildcard_host", |b| {
        b.iter(|| t.find(black_box("zzz.example.com"), black_box("/x")).is_some())
    });

    let req = browser_request();
    c.bench_function("read_target/browser_request", |b| b.iter(|| read_target(black_box(&req), 65536)));

    let identity = StrippedHeaders::new([
        "X-User-Id",
        "X-User-Email",
        "X-User-Name",
        "X-User-Licenses",
        "X-Forwarded-Access-Token",
    ]);
    let conn = ClientConnection {
        peer_ip: Some("192.0.2.10".parse().unwrap()),
        trusted: false,
        proto: "https",
        host: "app7.example.com",
    };
    c.bench_function("shape_request_headers/browser_request", |b| {
        b.iter_batched_ref(
            || browser_request().headers.clone(),
            |headers| shape_request_headers(headers, &identity, &conn),
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
