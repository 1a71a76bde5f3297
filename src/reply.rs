//! What the gateway answers itself: a `Reply` (a redirect, a page, a JSON document) as plain
//! data, so that whatever builds one can be tested without a server; the one HTML page shell
//! with its security headers; `Rejection`s (refused requests) and how they are rendered; and
//! the sentences users read.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

/// What a request refused by a route's rules reads.
pub const RULE_DENIED: &str = "This address is not open to anyone.";

/// What a request with a method-override header reads where rules judge methods.
pub const METHOD_OVERRIDE_REFUSED: &str = "Bad request: method-override headers are not accepted here.";

/// What a request from a network a route denies reads.
pub const NETWORK_DENIED: &str = "This address cannot be reached from your network.";

/// What a suspended user reads.
pub const ACCOUNT_DISABLED: &str = "Your account has been disabled. Please contact your administrator.";

/// A complete response.
#[derive(Clone)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Headers besides `Content-Length` (added on writing).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body.
    pub body: Bytes,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // header values may be session tickets (Set-Cookie) or carry codes (Location)
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("headers", &names)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl Reply {
    /// An empty response with `status`, never cached.
    pub fn new(status: StatusCode) -> Self {
        let mut r = Self { status, headers: Vec::new(), body: Bytes::new() };
        r.header(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }

    /// A `302 Found` to `location` (which must be a valid header value; others become `/`).
    pub fn redirect(location: &str) -> Self {
        let mut r = Self::new(StatusCode::FOUND);
        let value = HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/"));
        r.header(http::header::LOCATION, value);
        r
    }

    /// A small HTML page: `title` and `paragraphs` are escaped here; `extra_html` is trusted.
    pub fn page(status: StatusCode, title: &str, paragraphs: &[&str], extra_html: &str) -> Self {
        let mut body = format!(
            "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><meta name=\"viewport\" \
             content=\"width=device-width\"><title>{t}</title><h1>{t}</h1>",
            t = escape_html(title)
        );
        for p in paragraphs {
            body.push_str(&format!("<p>{}</p>", escape_html(p)));
        }
        body.push_str(extra_html);
        body.push('\n');
        // no `form-action` limit: the sign-out form's redirect to the provider is cross-origin
        Self::html(status, body, "default-src 'none'")
    }

    /// An HTML page with its security headers, under the content security policy `csp`.
    pub fn html(status: StatusCode, body: String, csp: &'static str) -> Self {
        let mut r = Self::new(status);
        r.header(http::header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        r.header(HeaderName::from_static("content-security-policy"), HeaderValue::from_static(csp));
        r.header(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
        r.header(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"));
        r.body = Bytes::from(body);
        r
    }

    /// A JSON document.
    pub fn json(status: StatusCode, doc: &serde_json::Value) -> Self {
        Self::json_as(status, "application/json", doc)
    }

    /// A JSON document of another media type (`application/problem+json`, JWK Sets).
    pub fn json_as(status: StatusCode, content_type: &'static str, doc: &serde_json::Value) -> Self {
        let mut r = Self::new(status);
        r.header(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r.header(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
        r.body = Bytes::from(format!("{doc}\n"));
        r
    }

    /// Adds a header.
    pub fn header(&mut self, name: HeaderName, value: HeaderValue) -> &mut Self {
        self.headers.push((name, value));
        self
    }
}

/// Escapes text for an HTML element body or attribute.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A request the gateway answers itself, with this status and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable code (`bad_path`, `no_route`, ...).
    pub code: &'static str,
    /// One sentence for a person.
    pub message: Cow<'static, str>,
    /// The RFC 6750 challenge to send in `WWW-Authenticate`, if any.
    pub challenge: Option<BearerChallenge>,
    /// Answer with a redirect to sign in instead (a browser navigation without a session).
    pub start_login: bool,
}

/// What `WWW-Authenticate: Bearer ...` says (RFC 6750 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerChallenge {
    /// No credentials were sent: no error code.
    Required,
    /// A token was sent and is not acceptable.
    InvalidToken,
    /// A valid token without the right to this resource.
    InsufficientScope,
}

impl Rejection {
    /// A rejection without a challenge.
    pub fn new(status: u16, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self { status, code, message: message.into(), challenge: None, start_login: false }
    }

    /// The same, with a bearer challenge.
    pub fn with_challenge(mut self, challenge: BearerChallenge) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// As a reply: a small HTML page when the client prefers HTML, else problem JSON (RFC
    /// 9457). `resource_metadata` is the RFC 9728 document URL named in bearer challenges.
    pub fn reply(&self, html: bool, resource_metadata: Option<&str>) -> Reply {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let title = status.canonical_reason().unwrap_or("Error");
        let mut reply = if html {
            Reply::page(status, &format!("{} {title}", self.status), &[&self.message], "")
        } else {
            let doc = serde_json::json!({
                "type": "about:blank",
                "title": title,
                "status": self.status,
                "detail": self.message,
                "error": self.code,
            });
            Reply::json_as(status, "application/problem+json", &doc)
        };
        if let Some(challenge) = self.challenge {
            if let Ok(v) = HeaderValue::from_str(&www_authenticate(challenge, resource_metadata)) {
                reply.header(http::header::WWW_AUTHENTICATE, v);
            }
        }
        reply
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
        r.headers.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn rejection_pages_escape_what_they_show() {
        let r = Rejection::new(400, "bad_path", "<script>alert('x')</script>");
        let page = r.reply(true, None);
        assert_eq!(header(&page, "content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(header(&page, "content-security-policy"), Some("default-src 'none'"));
        let body = std::str::from_utf8(&page.body).unwrap();
        assert!(body.contains("<h1>400 Bad Request</h1>"), "{body}");
        assert!(body.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"), "{body}");
        assert!(!body.contains("<script>"));
        let json = r.reply(false, None);
        assert_eq!(header(&json, "content-type"), Some("application/problem+json"));
        assert_eq!(header(&json, "x-content-type-options"), Some("nosniff"));
        let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
        assert_eq!(v["error"], "bad_path");
        assert_eq!(v["status"], 400);
        assert_eq!(v["title"], "Bad Request");
    }

    #[test]
    fn debug_never_shows_header_values() {
        let mut r = Reply::redirect("https://idp.example.com/auth?code=secret-code");
        r.header(http::header::SET_COOKIE, HeaderValue::from_static("authgate_session=ticket-value"));
        let printed = format!("{r:?}");
        assert!(!printed.contains("ticket-value") && !printed.contains("secret-code"), "{printed}");
        assert!(printed.contains("set-cookie") && printed.contains("302"), "{printed}");
    }

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
        let r = Rejection::new(401, "invalid_token", "x").with_challenge(BearerChallenge::InvalidToken);
        assert!(header(&r.reply(false, url), "www-authenticate").unwrap().contains("resource_metadata="));
    }
}
