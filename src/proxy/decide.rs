//! One decision per request: from the facts of a request (read once by the proxy, or described
//! by a front proxy) to "forward it as this caller on this route" or "answer this". The steps
//! are the plain functions of `pipeline`; this only puts them in order and turns rejections into
//! answers, so it can be exercised without a server.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, Method};
use pingora::http::RequestHeader;

use super::endpoints::{self, PendingEndpoint};
use super::metadata::{self, WELL_KNOWN, metadata_url};
use super::pipeline::{
    Caller, Credentials, RequestTarget, authenticate, authorize, forbidden, match_route, read_credentials,
};
use crate::browser::SessionLookup;
use crate::config::AuthMode;
use crate::forwarding::{client_address, known_client_address};
use crate::gateway::{Gateway, Route};
use crate::http_util::{MAX_RETURN_TO, RequestId, cookie_header, is_navigation, prefers_html};
use crate::pages::{Denied, PageContext};
use crate::policy::{Access, AccessRequest, Refusal};
use crate::reply::{METHOD_OVERRIDE_REFUSED, NETWORK_DENIED, RULE_DENIED, Rejection, Reply};
use crate::routing::route_key;

/// What the proxy knows of a request before deciding: read once, borrowed from the request.
pub struct RequestFacts<'a> {
    /// The method.
    pub method: &'a Method,
    /// The request headers as the client sent them.
    pub headers: &'a HeaderMap,
    /// The raw query, if any.
    pub query: Option<&'a str>,
    /// It came over TLS.
    pub tls: bool,
    /// The peer's address.
    pub peer_ip: Option<IpAddr>,
    /// The front proxy that described this request (forward-auth), or `None` when the gateway
    /// itself received it (inline).
    pub front_proxy: Option<FrontProxy>,
    /// Its id (for the pages users see, as in the access log).
    pub request_id: RequestId<'a>,
    /// Its `Cookie` headers as one, read when first needed (HTTP/2 sends one header per
    /// cookie, and joining them allocates: public and bearer routes never need them).
    cookies: std::sync::OnceLock<Option<Cow<'a, str>>>,
}

/// The front proxy a forward-auth request comes from, by the conventions it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontProxy {
    /// nginx `auth_request`: only 2xx, 401 and 403 are understood.
    Nginx,
    /// Traefik `forwardAuth`, Caddy `forward_auth`: any other answer goes to the client as is.
    Forwarded,
    /// Envoy `ext_authz`: likewise.
    Envoy,
}

impl std::fmt::Debug for RequestFacts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // headers, query and cookies may carry tokens, codes and session tickets
        f.debug_struct("RequestFacts")
            .field("method", self.method)
            .field("tls", &self.tls)
            .field("peer_ip", &self.peer_ip)
            .finish_non_exhaustive()
    }
}

impl<'a> RequestFacts<'a> {
    /// The facts of `req`, received from `peer_ip` (over TLS when `tls`).
    /// `serial` numbers the request (its id, unless a trusted peer, `trusted_peer`, gave one).
    pub fn read(
        req: &'a RequestHeader,
        peer_ip: Option<IpAddr>,
        tls: bool,
        serial: u64,
        trusted_peer: bool,
    ) -> Self {
        Self {
            request_id: RequestId::of(&req.headers, serial, trusted_peer),
            method: &req.method,
            headers: &req.headers,
            query: req.uri.query(),
            tls,
            peer_ip,
            front_proxy: None,
            cookies: std::sync::OnceLock::new(),
        }
    }

    /// The facts of a request a front proxy describes: its method and query as described, the
    /// auth request's headers (the front proxy forwards the original ones).
    pub fn described(
        method: &'a Method,
        headers: &'a HeaderMap,
        query: Option<&'a str>,
        tls: bool,
        peer_ip: Option<IpAddr>,
        front_proxy: FrontProxy,
        serial: u64,
    ) -> Self {
        Self {
            // only a trusted front proxy asks
            request_id: RequestId::of(headers, serial, true),
            method,
            headers,
            query,
            tls,
            peer_ip,
            front_proxy: Some(front_proxy),
            cookies: std::sync::OnceLock::new(),
        }
    }

    /// Its `Cookie` headers as one.
    pub fn cookies(&self) -> Option<&str> {
        self.cookies.get_or_init(|| cookie_header(self.headers)).as_deref()
    }

    /// Does the client prefer an HTML page to JSON?
    pub fn html(&self) -> bool {
        prefers_html(self.headers.get(http::header::ACCEPT))
    }

    /// Is it a top-level browser navigation?
    pub fn navigation(&self) -> bool {
        is_navigation(self.method, self.headers)
    }

    /// The client's address for network rules: `None` when a trusted proxy does not say.
    pub fn known_client(&self, gateway: &Gateway) -> Option<IpAddr> {
        known_client_address(self.headers, self.peer_ip, |ip| gateway.trusts(Some(ip)))
    }

    /// The gateway's pages as this request shows them.
    pub fn page<'g>(&'g self, gateway: &'g Gateway) -> PageContext<'g> {
        PageContext { pages: &gateway.pages, request_id: &self.request_id }
    }

    /// The address it comes from, through trusted proxies (for per-client limits).
    pub fn client(&self, gateway: &Gateway) -> Option<IpAddr> {
        client_address(self.headers, self.peer_ip, |ip| gateway.trusts(Some(ip)))
    }
}

/// What became of a request, for the access log and the `decision` label of the request metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing decided yet (the request failed before).
    None,
    /// Forwarded on a public route.
    Public,
    /// Forwarded as an authenticated, authorised caller.
    Allowed,
    /// Answered by one of the gateway's own endpoints.
    GatewayEndpoint,
    /// Sent to sign in.
    LoginStarted,
    /// Forwarded, but the upstream failed.
    UpstreamError,
    /// Refused, with the rejection's code.
    Rejected(&'static str),
}

impl Outcome {
    /// Its label (a fixed word).
    pub fn label(self) -> &'static str {
        match self {
            Outcome::None => "none",
            Outcome::Public => "public",
            Outcome::Allowed => "allowed",
            Outcome::GatewayEndpoint => "gateway_endpoint",
            Outcome::LoginStarted => "login_started",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Rejected(code) => code,
        }
    }
}

/// A request to forward.
#[derive(Debug)]
pub struct Forward {
    /// Its route.
    pub route: Arc<Route>,
    /// Who is calling.
    pub caller: Caller,
    /// Where it is going.
    pub target: RequestTarget,
    /// It carried an unusable session cookie: clear it in the response.
    pub clear_session_cookie: bool,
    /// `Public` or `Allowed`.
    pub outcome: Outcome,
}

/// A request the gateway answers itself.
#[derive(Debug)]
pub struct Answer {
    /// The answer.
    pub reply: Reply,
    /// What it means.
    pub outcome: Outcome,
    /// Where the request was going, when that could be read (for the access log).
    pub target: Option<RequestTarget>,
    /// Its route, when one matched.
    pub route: Option<Arc<Route>>,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Decision {
    /// Send it upstream.
    Forward(Forward),
    /// Answer it here.
    Answer(Answer),
    /// One of the gateway's endpoints that needs the request body: read it, then
    /// `endpoints::finish`.
    ReadBody(PendingEndpoint),
}

impl Decision {
    fn answer(
        reply: Reply,
        outcome: Outcome,
        target: Option<RequestTarget>,
        route: Option<Arc<Route>>,
    ) -> Self {
        Decision::Answer(Answer { reply, outcome, target, route })
    }

    fn rejected(rejection: &Rejection, html: bool, target: Option<RequestTarget>) -> Self {
        Self::answer(rejection.reply(html, None), Outcome::Rejected(rejection.code), target, None)
    }
}

/// Decides what to do with a request going to `target` (from `read_target`, or why it cannot
/// be read): match route → authenticate → authorize, or one of the gateway's own endpoints.
/// Only the provider (a sign-in start, a refresh, an unknown key) and the session store are
/// asked along the way.
pub async fn decide(
    gateway: &Gateway,
    facts: &RequestFacts<'_>,
    target: Result<RequestTarget, Rejection>,
) -> Decision {
    let target = match target {
        Ok(t) => t,
        Err(rejection) => return Decision::rejected(&rejection, facts.html(), None),
    };
    // only what is answered here needs the origin (without a public_url it is formatted)
    let origin =
        |t: &RequestTarget| gateway.public_origin(t.authority.host(), t.authority.as_str(), facts.tls);
    if target.path.starts_with(endpoints::PREFIX) {
        let origin = origin(&target);
        return endpoints::dispatch(gateway, facts, target, &origin).await;
    }
    if target.path == crate::assertion::JWKS_PATH {
        if let Some(signer) = &gateway.assertion {
            let reply = metadata::reply(&signer.jwks());
            return Decision::answer(reply, Outcome::GatewayEndpoint, Some(target), None);
        }
    }
    if target.path.starts_with(WELL_KNOWN) {
        if let Some(doc) =
            metadata::document(gateway, target.authority.host(), &target.path, &origin(&target))
        {
            return Decision::answer(metadata::reply(&doc), Outcome::GatewayEndpoint, Some(target), None);
        }
    }
    let route = match match_route(gateway, &target) {
        // a route without upstream is one a front proxy serves: nothing to forward to here
        Ok(r) if facts.front_proxy.is_none() && r.upstream.is_empty() => {
            let rejection = Rejection::new(404, "no_route", "No application is configured at this address.");
            return Decision::rejected(&rejection, facts.html(), Some(target));
        }
        Ok(r) => r,
        // the access log names the path nothing was routed for
        Err(rejection) => return Decision::rejected(&rejection, facts.html(), Some(target)),
    };
    // the rules inside the route: a public path, a refused one, a stricter policy
    let policy = match route.access.is_plain() {
        true => &route.access.policy,
        false => {
            let key = route_key(&target.path, gateway.case_insensitive_paths);
            let req = AccessRequest {
                method: facts.method,
                key: &key,
                headers: facts.headers,
                client: facts.known_client(gateway),
            };
            match route.access.judge(&req) {
                Access::Policy(policy) => policy,
                Access::Public(pass) => {
                    tracing::debug!(route = %route.name, ?pass, "passed without sign-in");
                    let caller = Caller::Anonymous;
                    let outcome = Outcome::Public;
                    return Decision::Forward(Forward {
                        route,
                        caller,
                        target,
                        clear_session_cookie: false,
                        outcome,
                    });
                }
                Access::Deny(refusal) => {
                    tracing::debug!(route = %route.name, ?refusal, "refused by the route's rules");
                    let reason = match refusal {
                        Refusal::Rule(_) => RULE_DENIED,
                        Refusal::Network => NETWORK_DENIED,
                        Refusal::MethodOverride => METHOD_OVERRIDE_REFUSED,
                    };
                    let reply = match (facts.html(), refusal.status()) {
                        (true, 403) => {
                            facts.page(gateway).forbidden(&Denied { user: None, app: None, reason })
                        }
                        (html, status) => Rejection::new(status, refusal.code(), reason).reply(html, None),
                    };
                    return Decision::answer(
                        reply,
                        Outcome::Rejected(refusal.code()),
                        Some(target),
                        Some(route),
                    );
                }
            }
        }
    };
    // only bearer routes look at Authorization: elsewhere a malformed one is not ours to judge
    let credentials = match route.auth {
        AuthMode::Public | AuthMode::Browser => Ok(Credentials::None),
        AuthMode::Api | AuthMode::Any => read_credentials(facts.headers),
    };
    let lookup = match (&gateway.browser, route.auth, &credentials) {
        (Some(auth), AuthMode::Browser | AuthMode::Any, Ok(Credentials::None)) => {
            auth.lookup(facts.cookies()).await
        }
        _ => SessionLookup::Absent,
    };
    let clear_session_cookie = matches!(lookup, SessionLookup::Invalid);
    let authenticated = match credentials {
        Ok(credentials) => {
            let revocations = gateway.browser.as_ref().map(|b| b.revocations().as_ref());
            let verifiers = &gateway.verifiers;
            authenticate(&route, credentials, verifiers, revocations, &lookup, facts.navigation()).await
        }
        Err(rejection) => Err(rejection),
    };
    let rejection = match authenticated {
        Ok(caller) => match authorize(&route, policy, &caller) {
            Ok(()) => {
                let outcome =
                    if matches!(caller, Caller::Anonymous) { Outcome::Public } else { Outcome::Allowed };
                return Decision::Forward(Forward { route, caller, target, clear_session_cookie, outcome });
            }
            Err(denial) => {
                let reply = forbidden(facts.page(gateway), &route, policy, &caller, denial, facts.html());
                return Decision::answer(reply, Outcome::Rejected("forbidden"), Some(target), Some(route));
            }
        },
        Err(rejection) => rejection,
    };
    let origin = origin(&target);
    // a huge return-to would be kept with the login state: long ones become `/`
    let return_to = || match target.path_and_query.len() <= MAX_RETURN_TO {
        true => target.path_and_query.clone(),
        false => "/".to_owned(),
    };
    let (mut reply, outcome) = match (&gateway.browser, rejection.start_login) {
        // nginx cannot pass a redirect (nor its cookie) on: its `error_page 401` sends the
        // browser to sign in where this says
        (Some(auth), true) if facts.front_proxy == Some(FrontProxy::Nginx) => {
            let mut reply = rejection.reply(facts.html(), None);
            // the route's providers, when several are configured (a chooser offers several)
            let providers: Vec<usize> = match gateway.verifiers.len() {
                1 => Vec::new(),
                _ => route.providers.iter().map(|p| p.index).collect(),
            };
            let start = auth.start_url(&providers, &return_to());
            if let Ok(v) = http::HeaderValue::from_str(&start) {
                reply.header(super::forward_auth::SIGN_IN_HEADER, v);
            }
            (reply, Outcome::LoginStarted)
        }
        (Some(auth), true) => {
            let client = facts.client(gateway);
            let providers: Vec<usize> = route.providers.iter().map(|p| p.index).collect();
            let page = facts.page(gateway);
            let reply =
                auth.start_login(page, &origin, return_to(), facts.cookies(), client, &providers).await;
            (reply, Outcome::LoginStarted)
        }
        _ => {
            let url = metadata_url(&origin, &route.path);
            (rejection.reply(facts.html(), Some(&url)), Outcome::Rejected(rejection.code))
        }
    };
    if let (true, Some(auth)) = (clear_session_cookie, &gateway.browser) {
        reply.header(http::header::SET_COOKIE, auth.cookies().clear_session());
    }
    Decision::answer(reply, outcome, Some(target), Some(route))
}
