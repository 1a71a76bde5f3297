//! Responses the gateway writes itself (errors, rejections): short, never cached, never
//! reflecting request data unescaped.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::pipeline::{BearerChallenge, Rejection};
use crate::reply::Reply;
pub use crate::reply::escape_html;

/// A rejection as a reply: problem JSON (RFC 9457), or a small HTML page when the client
/// prefers HTML. `resource_metadata` is the RFC 9728 document URL named in bearer challenges.
pub fn rejection_reply(
    req: &pingora::http::RequestHeader,
    rejection: &Rejection,
    resource_metadata: Option<&str>,
) -> Reply {
    let html = prefers_html(req.headers.get(http::header::ACCEPT));
    let (content_type, body) = render(rejection, html);
    let status = http::StatusCode::from_u16(rejection.status).unwrap_or(http::StatusCode::BAD_REQUEST);
    let mut reply = Reply::new(status);
    reply.header(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    reply.header(
        http::HeaderName::from_static("x-content-type-options"),
        http::HeaderValue::from_static("nosniff"),
    );
    if html {
        reply.header(
            http::HeaderName::from_static("content-security-policy"),
            http::HeaderValue::from_static("default-src 'none'"),
        );
    }
    if let Some(challenge) = rejection.challenge {
        if let Ok(v) = http::HeaderValue::from_str(&www_authenticate(challenge, resource_metadata)) {
            reply.header(http::header::WWW_AUTHENTICATE, v);
        }
    }
    reply.body = body;
    reply
}

/// Writes a reply built by an endpoint.
pub async fn send_reply(session: &mut Session, reply: Reply) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(reply.status, Some(reply.headers.len() + 1))?;
    for (name, value) in reply.headers {
        resp.append_header(name, value)?;
    }
    resp.insert_header(http::header::CONTENT_LENGTH, reply.body.len())?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(reply.body), true).await?;
    Ok(())
}

/// The body of a rejection: `(content type, bytes)`.
pub fn render(rejection: &Rejection, html: bool) -> (&'static str, Bytes) {
    if html {
        let title = http::StatusCode::from_u16(rejection.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let page = format!(
            "<!doctype html><meta charset=\"utf-8\"><title>{title}</title>\
             <h1>{status} {title}</h1><p>{msg}</p>\n",
            status = rejection.status,
            msg = escape_html(&rejection.message),
        );
        ("text/html; charset=utf-8", Bytes::from(page))
    } else {
        let title = http::StatusCode::from_u16(rejection.status).ok().and_then(|s| s.canonical_reason());
        let body = serde_json::json!({
            "type": "about:blank",
            "title": title.unwrap_or("Error"),
            "status": rejection.status,
            "detail": rejection.message,
            "error": rejection.code,
        });
        ("application/problem+json", Bytes::from(format!("{body}\n")))
    }
}

/// The `WWW-Authenticate` value of a bearer challenge (RFC 6750 §3, RFC 9728 §5.1). The
/// description is generic on purpose: nothing about the token is echoed.
pub fn www_authenticate(challenge: BearerChallenge, resource_metadata: Option<&str>) -> String {
    let mut v = String::from("Bearer realm=\"authgate\"");
    if let Some(url) = resource_metadata {
        v.push_str(&format!(", resource_metadata=\"{url}\""));
    }
    match challenge {
        BearerChallenge::Required => {}
        BearerChallenge::InvalidToken => {
            v.push_str(", error=\"invalid_token\", error_description=\"The access token is invalid or expired\"")
        }
        BearerChallenge::InsufficientScope => v.push_str(
            ", error=\"insufficient_scope\", error_description=\"The access token does not grant access to this resource\"",
        ),
    }
    v
}

/// Does the `Accept` header rank `text/html` above JSON (a browser navigation)?
pub fn prefers_html(accept: Option<&http::HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|a| a.to_str().ok()) else {
        return false;
    };
    let quality = |wanted: &str| {
        accept
            .split(',')
            .filter_map(|part| {
                let mut it = part.split(';');
                let media = it.next()?.trim();
                (media == wanted).then(|| {
                    it.find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()))
                        .unwrap_or(1.0)
                })
            })
            .fold(0.0_f32, f32::max)
    };
    let html = quality("text/html");
    html > 0.0 && html >= quality("application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_html_and_clients_get_json() {
        let cases = [
            (Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"), true),
            (Some("application/json"), false),
            (Some("application/json, text/html;q=0.5"), false),
            (Some("*/*"), false),
            (Some("text/html;q=0"), false),
            (None, false),
        ];
        for (accept, want) in cases {
            let v = accept.map(http::HeaderValue::from_static);
            assert_eq!(prefers_html(v.as_ref()), want, "{accept:?}");
        }
    }

    #[test]
    fn pages_escape_what_they_show() {
        let r = Rejection::new(400, "bad_path", "<script>alert('x')</script>");
        let (ct, body) = render(&r, true);
        assert_eq!(ct, "text/html; charset=utf-8");
        let body = std::str::from_utf8(&body).unwrap();
        assert!(body.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"), "{body}");
        assert!(!body.contains("<script>"));
        let (ct, body) = render(&r, false);
        assert_eq!(ct, "application/problem+json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "bad_path");
        assert_eq!(v["status"], 400);
        assert_eq!(v["title"], "Bad Request");
    }
}

#[cfg(test)]
mod challenge_tests {
    use super::*;

    #[test]
    fn challenges_follow_rfc_6750_and_9728() {
        let url = Some("https://app.example.com/.well-known/oauth-protected-resource");
        assert_eq!(
            www_authenticate(BearerChallenge::Required, url),
            "Bearer realm=\"authgate\", resource_metadata=\"https://app.example.com/.well-known/oauth-protected-resource\""
        );
        assert!(www_authenticate(BearerChallenge::InvalidToken, None).contains("error=\"invalid_token\""));
        assert!(
            www_authenticate(BearerChallenge::InsufficientScope, None)
                .contains("error=\"insufficient_scope\"")
        );
    }
}
