//! Session administration on the admin listener, for an operator holding an admin token:
//!
//! - `GET /sessions?user=SUB[&provider=NAME]`: the user's sessions (count, id, provider,
//!   created, last used, end; never tokens, cookie values or addresses);
//! - `POST /sessions/revoke?user=SUB[&provider=NAME][&session=ID]`: ends one or all of them
//!   ("sign out everywhere"; every instance on a shared store);
//! - `POST /deny?user=SUB&for=1h[&provider=NAME]`: refuses the user's bearer tokens that long;
//! - `POST /deny/lift?user=SUB[&provider=NAME]`: lifts that.
//!
//! Every action is written to the audit log (target `audit`): who (the token's name), what,
//! whom, how many sessions, and whether it worked.

use http::{Method, StatusCode};
use serde_json::json;

use crate::browser::BrowserAuth;
use crate::browser::operators::OperatorError;
use crate::clock::unix_now;
use crate::http_util::parse_unique_query;

/// The longest deny-list entry an operator may add (a provider suspension is the tool for
/// good).
const MAX_DENY: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

/// Longest `user` accepted (a `sub` is at most 255 characters in practice).
const MAX_SUB: usize = 1024;

/// Is `path` one of session administration's?
pub fn is_operator_path(path: &str) -> bool {
    matches!(path, "/sessions" | "/sessions/revoke" | "/deny" | "/deny/lift")
}

/// What an operator asked, read from the query.
#[derive(Debug, PartialEq, Eq)]
struct Ask {
    user: String,
    provider: Option<String>,
    session: Option<String>,
    deny_for: Option<std::time::Duration>,
}

fn bad(message: &str) -> (StatusCode, Vec<u8>) {
    answer(StatusCode::BAD_REQUEST, json!({ "error": "bad_request", "detail": message }))
}

fn answer(status: StatusCode, body: serde_json::Value) -> (StatusCode, Vec<u8>) {
    (status, format!("{body}\n").into_bytes())
}

fn read_ask(query: &str) -> Result<Ask, &'static str> {
    let mut ask = Ask { user: String::new(), provider: None, session: None, deny_for: None };
    for (name, value) in parse_unique_query(query).map_err(|_| "repeated or too many parameters")? {
        match name.as_str() {
            "user" => ask.user = value,
            "provider" => ask.provider = Some(value),
            "session" => ask.session = Some(value),
            "for" => {
                let d =
                    humantime::parse_duration(&value).map_err(|_| "`for` is a duration such as 30m or 2h")?;
                if d.is_zero() || d > MAX_DENY {
                    return Err("`for` is between 1s and 366d");
                }
                ask.deny_for = Some(d);
            }
            _ => return Err("unknown parameter: use user, provider, session, for"),
        }
    }
    if ask.user.is_empty() || ask.user.len() > MAX_SUB {
        return Err("`user` (the user's sub) is required");
    }
    if ask.session.as_ref().is_some_and(|s| s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Err("`session` is a 16-digit id from the session list");
    }
    Ok(ask)
}

/// Serves one session-administration request from `caller` (its admin token's name).
pub async fn serve(
    browser: Option<&BrowserAuth>,
    caller: &str,
    method: &Method,
    path: &str,
    query: &str,
) -> (StatusCode, Vec<u8>) {
    let wanted = if path == "/sessions" { Method::GET } else { Method::POST };
    if method != wanted {
        return answer(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({ "error": "method_not_allowed", "use": wanted.as_str() }),
        );
    }
    let ask = match read_ask(query) {
        Ok(ask) => ask,
        Err(message) => return bad(message),
    };
    let Some(browser) = browser else {
        let detail = "session administration needs the session store: configure [session] secret";
        return answer(StatusCode::CONFLICT, json!({ "error": "no_session_store", "detail": detail }));
    };
    let provider = ask.provider.as_deref();
    let (user, who) = (ask.user.as_str(), caller);
    let result = match path {
        "/sessions" => browser.list_sessions(user, provider).await.map(|sessions| {
            tracing::info!(target: "audit", who, action = "sessions.list", user, provider = provider.unwrap_or("*"),
                sessions = sessions.len(), "sessions listed");
            json!({ "user": user, "provider": provider, "count": sessions.len(), "sessions": sessions })
        }),
        "/sessions/revoke" => {
            let ended = browser.end_sessions(user, provider, ask.session.as_deref()).await;
            if let Ok(n) = &ended {
                tracing::info!(target: "audit", who, action = "sessions.revoke", user, provider = provider.unwrap_or("*"),
                    session = ask.session.as_deref().unwrap_or("*"), sessions = n, "sessions ended");
            }
            match ended {
                Ok(0) if ask.session.is_some() => {
                    return answer(StatusCode::NOT_FOUND, json!({ "error": "no_such_session" }));
                }
                other => other.map(|n| json!({ "user": user, "provider": provider, "ended": n })),
            }
        }
        "/deny" => {
            let Some(d) = ask.deny_for else { return bad("`for` (how long, such as 1h) is required") };
            let until = unix_now().saturating_add(d.as_secs());
            let denied = browser.deny_bearer(user, provider, until).await;
            if denied.is_ok() {
                tracing::info!(target: "audit", who, action = "deny", user, provider = provider.unwrap_or("*"),
                    until, "bearer tokens denied");
            }
            denied.map(|()| json!({ "user": user, "provider": provider, "denied_until": until }))
        }
        "/deny/lift" => {
            let lifted = browser.lift_bearer(user, provider).await;
            if let Ok(still) = &lifted {
                tracing::info!(target: "audit", who, action = "deny.lift", user, provider = provider.unwrap_or("*"),
                    still_denied_until = still.unwrap_or(0), "deny-list entry lifted");
            }
            lifted.map(|still| json!({ "user": user, "provider": provider, "lifted": true, "still_denied_until": still }))
        }
        _ => return answer(StatusCode::NOT_FOUND, json!({ "error": "not_found" })),
    };
    match result {
        Ok(body) => answer(StatusCode::OK, body),
        Err(OperatorError::UnknownProvider(name)) => {
            answer(StatusCode::NOT_FOUND, json!({ "error": "unknown_provider", "provider": name }))
        }
        Err(OperatorError::Store(e)) => {
            tracing::warn!(target: "audit", who, path, user, error = %e, "session administration failed");
            answer(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": "store_unavailable" }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_are_read_strictly() {
        let ask = read_ask("user=usr_alice&provider=staff&for=90m").unwrap();
        assert_eq!(ask.user, "usr_alice");
        assert_eq!(ask.provider.as_deref(), Some("staff"));
        assert_eq!(ask.deny_for, Some(std::time::Duration::from_secs(5400)));
        assert_eq!(read_ask("user=a%20b").unwrap().user, "a b", "percent-decoded");
        for refused in [
            "",
            "provider=staff",
            "user=a&user=b",
            "user=a&for=0s",
            "user=a&for=400d",
            "user=a&for=soon",
            "user=a&session=xyz",
            "user=a&session=0123456789abcdeg",
            "user=a&cookie=1",
        ] {
            assert!(read_ask(refused).is_err(), "{refused:?}");
        }
        assert!(read_ask("user=a&session=0123456789ABCDEF").is_ok());
    }

    #[tokio::test]
    async fn wrong_methods_and_missing_stores_are_told_apart() {
        let (status, _) = serve(None, "admin", &Method::POST, "/sessions", "user=a").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _) = serve(None, "admin", &Method::GET, "/sessions/revoke", "user=a").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _) = serve(None, "admin", &Method::POST, "/deny", "for=1h").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, body) = serve(None, "admin", &Method::GET, "/sessions", "user=a").await;
        assert_eq!(status, StatusCode::CONFLICT, "{}", String::from_utf8_lossy(&body));
    }
}
