//! The gateway's own endpoints under `/oauth2/`: start, callback, sign_out, userinfo, the
//! webhook and back-channel logout. Reserved on every host, answered before routing, never
//! proxied. Those that need the request body are answered in two steps: `dispatch` says which
//! body to read (and how much), `finish` answers with it.

use http::StatusCode;
use pingora::proxy::Session as Downstream;

use super::decide::{Decision, Outcome, RequestFacts};
use super::intake::{Intake, Refused};
use super::pipeline::RequestTarget;
use crate::browser::SessionLookup;
use crate::gateway::Gateway;
use crate::http_util::{QueryError, declared_length, parse_unique_query, safe_return_to, same_origin};
use crate::reply::{Rejection, Reply};
use crate::revocation;

/// The reserved path prefix.
pub const PREFIX: &str = "/oauth2/";

/// Where back-channel logout tokens are posted (OIDC Back-Channel Logout).
const BACKCHANNEL_LOGOUT: &str = "/oauth2/backchannel-logout";

/// Largest back-channel logout body read (a logout token is about a kilobyte).
const BACKCHANNEL_MAX_BODY: usize = 64 * 1024;

/// An endpoint waiting for its request body.
#[derive(Debug)]
pub struct PendingEndpoint {
    /// The request's target (for the access log).
    pub target: RequestTarget,
    /// Bytes of body read at most; a larger body gets 413.
    pub limit: usize,
    /// The client's address through trusted proxies (event endpoints count readers by it).
    client: Option<std::net::IpAddr>,
    kind: BodyEndpoint,
}

enum BodyEndpoint {
    /// A signed provider webhook (its signature header travels with it) at the endpoint with
    /// this index in `Gateway::webhooks`.
    Webhook(http::HeaderMap, usize),
    /// An OIDC back-channel logout token.
    BackchannelLogout,
    /// `POST /oauth2/sign_out`: the body is read and dropped.
    SignOut { origin: String, cookies: Option<String>, same_origin: bool },
}

impl std::fmt::Debug for BodyEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the held headers and cookies carry signatures and session tickets
        f.write_str(match self {
            BodyEndpoint::Webhook(..) => "Webhook",
            BodyEndpoint::BackchannelLogout => "BackchannelLogout",
            BodyEndpoint::SignOut { .. } => "SignOut",
        })
    }
}

fn not_found(code: &str) -> Reply {
    Reply::json(StatusCode::NOT_FOUND, &serde_json::json!({ "error": code }))
}

/// Answers a request under `/oauth2/`, or says which body to read first.
pub async fn dispatch(
    gateway: &Gateway,
    facts: &RequestFacts<'_>,
    target: RequestTarget,
    origin: &str,
) -> Decision {
    let answer = |reply: Reply, target: RequestTarget| {
        Decision::Answer(super::decide::Answer {
            reply,
            outcome: Outcome::GatewayEndpoint,
            target: Some(target),
            route: None,
        })
    };
    let pending = |target: RequestTarget, limit: usize, kind: BodyEndpoint| {
        let client = match kind {
            BodyEndpoint::SignOut { .. } => None,
            _ => facts.client(gateway),
        };
        Decision::ReadBody(PendingEndpoint { target, limit, client, kind })
    };
    let Some(auth) = gateway.browser.as_deref() else { return answer(not_found("no_route"), target) };
    let post = facts.method == http::Method::POST;
    // provider-to-gateway events: signed or verified, never proxied, never given identity headers
    if let Some(i) = gateway.webhooks.iter().position(|w| w.path == target.path) {
        return match post {
            true => {
                let limit = gateway.webhooks[i].max_body;
                pending(target, limit, BodyEndpoint::Webhook(facts.headers.clone(), i))
            }
            false => answer(method_not_allowed("POST"), target),
        };
    }
    if target.path == BACKCHANNEL_LOGOUT {
        return match (post, gateway.verifiers.is_empty()) {
            (false, _) => answer(method_not_allowed("POST"), target),
            (true, true) => answer(not_found("not_found"), target),
            (true, false) => pending(target, BACKCHANNEL_MAX_BODY, BodyEndpoint::BackchannelLogout),
        };
    }
    let cookies = facts.cookies();
    let reply = match (target.path.as_str(), facts.method.as_str()) {
        ("/oauth2/start", "GET" | "HEAD") => {
            let params = match facts.query.map(parse_unique_query) {
                Some(Err(QueryError::TooMany)) => {
                    let r =
                        Rejection::new(400, "bad_query", "Bad request: the query has too many parameters.");
                    return answer(r.reply(facts.html(), None), target);
                }
                // an ambiguous `rd` is no `rd`
                Some(Err(QueryError::Duplicate)) | None => Vec::new(),
                Some(Ok(params)) => params,
            };
            let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
            let rd = param("rd").unwrap_or("/");
            let return_to = safe_return_to(rd, &gateway.config.server.public_url);
            // `provider` (one) or `providers` (a comma-separated choice) name where to sign in;
            // without either, any provider; several get the chooser
            let names: Vec<&str> = match (param("provider"), param("providers")) {
                (Some(one), _) => vec![one],
                (None, Some(list)) => list.split(',').collect(),
                (None, None) => Vec::new(),
            };
            let mut providers: Vec<usize> = Vec::with_capacity(names.len());
            for name in names {
                match auth.clients().position(|c| c.name() == name) {
                    Some(i) if !providers.contains(&i) => providers.push(i),
                    Some(_) => {}
                    None => {
                        let r = Rejection::new(400, "bad_query", "Bad request: no such provider.");
                        return answer(r.reply(facts.html(), None), target);
                    }
                }
            }
            match (providers.len(), auth.provider_count()) {
                (0, 2..) | (2.., _) => auth.chooser(facts.page(gateway), &providers, &return_to),
                _ => {
                    let client = facts.client(gateway);
                    auth.start_login(facts.page(gateway), origin, return_to, cookies, client, &providers)
                        .await
                }
            }
        }
        ("/oauth2/callback", "GET") => {
            auth.callback(facts.page(gateway), origin, facts.query, cookies, facts.client(gateway)).await
        }
        ("/oauth2/sign_out", "GET" | "HEAD") => facts.page(gateway).sign_out(),
        ("/oauth2/sign_out", "POST") => {
            let kind = BodyEndpoint::SignOut {
                origin: origin.to_owned(),
                cookies: cookies.map(str::to_owned),
                same_origin: same_origin(facts.headers, origin),
            };
            return pending(target, gateway.config.server.limits.max_body_size.bytes(), kind);
        }
        ("/oauth2/userinfo", "GET") => match auth.peek(cookies).await {
            SessionLookup::Found(active) => crate::browser::userinfo(&active),
            _ => Reply::json(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({ "error": "unauthenticated", "message": "Not signed in." }),
            ),
        },
        (path, _)
            if ["/oauth2/start", "/oauth2/callback", "/oauth2/sign_out", "/oauth2/userinfo"]
                .contains(&path) =>
        {
            method_not_allowed("GET, POST")
        }
        _ => not_found("not_found"),
    };
    answer(reply, target)
}

/// Answers an endpoint with its request body.
pub async fn finish(gateway: &Gateway, pending: PendingEndpoint, body: &[u8]) -> Reply {
    let (Some(auth), kind) = (gateway.browser.as_deref(), pending.kind) else {
        return not_found("no_route");
    };
    match kind {
        // the endpoint of the configuration the body was read under (a reload in between
        // that removed it: no such endpoint)
        BodyEndpoint::Webhook(headers, i) => match gateway.webhooks.get(i) {
            Some(w) => {
                let namespace = w.namespace.as_deref();
                revocation::webhook::handle(auth.revocations(), &w.key, namespace, &headers, body).await
            }
            None => not_found("not_found"),
        },
        BodyEndpoint::BackchannelLogout => match gateway.verifiers.is_empty() {
            false => revocation::backchannel::handle(auth.revocations(), &gateway.verifiers, body).await,
            true => not_found("not_found"),
        },
        BodyEndpoint::SignOut { same_origin: false, .. } => Reply::page(
            StatusCode::FORBIDDEN,
            "Sign-out refused",
            &["Sign-out must come from this site."],
            "",
        ),
        BodyEndpoint::SignOut { origin, cookies, same_origin: true } => {
            auth.sign_out(&origin, cookies.as_deref()).await
        }
    }
}

fn method_not_allowed(allow: &'static str) -> Reply {
    let mut r =
        Reply::json(StatusCode::METHOD_NOT_ALLOWED, &serde_json::json!({ "error": "method_not_allowed" }));
    r.header(http::header::ALLOW, http::HeaderValue::from_static(allow));
    r
}

/// Readers of webhook bodies, and of back-channel logout bodies: counted apart, so that a flood
/// of one never keeps the other's deliveries out.
static WEBHOOK_INTAKE: std::sync::LazyLock<Intake> = std::sync::LazyLock::new(Intake::default);
static BACKCHANNEL_INTAKE: std::sync::LazyLock<Intake> = std::sync::LazyLock::new(Intake::default);
/// A whole event body must arrive within this (a delivery is a few kilobytes, sent at once)...
const EVENT_BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);
/// ...and no read of it may stall longer than this.
const EVENT_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads the body `pending` needs: at most its limit (413 beyond, before reading when
/// `Content-Length` says so); event bodies only when their endpoint admits the client (see
/// `intake`) and within a short deadline (408). `Err` is the answer to send instead.
pub async fn read_body(
    downstream: &mut Downstream,
    pending: &PendingEndpoint,
) -> pingora::Result<Result<Vec<u8>, Reply>> {
    let intake = match pending.kind {
        BodyEndpoint::SignOut { .. } => return read_limited(downstream, pending.limit, false).await,
        BodyEndpoint::Webhook(..) => &*WEBHOOK_INTAKE,
        BodyEndpoint::BackchannelLogout => &*BACKCHANNEL_INTAKE,
    };
    let _admitted = match intake.admit(pending.client) {
        Ok(admitted) => admitted,
        Err(refused) => {
            let status = match refused {
                Refused::ClientBusy => StatusCode::TOO_MANY_REQUESTS,
                Refused::EndpointBusy => StatusCode::SERVICE_UNAVAILABLE,
            };
            let mut reply =
                Reply::json(status, &serde_json::json!({ "error": "busy", "message": "Try again later." }));
            reply.header(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
            return Ok(Err(reply));
        }
    };
    let too_slow = || {
        Reply::json(
            StatusCode::REQUEST_TIMEOUT,
            &serde_json::json!({ "error": "timeout", "message": "The request body was too slow." }),
        )
    };
    downstream.set_read_timeout(Some(EVENT_READ_TIMEOUT));
    match tokio::time::timeout(EVENT_BODY_DEADLINE, read_limited(downstream, pending.limit, true)).await {
        Ok(Err(e)) if matches!(e.etype(), pingora::ErrorType::ReadTimedout) => Ok(Err(too_slow())),
        Ok(result) => result,
        Err(_) => Ok(Err(too_slow())),
    }
}

/// Reads a request body of at most `limit` bytes, keeping it or (`keep` false) only counting it.
async fn read_limited(
    downstream: &mut Downstream,
    limit: usize,
    keep: bool,
) -> pingora::Result<Result<Vec<u8>, Reply>> {
    let too_large = || {
        Reply::json(
            StatusCode::PAYLOAD_TOO_LARGE,
            &serde_json::json!({ "error": "body_too_large", "message": "The request body is too large." }),
        )
    };
    let declared = declared_length(&downstream.req_header().headers);
    if declared.is_some_and(|n| n > limit) {
        return Ok(Err(too_large()));
    }
    let mut body = Vec::with_capacity(if keep { declared.unwrap_or(0).min(limit) } else { 0 });
    let mut read = 0usize;
    while let Some(chunk) = downstream.read_request_body().await? {
        read += chunk.len();
        if read > limit {
            return Ok(Err(too_large()));
        }
        if keep {
            body.extend_from_slice(&chunk);
        }
    }
    Ok(Ok(body))
}
