//! Forward-auth: a front proxy (nginx `auth_request`, Traefik `forwardAuth`, Caddy
//! `forward_auth`, Envoy `ext_authz`) asks whether to let a request through, and authgate answers
//! with the same decision as inline: the original request's host and path go through the same
//! normalisation and route table, its cookies or bearer token through the same authentication and
//! policy. Allowed: 200 with the identity headers the front proxy copies to the app. Denied: the
//! same answer an inline request gets (sign in, 401 with its challenge, 403), which Traefik,
//! Caddy and Envoy return to the client as is; nginx only understands 401 and 403, so there a
//! sign-in becomes a 401 naming where to start it.
//!
//! The forwarding headers say what the original request was, so they are read only from
//! `server.trusted_proxies`: anyone else gets 403. Sessions are server-side, so a refresh during
//! a decision changes nothing the browser holds (no cookie to lose behind `auth_request`).

use http::{HeaderMap, HeaderName, Method, StatusCode};
use pingora::http::RequestHeader;

use super::decide::{Answer, Decision, FrontProxy, Outcome, RequestFacts, decide};
use super::pipeline::{RequestTarget, add_caller_headers, target_of};
use crate::forwarding::strip_cookies;
use crate::gateway::Gateway;
use crate::reply::{Rejection, Reply};
use crate::routing::has_dot_segments;

/// The header nginx's `error_page 401` reads to send a browser to sign in.
pub const SIGN_IN_HEADER: HeaderName = HeaderName::from_static("x-authgate-sign-in");

/// Which of the gateway's auth endpoints `path` (normalised) is, if any.
pub fn endpoint(gateway: &Gateway, path: &str) -> Option<AuthEndpoint> {
    let fa = &gateway.config.forward_auth;
    if !fa.enabled {
        return None;
    }
    if path == fa.path {
        return Some(AuthEndpoint::Headers);
    }
    match path.strip_prefix(fa.envoy_prefix.as_str()) {
        Some(rest) if !fa.envoy_prefix.is_empty() && rest.starts_with('/') => Some(AuthEndpoint::Envoy),
        _ => None,
    }
}

/// How the front proxy describes the original request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthEndpoint {
    /// `X-Original-URI` (nginx) or `X-Forwarded-Uri` (Traefik, Caddy), with the method, host
    /// and scheme in their companions.
    Headers,
    /// Envoy: the original path after the prefix, the original headers as they were.
    Envoy,
}

/// The original request a front proxy asks about.
#[derive(Debug)]
struct Original {
    method: Method,
    target: Result<RequestTarget, Rejection>,
    tls: bool,
    proxy: FrontProxy,
    /// Whether to answer with the cookies the app may see (ingress-nginx).
    cookies_for_app: bool,
}

/// The one value of `name`, if present exactly once and readable.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ()> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(());
    }
    first.to_str().map(Some).map_err(|_| ())
}

/// An original request that cannot be judged: refused with `why`.
fn refused(proxy: FrontProxy, why: Rejection) -> Original {
    Original { method: Method::GET, target: Err(why), tls: false, proxy, cookies_for_app: false }
}

/// An absolute `http(s)` URL as its scheme (lower case), authority and raw origin-form path
/// with query; `None` when it is not one. By hand rather than with `url::Url`, which would
/// normalise the path by its own rules: the raw path goes through the same normalisation as an
/// inline request's.
fn split_url(url: &str) -> Option<(&'static str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme {
        s if s.eq_ignore_ascii_case("https") => "https",
        s if s.eq_ignore_ascii_case("http") => "http",
        _ => return None,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    // user info has no place in what a browser asked for; a path must be origin-form
    if authority.is_empty() || authority.contains('@') || !path.starts_with('/') {
        return None;
    }
    Some((scheme, authority, path))
}

/// Reads the original request from the auth request `req` (path already normalised to
/// `auth_path`).
fn original(req: &RequestHeader, endpoint: AuthEndpoint, auth_path: &str, envoy_prefix: &str) -> Original {
    let h = &req.headers;
    let bad = |what: &str| {
        Rejection::new(400, "bad_forward_auth", format!("The front proxy's {what} is malformed."))
    };
    let (proxy, uri, method, host, proto, cookies_for_app) = match endpoint {
        AuthEndpoint::Envoy => {
            // the auth request's own target is the prefix and the original path and query
            let raw = String::from_utf8_lossy(req.raw_path()).into_owned();
            let uri = raw
                .strip_prefix(envoy_prefix)
                .map(str::to_owned)
                .unwrap_or_else(|| auth_path.strip_prefix(envoy_prefix).unwrap_or("/").to_owned());
            let host = single(h, "host");
            let proto = single(h, "x-forwarded-proto");
            (FrontProxy::Envoy, Ok(Some(uri)), Ok(Some(req.method.as_str().to_owned())), host, proto, false)
        }
        AuthEndpoint::Headers => {
            // Each front proxy always sets its own family (nginx by the example's
            // proxy_set_header, ingress-nginx its X-Original-URL, Traefik and Caddy by
            // themselves) and passes the client's other headers on: a request with two families
            // carries one the client wrote, and which one describes the request served cannot
            // be told, so it is refused.
            let url = match single(h, "x-original-url") {
                Ok(u) => u,
                Err(()) => return refused(FrontProxy::Nginx, bad("original URL (X-Original-URL)")),
            };
            let nginx = url.is_some() || h.contains_key("x-original-uri");
            if nginx && h.contains_key("x-forwarded-uri") {
                return refused(
                    FrontProxy::Nginx,
                    bad("original URI (X-Original-URI/-URL and X-Forwarded-Uri)"),
                );
            }
            let method = single(h, if nginx { "x-original-method" } else { "x-forwarded-method" })
                .map(|m| m.map(str::to_owned));
            let Some(url) = url else {
                // nginx's or Traefik's and Caddy's family
                let uri_name = if nginx { "x-original-uri" } else { "x-forwarded-uri" };
                let proxy = if nginx { FrontProxy::Nginx } else { FrontProxy::Forwarded };
                let uri = single(h, uri_name).map(|u| u.map(str::to_owned));
                return described(
                    req,
                    proxy,
                    uri,
                    method,
                    forwarded_host(h),
                    single(h, "x-forwarded-proto"),
                    false,
                );
            };
            let Some((scheme, authority, path)) = split_url(url) else {
                return refused(FrontProxy::Nginx, bad("original URL (X-Original-URL)"));
            };
            if h.contains_key("x-original-uri") {
                // nginx's own family beside a URL the client may have written: judged only when
                // both describe the same request (path, host and scheme)
                let proto = single(h, "x-forwarded-proto");
                let same = single(h, "x-original-uri") == Ok(Some(path))
                    && forwarded_host(h).is_ok_and(|h| h.is_some_and(|h| h.eq_ignore_ascii_case(authority)))
                    && proto.is_ok_and(|p| p.is_none_or(|p| p.is_empty() || p.eq_ignore_ascii_case(scheme)));
                if !same {
                    return refused(
                        FrontProxy::Nginx,
                        bad("original URI (X-Original-URI and X-Original-URL differ)"),
                    );
                }
            }
            // ingress-nginx: the whole URL, its `Host` naming the auth service, X-Forwarded-Proto
            // blanked; the request's cookies are answered for the app (no cookie filter there)
            (
                FrontProxy::Nginx,
                Ok(Some(path.to_owned())),
                method,
                Ok(Some(authority)),
                Ok(Some(scheme)),
                true,
            )
        }
    };
    described(req, proxy, uri, method, host, proto, cookies_for_app)
}

/// The host a front proxy names: `X-Forwarded-Host`, else `Host`.
fn forwarded_host(h: &HeaderMap) -> Result<Option<&str>, ()> {
    match single(h, "x-forwarded-host") {
        Ok(None) => single(h, "host"),
        other => other,
    }
}

/// The original request from what the front proxy said of it.
fn described(
    req: &RequestHeader,
    proxy: FrontProxy,
    uri: Result<Option<String>, ()>,
    method: Result<Option<String>, ()>,
    host: Result<Option<&str>, ()>,
    proto: Result<Option<&str>, ()>,
    cookies_for_app: bool,
) -> Original {
    let bad = |what: &str| {
        Rejection::new(400, "bad_forward_auth", format!("The front proxy's {what} is malformed."))
    };
    // the method decides method rules: without a readable one nothing is judged
    let method = match method {
        Ok(Some(m)) => Method::from_bytes(m.as_bytes()).ok(),
        _ => None,
    };
    let tls = matches!(proto, Ok(Some(p)) if p.eq_ignore_ascii_case("https"));
    let target = match (uri, host) {
        // judged in normal form, served as it came: only a path that is both
        (Ok(Some(uri)), Ok(Some(_))) if has_dot_segments(uri.split('?').next().unwrap_or("").as_bytes()) => {
            Err(bad("original URI (dot segments, which the app would get as they are)"))
        }
        (Ok(Some(uri)), Ok(Some(host))) if uri.starts_with('/') => target_of(host, uri.as_bytes()),
        (Ok(None), _) => Err(bad("original URI (missing)")),
        (Err(()), _) | (Ok(Some(_)), Ok(Some(_))) => Err(bad("original URI")),
        (Ok(Some(_)), Ok(None) | Err(())) => Err(bad("original host")),
    };
    let target = match method {
        Some(_) => target,
        None => target.and(Err(bad("original method (missing or malformed)"))),
    };
    // the host the front proxy served, when it names it (`?host=$host` on the auth URL): an
    // absolute-form request line (`GET https://a/x`) chooses nginx's server block by its own host
    // while `Host` (and so X-Forwarded-Host and X-Original-URL) may name another
    let target = match (target, served_host(req)) {
        (Ok(t), Ok(Some(served))) if !same_host(t.authority.host(), &served) => {
            Err(bad("original host (not the host served)"))
        }
        (Ok(_), Err(())) => Err(bad("auth request query")),
        (target, _) => target,
    };
    Original { method: method.unwrap_or(Method::GET), target, tls, proxy, cookies_for_app }
}

/// The `host` parameter of the auth request's own query, if any (more than one: `Err`).
fn served_host(req: &RequestHeader) -> Result<Option<String>, ()> {
    let Some(query) = req.uri.query() else { return Ok(None) };
    let params = crate::http_util::parse_unique_query(query).map_err(|_| ())?;
    Ok(params.into_iter().find(|(k, _)| k == "host").map(|(_, v)| v))
}

/// Are two host names (an IPv6 literal with or without brackets, any case) the same?
fn same_host(a: &str, b: &str) -> bool {
    let bare = |h: &str| h.trim_start_matches('[').trim_end_matches(']').to_owned();
    bare(a).eq_ignore_ascii_case(&bare(b))
}

/// Answers an auth request from a front proxy. `peer_ip` is the front proxy's address.
pub async fn answer(
    gateway: &Gateway,
    req: &RequestHeader,
    endpoint: AuthEndpoint,
    auth_path: &str,
    peer_ip: Option<std::net::IpAddr>,
    serial: u64,
) -> Answer {
    if !gateway.trusts(peer_ip) {
        tracing::warn!(
            peer = %peer_ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
            "forward-auth request from a peer outside server.trusted_proxies refused"
        );
        let r = Rejection::new(403, "untrusted_proxy", "Only the front proxy may ask for auth decisions.");
        return Answer {
            reply: r.reply(false, None),
            outcome: Outcome::Rejected(r.code),
            target: None,
            route: None,
        };
    }
    // The front proxy replaces the identity headers it copies, but passes those it does not copy
    // (`X-User-Roles`) and spellings it does not know (`X_User_Id`, which CGI-style apps read as
    // `X-User-Id`); inline they would be removed, here the app would get them: a request that
    // carries one is refused (no browser sends them).
    if req.headers.keys().any(|n| carries_identity(gateway, n.as_str())) {
        let r = Rejection::new(400, "bad_request", "The request carries an identity header.");
        // nginx's family of headers: nginx asks, and turns anything but 401 and 403 into a 500
        let nginx = req.headers.contains_key("x-original-uri") || req.headers.contains_key("x-original-url");
        let proxy = if nginx { FrontProxy::Nginx } else { FrontProxy::Forwarded };
        return Answer {
            reply: for_proxy(proxy, r.reply(false, None)),
            outcome: Outcome::Rejected(r.code),
            target: None,
            route: None,
        };
    }
    let fa = &gateway.config.forward_auth;
    let original = original(req, endpoint, auth_path, &fa.envoy_prefix);
    let proxy = original.proxy;
    let target = match original.target {
        Ok(t) => t,
        Err(r) => {
            let reply = for_proxy(proxy, r.reply(false, None));
            return Answer { reply, outcome: Outcome::Rejected(r.code), target: None, route: None };
        }
    };
    // The gateway's own endpoints are routed to it by the front proxy, never through a decision:
    // asked about one, the front proxy would serve it from the app, where nothing is judged.
    let own = [super::endpoints::PREFIX, super::WELL_KNOWN, "/.well-known/authgate/"];
    if own.iter().any(|p| target.path.starts_with(p)) {
        let r = Rejection::new(404, "not_found", "This path belongs to the gateway.");
        let reply = for_proxy(proxy, r.reply(false, None));
        return Answer { reply, outcome: Outcome::Rejected(r.code), target: Some(target), route: None };
    }
    let tls = original.tls;
    let query: Option<String> = target.path_and_query.split_once('?').map(|(_, q)| q.to_owned());
    let facts = RequestFacts::described(
        &original.method,
        &req.headers,
        query.as_deref(),
        tls,
        peer_ip,
        proxy,
        serial,
    );
    match decide(gateway, &facts, Ok(target)).await {
        Decision::Forward(f) => {
            let mut headers = HeaderMap::new();
            let mut reply = Reply::new(StatusCode::OK);
            match add_caller_headers(gateway, &f.route, &f.caller, &f.target, tls, &mut headers) {
                Ok(()) => {
                    for (name, value) in headers {
                        if let Some(name) = name {
                            reply.header(name, value);
                        }
                    }
                }
                Err(_) => {
                    let r =
                        Rejection::new(500, "internal_error", "The gateway failed to handle the request.");
                    return Answer {
                        reply: r.reply(false, None),
                        outcome: Outcome::Rejected(r.code),
                        target: Some(f.target),
                        route: Some(f.route),
                    };
                }
            }
            if original.cookies_for_app {
                if let Some(cookie) = cookies_for_app(gateway, &req.headers) {
                    reply.header(http::header::COOKIE, cookie);
                }
            }
            if f.clear_session_cookie {
                if let Some(auth) = &gateway.browser {
                    reply.header(http::header::SET_COOKIE, auth.cookies().clear_session());
                }
            }
            Answer { reply, outcome: f.outcome, target: Some(f.target), route: Some(f.route) }
        }
        // a 2xx answer would read as "allowed" to every front proxy: only a forward is one
        Decision::Answer(a) if a.reply.status.is_success() => {
            tracing::error!(
                status = a.reply.status.as_u16(),
                "a forward-auth decision answered 2xx; refused"
            );
            let r = Rejection::new(403, "forbidden", "Access denied.");
            Answer { reply: for_proxy(proxy, r.reply(false, None)), outcome: Outcome::Rejected(r.code), ..a }
        }
        Decision::Answer(a) => Answer { reply: for_proxy(proxy, a.reply), ..a },
        // only the gateway's own endpoints read bodies, and those were answered above
        Decision::ReadBody(p) => Answer {
            reply: Reply::new(StatusCode::OK),
            outcome: Outcome::Public,
            target: Some(p.target),
            route: None,
        },
    }
}

/// Does a header named `name` claim an identity: a configured identity header in any spelling,
/// or one of the gateway's own prefixes (`X-User-`, `X-Authgate-`, `_` read as `-`)?
fn carries_identity(gateway: &Gateway, name: &str) -> bool {
    let dashed = |prefix: &str| {
        name.len() > prefix.len()
            && name.as_bytes()[..prefix.len()]
                .iter()
                .zip(prefix.bytes())
                .all(|(&a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
    };
    gateway.stripped_headers.is_identity(name) || dashed("x-user-") || dashed("x-authgate-")
}

/// The request's cookies without the gateway's own, for a front proxy to send the app in place
/// of the client's (ingress-nginx: `auth-response-headers` naming `Cookie`, where no filter of
/// its own can be configured). `None` when the request has none.
fn cookies_for_app(gateway: &Gateway, headers: &HeaderMap) -> Option<http::HeaderValue> {
    // HTTP/2 sends one header per cookie: one value, as RFC 9113 §8.2.3 joins them
    let all = crate::http_util::cookie_header(headers)?;
    let mut cookies = HeaderMap::new();
    cookies.insert(http::header::COOKIE, http::HeaderValue::from_str(&all).ok()?);
    if let Some(auth) = &gateway.browser {
        let c = auth.cookies();
        // fails only for a value that is no header value, which was never received
        strip_cookies(&mut cookies, &[c.session.as_str(), c.login.as_str()]).ok()?;
    }
    // none left: an empty value, so that the client's copy is replaced by nothing
    Some(cookies.remove(http::header::COOKIE).unwrap_or_else(|| http::HeaderValue::from_static("")))
}

/// nginx's `auth_request` treats any status but 2xx, 401 and 403 as an error (500 to the
/// client): another refusal is sent as 403, keeping its body.
fn for_proxy(proxy: FrontProxy, mut reply: Reply) -> Reply {
    let status = reply.status.as_u16();
    if proxy == FrontProxy::Nginx && (400..500).contains(&status) && status != 401 && status != 403 {
        reply.status = StatusCode::FORBIDDEN;
    }
    reply
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn auth_request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/oauth2/auth", None).unwrap();
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).unwrap();
        }
        req
    }

    fn read(headers: &[(&str, &str)]) -> Original {
        original(&auth_request(headers), AuthEndpoint::Headers, "/oauth2/auth", "")
    }

    #[test]
    fn urls_split_into_scheme_authority_and_raw_path() {
        assert_eq!(
            split_url("https://app.example.com/a/../b?x=1"),
            Some(("https", "app.example.com", "/a/../b?x=1"))
        );
        assert_eq!(split_url("HTTP://app:8080/"), Some(("http", "app:8080", "/")));
        assert_eq!(split_url("http://[::1]:8080/x"), Some(("http", "[::1]:8080", "/x")));
        for bad in
            ["http://app?x", "http://user@app/", "http:///x", "ftp://app/", "/just/a/path", "http://app#/x"]
        {
            assert_eq!(split_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn ingress_nginx_describes_the_request_by_its_url() {
        // its Host names the auth service and X-Forwarded-Proto is blanked: the URL decides
        let o = read(&[
            ("host", "authgate.auth.svc.cluster.local"),
            ("x-forwarded-proto", ""),
            ("x-forwarded-host", "evil.example"),
            ("x-original-url", "https://app.example.com/%61dmin//x?y=1"),
            ("x-original-method", "POST"),
        ]);
        let target = o.target.unwrap();
        assert_eq!(target.authority.host(), "app.example.com");
        assert_eq!(target.path, "/admin/x", "normalised as inline");
        assert_eq!(target.path_and_query, "/admin/x?y=1");
        assert!(o.tls);
        assert_eq!(o.method, Method::POST);
        assert_eq!(o.proxy, FrontProxy::Nginx);
        // beside nginx's own family (which a client's URL could join), both must say the same
        let m = ("x-original-method", "GET");
        let url = ("x-original-url", "http://app/p?q");
        assert!(read(&[url, ("x-original-uri", "/p?q"), ("host", "app"), m]).target.is_ok());
        let fh = ("x-forwarded-host", "app");
        assert!(
            read(&[url, ("x-original-uri", "/p?q"), fh, ("x-forwarded-proto", "http"), m]).target.is_ok()
        );
        for differs in [
            vec![url, ("x-original-uri", "/p?q"), ("host", "authgate.svc"), m],
            vec![url, ("x-original-uri", "/p?q"), ("x-forwarded-host", "elsewhere"), ("host", "app"), m],
            vec![url, ("x-original-uri", "/p?q"), fh, ("x-forwarded-proto", "https"), m],
            vec![url, ("x-original-uri", "/other"), fh, m],
        ] {
            assert_eq!(read(&differs).target.unwrap_err().status, 400, "{differs:?}");
        }
    }

    #[test]
    fn the_host_served_binds_the_decision() {
        let ask = |auth_uri: &str, url: &str| {
            let mut req = RequestHeader::build("GET", auth_uri.as_bytes(), None).unwrap();
            req.append_header("x-original-url", url).unwrap();
            req.append_header("x-original-method", "GET").unwrap();
            original(&req, AuthEndpoint::Headers, "/oauth2/auth", "").target.map(|t| t.path)
        };
        assert_eq!(ask("/oauth2/auth?host=app", "https://APP:8443/x").unwrap(), "/x");
        assert_eq!(ask("/oauth2/auth?host=[::1]", "http://[::1]:80/x").unwrap(), "/x");
        assert_eq!(ask("/oauth2/auth", "http://any/x").unwrap(), "/x", "not named: not checked");
        // an absolute-form request line for `app` with `Host: public`
        assert_eq!(ask("/oauth2/auth?host=app", "http://public/x").unwrap_err().status, 400);
        assert_eq!(ask("/oauth2/auth?host=app&host=public", "http://app/x").unwrap_err().status, 400);
    }

    #[test]
    fn a_url_that_cannot_be_judged_is_refused() {
        let refused = |headers: &[(&str, &str)]| read(headers).target.unwrap_err().status;
        let m = ("x-original-method", "GET");
        assert_eq!(refused(&[("x-original-url", "/relative"), m]), 400);
        assert_eq!(refused(&[("x-original-url", "http://u:p@app/"), m]), 400);
        assert_eq!(refused(&[("x-original-url", "http://app/"), ("x-original-url", "http://app/"), m]), 400);
        assert_eq!(refused(&[("x-original-url", "http://app/a"), ("x-original-uri", "/b"), m]), 400);
        assert_eq!(refused(&[("x-original-url", "http://app/a"), ("x-forwarded-uri", "/a"), m]), 400);
        assert_eq!(refused(&[("x-original-url", "http://app/a")]), 400, "no method");
        assert_eq!(refused(&[("x-original-url", "http://ap p/a"), m]), 400, "bad host");
        // the app gets the path as it came: /admin/../pub/x may be its admin pages
        assert_eq!(refused(&[("x-original-url", "http://app/admin/../pub/x"), m]), 400);
        assert_eq!(refused(&[("x-original-url", "http://app/admin/%2e%2e/pub/x?a=/../"), m]), 400);
        assert_eq!(refused(&[("x-original-uri", "/admin/./x"), ("host", "app"), m]), 400);
    }
}
