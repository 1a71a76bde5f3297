//! A response the gateway writes itself (a redirect, a page, a JSON document): plain data, so
//! the endpoints that build one can be tested without a server.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

/// A complete response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Headers besides `Content-Length` (added on writing).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body.
    pub body: Bytes,
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
        let mut r = Self::new(status);
        r.header(http::header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        // no `form-action` limit: the sign-out form's redirect to the provider is cross-origin
        r.header(
            HeaderName::from_static("content-security-policy"),
            HeaderValue::from_static("default-src 'none'"),
        );
        r.header(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
        r.header(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"));
        r.body = Bytes::from(body);
        r
    }

    /// A JSON document.
    pub fn json(status: StatusCode, doc: &serde_json::Value) -> Self {
        let mut r = Self::new(status);
        r.header(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
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
