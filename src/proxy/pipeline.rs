//! The request pipeline as plain functions over plain data, in the order the proxy calls them:
//! read the target → match the route → authenticate → (authorize, shape headers, forward).
//! Each returns a `Rejection` that the proxy turns into a response without reaching upstream.

use std::borrow::Cow;
use std::sync::Arc;

use pingora::http::RequestHeader;

use crate::config::AuthMode;
use crate::gateway::Gateway;
use crate::routing::{Authority, Route, normalize_path, parse_authority, route_key};

/// A request the gateway answers itself, with this status and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable code (`bad_path`, `no_route`, ...).
    pub code: &'static str,
    /// One sentence for a person.
    pub message: Cow<'static, str>,
}

impl Rejection {
    fn new(status: u16, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self { status, code, message: message.into() }
    }
}

/// Where a request is going, in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTarget {
    /// Host (what routes match) and port; `X-Forwarded-Host` and `preserve_host` send it.
    pub authority: Authority,
    /// The normalised path (routes match its `route_key`).
    pub path: String,
    /// The normalised path plus the untouched query: exactly what goes upstream.
    pub path_and_query: String,
}

/// Checks header size, host and path; normalises them.
pub fn read_target(req: &RequestHeader, max_header_size: usize) -> Result<RequestTarget, Rejection> {
    let header_bytes: usize = req.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if header_bytes > max_header_size {
        return Err(Rejection::new(431, "headers_too_large", "The request headers are too large."));
    }

    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    let header_host = hosts.next();
    if hosts.next().is_some() {
        return Err(Rejection::new(400, "bad_host", "The request has more than one Host header."));
    }
    // HTTP/2 carries the host in :authority, which wins over a Host header (RFC 9113 §8.3.1).
    let raw_host = match (req.uri.authority(), header_host) {
        (Some(a), _) => a.as_str(),
        (None, Some(h)) => h.to_str().map_err(|_| bad_host())?,
        (None, None) => {
            return Err(Rejection::new(400, "bad_host", "The request has no Host header."));
        }
    };
    let authority = parse_authority(raw_host).ok_or_else(bad_host)?;

    if !req.raw_path_is_utf8() {
        return Err(Rejection::new(400, "bad_path", "Bad request: the request target is not UTF-8."));
    }

    let mut raw_path = req.raw_path();
    if raw_path.first() != Some(&b'/') {
        // absolute-form (`GET http://host/path`): pingora keeps the target verbatim, has
        // reconciled its authority with Host, and parsed the path part into the URI
        if let Some(pq) = req.uri.path_and_query().filter(|pq| pq.as_str().starts_with('/')) {
            raw_path = pq.as_str().as_bytes();
        }
    }
    let (path_bytes, query) = match raw_path.iter().position(|&b| b == b'?') {
        Some(i) => (&raw_path[..i], Some(&raw_path[i..])),
        None => (raw_path, None),
    };
    let path = normalize_path(path_bytes)
        .map_err(|e| Rejection::new(400, "bad_path", format!("Bad request: {e}.")))?;
    let mut path_and_query = path.clone();
    if let Some(q) = query {
        let q = std::str::from_utf8(q)
            .ok()
            .filter(|q| !q.bytes().any(|b| b.is_ascii_control() || b == b'#'))
            .ok_or_else(|| Rejection::new(400, "bad_query", "Bad request: malformed query string."))?;
        path_and_query.push_str(q);
    }
    Ok(RequestTarget { authority, path, path_and_query })
}

fn bad_host() -> Rejection {
    Rejection::new(400, "bad_host", "The Host header is malformed.")
}

/// The route for a target, or 404.
pub fn match_route(gateway: &Gateway, target: &RequestTarget) -> Result<Arc<Route>, Rejection> {
    let key = route_key(&target.path, gateway.case_insensitive_paths);
    gateway
        .routes
        .find(target.authority.host(), &key)
        .cloned()
        .ok_or_else(|| Rejection::new(404, "no_route", "No application is configured at this address."))
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Nobody in particular, on a `public` route.
    Anonymous,
}

/// Establishes the caller for a route. Until sign-in and bearer tokens are wired in, every
/// non-public route fails closed with 401: nothing unauthenticated is ever forwarded to it.
pub fn authenticate(route: &Route) -> Result<Caller, Rejection> {
    match route.auth {
        AuthMode::Public => Ok(Caller::Anonymous),
        AuthMode::Browser | AuthMode::Api | AuthMode::Any => {
            Err(Rejection::new(401, "unauthenticated", "Authentication is required to use this application."))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn target_is_normalised_and_keeps_the_query() {
        let t =
            read_target(&req("/pub/%2e%2e/App/?a=%2F&b=1", &[("Host", "Example.COM:8080")]), 65536).unwrap();
        assert_eq!(t.authority.host(), "example.com");
        assert_eq!(t.authority.as_str(), "example.com:8080");
        assert_eq!(t.path, "/App/");
        assert_eq!(t.path_and_query, "/App/?a=%2F&b=1");
    }

    #[test]
    fn bad_targets_are_rejected_with_the_right_status() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u16, &'a str);
        let cases: &[Case] = &[
            ("/x", &[], 400, "bad_host"),
            ("/x", &[("Host", "a.com"), ("Host", "b.com")], 400, "bad_host"),
            ("/x", &[("Host", "a.com:xx")], 400, "bad_host"),
            ("/x", &[("Host", "user@a.com")], 400, "bad_host"),
            ("/x", &[("Host", "admin.a.com:x.a.com:443")], 400, "bad_host"),
            ("/;x/admin", &[("Host", "a.com")], 400, "bad_path"),
            ("/admin%2fx", &[("Host", "a.com")], 400, "bad_path"),
            ("/pub/..;/admin", &[("Host", "a.com")], 400, "bad_path"),
        ];
        for (path, headers, status, code) in cases {
            let e = read_target(&req(path, headers), 65536).unwrap_err();
            assert_eq!((e.status, e.code), (*status, *code), "{path} {headers:?}");
        }
        let big = "x".repeat(5000);
        let e = read_target(&req("/", &[("Host", "a.com"), ("X-Big", &big)]), 4096).unwrap_err();
        assert_eq!(e.status, 431);
    }

    #[test]
    fn absolute_form_targets_are_routed_by_their_path() {
        let t = read_target(&req("http://real.example.com/a/../x?q", &[("Host", "real.example.com")]), 65536)
            .unwrap();
        assert_eq!(t.authority.host(), "real.example.com");
        assert_eq!(t.path_and_query, "/x?q");
    }
}
