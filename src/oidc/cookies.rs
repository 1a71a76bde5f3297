//! The gateway's cookies: the session ticket and the login binding, their attributes, and
//! reading them from (possibly several) `Cookie` headers.

use http::HeaderValue;

use crate::session::SessionTicket;

/// The session and login-binding cookies.
#[derive(Debug, Clone)]
pub struct CookieSettings {
    /// Session cookie name (with `__Host-` when every public URL is https).
    pub session: String,
    /// Login-binding cookie name.
    pub login: String,
    /// Set `Secure`.
    pub secure: bool,
    /// `Max-Age` of the session cookie, seconds.
    pub max_age: u64,
    /// `Max-Age` of the login cookie, seconds.
    pub login_max_age: u64,
}

impl CookieSettings {
    /// Cookie names from the configured base name; `__Host-` when all origins are https.
    pub fn new(base: &str, all_https: bool, max_age: u64, login_max_age: u64) -> Self {
        let session =
            if all_https && !base.starts_with("__") { format!("__Host-{base}") } else { base.to_owned() };
        let login = format!("{session}_login");
        Self { session, login, secure: all_https, max_age, login_max_age }
    }

    fn set(&self, name: &str, value: &str, max_age: u64) -> HeaderValue {
        let c = cookie::Cookie::build((name, value))
            .http_only(true)
            .secure(self.secure)
            .same_site(cookie::SameSite::Lax)
            .path("/")
            .max_age(cookie::time::Duration::seconds(i64::try_from(max_age).unwrap_or(i64::MAX)))
            .build();
        HeaderValue::from_str(&c.to_string()).unwrap_or(HeaderValue::from_static(""))
    }

    /// `Set-Cookie` for a new session.
    pub fn session_cookie(&self, ticket: &SessionTicket) -> HeaderValue {
        self.set(&self.session, &ticket.encode(), self.max_age)
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn clear_session(&self) -> HeaderValue {
        self.set(&self.session, "", 0)
    }

    pub(super) fn login_cookie(&self, value: &str) -> HeaderValue {
        self.set(&self.login, value, self.login_max_age)
    }
}

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

/// Values of one cookie looked at per request. Each session cookie value costs a store read
/// (a Redis round trip): without a bound, one request of hundreds of forged values would cost
/// hundreds (the class of mod_auth_openidc CVE-2024-24814).
pub const MAX_COOKIE_VALUES: usize = 4;

/// All `Cookie` headers of a request as one (HTTP/2 clients send one per cookie); borrowed,
/// without allocating, in the usual case of a single header.
pub fn cookie_header(req: &pingora::http::RequestHeader) -> Option<std::borrow::Cow<'_, str>> {
    let mut values = req.headers.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    match values.next() {
        None => Some(std::borrow::Cow::Borrowed(first)),
        Some(second) => {
            let mut joined = format!("{first}; {second}");
            for v in values {
                joined.push_str("; ");
                joined.push_str(v);
            }
            Some(std::borrow::Cow::Owned(joined))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn cookie_attributes_follow_the_origin() {
        let https = CookieSettings::new("authgate_session", true, 3600, 600);
        assert_eq!(https.session, "__Host-authgate_session");
        let v = https.clear_session().to_str().unwrap().to_owned();
        for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=0"] {
            assert!(v.contains(attr), "{v}");
        }
        let http = CookieSettings::new("authgate_session", false, 3600, 600);
        assert_eq!(http.session, "authgate_session");
        assert!(!http.clear_session().to_str().unwrap().contains("Secure"));
    }
}
