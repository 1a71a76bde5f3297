//! The pages and documents of sign-in: errors with a way forward, waiting pages, userinfo.

use http::StatusCode;

use super::ActiveSession;
use crate::pages::PageContext;
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

pub(super) fn bad_callback(page: PageContext<'_>, message: &str) -> Reply {
    page.sign_in_error(StatusCode::BAD_REQUEST, message, "/oauth2/start")
}

pub(super) fn retry_page(page: PageContext<'_>, status: StatusCode, message: &str, retry: &str) -> Reply {
    page.sign_in_error(status, &format!("{message} Please try again in a moment."), retry)
}

pub(super) fn unavailable_page(page: PageContext<'_>) -> Reply {
    page.busy(
        StatusCode::SERVICE_UNAVAILABLE,
        "Signing in is not possible right now. Please try again in a moment.",
        "/oauth2/start",
        5,
        false,
    )
}

/// Too many sign-ins are under way on this instance (`session.max_pending_logins`).
pub(super) fn too_many_sign_ins(page: PageContext<'_>, retry_after: u64) -> Reply {
    page.busy(
        StatusCode::SERVICE_UNAVAILABLE,
        "Too many sign-ins are being started right now. Please try again in a moment.",
        "/oauth2/start",
        retry_after,
        false,
    )
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
pub(super) fn waiting_page(
    page: PageContext<'_>,
    status: StatusCode,
    wait: std::time::Duration,
    restart: &str,
) -> Reply {
    let jitter = crate::random::random_bytes::<1>().map_or(0, |b| u64::from(b[0] % 4));
    let seconds = wait.as_secs().saturating_add(1 + jitter).min(3600);
    page.busy(
        status,
        "Many people are signing in right now. This page will continue by itself in a moment.",
        restart,
        seconds,
        true,
    )
}
