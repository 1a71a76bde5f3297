//! The Pingora `ProxyHttp` implementation. Each phase only wires the plain functions of
//! `pipeline` and `headers` to Pingora: request_filter (target → route → authenticate),
//! upstream_peer (pick a backend), upstream_request_filter (shape headers, set path),
//! fail_to_connect / fail_to_proxy (retry, 502/504), logging (access log).

mod endpoints;
mod headers;
mod metadata;
mod pipeline;
mod prepared;
mod respond;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

pub use headers::{
    ClientConnection, IdentityHeaderValues, StrippedHeaders, add_identity_headers, canonical_header,
    client_address, header_value, shape_request_headers, strip_cookies, strip_set_cookies,
};
pub use metadata::{WELL_KNOWN, metadata_url};
pub use pipeline::{
    BearerChallenge, Caller, Credentials, Rejection, RequestTarget, authenticate, authorize, is_navigation,
    match_route, read_credentials, read_target,
};
pub use prepared::PreparedIdentity;
pub use respond::{prefers_html, render, www_authenticate};

use crate::config::AuthMode;
use crate::gateway::Gateway;
use crate::metrics::{METRICS, status_class};
use crate::oidc::browser::{MAX_RETURN_TO, SessionLookup};
use crate::routing::Route;

/// The gateway's proxy: holds the current `Gateway`, swapped whole on reload.
pub struct AuthGate {
    gateway: Arc<ArcSwap<Gateway>>,
}

impl AuthGate {
    /// A proxy serving whatever `gateway` currently holds.
    pub fn new(gateway: Arc<ArcSwap<Gateway>>) -> Self {
        Self { gateway }
    }
}

/// Writes a rejection and ends the request (`Ok(true)`: answered here).
async fn reject(
    session: &mut Session,
    rejection: &Rejection,
    resource_metadata: Option<&str>,
) -> Result<bool> {
    let reply = respond::rejection_reply(session.req_header(), rejection, resource_metadata);
    respond::send_reply(session, reply).await?;
    Ok(true)
}

/// The peer's address; an IPv4 client of a dual-stack listener (`::ffff:a.b.c.d`) as IPv4, so
/// that `trusted_proxies`, `X-Forwarded-For` and per-client limits see the address it is.
fn peer_ip(session: &Session) -> Option<std::net::IpAddr> {
    session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip().to_canonical())
}

/// The address the request comes from (through trusted proxies), for per-client limits.
fn requester(session: &Session, gateway: &Gateway) -> Option<std::net::IpAddr> {
    client_address(&session.req_header().headers, peer_ip(session), |ip| gateway.trusts(Some(ip)))
}

fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// Per-request state.
pub struct RequestCtx {
    started: Instant,
    /// The gateway snapshot this request uses from start to end, even across a reload.
    gateway: Arc<Gateway>,
    target: Option<RequestTarget>,
    route: Option<Arc<Route>>,
    caller: Option<Caller>,
    /// The request carried an unusable session cookie: clear it in the response.
    clear_session_cookie: bool,
    /// What the gateway decided, for metrics and the access log (a fixed word).
    decision: &'static str,
    /// When the first upstream connection was asked for.
    upstream_started: Option<Instant>,
    /// Until the upstream's response header arrived.
    upstream_elapsed: Option<std::time::Duration>,
    /// The backend of the current attempt.
    backend: Option<usize>,
    /// Backends that refused or timed out a connection during this request.
    failed: Vec<usize>,
}

#[async_trait]
impl ProxyHttp for AuthGate {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            gateway: self.gateway.load_full(),
            target: None,
            route: None,
            caller: None,
            clear_session_cookie: false,
            decision: "none",
            upstream_started: None,
            upstream_elapsed: None,
            backend: None,
            failed: Vec::new(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let gateway = ctx.gateway.clone();
        let max_header = gateway.config.server.limits.max_header_size.bytes();
        let target = match read_target(session.req_header(), max_header) {
            Ok(t) => t,
            Err(rejection) => {
                ctx.decision = rejection.code;
                return reject(session, &rejection, None).await;
            }
        };
        let tls = is_tls(session);
        let origin = |t: &RequestTarget| gateway.public_origin(t.authority.host(), t.authority.as_str(), tls);
        if target.path.starts_with(endpoints::PREFIX) {
            let reply = endpoints::handle(session, &gateway, &target, &origin(&target)).await?;
            ctx.target = Some(target);
            ctx.decision = "gateway_endpoint";
            respond::send_reply(session, reply).await?;
            return Ok(true);
        }
        if target.path == crate::assertion::JWKS_PATH {
            if let Some(signer) = &gateway.assertion {
                ctx.decision = "gateway_endpoint";
                respond::send_reply(session, metadata::reply(&signer.jwks())).await?;
                return Ok(true);
            }
        }
        if target.path.starts_with(WELL_KNOWN) {
            if let Some(doc) =
                metadata::document(&gateway, target.authority.host(), &target.path, &origin(&target))
            {
                ctx.decision = "gateway_endpoint";
                respond::send_reply(session, metadata::reply(&doc)).await?;
                return Ok(true);
            }
        }
        let route = match match_route(&gateway, &target) {
            Ok(r) => r,
            Err(rejection) => {
                ctx.decision = rejection.code;
                // the access log names the path nothing was routed for
                ctx.target = Some(target);
                return reject(session, &rejection, None).await;
            }
        };
        // only bearer routes look at Authorization: elsewhere a malformed one is not ours to judge
        let credentials = match route.auth {
            AuthMode::Public | AuthMode::Browser => Ok(Credentials::None),
            AuthMode::Api | AuthMode::Any => read_credentials(session.req_header()),
        };
        let lookup = match (&gateway.browser, route.auth, &credentials) {
            (Some(auth), AuthMode::Browser | AuthMode::Any, Ok(Credentials::None)) => {
                auth.lookup(endpoints::cookie_header(session.req_header()).as_deref()).await
            }
            _ => SessionLookup::Absent,
        };
        ctx.clear_session_cookie = matches!(lookup, SessionLookup::Invalid);
        let navigation = is_navigation(session.req_header());
        let decision = match credentials {
            Ok(credentials) => {
                let revocations = gateway.browser.as_ref().map(|b| b.revocations().as_ref());
                authenticate(
                    &route,
                    credentials,
                    gateway.verifier.as_deref(),
                    revocations,
                    &lookup,
                    navigation,
                )
                .await
                .and_then(|caller| authorize(&route, &caller).map(|()| caller))
            }
            Err(rejection) => Err(rejection),
        };
        let rejection = match decision {
            Ok(caller) => {
                ctx.decision = if matches!(caller, Caller::Anonymous) { "public" } else { "allowed" };
                ctx.caller = Some(caller);
                ctx.target = Some(target);
                ctx.route = Some(route);
                return Ok(false);
            }
            Err(rejection) => rejection,
        };
        let origin = origin(&target);
        let mut reply = match (&gateway.browser, rejection.start_login) {
            (Some(auth), true) => {
                ctx.decision = "login_started";
                // a huge return-to would be kept with the login state: long ones become `/`
                let return_to = if target.path_and_query.len() <= MAX_RETURN_TO {
                    target.path_and_query.clone()
                } else {
                    "/".to_owned()
                };
                let cookies = endpoints::cookie_header(session.req_header());
                let client = requester(session, &gateway);
                auth.start_login(&origin, return_to, cookies.as_deref(), client).await
            }
            _ => {
                ctx.decision = rejection.code;
                let url = metadata_url(&origin, &route.path);
                respond::rejection_reply(session.req_header(), &rejection, Some(&url))
            }
        };
        if let (true, Some(auth)) = (ctx.clear_session_cookie, &gateway.browser) {
            reply.header(http::header::SET_COOKIE, auth.cookies().clear_session());
        }
        ctx.target = Some(target);
        ctx.route = Some(route);
        respond::send_reply(session, reply).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let route = ctx.route.as_ref().ok_or_else(|| Error::explain(InternalError, "no route"))?;
        let index = route
            .upstream
            .select(&ctx.failed)
            .ok_or_else(|| Error::explain(ConnectNoRoute, "every upstream backend failed"))?;
        let backend =
            route.upstream.get(index).ok_or_else(|| Error::explain(InternalError, "backend index"))?;
        ctx.backend = Some(index);
        ctx.upstream_started.get_or_insert_with(Instant::now);
        let mut peer = HttpPeer::new(backend.addr, backend.tls, backend.sni.clone());
        let t = route.timeouts;
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        peer.options.write_timeout = Some(t.write);
        peer.options.idle_timeout = Some(t.idle);
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(route), Some(index)) = (&ctx.route, ctx.backend) {
            route.upstream.mark_down(index);
            ctx.failed.push(index);
            // another backend may be up: connecting sent nothing, so retrying is always safe
            e.set_retry(ctx.failed.len() < route.upstream.len());
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(route), Some(index)) = (&ctx.route, ctx.backend) {
            route.upstream.mark_up(index);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (Some(route), Some(target)) = (&ctx.route, &ctx.target) else {
            return Err(Error::explain(InternalError, "request reached upstream without a route"));
        };
        // The headers are shaped on a plain `HeaderMap`, sized once for what is added: Pingora's
        // case-preserving insertion costs ~1 700 instructions a header (two maps, their growth, a
        // name allocation), a plain insert a fraction of that. Header names therefore reach the
        // app in lower case, as over HTTP/2 and from Envoy-based gateways (RFC 9110 §5.1: they
        // are case-insensitive).
        let keep_end = upstream.send_end_stream();
        // an empty request (no allocation) holds the place until the shaped one is put back
        let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
        let mut parts: http::request::Parts = std::mem::replace(upstream, placeholder).into();
        parts.headers.reserve(UPSTREAM_HEADER_ROOM);
        let headers = &mut parts.headers;
        let invalid =
            |e: http::header::InvalidHeaderValue| Error::because(InternalError, "upstream header", e);
        let peer_ip = peer_ip(session);
        let tls = is_tls(session);
        let conn = ClientConnection {
            peer_ip,
            trusted: ctx.gateway.trusts(peer_ip),
            proto: if tls { "https" } else { "http" },
            host: target.authority.as_str(),
        };
        shape_request_headers(headers, &ctx.gateway.stripped_headers, &conn).map_err(invalid)?;
        if let Some(auth) = &ctx.gateway.browser {
            let c = auth.cookies();
            strip_cookies(headers, &[c.session.as_str(), c.login.as_str()]).map_err(invalid)?;
        }
        if let Some(caller) = &ctx.caller {
            let token = match caller {
                _ if !route.pass_access_token => None,
                Caller::Session(s) => Some(s.session.tokens.access_token.as_str()),
                Caller::Bearer(_) => match read_credentials(session.req_header()) {
                    Ok(Credentials::Bearer(t)) => Some(t),
                    _ => None,
                },
                Caller::Anonymous => None,
            };
            if let Some((identity, prepared)) = caller.prepared() {
                let names = &ctx.gateway.identity_header_names;
                add_identity_headers(headers, names, &prepared.header_values, token).map_err(invalid)?;
                if let (Some(signer), Some(ra)) = (&ctx.gateway.assertion, &route.assertion) {
                    let issuer =
                        ctx.gateway.public_origin(target.authority.host(), target.authority.as_str(), tls);
                    if let Some(value) = signer.assertion(ra.index, &ra.audience, &issuer, identity, prepared)
                    {
                        headers.insert(signer.header.clone(), value);
                    }
                }
            }
        }
        // absolute-form and HTTP/2 requests carry the authority in the URI: forward origin-form
        let host = match (route.preserve_host, ctx.backend.and_then(|i| route.upstream.get(i))) {
            (false, Some(backend)) => backend.authority.as_str(),
            _ => target.authority.as_str(),
        };
        headers.insert(http::header::HOST, http::HeaderValue::from_str(host).map_err(invalid)?);
        *upstream = RequestHeader::from(parts);
        if let Some(end) = keep_end {
            upstream.set_send_end_stream(end);
        }
        upstream.set_raw_path(target.path_and_query.as_bytes())?;
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let rejection = match (e.esource(), e.etype()) {
            (_, HTTPStatus(code)) if *code >= 400 => {
                Some(Rejection::new(*code, "error", "The request failed."))
            }
            (ErrorSource::Upstream, ConnectTimedout | ReadTimedout | WriteTimedout) => {
                Some(Rejection::new(504, "upstream_timeout", "The application did not answer in time."))
            }
            (ErrorSource::Upstream, _) | (_, ConnectNoRoute) => Some(Rejection::new(
                502,
                "upstream_unavailable",
                "The application is not reachable right now.",
            )),
            (ErrorSource::Downstream, ReadError | WriteError | ConnectionClosed) => None,
            (ErrorSource::Downstream, _) => {
                Some(Rejection::new(400, "bad_request", "The request could not be read."))
            }
            _ => Some(Rejection::new(500, "internal_error", "The gateway failed to handle the request.")),
        };
        if ctx.upstream_started.is_some() {
            ctx.decision = "upstream_error";
        }
        let status = match &rejection {
            // a response already under way (e.g. a timeout mid-body) is cut off, never patched
            // with a second one: the closed connection tells the client it is incomplete
            Some(r) if session.response_written().is_some() => r.status,
            Some(r) => {
                let reply = respond::rejection_reply(session.req_header(), r, None);
                if let Err(err) = respond::send_reply(session, reply).await {
                    tracing::debug!(error = %err, "could not send the error response");
                }
                r.status
            }
            None => 0,
        };
        if let Some(route) = &ctx.route {
            tracing::warn!(route = %route.name, status, error = e.etype().as_str(), "request failed");
        }
        FailToProxy { error_code: status, can_reuse_downstream: false }
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_elapsed = ctx.upstream_started.map(|t| t.elapsed());
        if let Some(auth) = &ctx.gateway.browser {
            // an app behind the gateway must not set (or fix) the gateway's own cookies
            let c = auth.cookies();
            strip_set_cookies(upstream_response, &[c.session.as_str(), c.login.as_str()])?;
            if ctx.clear_session_cookie {
                upstream_response.append_header(http::header::SET_COOKIE, c.clear_session())?;
            }
        }
        Ok(())
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        // fail_to_proxy logs a redacted line of its own; pingora's would include the full URI
        true
    }

    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        // pingora's default is the whole URI, whose query may hold codes or keys
        let path = ctx.target.as_ref().map_or("-", |t| t.path.as_str());
        format!("{} {path}", session.req_header().method)
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let total = ctx.started.elapsed();
        let route = ctx.route.as_ref().map_or("-", |r| r.name.as_str());
        let m = &*METRICS;
        m.requests.with_label_values(&[route, status_class(status), ctx.decision]).inc();
        m.gateway_seconds
            .with_label_values(&[route])
            .observe(total.saturating_sub(ctx.upstream_elapsed.unwrap_or_default()).as_secs_f64());
        if let Some(upstream) = ctx.upstream_elapsed {
            m.upstream_seconds.with_label_values(&[route]).observe(upstream.as_secs_f64());
        }
        let req = session.req_header();
        let who =
            ctx.caller.as_ref().and_then(Caller::identity).map(|id| match (id.machine, &id.client_id) {
                (true, Some(client)) => client.as_str(),
                _ => id.subject.as_str(),
            });
        let micros = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        tracing::info!(
            target: "authgate::access",
            request_id = %RequestId::of(req),
            route,
            method = %req.method,
            path = ctx.target.as_ref().map_or("-", |t| t.path.as_str()),
            status,
            decision = ctx.decision,
            user = who.unwrap_or("-"),
            duration_us = micros(total),
            upstream_us = ctx.upstream_elapsed.map_or(0, micros),
        );
    }
}

/// Room reserved in the upstream header map for what the gateway adds (forwarding, identity,
/// extra claims, assertion, Host), so that adding them never grows it.
const UPSTREAM_HEADER_ROOM: usize = 24;

/// A request's id in the access log: the client's (or load balancer's) `X-Request-Id` when it
/// is a plain token, else one made here (a per-process random prefix and a counter: unique
/// without a random draw per request).
enum RequestId<'a> {
    Given(&'a str),
    Made(u32, u64),
}

impl<'a> RequestId<'a> {
    fn of(req: &'a pingora::http::RequestHeader) -> Self {
        static PREFIX: std::sync::LazyLock<u32> = std::sync::LazyLock::new(|| {
            crate::session::random_bytes::<4>().map(u32::from_le_bytes).unwrap_or(0)
        });
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let plain = |v: &str| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        };
        match req.headers.get("x-request-id").and_then(|v| v.to_str().ok()).filter(|v| plain(v)) {
            Some(given) => RequestId::Given(given),
            None => RequestId::Made(*PREFIX, NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        }
    }
}

impl std::fmt::Display for RequestId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestId::Given(id) => f.write_str(id),
            RequestId::Made(prefix, n) => write!(f, "{prefix:08x}-{n:x}"),
        }
    }
}
