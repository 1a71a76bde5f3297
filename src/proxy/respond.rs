//! Responses the gateway writes itself (errors, rejections): short, never cached, never
//! reflecting request data unescaped.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::pipeline::Rejection;

/// Writes `rejection` as JSON, or as a small HTML page when the client prefers HTML.
pub async fn send_rejection(session: &mut Session, rejection: &Rejection) -> pingora::Result<()> {
    let html = prefers_html(session.req_header().headers.get(http::header::ACCEPT));
    let (content_type, body) = render(rejection, html);
    let mut resp = ResponseHeader::build(rejection.status, Some(6))?;
    resp.insert_header(http::header::CONTENT_TYPE, content_type)?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    resp.insert_header("x-content-type-options", "nosniff")?;
    if html {
        resp.insert_header("content-security-policy", "default-src 'none'")?;
    }
    if rejection.status == 401 {
        resp.insert_header(http::header::WWW_AUTHENTICATE, "Bearer")?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
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
        let body = serde_json::json!({ "error": rejection.code, "message": rejection.message });
        ("application/json", Bytes::from(format!("{body}\n")))
    }
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
        let r = Rejection { status: 400, code: "bad_path", message: "<script>alert('x')</script>".into() };
        let (ct, body) = render(&r, true);
        assert_eq!(ct, "text/html; charset=utf-8");
        let body = std::str::from_utf8(&body).unwrap();
        assert!(body.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"), "{body}");
        assert!(!body.contains("<script>"));
        let (ct, body) = render(&r, false);
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "bad_path");
    }
}
