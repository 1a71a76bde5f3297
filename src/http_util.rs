//! Reading HTTP requests the way every part of the gateway must agree on: header names in
//! canonical form, what a browser navigation looks like, cookies, queries, return-to addresses
//! and the same-origin check.

use std::borrow::Cow;

use http::HeaderMap;

/// Lower case, `_` as `-`: the form under which two header names are the same to an app
/// (CGI-style apps such as PHP, WSGI and Rack map `X-User-Id` and `x_user_id` to one variable).
pub fn canonical_header(name: &str) -> String {
    name.bytes().map(|b| char::from(canonical_byte(b))).collect()
}

fn canonical_byte(b: u8) -> u8 {
    if b == b'_' { b'-' } else { b.to_ascii_lowercase() }
}

/// Does `name` equal `canonical` (already in canonical form) up to case and `_`/`-`?
pub fn same_header(name: &str, canonical: &str) -> bool {
    name.len() == canonical.len() && name.bytes().zip(canonical.bytes()).all(|(a, b)| canonical_byte(a) == b)
}

/// Does `name` begin with `canonical_prefix` (canonical form) and go on past it?
pub fn has_prefix(name: &str, canonical_prefix: &str) -> bool {
    name.len() > canonical_prefix.len()
        && name.is_char_boundary(canonical_prefix.len())
        && same_header(&name[..canonical_prefix.len()], canonical_prefix)
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

/// Is this request a top-level browser navigation (which may be sent to sign in), rather than
/// a script's fetch/XHR or an API call (which gets a 401)?
pub fn is_navigation(method: &http::Method, headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(mode) = header("sec-fetch-mode") {
        return mode.eq_ignore_ascii_case("navigate");
    }
    let idempotent_read = method == http::Method::GET || method == http::Method::HEAD;
    idempotent_read && header("x-requested-with").is_none() && prefers_html(headers.get(http::header::ACCEPT))
}

/// Values of one cookie looked at per request. Each session cookie value costs a store read
/// (a Redis round trip): without a bound, one request of hundreds of forged values would cost
/// hundreds (the class of mod_auth_openidc CVE-2024-24814).
pub const MAX_COOKIE_VALUES: usize = 4;

/// Values of the cookie `name` in a `Cookie` header (several if a client sent several: a
/// browser may hold one per path or domain), the first `MAX_COOKIE_VALUES` only.
pub fn cookie_values<'a>(
    cookie_header: Option<&'a str>,
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    cookie_header
        .into_iter()
        .flat_map(|h| h.split(';'))
        .filter_map(move |pair| pair.trim().split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
        .take(MAX_COOKIE_VALUES)
}

/// All `Cookie` headers of a request as one (HTTP/2 clients send one per cookie); borrowed,
/// without allocating, in the usual case of a single header.
pub fn cookie_header(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    let mut values = headers.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    match values.next() {
        None => Some(Cow::Borrowed(first)),
        Some(second) => {
            let mut joined = format!("{first}; {second}");
            for v in values {
                joined.push_str("; ");
                joined.push_str(v);
            }
            Some(Cow::Owned(joined))
        }
    }
}

/// Most parameters read from one query of the gateway's own endpoints (theirs have a handful).
pub const MAX_QUERY_PARAMETERS: usize = 64;

/// Why a query of the gateway's own endpoints is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A name appears twice (parameter pollution).
    #[error("a parameter appears twice")]
    Duplicate,
    /// More than `MAX_QUERY_PARAMETERS` parameters.
    #[error("it has too many parameters")]
    TooMany,
}

/// Query parameters, decoded, each name at most once, at most `MAX_QUERY_PARAMETERS` of them
/// (in linear time: thousands of short names cost a set lookup each, not a scan).
pub fn parse_unique_query(query: &str) -> Result<Vec<(String, String)>, QueryError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if out.len() == MAX_QUERY_PARAMETERS {
            return Err(QueryError::TooMany);
        }
        if !seen.insert(k.clone()) {
            return Err(QueryError::Duplicate);
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

/// Longest return-to address kept for after sign-in; longer ones become `/`.
pub const MAX_RETURN_TO: usize = 2048;

/// A return-to address that stays on this gateway: a path (not `//host`, not `/\\host`), or
/// an absolute URL on one of `origins`. Anything else becomes `/`.
pub fn safe_return_to(candidate: &str, origins: &[String]) -> String {
    let clean = !candidate.is_empty()
        && !candidate.bytes().any(|b| b.is_ascii_control() || b == b'\\' || b == b' ')
        && candidate.len() <= MAX_RETURN_TO;
    if !clean {
        return "/".into();
    }
    if candidate.starts_with('/') && !candidate.starts_with("//") {
        return candidate.to_owned();
    }
    if let Ok(url) = url::Url::parse(candidate) {
        let origin = url.origin().ascii_serialization();
        if matches!(url.scheme(), "http" | "https")
            && url.username().is_empty()
            && url.password().is_none()
            && origins.iter().any(|o| o.trim_end_matches('/') == origin)
        {
            return url.into();
        }
    }
    "/".into()
}

/// Is a state-changing request from this site? Browsers name the page's origin in `Origin`
/// and the relation in `Sec-Fetch-Site`, which a cross-site page cannot fake; a request with
/// neither cannot be told apart from a forged one, so it is refused too.
pub fn same_origin(headers: &HeaderMap, origin: &str) -> bool {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let site = header("sec-fetch-site");
    if site.is_some_and(|s| !matches!(s, "same-origin" | "none")) {
        return false;
    }
    match header("origin") {
        Some(o) => o == origin,
        None => site.is_some(),
    }
}

/// Is `host` a name RFC 6761 reserves for loopback (`localhost`, `*.localhost`, any case,
/// an optional trailing dot)?
pub fn is_localhost_name(host: &str) -> bool {
    let h = host.strip_suffix('.').unwrap_or(host).as_bytes();
    const SUFFIX: &[u8] = b".localhost";
    h.eq_ignore_ascii_case(&SUFFIX[1..])
        || h.len() > SUFFIX.len() && h[h.len() - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX)
}

/// The `Content-Length` a request declares, when it is a plain number.
pub fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

/// A request's id, in the access log and on the pages users see: a trusted proxy's (a load
/// balancer's) `X-Request-Id` when it is a plain token, else one made of a per-process random
/// prefix and the request's serial number (unique without a random draw per request), formatted
/// only when shown. A client's own is never taken: the reference support looks up must not be
/// one the user chose.
#[derive(Debug, Clone, Copy)]
pub enum RequestId<'a> {
    /// The client's.
    Given(&'a str),
    /// Made here: prefix and serial.
    Made(u32, u64),
}

impl<'a> RequestId<'a> {
    /// The id of a request with `headers` and serial number `serial` (from `next_serial`),
    /// from a trusted proxy when `trusted`.
    pub fn of(headers: &'a http::HeaderMap, serial: u64, trusted: bool) -> Self {
        static PREFIX: std::sync::LazyLock<u32> = std::sync::LazyLock::new(|| {
            let mut b = [0u8; 4];
            getrandom::fill(&mut b).map(|()| u32::from_le_bytes(b)).unwrap_or(0)
        });
        let plain = |v: &str| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        };
        let given = headers.get("x-request-id").filter(|_| trusted);
        match given.and_then(|v| v.to_str().ok()).filter(|v| plain(v)) {
            Some(given) => RequestId::Given(given),
            None => RequestId::Made(*PREFIX, serial),
        }
    }

    /// A new request's serial number.
    pub fn next_serial() -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
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

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_come_from_trusted_proxies_only() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-request-id", http::HeaderValue::from_static("lb-4711"));
        assert_eq!(super::RequestId::of(&headers, 7, true).to_string(), "lb-4711");
        let made = super::RequestId::of(&headers, 7, false).to_string();
        assert!(made.ends_with("-7") && !made.contains("lb"), "{made}");
        headers.insert("x-request-id", http::HeaderValue::from_static("a b<script>"));
        assert!(super::RequestId::of(&headers, 8, true).to_string().ends_with("-8"));
    }

    use super::*;

    #[test]
    fn localhost_names_are_told_apart_from_look_alikes() {
        for yes in ["localhost", "LOCALHOST", "idp.localhost", "a.b.Localhost.", "localhost."] {
            assert!(is_localhost_name(yes), "{yes}");
        }
        for no in [
            "",
            ".localhost",
            "localhostx",
            "idp.localhost.evil.com",
            "evillocalhost",
            "127.0.0.1",
            "é.localhos",
        ] {
            assert!(!is_localhost_name(no), "{no}");
        }
    }

    #[test]
    fn canonical_form_folds_case_and_underscores() {
        assert_eq!(canonical_header("X_User-ID"), "x-user-id");
        assert!(same_header("x_user_id", "x-user-id"));
        assert!(!same_header("x-user-idx", "x-user-id"));
        assert!(has_prefix("x_user_name", "x-user-"));
        assert!(!has_prefix("x-user-", "x-user-"));
    }

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
    fn cookies_are_found_by_exact_name() {
        let h = Some("a=1; authgate_session=x; authgate_session_login=y; authgate_session=z");
        assert_eq!(cookie_values(h, "authgate_session").collect::<Vec<_>>(), ["x", "z"]);
        assert_eq!(cookie_values(h, "authgate_session_login").collect::<Vec<_>>(), ["y"]);
        assert_eq!(cookie_values(None, "a").count(), 0);
        let many = (0..100).map(|i| format!("a={i}")).collect::<Vec<_>>().join("; ");
        assert_eq!(cookie_values(Some(&many), "a").collect::<Vec<_>>(), ["0", "1", "2", "3"]);
    }

    #[test]
    fn return_to_stays_on_the_gateway() {
        let origins = vec!["https://app.example.com".to_string()];
        let cases = [
            ("/wiki/page?x=1", "/wiki/page?x=1"),
            ("/", "/"),
            ("//evil.example", "/"),
            ("/\\\\evil.example", "/"),
            ("\\\\evil.example", "/"),
            ("https://evil.example", "/"),
            ("https://evil.example/https://app.example.com", "/"),
            ("https://app.example.com.evil.example/", "/"),
            ("https://app.example.com/wiki", "https://app.example.com/wiki"),
            ("https://user@app.example.com/", "/"),
            ("http://app.example.com/wiki", "/"),
            ("javascript:alert(1)", "/"),
            ("/x\r\nSet-Cookie: a=b", "/"),
            ("/\t/evil.example", "/"),
            ("https:evil.example", "/"),
            ("https:/evil.example", "/"),
            ("", "/"),
            ("wiki", "/"),
        ];
        for (input, want) in cases {
            assert_eq!(safe_return_to(input, &origins), want, "{input:?}");
        }
    }

    #[test]
    fn duplicated_or_too_many_parameters_are_refused() {
        assert_eq!(parse_unique_query("code=a&state=b").unwrap().len(), 2);
        assert_eq!(parse_unique_query("code=a&state=b&code=c"), Err(QueryError::Duplicate));
        assert_eq!(parse_unique_query("state=b&state=b"), Err(QueryError::Duplicate));
        // a name spelled two ways is the same name once decoded
        assert_eq!(parse_unique_query("state=b&st%61te=c"), Err(QueryError::Duplicate));
        let many = |n: usize| (0..n).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join("&");
        assert_eq!(parse_unique_query(&many(MAX_QUERY_PARAMETERS)).unwrap().len(), MAX_QUERY_PARAMETERS);
        assert_eq!(parse_unique_query(&many(MAX_QUERY_PARAMETERS + 1)), Err(QueryError::TooMany));
        // 16 000 distinct short names: refused at the 65th, never compared pairwise
        assert_eq!(parse_unique_query(&many(16_000)), Err(QueryError::TooMany));
    }
}
