//! The pages people read when the gateway answers instead of the app: a refused request, a
//! failed sign-in, a busy provider, the sign-out question. Built in, or rendered from the
//! operator's templates (`[pages] dir`, minijinja with HTML autoescaping); a template that fails
//! to render falls back to the built-in page. Pages show who is signed in and why a request was
//! refused in plain words, never tokens or claims.

use std::fmt::Display;

use http::{HeaderName, HeaderValue, StatusCode};
use minijinja::{AutoEscape, Environment, context};

use crate::config::PagesConfig;
use crate::reply::{Reply, escape_html};

/// The content security policy of the operator's pages: inline styles and same-origin images
/// (a stylesheet and a logo), nothing that runs.
const CUSTOM_PAGE_CSP: &str =
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'";

/// Where every page's sign-out form posts.
pub const SIGN_OUT_PATH: &str = "/oauth2/sign_out";

/// The gateway's pages, built from `[pages]`.
pub struct Pages {
    custom: Environment<'static>,
    support_contact: Option<String>,
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.custom.templates().map(|(n, _)| n).collect();
        f.debug_struct("Pages")
            .field("custom", &names)
            .field("support_contact", &self.support_contact)
            .finish()
    }
}

impl Default for Pages {
    fn default() -> Self {
        Self { custom: Environment::new(), support_contact: None }
    }
}

/// A template that validation accepted and this build refused (it cannot happen unless the
/// template engine changes its mind).
#[derive(Debug, thiserror::Error)]
#[error("pages.dir: {name}: {message}")]
pub struct PagesError {
    /// The template's file name.
    pub name: String,
    /// What is wrong.
    pub message: String,
}

/// Who a page is about, as the provider named them (never tokens or claims).
#[derive(Debug, Clone, Copy, Default)]
pub struct PageUser<'a> {
    /// Display name.
    pub name: Option<&'a str>,
    /// E-mail address.
    pub email: Option<&'a str>,
}

/// One way to sign in on the chooser page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Choice {
    /// The provider's display name.
    pub label: String,
    /// Where its sign-in starts (same origin).
    pub url: String,
}

/// Why a request was refused, for the 403 page.
#[derive(Debug, Clone, Copy)]
pub struct Denied<'a> {
    /// Who is signed in, when someone is.
    pub user: Option<PageUser<'a>>,
    /// The application (route) that refused, by its configured name.
    pub app: Option<&'a str>,
    /// Why, as one sentence a user understands ("The “wiki” application needs the wiki license.").
    pub reason: &'a str,
}

impl Pages {
    /// The pages `config` asks for (templates as validation read them).
    pub fn new(config: &PagesConfig) -> Result<Self, PagesError> {
        let mut custom = Environment::new();
        // every template is HTML, whatever its name: values are always escaped
        custom.set_auto_escape_callback(|_| AutoEscape::Html);
        for (name, source) in &config.templates {
            custom
                .add_template_owned(name.clone(), source.clone())
                .map_err(|e| PagesError { name: name.clone(), message: e.to_string() })?;
        }
        Ok(Self { custom, support_contact: config.support_contact.clone() })
    }

    fn contact_sentence(&self) -> String {
        match &self.support_contact {
            Some(c) => format!("If you think you should have access, contact {c}."),
            None => "If you think you should have access, contact your administrator.".to_owned(),
        }
    }

    /// The operator's template `name`, when there is one and it renders.
    fn render(&self, name: &str, status: StatusCode, ctx: minijinja::Value) -> Option<Reply> {
        let template = self.custom.get_template(name).ok()?;
        match template.render(ctx) {
            Ok(body) => Some(Reply::html(status, body, CUSTOM_PAGE_CSP)),
            Err(e) => {
                tracing::warn!(template = name, error = %e, "page template failed: the built-in page is shown");
                None
            }
        }
    }
}

/// The pages as one request sees them: the gateway's pages, and the request's id they show.
#[derive(Clone, Copy)]
pub struct PageContext<'a> {
    /// The gateway's pages.
    pub pages: &'a Pages,
    /// The request's id.
    pub request_id: &'a (dyn Display + Sync),
}

impl std::fmt::Debug for PageContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageContext").field("request_id", &self.request_id.to_string()).finish()
    }
}

impl PageContext<'_> {
    /// The 403 page.
    pub fn forbidden(&self, denied: &Denied<'_>) -> Reply {
        let request_id = self.request_id.to_string();
        let user = denied.user.map(|u| context! { name => u.name, email => u.email });
        let ctx = context! {
            status => 403,
            title => "Access denied",
            user => user,
            app => denied.app,
            reason => denied.reason,
            sign_out_url => SIGN_OUT_PATH,
            support_contact => self.pages.support_contact,
            request_id => request_id,
        };
        if let Some(reply) = self.pages.render("forbidden.html", StatusCode::FORBIDDEN, ctx) {
            return reply;
        }
        let mut paragraphs: Vec<String> = Vec::new();
        if let Some(u) = denied.user {
            paragraphs.push(match (u.name, u.email) {
                (Some(n), Some(e)) => format!("You are signed in as {n} ({e})."),
                (Some(x), None) | (None, Some(x)) => format!("You are signed in as {x}."),
                (None, None) => "You are signed in.".to_owned(),
            });
        }
        paragraphs.push(denied.reason.to_owned());
        paragraphs.push(self.pages.contact_sentence());
        paragraphs.push(format!("Reference: {request_id}"));
        let extra = match denied.user {
            // the way out for someone signed in with the wrong account
            Some(_) => format!(
                "<form method=\"post\" action=\"{SIGN_OUT_PATH}\"><button type=\"submit\" id=\"sign-out\">Sign out and use another account</button></form>"
            ),
            None => String::new(),
        };
        let refs: Vec<&str> = paragraphs.iter().map(String::as_str).collect();
        Reply::page(StatusCode::FORBIDDEN, "Access denied", &refs, &extra)
    }

    /// A sign-in that failed: `message` says why, `retry_url` starts it again.
    pub fn sign_in_error(&self, status: StatusCode, message: &str, retry_url: &str) -> Reply {
        let request_id = self.request_id.to_string();
        let ctx = context! {
            status => status.as_u16(),
            title => "Sign-in failed",
            message => message,
            retry_url => retry_url,
            support_contact => self.pages.support_contact,
            request_id => request_id,
        };
        if let Some(reply) = self.pages.render("sign_in_error.html", status, ctx) {
            return reply;
        }
        let link = format!("<p><a href=\"{}\">Try again</a></p>", escape_html(retry_url));
        let reference = format!("Reference: {request_id}");
        Reply::page(status, "Sign-in failed", &[message, &reference], &link)
    }

    /// Signing in must wait (the provider's budget, too many sign-ins at once): `message` says
    /// so; the page continues to `retry_url` by itself after `retry_after` seconds when
    /// `automatic`, else offers it as a link.
    pub fn busy(
        &self,
        status: StatusCode,
        message: &str,
        retry_url: &str,
        retry_after: u64,
        automatic: bool,
    ) -> Reply {
        let request_id = self.request_id.to_string();
        let ctx = context! {
            status => status.as_u16(),
            title => if automatic { "Signing you in" } else { "Sign-in busy" },
            message => message,
            retry_url => retry_url,
            retry_after => retry_after,
            automatic => automatic,
            support_contact => self.pages.support_contact,
            request_id => request_id,
        };
        let mut reply = match self.pages.render("busy.html", status, ctx) {
            Some(reply) => reply,
            None => {
                let href = escape_html(retry_url);
                let extra = match automatic {
                    true => format!(
                        "<meta http-equiv=\"refresh\" content=\"{retry_after};url={href}\"><p><a href=\"{href}\">Continue now</a></p>"
                    ),
                    false => format!("<p><a href=\"{href}\">Try again</a></p>"),
                };
                let title = if automatic { "Signing you in" } else { "Sign-in busy" };
                Reply::page(status, title, &[message], &extra)
            }
        };
        if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
            reply.header(HeaderName::from_static("retry-after"), v);
        }
        // the header form too: every browser follows it, whatever the page's markup says
        if automatic {
            if let Ok(v) = HeaderValue::from_str(&format!("{retry_after};url={retry_url}")) {
                reply.header(HeaderName::from_static("refresh"), v);
            }
        }
        reply
    }

    /// The chooser: a route accepts several providers and the user picks one.
    pub fn chooser(&self, choices: &[Choice]) -> Reply {
        let request_id = self.request_id.to_string();
        let ctx = context! {
            status => 200,
            title => "Sign in",
            choices => choices,
            support_contact => self.pages.support_contact,
            request_id => request_id,
        };
        if let Some(reply) = self.pages.render("chooser.html", StatusCode::OK, ctx) {
            return reply;
        }
        let mut list = String::from("<ul>");
        for (i, c) in choices.iter().enumerate() {
            list.push_str(&format!(
                "<li><a id=\"provider-{i}\" href=\"{}\">{}</a></li>",
                escape_html(&c.url),
                escape_html(&c.label)
            ));
        }
        list.push_str("</ul>");
        Reply::page(StatusCode::OK, "Sign in", &["Choose how to sign in:"], &list)
    }

    /// The page `GET /oauth2/sign_out` shows: a button that POSTs (a GET never signs anyone
    /// out, so no cross-site link or image can).
    pub fn sign_out(&self) -> Reply {
        let request_id = self.request_id.to_string();
        let ctx = context! {
            status => 200,
            title => "Sign out",
            sign_out_url => SIGN_OUT_PATH,
            support_contact => self.pages.support_contact,
            request_id => request_id,
        };
        if let Some(reply) = self.pages.render("sign_out.html", StatusCode::OK, ctx) {
            return reply;
        }
        Reply::page(
            StatusCode::OK,
            "Sign out",
            &["Do you want to sign out?"],
            &format!(
                "<form method=\"post\" action=\"{SIGN_OUT_PATH}\"><button type=\"submit\" id=\"sign-out\">Sign out</button></form>"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: &Reply) -> String {
        String::from_utf8(r.body.to_vec()).unwrap()
    }

    fn header<'a>(r: &'a Reply, name: &str) -> Option<&'a str> {
        r.headers.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.to_str().ok())
    }

    fn ctx<'a>(pages: &'a Pages, id: &'a &'a str) -> PageContext<'a> {
        PageContext { pages, request_id: id }
    }

    fn custom(templates: &[(&str, &str)]) -> Pages {
        let config = PagesConfig {
            support_contact: Some("the help desk <help@acme.test>".into()),
            templates: templates.iter().map(|(n, s)| (n.to_string(), s.to_string())).collect(),
            ..PagesConfig::default()
        };
        Pages::new(&config).unwrap()
    }

    const BOB: Denied<'static> = Denied {
        user: Some(PageUser { name: Some("Bob <Brown>"), email: Some("bob@acme.test") }),
        app: Some("wiki"),
        reason: "The “wiki” application needs the wiki license.",
    };

    #[test]
    fn the_built_in_403_says_who_and_why_and_offers_a_way_out() {
        let page = ctx(&Pages::default(), &"req-1").forbidden(&BOB);
        assert_eq!(page.status, 403);
        let html = body(&page);
        assert!(html.contains("You are signed in as Bob &lt;Brown&gt; (bob@acme.test)."), "{html}");
        assert!(html.contains("needs the wiki license"), "{html}");
        assert!(html.contains("contact your administrator"), "{html}");
        assert!(html.contains("Reference: req-1"), "{html}");
        assert!(
            html.contains("action=\"/oauth2/sign_out\"") && html.contains("use another account"),
            "{html}"
        );
        assert_eq!(header(&page, "content-security-policy"), Some("default-src 'none'"));
        // nobody signed in (a denied path): no sign-out offered
        let anonymous = Denied { user: None, app: None, reason: "This address is not open to anyone." };
        let html = body(&ctx(&Pages::default(), &"req-2").forbidden(&anonymous));
        assert!(!html.contains("sign_out") && !html.contains("signed in as"), "{html}");
    }

    #[test]
    fn custom_templates_get_the_documented_variables_escaped() {
        let pages = custom(&[(
            "forbidden.html",
            "<h1>{{ title }}</h1><p>{{ user.name }} / {{ user.email }}</p><p>{{ app }}: {{ reason }}</p>\
             <p>{{ support_contact }}</p><form action=\"{{ sign_out_url }}\"></form><small>{{ request_id }}</small>",
        )]);
        let page = ctx(&pages, &"req-9").forbidden(&BOB);
        assert_eq!(page.status, 403);
        let html = body(&page);
        assert!(html.contains("<h1>Access denied</h1>"), "{html}");
        assert!(html.contains("<p>Bob &lt;Brown&gt; / bob@acme.test</p>"), "{html}");
        assert!(html.contains("wiki: The “wiki” application needs the wiki license."), "{html}");
        assert!(html.contains("the help desk &lt;help@acme.test&gt;"), "{html}");
        assert!(
            html.contains("action=\"&#x2f;oauth2&#x2f;sign_out\"")
                || html.contains("action=\"/oauth2/sign_out\""),
            "{html}"
        );
        assert!(html.contains("<small>req-9</small>"), "{html}");
        assert_eq!(header(&page, "content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(header(&page, "content-security-policy"), Some(CUSTOM_PAGE_CSP));
        // pages without a template stay built in
        let html = body(&ctx(&pages, &"req-3").sign_out());
        assert!(html.contains("id=\"sign-out\""), "{html}");
    }

    #[test]
    fn a_template_that_fails_to_render_falls_back_to_the_built_in_page() {
        let pages = custom(&[("forbidden.html", "{{ reason.not.there }}")]);
        let html = body(&ctx(&pages, &"req-4").forbidden(&BOB));
        assert!(html.contains("You are signed in as"), "{html}");
        assert!(html.contains("contact the help desk &lt;help@acme.test&gt;."), "{html}");
    }

    #[test]
    fn busy_pages_continue_by_themselves_when_asked() {
        let pages = Pages::default();
        let page = super::PageContext { pages: &pages, request_id: &"r" }.busy(
            StatusCode::SERVICE_UNAVAILABLE,
            "Many people are signing in right now.",
            "https://app.example.com/oauth2/start?rd=%2Fwiki",
            7,
            true,
        );
        assert_eq!(header(&page, "retry-after"), Some("7"));
        assert_eq!(header(&page, "refresh"), Some("7;url=https://app.example.com/oauth2/start?rd=%2Fwiki"));
        assert!(body(&page).contains("http-equiv=\"refresh\""));
        let page = super::PageContext { pages: &pages, request_id: &"r" }.busy(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy.",
            "/oauth2/start",
            5,
            false,
        );
        assert_eq!(header(&page, "refresh"), None);
        assert_eq!(header(&page, "retry-after"), Some("5"));
    }
}
