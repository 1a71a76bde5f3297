//! The Pingora `ProxyHttp` implementation: each phase only wires Pingora to plain functions.
//! request_filter reads the request's facts and target once, asks `decide`, and either writes
//! the answer or keeps the forward; upstream_peer picks a backend; upstream_request_filter
//! shapes the headers (`forwarding`, `identity`) and sets the path; fail_to_connect /
//! fail_to_proxy retry and answer 502/504; logging writes the access log and metrics.

mod buffering;
mod decide;
mod endpoints;
mod forward_auth;
mod intake;
mod metadata;
mod pipeline;
mod respond;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session as Downstream};
use pingora::upstreams::peer::HttpPeer;

pub use buffering::{BodyPlan, plan as body_plan};
pub use decide::{Answer, Decision, Forward, FrontProxy, Outcome, RequestFacts, decide};
pub use forward_auth::{AuthEndpoint, SIGN_IN_HEADER};
pub use metadata::{WELL_KNOWN, metadata_url};
pub use pipeline::{
    Caller, Credentials, RequestTarget, add_caller_headers, authenticate, authorize, match_route,
    read_credentials, read_target, target_of,
};

use crate::forwarding::{
    ClientConnection, cased_request_header, shape_request_headers, strip_cookies, strip_set_cookies,
};
use crate::gateway::{Gateway, Route};
use crate::http_util::RequestId;
use crate::lifecycle::Drain;
use crate::metrics::{METRICS, status_class};
use crate::reply::Rejection;

/// The gateway's proxy: holds the current `Gateway`, swapped whole on reload.
pub struct AuthGate {
    gateway: Arc<ArcSwap<Gateway>>,
    drain: Drain,
}

impl AuthGate {
    /// A proxy serving whatever `gateway` currently holds, until `drain` starts.
    pub fn new(gateway: Arc<ArcSwap<Gateway>>, drain: Drain) -> Self {
        Self { gateway, drain }
    }
}

/// The peer's address; an IPv4 client of a dual-stack listener (`::ffff:a.b.c.d`) as IPv4, so
/// that `trusted_proxies`, `X-Forwarded-For` and per-client limits see the address it is.
fn peer_ip(downstream: &Downstream) -> Option<std::net::IpAddr> {
    downstream.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip().to_canonical())
}

fn is_tls(downstream: &Downstream) -> bool {
    downstream.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// Per-request state.
pub struct RequestCtx {
    started: Instant,
    /// The gateway snapshot this request uses from start to end, even across a reload.
    gateway: Arc<Gateway>,
    /// Where the request was going, once read.
    target: Option<RequestTarget>,
    /// Its route, once matched.
    route: Option<Arc<Route>>,
    /// Who is calling, when the request is forwarded.
    caller: Option<Caller>,
    /// The request carried an unusable session cookie: clear it in the response.
    clear_session_cookie: bool,
    /// What the gateway decided, for metrics and the access log.
    outcome: Outcome,
    /// When the first upstream connection was asked for.
    upstream_started: Option<Instant>,
    /// Until the upstream's response header arrived.
    upstream_elapsed: Option<std::time::Duration>,
    /// The backend of the current attempt.
    backend: Option<usize>,
    /// Backends that refused or timed out a connection during this request.
    failed: Vec<usize>,
    /// A body read before the upstream, for `request_body_filter` to put in place.
    buffered_body: buffering::BufferedBody,
    /// The gateway answered `Expect: 100-continue` itself (the body is already here).
    continue_answered: bool,
    /// How the request came in: `inline`, or `forward` (a front proxy's auth request).
    mode: &'static str,
    /// Its serial number (its id, unless a trusted proxy sent one).
    serial: u64,
    /// The peer is a trusted proxy.
    trusted_peer: bool,
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
            outcome: Outcome::None,
            upstream_started: None,
            upstream_elapsed: None,
            backend: None,
            failed: Vec::new(),
            buffered_body: buffering::BufferedBody::None,
            continue_answered: false,
            mode: "inline",
            serial: RequestId::next_serial(),
            trusted_peer: false,
        }
    }

    async fn request_filter(&self, downstream: &mut Downstream, ctx: &mut RequestCtx) -> Result<bool> {
        if self.drain.is_draining() {
            // `Connection: close` on this answer: the client reconnects to an instance that stays
            downstream.set_keepalive(None);
        }
        let gateway = ctx.gateway.clone();
        let req = downstream.req_header();
        ctx.trusted_peer = gateway.trusts(peer_ip(downstream));
        let facts =
            RequestFacts::read(req, peer_ip(downstream), is_tls(downstream), ctx.serial, ctx.trusted_peer);
        let target = read_target(req, gateway.config.server.limits.max_header_size.bytes());
        if let Some((endpoint, path)) =
            target.as_ref().ok().and_then(|t| forward_auth::endpoint(&gateway, &t.path).map(|e| (e, &t.path)))
        {
            let answer =
                forward_auth::answer(&gateway, req, endpoint, path, peer_ip(downstream), ctx.serial).await;
            ctx.mode = "forward";
            ctx.outcome = answer.outcome;
            ctx.target = answer.target;
            ctx.route = answer.route;
            // the front proxy sends no body worth reading: never reuse a connection that may hold one
            if !downstream.is_body_empty() {
                downstream.set_keepalive(None);
            }
            respond::send_reply(downstream, answer.reply).await?;
            return Ok(true);
        }
        let answer = match decide(&gateway, &facts, target).await {
            Decision::Forward(forward) => {
                ctx.outcome = forward.outcome;
                ctx.clear_session_cookie = forward.clear_session_cookie;
                ctx.caller = Some(forward.caller);
                ctx.target = Some(forward.target);
                ctx.route = Some(forward.route);
                // the body comes whole, or not at all, before the upstream is contacted
                let limits = &gateway.config.server.limits;
                let empty = downstream.is_body_empty();
                let plan =
                    buffering::plan(&downstream.req_header().headers, empty, limits.request_buffer.bytes());
                if plan == BodyPlan::Stream {
                    return Ok(false);
                }
                ctx.continue_answered = buffering::is_expecting_continue(&downstream.req_header().headers);
                match buffering::read(downstream, plan, limits.request_body_timeout.get()).await? {
                    Ok(body) => {
                        ctx.buffered_body = body;
                        return Ok(false);
                    }
                    Err(rejection) => {
                        let reply = respond::rejection_reply(downstream.req_header(), &rejection, None);
                        // the rest of a refused body is never read: the connection cannot be reused
                        downstream.set_keepalive(None);
                        ctx.outcome = Outcome::Rejected(rejection.code);
                        respond::send_reply(downstream, reply).await?;
                        return Ok(true);
                    }
                }
            }
            Decision::Answer(answer) => answer,
            Decision::ReadBody(pending) => {
                let target = pending.target.clone();
                let reply = match endpoints::read_body(downstream, &pending).await? {
                    Ok(body) => endpoints::finish(&gateway, pending, &body).await,
                    Err(reply) => reply,
                };
                Answer { reply, outcome: Outcome::GatewayEndpoint, target: Some(target), route: None }
            }
        };
        ctx.outcome = answer.outcome;
        ctx.target = answer.target;
        ctx.route = answer.route;
        respond::send_reply(downstream, answer.reply).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _downstream: &mut Downstream,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
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
        _downstream: &mut Downstream,
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
        _downstream: &mut Downstream,
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
        downstream: &mut Downstream,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (Some(route), Some(target)) = (&ctx.route, &ctx.target) else {
            return Err(Error::explain(InternalError, "request reached upstream without a route"));
        };
        // The headers are shaped on a plain `HeaderMap`, sized once for what is added (Pingora's
        // case-keeping map costs far more per change); with `[headers] preserve_case` the
        // result is then spelled as the client and the configuration wrote each name, in one
        // pass over a map sized once.
        let preserve_case = ctx.gateway.config.headers.preserve_case;
        let client_spellings: Vec<_> = match preserve_case {
            true => upstream
                .headers
                .iter()
                // both walk every value, in the same order (Pingora keeps them in step)
                .map(|(name, _)| name)
                .zip(upstream.case_header_iter())
                .map(|(name, (spelled, _))| (name.clone(), spelled.clone()))
                .collect(),
            false => Vec::new(),
        };
        let keep_end = upstream.send_end_stream();
        // an empty request (no allocation) holds the place until the shaped one is put back
        let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
        let mut parts: http::request::Parts = std::mem::replace(upstream, placeholder).into();
        parts.headers.reserve(UPSTREAM_HEADER_ROOM);
        let headers = &mut parts.headers;
        let invalid =
            |e: http::header::InvalidHeaderValue| Error::because(InternalError, "upstream header", e);
        let peer_ip = peer_ip(downstream);
        let tls = is_tls(downstream);
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
            add_caller_headers(&ctx.gateway, route, caller, target, tls, headers).map_err(invalid)?;
        }
        // absolute-form and HTTP/2 requests carry the authority in the URI: forward origin-form
        let host = match (route.preserve_host, ctx.backend.and_then(|i| route.upstream.get(i))) {
            (false, Some(backend)) => backend.authority.as_str(),
            _ => target.authority.as_str(),
        };
        headers.insert(http::header::HOST, http::HeaderValue::from_str(host).map_err(invalid)?);
        if ctx.continue_answered {
            // the client got its 100 Continue from the gateway and the body is here already
            headers.remove(http::header::EXPECT);
        }
        *upstream = match preserve_case {
            true => cased_request_header(parts, &client_spellings, &ctx.gateway.header_spellings)?,
            false => RequestHeader::from(parts),
        };
        if let Some(end) = keep_end {
            upstream.set_send_end_stream(end);
        }
        upstream.set_raw_path(target.path_and_query.as_bytes())?;
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _downstream: &mut Downstream,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // A body read whole before the upstream reaches this once per attempt, as the tail Pingora
        // kept in its retry buffer (the rest was read already, so nothing else follows): the whole
        // body goes instead. Kept, not taken: a retry on another connection sends the tail again.
        if let (buffering::BufferedBody::Whole { body: whole, .. }, Some(_)) =
            (&ctx.buffered_body, body.as_ref())
        {
            *body = Some(whole.clone());
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        downstream: &mut Downstream,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
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
            ctx.outcome = Outcome::UpstreamError;
        }
        let status = match &rejection {
            // a response already under way (e.g. a timeout mid-body) is cut off, never patched
            // with a second one: the closed connection tells the client it is incomplete
            Some(r) if downstream.response_written().is_some() => r.status,
            Some(r) => {
                let reply = respond::rejection_reply(downstream.req_header(), r, None);
                if let Err(err) = respond::send_reply(downstream, reply).await {
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
        _downstream: &mut Downstream,
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

    fn suppress_error_log(&self, _downstream: &Downstream, _ctx: &RequestCtx, _error: &Error) -> bool {
        // fail_to_proxy logs a redacted line of its own; pingora's would include the full URI
        true
    }

    fn request_summary(&self, downstream: &Downstream, ctx: &RequestCtx) -> String {
        // pingora's default is the whole URI, whose query may hold codes or keys
        let path = ctx.target.as_ref().map_or("-", |t| t.path.as_str());
        format!("{} {path}", downstream.req_header().method)
    }

    async fn logging(&self, downstream: &mut Downstream, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = downstream.response_written().map_or(0, |r| r.status.as_u16());
        let total = ctx.started.elapsed();
        let route = ctx.route.as_ref().map_or("-", |r| r.name.as_str());
        let m = &*METRICS;
        m.requests.with_label_values(&[route, status_class(status), ctx.outcome.label(), ctx.mode]).inc();
        m.gateway_seconds
            .with_label_values(&[route])
            .observe(total.saturating_sub(ctx.upstream_elapsed.unwrap_or_default()).as_secs_f64());
        if let Some(upstream) = ctx.upstream_elapsed {
            m.upstream_seconds.with_label_values(&[route]).observe(upstream.as_secs_f64());
        }
        let req = downstream.req_header();
        let who =
            ctx.caller.as_ref().and_then(Caller::identity).map(|id| match (id.machine, &id.client_id) {
                (true, Some(client)) => client.as_str(),
                _ => id.subject.as_str(),
            });
        let micros = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let request_id = RequestId::of(&req.headers, ctx.serial, ctx.trusted_peer);
        let path = ctx.target.as_ref().map_or("-", |t| logged_path(&t.path));
        let (user, duration_us, upstream_us) =
            (who.unwrap_or("-"), micros(total), ctx.upstream_elapsed.map_or(0, micros));
        match crate::log_writer::access_log() {
            // the same line, formatted straight into the log writer's queue (see log_writer)
            Some(log) if tracing::enabled!(target: "authgate::access", tracing::Level::INFO) => {
                let mut line = log.line();
                line.word("request_id", request_id)
                    .text("route", route)
                    .word("method", &req.method)
                    .text("path", path)
                    .number("status", u64::from(status))
                    .text("decision", ctx.outcome.label())
                    .text("mode", ctx.mode)
                    .text("user", user)
                    .number("duration_us", duration_us)
                    .number("upstream_us", upstream_us);
                log.write(line);
            }
            Some(_) => {}
            None => tracing::info!(
                target: "authgate::access",
                request_id = %request_id,
                route,
                method = %req.method,
                path,
                status,
                decision = ctx.outcome.label(),
                mode = ctx.mode,
                user,
                duration_us,
                upstream_us,
            ),
        }
    }
}

/// Longest path the access log writes: a request line may be a megabyte long.
const LOGGED_PATH: usize = 1024;

/// The path as the access log writes it: cut at `LOGGED_PATH` bytes (a normalised path is ASCII).
fn logged_path(path: &str) -> &str {
    path.get(..LOGGED_PATH).unwrap_or(path)
}

/// Room reserved in the upstream header map for what the gateway adds (forwarding, identity,
/// extra claims, assertion, Host), so that adding them never grows it.
const UPSTREAM_HEADER_ROOM: usize = 24;
