//! The gateway's cookies: the session ticket and the login binding, and their attributes
//! (reading them is `http_util::cookie_values`).

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

#[cfg(test)]
mod tests {
    use super::*;

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
