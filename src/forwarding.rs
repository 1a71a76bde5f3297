//! Shaping the request headers sent upstream: drop everything a client could use to
//! impersonate a user or to redirect the app's routing, then add `X-Forwarded-*` we vouch for;
//! keep the gateway's cookies away from the app, both ways; find the client's address.
//!
//! Names are compared in canonical form (lower case, `_` read as `-`) because CGI-style apps
//! (PHP, WSGI, Rack) map `X-User-Id`, `x_user_id` and `X-USER_ID` to the same variable.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::http_util::{canonical_header, has_prefix, same_header};

// parsed once: a `&str` name would be parsed again on every insert
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers removed from every client request, trusted peer or not.
const ALWAYS_STRIPPED: &[&str] = &[
    // path-override headers honoured by IIS, Symfony, Zend, Spring and others
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-forwarded-uri",
    "x-forwarded-prefix",
    "x-forwarded-path",
    // identity headers of other gateways that legacy apps may already trust
    "x-forwarded-access-token",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-remote-user",
    // RFC 7239 is not produced by authgate, so a client's copy can only lie
    "forwarded",
    // Azure App Service authentication and Kong name the caller in these; IIS/ASP.NET apps
    // moved from behind them trust them
    "x-ms-client-principal",
    "x-credential-identifier",
    "x-anonymous-consumer",
    // the scheme and host as a front proxy saw them (IIS ARR, ASP.NET, OWA)
    "x-original-host",
    "front-end-https",
    "x-url-scheme",
    // httpoxy (CVE-2016-5385): CGI apps read it as HTTP_PROXY
    "proxy",
];

/// Header-name prefixes removed from every client request: ours, and the identity headers of
/// other gateways and sidecars that an app moved behind authgate may still trust.
const STRIPPED_PREFIXES: &[&str] = &[
    "x-user-",
    "x-authgate-",
    // oauth2-proxy
    "x-auth-request-",
    // Envoy / Istio sidecars act on these (CVE-2023-27487: x-envoy-original-path)
    "x-envoy-",
    // mod_auth_openidc (OIDC_CLAIM_*, OIDC_access_token, ...)
    "oidc-",
    "x-pomerium-",
    // AWS ALB, Cloudflare Access, Google IAP
    "x-amzn-oidc-",
    "cf-access-",
    "x-goog-authenticated-user-",
    "x-goog-iap-",
    // Authelia (Remote-User/-Groups/-Email/-Name), Authentik, Vouch, Grafana's auth proxy
    "remote-",
    "x-authentik-",
    "x-vouch-",
    "x-webauth-",
    // Azure App Service (X-MS-CLIENT-PRINCIPAL-NAME/-ID/-IDP, X-MS-TOKEN-*), Kong (X-Consumer-*,
    // X-Authenticated-Userid/-Groups/-Scope)
    "x-ms-client-principal-",
    "x-ms-token-",
    "x-consumer-",
    "x-authenticated-",
];

/// Client-address headers that only a trusted proxy may set.
const CLIENT_ADDRESS_HEADERS: &[&str] = &[
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
];

/// The `X-Forwarded-*` headers a trusted proxy may pass in, spelled exactly so.
const TRUSTED_FORWARDED: &[&str] =
    &["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port"];

/// What the gateway knows about the connection the request came in on.
#[derive(Debug, Clone, Copy)]
pub struct ClientConnection<'a> {
    /// The peer's address.
    pub peer_ip: Option<IpAddr>,
    /// Whether the peer is a trusted proxy.
    pub trusted: bool,
    /// `https` on TLS listeners.
    pub proto: &'static str,
    /// The `Host` the client asked for, as sent (with port).
    pub host: &'a str,
}

/// The client headers every request loses, prepared once per configuration: the configured
/// identity header names (canonical form) and which first bytes can begin a stripped name.
#[derive(Debug, Clone)]
pub struct StrippedHeaders {
    identity: Vec<String>,
    /// Only names starting like a stripped one need the full comparison: most request headers
    /// (accept, user-agent, sec-*) are passed over after one byte.
    starts: [bool; 256],
}

impl StrippedHeaders {
    /// The fixed lists plus these identity header names (any spelling).
    pub fn new<'a>(identity_headers: impl IntoIterator<Item = &'a str>) -> Self {
        let identity: Vec<String> = identity_headers.into_iter().map(canonical_header).collect();
        let mut starts = [false; 256];
        let statics = ALWAYS_STRIPPED.iter().chain(STRIPPED_PREFIXES).chain(CLIENT_ADDRESS_HEADERS);
        for name in statics.map(|s| s.as_bytes()).chain(identity.iter().map(|h| h.as_bytes())) {
            if let Some(&b) = name.first() {
                starts[usize::from(b)] = true;
            }
        }
        starts[usize::from(b'x')] = true;
        Self { identity, starts }
    }
}

/// How the gateway spells the header names it adds, prepared once per configuration: the
/// configured identity names exactly as written (`X-User-Id`), the assertion header, and
/// `X-Forwarded-*` in the usual title case. Legacy apps may match names case-sensitively.
#[derive(Debug, Clone)]
pub struct HeaderSpellings {
    spelled: Vec<(HeaderName, bytes::Bytes)>,
}

impl HeaderSpellings {
    /// These configured names (already validated as header names; others are skipped).
    pub fn new<'a>(configured: impl IntoIterator<Item = &'a str>) -> Self {
        let fixed = ["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"];
        let spelled = configured
            .into_iter()
            .chain(fixed)
            .filter_map(|n| {
                let name = HeaderName::from_bytes(n.as_bytes()).ok()?;
                Some((name, bytes::Bytes::copy_from_slice(n.as_bytes())))
            })
            .collect();
        Self { spelled }
    }

    fn of(&self, name: &HeaderName) -> Option<&bytes::Bytes> {
        self.spelled.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }
}

/// The upstream request from shaped `parts`, each header name spelled as the configuration
/// (`spellings`) or else the client (`client`: each name as received, in order) wrote it; names
/// neither wrote (`Host` when rewritten) in Pingora's title case. `C` is Pingora's case-keeping
/// name type, which it does not export.
pub fn cased_request_header<C: pingora::http::IntoCaseHeaderName + Clone>(
    parts: http::request::Parts,
    client: &[(HeaderName, C)],
    spellings: &HeaderSpellings,
) -> pingora::Result<pingora::http::RequestHeader> {
    let mut out = pingora::http::RequestHeader::build(parts.method, b"/", Some(parts.headers.len()))?;
    out.set_version(parts.version);
    *out.extensions_mut() = parts.extensions;
    let mut current: Option<HeaderName> = None;
    let mut nth = 0;
    for (name, value) in parts.headers {
        // `HeaderMap::into_iter` names only the first of a name's values
        if let Some(name) = name {
            current = Some(name);
            nth = 0;
        } else {
            nth += 1;
        }
        let Some(name) = &current else { continue };
        match spellings.of(name) {
            Some(spelled) => out.append_header(spelled.clone(), value)?,
            None => {
                // the n-th value keeps the n-th spelling (`X-Multi: 1`, `x-multi: 2`)
                let mut same = client.iter().filter(|(n, _)| n == name).map(|(_, spelled)| spelled);
                match same.clone().nth(nth).or_else(|| same.next()) {
                    Some(spelled) => out.append_header(spelled.clone(), value)?,
                    None => out.append_header(name, value)?,
                }
            }
        };
    }
    Ok(out)
}

impl StrippedHeaders {
    /// Is `name` (any case, `_` read as `-`) one of the configured identity headers?
    pub fn is_identity(&self, name: &str) -> bool {
        self.identity.iter().any(|h| same_header(name, h))
    }
}

/// Removes spoofable headers and sets `X-Forwarded-For/-Proto/-Host`.
pub fn shape_request_headers(
    headers: &mut HeaderMap,
    stripped: &StrippedHeaders,
    conn: &ClientConnection<'_>,
) -> Result<(), http::header::InvalidHeaderValue> {
    let mut doomed: Vec<HeaderName> = Vec::new();
    let (identity_headers, starts) = (&stripped.identity, &stripped.starts);
    for name in headers.keys() {
        let n = name.as_str();
        if !n.as_bytes().first().is_some_and(|&b| starts[usize::from(b)]) {
            continue;
        }
        let keep_trusted = conn.trusted && TRUSTED_FORWARDED.contains(&n);
        let strip = ALWAYS_STRIPPED.iter().any(|s| same_header(n, s))
            || STRIPPED_PREFIXES.iter().any(|p| has_prefix(n, p))
            || identity_headers.iter().any(|h| same_header(n, h))
            || (!keep_trusted && has_prefix(n, "x-forwarded-"))
            || (!conn.trusted && CLIENT_ADDRESS_HEADERS.iter().any(|s| same_header(n, s)));
        if strip && !doomed.contains(name) {
            doomed.push(name.clone());
        }
    }
    for name in &doomed {
        headers.remove(name);
    }

    let client = conn.peer_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let xff = match (conn.trusted, joined(headers, "x-forwarded-for")) {
        (true, Some(prior)) if !client.is_empty() => format!("{prior}, {client}"),
        (true, Some(prior)) => prior,
        _ => client,
    };
    if !xff.is_empty() {
        headers.insert(X_FORWARDED_FOR, HeaderValue::try_from(xff)?);
    }
    if !(conn.trusted && headers.contains_key("x-forwarded-proto")) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(conn.proto));
    }
    if !(conn.trusted && headers.contains_key("x-forwarded-host")) {
        headers.insert(X_FORWARDED_HOST, HeaderValue::from_str(conn.host)?);
    }
    Ok(())
}

/// The unit a client is counted by: its IPv4 address, or its IPv6 /64 (one host can use a
/// whole /64). An IPv4 client of a dual-stack listener (`::ffff:a.b.c.d`) is its IPv4 address:
/// a /64 would put every IPv4 client in one.
pub fn client_network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// The address a request comes from: the peer's, or when the peer is a trusted proxy, the
/// nearest address its `X-Forwarded-For` chain names that is not a trusted proxy too. For
/// per-client limits; an entry that is not a plain address ends the walk.
pub fn client_address(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    trusted: impl Fn(IpAddr) -> bool,
) -> Option<IpAddr> {
    let mut nearest = peer?;
    if !trusted(nearest) {
        return Some(nearest);
    }
    // later headers were appended by nearer proxies: read right to left across all of them
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(value) = value.to_str() else { return Some(nearest) };
        for entry in value.rsplit(',') {
            match entry.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
                Ok(ip) if trusted(ip) => nearest = ip,
                Ok(ip) => return Some(ip),
                Err(_) => return Some(nearest),
            }
        }
    }
    Some(nearest)
}

/// The client's address as network rules judge it: like `client_address`, but `None` when a
/// trusted proxy names no client (no `X-Forwarded-For`, an unreadable entry, or only trusted
/// proxies in it), never the proxy's own address.
pub fn known_client_address(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    trusted: impl Fn(IpAddr) -> bool,
) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted(peer) {
        return Some(peer);
    }
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        for entry in value.to_str().ok()?.rsplit(',') {
            let ip = entry.trim().parse::<IpAddr>().ok()?.to_canonical();
            if !trusted(ip) {
                return Some(ip);
            }
        }
    }
    None
}

/// Removes the gateway's own cookies from the `Cookie` header(s) sent upstream: the app never
/// sees a session ticket.
pub fn strip_cookies(
    headers: &mut HeaderMap,
    names: &[&str],
) -> Result<(), http::header::InvalidHeaderValue> {
    // the common case, no gateway cookie at all, costs no allocation
    let mentions = |v: &http::HeaderValue| {
        names.iter().any(|n| v.as_bytes().windows(n.len()).any(|w| w == n.as_bytes()))
    };
    if !headers.get_all(http::header::COOKIE).iter().any(mentions) {
        return Ok(());
    }
    let values: Vec<String> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(String::from)
        .collect();
    let kept: Vec<&str> = values
        .iter()
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| !names.iter().any(|n| pair.split('=').next() == Some(*n)))
        .collect();
    headers.remove(http::header::COOKIE);
    if !kept.is_empty() {
        headers.insert(http::header::COOKIE, HeaderValue::try_from(kept.join("; "))?);
    }
    Ok(())
}

/// Removes `Set-Cookie` headers of an upstream response that name the gateway's cookies.
pub fn strip_set_cookies(resp: &mut pingora::http::ResponseHeader, names: &[&str]) -> pingora::Result<()> {
    let values: Vec<http::HeaderValue> =
        resp.headers.get_all(http::header::SET_COOKIE).iter().cloned().collect();
    let is_ours = |v: &http::HeaderValue| {
        let name = v.as_bytes().split(|&b| b == b'=').next().unwrap_or_default();
        names.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name.trim_ascii()))
    };
    if !values.iter().any(is_ours) {
        return Ok(());
    }
    resp.remove_header(&http::header::SET_COOKIE);
    for v in values.into_iter().filter(|v| !is_ours(v)) {
        resp.append_header(http::header::SET_COOKIE, v)?;
    }
    Ok(())
}

/// All values of a header joined with `, `, if it is present.
fn joined(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
    (!values.is_empty()).then(|| values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_is_the_nearest_untrusted_one() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let trusted = |ip: IpAddr| ip.to_string().starts_with("10.");
        let with = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
            }
            h
        };
        let client = |h: &HeaderMap, peer: &str| client_address(h, Some(peer.parse().unwrap()), trusted);
        let spoofed = with(&["6.6.6.6, 203.0.113.7"]);
        // an untrusted peer is the client, whatever it claims
        assert_eq!(client(&spoofed, "198.51.100.1"), Some("198.51.100.1".parse().unwrap()));
        // behind a trusted proxy: the last address it saw, not what the client wrote before it
        assert_eq!(client(&spoofed, "10.0.0.2"), Some("203.0.113.7".parse().unwrap()));
        assert_eq!(
            client(&with(&["6.6.6.6", "203.0.113.7, 10.0.0.9"]), "10.0.0.2"),
            Some("203.0.113.7".parse().unwrap())
        );
        // garbage ends the walk at the nearest trusted hop; no header: the proxy itself
        assert_eq!(client(&with(&["203.0.113.7, unknown"]), "10.0.0.2"), Some(proxy));
        assert_eq!(client(&HeaderMap::new(), "10.0.0.2"), Some(proxy));
        assert_eq!(client_address(&spoofed, None, trusted), None);
    }

    fn request(headers: &[(&str, &str)]) -> HeaderMap {
        let mut req = HeaderMap::new();
        for (k, v) in headers {
            req.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        req
    }

    fn names(req: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = req.keys().map(|k| k.as_str().to_owned()).collect();
        v.sort();
        v.dedup();
        v
    }

    fn conn(trusted: bool) -> ClientConnection<'static> {
        ClientConnection {
            peer_ip: Some("10.0.0.7".parse().unwrap()),
            trusted,
            proto: "http",
            host: "app.example.com:8080",
        }
    }

    const IDENTITY: &[&str] = &["x-user-id", "x-user-email", "x-forwarded-access-token", "x-tenant"];

    fn identity() -> StrippedHeaders {
        StrippedHeaders::new(IDENTITY.iter().copied())
    }

    #[test]
    fn spoofed_identity_and_override_headers_are_removed_in_every_spelling() {
        let mut req = request(&[
            ("X-User-Id", "admin"),
            ("x_user_id", "admin"),
            ("X-USER_EMAIL", "boss@example.com"),
            ("X-User-Anything", "x"),
            ("X-Tenant", "other"),
            ("x_tenant", "other"),
            ("X-Authgate-Assertion", "forged"),
            ("X-Auth-Request-User", "admin"),
            ("X-Forwarded-User", "admin"),
            ("Remote-User", "admin"),
            ("X-Original-URL", "/admin"),
            ("X-Rewrite-URL", "/admin"),
            ("X-Forwarded-Uri", "/admin"),
            ("X-Forwarded-Prefix", "/admin"),
            ("Forwarded", "for=1.2.3.4;host=evil"),
            ("Proxy", "http://evil:8080"),
            ("Accept", "text/html"),
            ("X-Userland", "kept: not the x-user- prefix"),
            ("Cookie", "a=b"),
        ]);
        shape_request_headers(&mut req, &identity(), &conn(false)).unwrap();
        assert_eq!(
            names(&req),
            ["accept", "cookie", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-userland"]
        );
    }

    #[test]
    fn untrusted_peers_cannot_set_forwarding_headers() {
        let mut req = request(&[
            ("X-Forwarded-For", "1.2.3.4"),
            ("X_Forwarded_For", "5.6.7.8"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.com"),
            ("X-Forwarded-Port", "443"),
            ("X-Real-IP", "1.2.3.4"),
            ("True-Client-IP", "1.2.3.4"),
        ]);
        shape_request_headers(&mut req, &identity(), &conn(false)).unwrap();
        assert_eq!(names(&req), ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"]);
        assert_eq!(req["x-forwarded-for"], "10.0.0.7");
        assert_eq!(req["x-forwarded-proto"], "http");
        assert_eq!(req["x-forwarded-host"], "app.example.com:8080");
    }

    #[test]
    fn trusted_proxies_extend_the_chain_and_keep_proto_and_host() {
        let mut req = request(&[
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-For", "192.168.1.1"),
            ("X_Forwarded_For", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "app.example.com"),
            ("X-Real-IP", "1.2.3.4"),
            ("CF-Connecting-IP", "1.2.3.4"),
            ("Fastly-Client-IP", "1.2.3.4"),
            ("X-Forwarded-Prefix", "/admin"),
        ]);
        shape_request_headers(&mut req, &identity(), &conn(true)).unwrap();
        // client-address headers pass only from a trusted proxy
        assert_eq!(req["cf-connecting-ip"], "1.2.3.4");
        assert_eq!(req["fastly-client-ip"], "1.2.3.4");
        assert_eq!(req["x-forwarded-for"], "1.2.3.4, 192.168.1.1, 10.0.0.7");
        assert_eq!(req["x-forwarded-proto"], "https");
        assert_eq!(req["x-forwarded-host"], "app.example.com");
        assert_eq!(req["x-real-ip"], "1.2.3.4");
        assert!(!req.contains_key("x-forwarded-prefix"));
        assert_eq!(req.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn the_gateways_cookies_never_reach_the_app() {
        let mut req = request(&[
            ("Cookie", "a=1; authgate_session=secret; b=2"),
            ("Cookie", "authgate_session_login=x"),
        ]);
        strip_cookies(&mut req, &["authgate_session", "authgate_session_login"]).unwrap();
        assert_eq!(req.get_all("cookie").iter().collect::<Vec<_>>(), ["a=1; b=2"]);
        let mut only = request(&[("Cookie", "authgate_session=secret")]);
        strip_cookies(&mut only, &["authgate_session"]).unwrap();
        assert!(!only.contains_key("cookie"));
    }

    #[test]
    fn apps_cannot_set_the_gateways_cookies() {
        let mut resp = pingora::http::ResponseHeader::build(200, None).unwrap();
        resp.append_header("set-cookie", "app=1; Path=/").unwrap();
        resp.append_header("set-cookie", "authgate_session=attacker; Path=/").unwrap();
        resp.append_header("set-cookie", "Authgate_Session_Login=x").unwrap();
        strip_set_cookies(&mut resp, &["authgate_session", "authgate_session_login"]).unwrap();
        let left: Vec<_> = resp.headers.get_all("set-cookie").iter().collect();
        assert_eq!(left, ["app=1; Path=/"]);
    }
}
