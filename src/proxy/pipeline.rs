//! The steps of the request pipeline as plain functions over plain data, in the order
//! `decide` calls them: read the target → match the route → read the credentials →
//! authenticate → authorize. Each returns a `Rejection` that becomes the answer, and the
//! request never reaches upstream.

use std::sync::Arc;

use pingora::http::RequestHeader;

use crate::browser::{ActiveSession, SessionLookup};
use crate::clock::unix_now;
use crate::config::AuthMode;
use crate::gateway::{Gateway, Route, RouteProvider};
use crate::identity::{Identity, PreparedIdentity, add_identity_headers};
use crate::jwt::{TokenError, TokenVerifier, VerifiedToken};
use crate::pages::{Denied, PageContext, PageUser};
use crate::policy::{Denial, RoutePolicy};
use crate::reply::{BearerChallenge, Rejection, Reply};
use crate::revocation::Revocations;
use crate::routing::{Authority, normalize_path, parse_authority, route_key};

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
    target_of(raw_host, raw_path)
}

/// The target named by a raw host (`Host`, `:authority`, or a front proxy's
/// `X-Forwarded-Host`) and a raw origin-form path with its query: parsed and normalised by the
/// same rules whichever way the request came in.
pub fn target_of(raw_host: &str, raw_path: &[u8]) -> Result<RequestTarget, Rejection> {
    let authority = parse_authority(raw_host).ok_or_else(bad_host)?;
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
#[derive(Debug, Clone)]
pub enum Caller {
    /// Nobody in particular, on a `public` route.
    Anonymous,
    /// The holder of a verified bearer token.
    Bearer(Arc<VerifiedToken>),
    /// A signed-in browser.
    Session(Arc<ActiveSession>),
}

impl Caller {
    /// The caller's identity, when authenticated.
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Caller::Anonymous => None,
            Caller::Bearer(token) => Some(&token.identity),
            Caller::Session(s) => Some(&s.session.identity),
        }
    }

    /// The caller's token claims (access token, then id_token), parsed when first asked.
    pub fn claims(&self) -> Option<Arc<serde_json::Value>> {
        match self {
            Caller::Anonymous => None,
            Caller::Bearer(token) => token.claims(),
            Caller::Session(s) => s.claims(),
        }
    }

    /// The caller's identity with what forwarding it needs, when authenticated.
    pub fn prepared(&self) -> Option<(&Identity, &PreparedIdentity)> {
        match self {
            Caller::Anonymous => None,
            Caller::Bearer(token) => Some((&token.identity, &token.prepared)),
            Caller::Session(s) => Some((&s.session.identity, &s.prepared)),
        }
    }
}

/// The credentials a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// None at all.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
}

/// Reads `Authorization: Bearer` (RFC 6750 §2.1; tokens in queries or bodies are never read).
/// Several `Authorization` headers are ambiguous and refused; other schemes count as none.
pub fn read_credentials(headers: &http::HeaderMap) -> Result<Credentials<'_>, Rejection> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Ok(Credentials::None) };
    if values.next().is_some() {
        return Err(Rejection::new(
            400,
            "bad_authorization",
            "The request has more than one Authorization header.",
        ));
    }
    let value = value.to_str().map_err(|_| invalid_token())?;
    let Some((scheme, token)) = value.split_once(' ') else { return Ok(Credentials::None) };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credentials::None);
    }
    let token = token.trim_start_matches(' ');
    if token.is_empty() || !is_b64token(token.as_bytes()) {
        return Err(invalid_token());
    }
    Ok(Credentials::Bearer(token))
}

/// Are all of `token`'s bytes those of RFC 6750's `b64token` (ALPHA / DIGIT / "-" / "." / "_" /
/// "~" / "+" / "/" / "=")? Every bearer request checks each byte of its token (about a
/// kilobyte), so this is written without branches or lookups: the compiler checks 16 bytes at
/// a time (a lookup table took one byte at a time).
fn is_b64token(token: &[u8]) -> bool {
    token.iter().fold(true, |ok, &b| {
        let letter = (b | 0x20).wrapping_sub(b'a') < 26;
        let digit = b.wrapping_sub(b'0') < 10;
        let other =
            (b == b'-') | (b == b'.') | (b == b'_') | (b == b'~') | (b == b'+') | (b == b'/') | (b == b'=');
        ok & (letter | digit | other)
    })
}

fn invalid_token() -> Rejection {
    Rejection::new(401, "invalid_token", "The access token is invalid or expired.")
        .with_challenge(BearerChallenge::InvalidToken)
}

/// Establishes the caller for a route. `public` routes need nothing; `api` routes a valid
/// bearer token; `browser` routes a session; `any` routes a bearer token when one is sent,
/// else a session. Without one, a browser navigation is sent to sign in and anything else gets
/// 401 (never a redirect, and no login state is created).
pub async fn authenticate(
    route: &Route,
    credentials: Credentials<'_>,
    verifiers: &[Arc<TokenVerifier>],
    revocations: Option<&Revocations>,
    session: &SessionLookup,
    navigation: bool,
) -> Result<Caller, Rejection> {
    match (route.auth, credentials) {
        (AuthMode::Public, _) => Ok(Caller::Anonymous),
        (AuthMode::Api | AuthMode::Any, Credentials::Bearer(token)) => {
            let (provider, verifier) = bearer_provider(route, verifiers, token).ok_or_else(invalid_token)?;
            let namespace = verifier.namespace();
            match verifier.verify(token, &provider.audiences).await {
                Ok(token) if revocations.is_some_and(|r| r.is_denied(namespace, &token.identity.subject)) => {
                    tracing::debug!(route = %route.name, "bearer token of a suspended user refused");
                    Err(invalid_token())
                }
                Ok(token) => Ok(Caller::Bearer(token)),
                Err(TokenError::IntrospectionFailed) => Err(Rejection::new(
                    503,
                    "introspection_unavailable",
                    "The access token cannot be checked right now; try again shortly.",
                )),
                Err(e) => {
                    tracing::debug!(route = %route.name, reason = %e, "bearer token refused");
                    Err(invalid_token())
                }
            }
        }
        (AuthMode::Api, Credentials::None) => {
            Err(Rejection::new(401, "unauthenticated", "An access token is required to use this API.")
                .with_challenge(BearerChallenge::Required))
        }
        (AuthMode::Browser | AuthMode::Any, _) => match session {
            // a session of a provider this route does not accept is no session here
            SessionLookup::Found(active) if !route.accepts(active.provider) => {
                Err(sign_in_needed(navigation))
            }
            // a dead token must not reach an app that uses it (its refresh is being retried)
            SessionLookup::Found(active)
                if route.pass_access_token && active.session.tokens.access_expires_at <= unix_now() =>
            {
                Err(Rejection::new(
                    503,
                    "token_unavailable",
                    "Your sign-in cannot be renewed right now; please try again in a moment.",
                ))
            }
            SessionLookup::Found(active) => Ok(Caller::Session(active.clone())),
            SessionLookup::Unavailable => Err(Rejection::new(
                503,
                "sessions_unavailable",
                "Sessions cannot be checked right now; please try again in a moment.",
            )),
            SessionLookup::Absent | SessionLookup::Invalid => Err(sign_in_needed(navigation)),
        },
    }
}

fn sign_in_needed(navigation: bool) -> Rejection {
    let mut r = Rejection::new(401, "unauthenticated", "Authentication is required to use this application.")
        .with_challenge(BearerChallenge::Required);
    r.start_login = navigation;
    r
}

/// The provider that judges a bearer token on `route`: its only one, or among several the one
/// that verified it before (a cache lookup, no parsing on the hot path), else the one whose
/// issuer the token names (read before verification only to choose the verifier, which checks
/// `iss` again); a token naming none of them has none. An opaque token names no issuer:
/// it goes to the one of the route's providers that introspects, when exactly one does (never
/// to a provider it may not come from otherwise).
fn bearer_provider<'a>(
    route: &'a Route,
    verifiers: &'a [Arc<TokenVerifier>],
    token: &str,
) -> Option<(&'a RouteProvider, &'a TokenVerifier)> {
    let of = |p: &'a RouteProvider| verifiers.get(p.index).map(|v| (p, v.as_ref()));
    match route.providers.as_slice() {
        [only] => of(only),
        several => {
            if let Some(known) = several.iter().filter_map(of).find(|(_, v)| v.has_verified(token)) {
                return Some(known);
            }
            bearer_provider_by_content(several, verifiers, token)
        }
    }
}

/// Among `several` providers, the one a token not yet verified names (`iss`), or for an opaque
/// token the one that introspects.
fn bearer_provider_by_content<'a>(
    several: &'a [RouteProvider],
    verifiers: &'a [Arc<TokenVerifier>],
    token: &str,
) -> Option<(&'a RouteProvider, &'a TokenVerifier)> {
    let of = |p: &'a RouteProvider| verifiers.get(p.index).map(|v| (p, v.as_ref()));
    match crate::oidc::login::access_token_claims(token) {
        Some(claims) => {
            let iss = claims.get("iss").and_then(|i| i.as_str())?;
            several.iter().filter_map(of).find(|(_, v)| v.issuer() == iss)
        }
        None => {
            let mut introspecting = several.iter().filter_map(of).filter(|(_, v)| v.introspects());
            match (introspecting.next(), introspecting.next()) {
                (Some(one), None) => Some(one),
                _ => None,
            }
        }
    }
}

/// Applies `policy` (the route's, or a rule's) to an authenticated caller: why it is not
/// admitted, if it is not.
pub fn authorize(route: &Route, policy: &RoutePolicy, caller: &Caller) -> Result<(), Denial> {
    let Some(identity) = caller.identity() else { return Ok(()) };
    policy.authorize(identity, || caller.claims()).inspect_err(|denial| {
        tracing::debug!(route = %route.name, %denial, "caller not admitted");
    })
}

/// The answer to a caller `policy` refused (403): who is signed in and why, in words, with a
/// way to sign in with another account (a page for a browser, problem JSON otherwise); never a
/// login loop. A bearer token gets its challenge.
pub fn forbidden(
    page: PageContext<'_>,
    route: &Route,
    policy: &RoutePolicy,
    caller: &Caller,
    denial: Denial,
    html: bool,
) -> Reply {
    let reason = match &route.label {
        Some(name) => format!("The “{name}” application {}.", policy.explain(denial)),
        None => format!("This application {}.", policy.explain(denial)),
    };
    match (caller, html) {
        (Caller::Session(s), true) => {
            let id = &s.session.identity;
            let user = PageUser { name: id.name.as_deref(), email: id.email.as_deref() };
            page.forbidden(&Denied { user: Some(user), app: route.label.as_deref(), reason: &reason })
        }
        (Caller::Bearer(_), _) => Rejection::new(403, "forbidden", reason)
            .with_challenge(BearerChallenge::InsufficientScope)
            .reply(html, None),
        _ => Rejection::new(403, "forbidden", reason).reply(html, None),
    }
}

/// Shapes what the app learns of the caller: the identity headers, the signed assertion (when
/// the route sends it) and, on `pass_access_token` routes, the access token. The same values
/// whether the gateway forwards the request or answers a front proxy's auth request.
pub fn add_caller_headers(
    gateway: &Gateway,
    route: &Route,
    caller: &Caller,
    target: &RequestTarget,
    tls: bool,
    headers: &mut http::HeaderMap,
) -> Result<(), http::header::InvalidHeaderValue> {
    let token = match caller {
        _ if !route.pass_access_token => None,
        Caller::Session(s) => Some(s.session.tokens.access_token.as_str()),
        Caller::Bearer(verified) => Some(verified.token()),
        Caller::Anonymous => None,
    };
    let Some((identity, prepared)) = caller.prepared() else { return Ok(()) };
    add_identity_headers(headers, &gateway.identity_header_names, &prepared.header_values, token)?;
    if let (Some(signer), Some(ra)) = (&gateway.assertion, &route.assertion) {
        let issuer = gateway.public_origin(target.authority.host(), target.authority.as_str(), tls);
        if let Some(value) = signer.assertion(ra.index, &ra.audience, &issuer, identity, prepared) {
            headers.insert(signer.header.clone(), value);
        }
    }
    Ok(())
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
    fn bearer_credentials_are_read_strictly() {
        let cases: &[(&[&str], Result<Credentials, u16>)] = &[
            (&[], Ok(Credentials::None)),
            (&["Bearer abc.def.ghi"], Ok(Credentials::Bearer("abc.def.ghi"))),
            (&["bearer abc.def-_ghi="], Ok(Credentials::Bearer("abc.def-_ghi="))),
            (&["Basic dXNlcjpwYXNz"], Ok(Credentials::None)),
            (&["Bearer"], Ok(Credentials::None)),
            (&["Bearer "], Err(401)),
            (&["Bearer a b"], Err(401)),
            (&["Bearer a,b"], Err(401)),
            (&["Bearer x", "Bearer y"], Err(400)),
        ];
        for (values, want) in cases {
            let headers: Vec<(&str, &str)> = values.iter().map(|v| ("Authorization", *v)).collect();
            let r = req("/", &headers);
            assert_eq!(read_credentials(&r.headers).map_err(|e| e.status), *want, "{values:?}");
        }
    }

    #[test]
    fn every_byte_is_judged_as_rfc_6750_says() {
        for b in 0..=255u8 {
            let allowed = b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
            assert_eq!(is_b64token(&[b]), allowed, "byte {b:#04x}");
            // inside a long token too, where it is checked 16 bytes at a time
            let mut long = vec![b'a'; 100];
            long[57] = b;
            assert_eq!(is_b64token(&long), allowed, "byte {b:#04x} at 57");
        }
    }

    #[test]
    fn absolute_form_targets_are_routed_by_their_path() {
        let t = read_target(&req("http://real.example.com/a/../x?q", &[("Host", "real.example.com")]), 65536)
            .unwrap();
        assert_eq!(t.authority.host(), "real.example.com");
        assert_eq!(t.path_and_query, "/x?q");
    }
}
