//! The gateway's own endpoints under `/oauth2/`: start, callback, sign_out, userinfo. Reserved
//! on every host, answered before routing, never proxied.

use http::StatusCode;
use pingora::proxy::Session;

use super::pipeline::RequestTarget;
use crate::events;
use crate::gateway::Gateway;
use crate::oidc::browser::{self, SessionLookup};
pub use crate::oidc::cookies::cookie_header;
use crate::reply::Reply;

/// The reserved path prefix.
pub const PREFIX: &str = "/oauth2/";

/// Answers a request under `/oauth2/`.
pub async fn handle(
    session: &mut Session,
    gateway: &Gateway,
    target: &RequestTarget,
    origin: &str,
) -> pingora::Result<Reply> {
    let Some(auth) = gateway.browser.as_deref() else {
        return Ok(Reply::json(StatusCode::NOT_FOUND, &serde_json::json!({ "error": "no_route" })));
    };
    // provider-to-gateway events: signed or verified, never proxied, never given identity headers
    if let Some(webhooks) = &gateway.config.webhooks {
        if target.path == webhooks.path {
            return Ok(match (session.req_header().method.as_str(), &gateway.webhook_key) {
                ("POST", Some(key)) => {
                    match read_event_body(session, webhooks.max_body_size.bytes()).await? {
                        Ok(body) => {
                            let headers = session.req_header().headers.clone();
                            events::webhook::handle(auth.revocations(), key, &headers, &body).await
                        }
                        Err(reply) => reply,
                    }
                }
                _ => method_not_allowed("POST"),
            });
        }
    }
    if target.path == "/oauth2/backchannel-logout" {
        if session.req_header().method != http::Method::POST {
            return Ok(method_not_allowed("POST"));
        }
        let Some(verifier) = gateway.verifier.as_deref() else {
            return Ok(Reply::json(StatusCode::NOT_FOUND, &serde_json::json!({ "error": "not_found" })));
        };
        return Ok(match read_event_body(session, 64 * 1024).await? {
            Ok(body) => events::backchannel::handle(auth.revocations(), verifier, &body).await,
            Err(reply) => reply,
        });
    }
    let req = session.req_header();
    let method = req.method.clone();
    // owned: the body may be read below (endpoints are not on the hot path)
    let cookies = cookie_header(req).map(std::borrow::Cow::into_owned);
    let query = req.uri.query().map(str::to_owned);
    let reply = match (target.path.as_str(), method.as_str()) {
        ("/oauth2/start", "GET" | "HEAD") => {
            let rd = query
                .as_deref()
                .and_then(browser::parse_unique_query)
                .and_then(|q| q.into_iter().find(|(k, _)| k == "rd").map(|(_, v)| v))
                .unwrap_or_else(|| "/".into());
            let return_to = browser::safe_return_to(&rd, &gateway.config.server.public_url);
            auth.start_login(origin, return_to, cookies.as_deref(), super::requester(session, gateway)).await
        }
        ("/oauth2/callback", "GET") => auth.callback(origin, query.as_deref(), cookies.as_deref()).await,
        ("/oauth2/sign_out", "GET" | "HEAD") => browser::sign_out_page(),
        ("/oauth2/sign_out", "POST") => {
            if let Some(reply) = read_small_body(session, gateway).await? {
                return Ok(reply);
            }
            if !same_origin(session.req_header(), origin) {
                return Ok(Reply::page(
                    StatusCode::FORBIDDEN,
                    "Sign-out refused",
                    &["Sign-out must come from this site."],
                    "",
                ));
            }
            auth.sign_out(origin, cookies.as_deref()).await
        }
        ("/oauth2/userinfo", "GET") => match auth.peek(cookies.as_deref()).await {
            SessionLookup::Found(active) => browser::userinfo(&active),
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
        _ => Reply::json(StatusCode::NOT_FOUND, &serde_json::json!({ "error": "not_found" })),
    };
    Ok(reply)
}

/// Is a state-changing request from this site? Browsers name the page's origin in `Origin`
/// and the relation in `Sec-Fetch-Site`, which a cross-site page cannot fake; a request with
/// neither cannot be told apart from a forged one, so it is refused too.
pub fn same_origin(req: &pingora::http::RequestHeader, origin: &str) -> bool {
    let header = |n: &str| req.headers.get(n).and_then(|v| v.to_str().ok());
    let site = header("sec-fetch-site");
    if site.is_some_and(|s| !matches!(s, "same-origin" | "none")) {
        return false;
    }
    match header("origin") {
        Some(o) => o == origin,
        None => site.is_some(),
    }
}

fn method_not_allowed(allow: &'static str) -> Reply {
    let mut r =
        Reply::json(StatusCode::METHOD_NOT_ALLOWED, &serde_json::json!({ "error": "method_not_allowed" }));
    r.header(http::header::ALLOW, http::HeaderValue::from_static(allow));
    r
}

/// Event bodies (webhooks, back-channel logout) read at once at most, and how long one may take:
/// these endpoints answer unauthenticated clients before any signature is checked.
static EVENT_BODIES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(32);
const EVENT_BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads an event body (see `read_body`) within the concurrency and time bounds.
async fn read_event_body(session: &mut Session, limit: usize) -> pingora::Result<Result<Vec<u8>, Reply>> {
    let Ok(_permit) = EVENT_BODIES.try_acquire() else {
        return Ok(Err(Reply::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "error": "busy", "message": "Try again later." }),
        )));
    };
    match tokio::time::timeout(EVENT_BODY_DEADLINE, read_body(session, limit)).await {
        Ok(result) => result,
        Err(_) => Ok(Err(Reply::json(
            StatusCode::REQUEST_TIMEOUT,
            &serde_json::json!({ "error": "timeout", "message": "The request body was too slow." }),
        ))),
    }
}

/// Reads a request body of at most `limit` bytes; a larger one gets 413, before reading it
/// when `Content-Length` says so.
async fn read_body(session: &mut Session, limit: usize) -> pingora::Result<Result<Vec<u8>, Reply>> {
    let too_large = || {
        Reply::json(
            StatusCode::PAYLOAD_TOO_LARGE,
            &serde_json::json!({ "error": "body_too_large", "message": "The request body is too large." }),
        )
    };
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Ok(Err(too_large()));
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > limit {
            return Ok(Err(too_large()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Ok(body))
}

/// Reads (and discards) a request body up to the configured limit; a larger one gets 413.
async fn read_small_body(session: &mut Session, gateway: &Gateway) -> pingora::Result<Option<Reply>> {
    let limit = gateway.config.server.limits.max_body_size.bytes();
    let too_large = || {
        Some(Reply::json(
            StatusCode::PAYLOAD_TOO_LARGE,
            &serde_json::json!({ "error": "body_too_large", "message": "The request body is too large." }),
        ))
    };
    if session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > limit)
    {
        return Ok(too_large());
    }
    let mut read = 0usize;
    while let Some(chunk) = session.read_request_body().await? {
        read += chunk.len();
        if read > limit {
            return Ok(too_large());
        }
    }
    Ok(None)
}
