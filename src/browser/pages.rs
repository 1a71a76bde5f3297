//! The pages and documents of sign-in: errors with a way forward, the sign-out form, userinfo.

use http::{HeaderName, HeaderValue, StatusCode};

use super::ActiveSession;
use crate::reply::Reply;

/// The current identity as JSON (never tokens).
pub fn userinfo(active: &ActiveSession) -> Reply {
    let id = &active.session.identity;
    Reply::json(
        StatusCode::OK,
        &serde_json::json!({
            "sub": id.subject,
            "email": id.email,
            "name": id.name,
            "given_name": id.given_name,
            "family_name": id.family_name,
            "organization_id": id.organization_id,
            "user_type": id.user_type,
            "licenses": id.licenses,
            "permissions": id.permissions,
            "session_expires_at": active.session.expires_at,
        }),
    )
}

/// The page `GET /oauth2/sign_out` shows: a button that POSTs (a GET never signs anyone out,
/// so no cross-site link or image can).
pub fn sign_out_page() -> Reply {
    Reply::page(
        StatusCode::OK,
        "Sign out",
        &["Do you want to sign out?"],
        "<form method=\"post\" action=\"/oauth2/sign_out\"><button type=\"submit\" id=\"sign-out\">Sign out</button></form>",
    )
}

pub(super) fn bad_callback(message: &str) -> Reply {
    Reply::page(
        StatusCode::BAD_REQUEST,
        "Sign-in failed",
        &[message],
        "<p><a href=\"/oauth2/start\">Sign in again</a></p>",
    )
}

pub(super) fn retry_page(status: StatusCode, message: &str, retry: &str) -> Reply {
    let link = format!("<p><a href=\"{}\">Try again</a></p>", crate::reply::escape_html(retry));
    Reply::page(status, "Sign-in failed", &[message, "Please try again in a moment."], &link)
}

pub(super) fn unavailable_page() -> Reply {
    let mut r = Reply::page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sign-in unavailable",
        &["Signing in is not possible right now. Please try again in a moment."],
        "<p><a href=\"/oauth2/start\">Try again</a></p>",
    );
    r.header(HeaderName::from_static("retry-after"), HeaderValue::from_static("5"));
    r
}

/// Too many sign-ins are under way on this instance (`session.max_pending_logins`).
pub(super) fn too_many_sign_ins(retry_after: u64) -> Reply {
    let mut r = Reply::page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sign-in busy",
        &["Too many sign-ins are being started right now. Please try again in a moment."],
        "<p><a href=\"/oauth2/start\">Try again</a></p>",
    );
    if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
        r.header(HeaderName::from_static("retry-after"), v);
    }
    r
}

/// Where a deferred sign-in starts again: `/oauth2/start` back to the page it began on.
pub(super) fn restart_url(origin: &str, return_to: &str) -> String {
    let rd: String = url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
    format!("{origin}/oauth2/start?rd={rd}")
}

/// No code exchange is possible before the code would expire (the token-endpoint budget is
/// spent: 503; the client's network used its allowance: 429): a page that signs in again by
/// itself after `wait` (a fresh code then), so that a burst of sign-ins all complete without
/// anyone touching anything. A few seconds of jitter keep the browsers that
/// waited together from coming back together.
pub(super) fn waiting_page(status: StatusCode, wait: std::time::Duration, restart: &str) -> Reply {
    let jitter = crate::random::random_bytes::<1>().map_or(0, |b| u64::from(b[0] % 4));
    let seconds = wait.as_secs().saturating_add(1 + jitter).min(3600);
    let href = crate::reply::escape_html(restart);
    let mut r = Reply::page(
        status,
        "Signing you in",
        &["Many people are signing in right now. This page will continue by itself in a moment."],
        &format!(
            "<meta http-equiv=\"refresh\" content=\"{seconds};url={href}\"><p><a href=\"{href}\">Continue now</a></p>"
        ),
    );
    if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
        r.header(HeaderName::from_static("retry-after"), v);
    }
    // the header form too: every browser follows it, wherever the page's markup is cut off
    if let Ok(v) = HeaderValue::from_str(&format!("{seconds};url={restart}")) {
        r.header(HeaderName::from_static("refresh"), v);
    }
    r
}
