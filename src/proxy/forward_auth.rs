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
    Original { method: Method::GET, target: Err(why), tls: false, proxy }
}

/// Splits an absolute `http(s)` URL into its scheme, authority and raw path with query; `None`
/// parts when it is not one. By hand rather than with `url::Url`, which would normalise the path
/// by its own rules: the raw path goes through the same normalisation as an inline request's.
fn split_url(url: &str) -> (Option<&str>, Option<&str>, &str) {
    let Some((scheme, rest)) = url.split_once("://") else { return (None, None, "") };
    let scheme = match scheme {
        s if s.eq_ignore_ascii_case("https") => "https",
        s if s.eq_ignore_ascii_case("http") => "http",
        _ => return (None, None, ""),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    // user info has no place in what a browser asked for; a path must be origin-form
    if authority.is_empty() || authority.contains('@') || !path.starts_with('/') {
        return (Some(scheme), None, path);
    }
    (Some(scheme), Some(authority), path)
}

/// Reads the original request from the auth request `req` (path already normalised to
/// `auth_path`).
fn original(req: &RequestHeader, endpoint: AuthEndpoint, auth_path: &str, envoy_prefix: &str) -> Original {
    let h = &req.headers;
    let bad = |what: &str| {
        Rejection::new(400, "bad_forward_auth", format!("The front proxy's {what} is malformed."))
    };
    let (proxy, uri, method, host, proto) = match endpoint {
        AuthEndpoint::Envoy => {
            // the auth request's own target is the prefix and the original path and query
            let raw = String::from_utf8_lossy(req.raw_path()).into_owned();
            let uri = raw
                .strip_prefix(envoy_prefix)
                .map(str::to_owned)
                .unwrap_or_else(|| auth_path.strip_prefix(envoy_prefix).unwrap_or("/").to_owned());
            let host = single(h, "host");
            let proto = single(h, "x-forwarded-proto");
            (FrontProxy::Envoy, Ok(Some(uri)), Ok(Some(req.method.as_str().to_owned())), host, proto)
        }
        AuthEndpoint::Headers => {
            // Each front proxy always sets its own family (nginx by the example's
            // proxy_set_header, ingress-nginx its X-Original-URL, Traefik and Caddy by
            // themselves) and passes the client's other headers on: a request with two families
            // carries one the client wrote, and which one describes the request served cannot
            // be told, so it is refused.
            let url = h.contains_key("x-original-url");
            let nginx = url || h.contains_key("x-original-uri");
            if nginx && h.contains_key("x-forwarded-uri") {
                return refused(
                    FrontProxy::Forwarded,
                    bad("original URI (both X-Original-URI/-URL and X-Forwarded-Uri)"),
                );
            }
            let method = single(h, if nginx { "x-original-method" } else { "x-forwarded-method" })
                .map(|m| m.map(str::to_owned));
            if url {
                // ingress-nginx: the whole URL, its `Host` naming the auth service
                let Ok(Some((scheme, authority, path))) =
                    single(h, "x-original-url").map(|u| u.map(split_url))
                else {
                    return refused(FrontProxy::Nginx, bad("original URL (X-Original-URL)"));
                };
                let Some((scheme, authority)) = scheme.zip(authority) else {
                    return refused(FrontProxy::Nginx, bad("original URL (X-Original-URL)"));
                };
                // with `auth-method` set, ingress-nginx sends X-Original-URI too: the same path
                match single(h, "x-original-uri") {
                    Ok(None) => {}
                    Ok(Some(uri)) if uri == path => {}
                    _ => {
                        return refused(
                            FrontProxy::Nginx,
                            bad("original URI (X-Original-URI and X-Original-URL differ)"),
                        );
                    }
                }
                (FrontProxy::Nginx, Ok(Some(path.to_owned())), method, Ok(Some(authority)), Ok(Some(scheme)))
            } else {
                let uri_name = if nginx { "x-original-uri" } else { "x-forwarded-uri" };
                let proxy = if nginx { FrontProxy::Nginx } else { FrontProxy::Forwarded };
                let uri = single(h, uri_name).map(|u| u.map(str::to_owned));
                let host = match single(h, "x-forwarded-host") {
                    Ok(None) => single(h, "host"),
                    other => other,
                };
                (proxy, uri, method, host, single(h, "x-forwarded-proto"))
            }
        }
    };
    // the method decides method rules: without a readable one nothing is judged
    let method = match method {
        Ok(Some(m)) => Method::from_bytes(m.as_bytes()).ok(),
        _ => None,
    };
    let tls = matches!(proto, Ok(Some(p)) if p.eq_ignore_ascii_case("https"));
    let target = match (uri, host) {
        (Ok(Some(uri)), Ok(Some(host))) if uri.starts_with('/') => target_of(host, uri.as_bytes()),
        (Ok(None), _) => Err(bad("original URI (missing)")),
        (Err(()), _) | (Ok(Some(_)), Ok(Some(_))) => Err(bad("original URI")),
        (Ok(Some(_)), Ok(None) | Err(())) => Err(bad("original host")),
    };
    let target = match method {
        Some(_) => target,
        None => target.and(Err(bad("original method (missing or malformed)"))),
    };
    Original { method: method.unwrap_or(Method::GET), target, tls, proxy }
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
    // The front proxy replaces the identity headers it copies, but passes spellings it does not
    // know (`X_User_Id`), which CGI-style apps read as `X-User-Id`: such a request is refused.
    if req
        .headers
        .keys()
        .any(|n| n.as_str().contains('_') && gateway.stripped_headers.is_identity(n.as_str()))
    {
        let r = Rejection::new(400, "bad_request", "The request carries an identity header.");
        return Answer {
            reply: r.reply(false, None),
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
    // the gateway's own endpoints are reached through the front proxy directly: nothing to decide
    if target.path.starts_with(super::endpoints::PREFIX) || target.path.starts_with(super::WELL_KNOWN) {
        let reply = Reply::new(StatusCode::OK);
        return Answer { reply, outcome: Outcome::Public, target: Some(target), route: None };
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
            if let Some(cookie) = cookies_for_app(gateway, &req.headers) {
                reply.header(http::header::COOKIE, cookie);
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

/// The request's cookies without the gateway's own, for a front proxy to send the app in place
/// of the client's (ingress-nginx: `auth-response-headers` naming `Cookie`, where no filter of
/// its own can be configured). `None` when the request has none.
fn cookies_for_app(gateway: &Gateway, headers: &HeaderMap) -> Option<http::HeaderValue> {
    let mut cookies = HeaderMap::new();
    for value in headers.get_all(http::header::COOKIE) {
        cookies.append(http::header::COOKIE, value.clone());
    }
    if cookies.is_empty() {
        return None;
    }
    if let Some(auth) = &gateway.browser {
        let c = auth.cookies();
        // only a value that is no header value fails, and such a one was never received
        strip_cookies(&mut cookies, &[c.session.as_str(), c.login.as_str()]).ok()?;
    }
    let mut values = cookies.get_all(http::header::COOKIE).iter();
    match (values.next(), values.next()) {
        // none left: an empty value, so that the client's copy is replaced by nothing
        (None, _) => Some(http::HeaderValue::from_static("")),
        (Some(one), None) => Some(one.clone()),
        // HTTP/2 sends one header per cookie: one value, as RFC 9113 §8.2.3 joins them
        (Some(_), Some(_)) => {
            let joined: Vec<&str> =
                cookies.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).collect();
            http::HeaderValue::try_from(joined.join("; ")).ok()
        }
    }
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
            (Some("https"), Some("app.example.com"), "/a/../b?x=1")
        );
        assert_eq!(split_url("HTTP://app:8080/"), (Some("http"), Some("app:8080"), "/"));
        assert_eq!(split_url("http://app?x").1, None, "no path");
        assert_eq!(split_url("http://user@app/").1, None, "user info");
        assert_eq!(split_url("http:///x").1, None, "no host");
        assert_eq!(split_url("ftp://app/"), (None, None, ""));
        assert_eq!(split_url("/just/a/path"), (None, None, ""));
    }

    #[test]
    fn ingress_nginx_describes_the_request_by_its_url() {
        // its Host names the auth service and X-Forwarded-Proto is blanked: the URL decides
        let o = read(&[
            ("host", "authgate.auth.svc.cluster.local"),
            ("x-forwarded-proto", ""),
            ("x-forwarded-host", "evil.example"),
            ("x-original-url", "https://app.example.com/pub/../admin/?x=1"),
            ("x-original-method", "POST"),
        ]);
        let target = o.target.unwrap();
        assert_eq!(target.authority.host(), "app.example.com");
        assert_eq!(target.path, "/admin/", "normalised as inline");
        assert_eq!(target.path_and_query, "/admin/?x=1");
        assert!(o.tls);
        assert_eq!(o.method, Method::POST);
        assert_eq!(o.proxy, FrontProxy::Nginx);
        // with auth-method, X-Original-URI comes too: accepted when it says the same
        let same =
            [("x-original-url", "http://app/p?q"), ("x-original-uri", "/p?q"), ("x-original-method", "GET")];
        assert!(read(&same).target.is_ok());
        assert!(!read(&same).tls);
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
    }
}
