//! Signed provider webhooks (Calimatic's shape): `POST` a JSON event with
//! `x-webhook-signature: sha256=<hex HMAC-SHA256 of the raw body>`. Verified on the exact bytes
//! received, in constant time, before any parsing; de-duplicated by event id; applied to the
//! user's revocation record. Nothing is ever proxied from here.

use std::time::Duration;

use hmac::{Hmac, Mac};
use http::StatusCode;
use sha2::Sha256;

use super::Revocations;
use crate::clock::unix_now;
use crate::reply::Reply;

/// How long event ids are remembered for de-duplication (the platform retries for 24 h).
const DEDUP_FOR: Duration = Duration::from_secs(24 * 3600);

/// How far the provider's clock may be behind authgate's.
const CLOCK_SKEW: u64 = 60;

/// Events older than this are acknowledged and not applied: past the platform's retries and the
/// de-duplication window, a re-sent old event must not act again.
const MAX_EVENT_AGE: u64 = 24 * 3600 + 3600;

/// The webhook signing key.
#[derive(Clone)]
pub struct WebhookKey(Hmac<Sha256>);

impl std::fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookKey(<redacted>)")
    }
}

impl WebhookKey {
    /// The key for `secret` (the shared webhook secret, as configured at the provider).
    pub fn new(secret: &[u8]) -> Self {
        #[allow(clippy::expect_used)] // HMAC accepts keys of any length
        Self(<Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length"))
    }

    /// Does `headers` carry exactly one `x-webhook-signature: sha256=<64 lower-case hex>` that
    /// is the HMAC of `body`? (Compared in constant time.)
    pub fn verify(&self, headers: &http::HeaderMap, body: &[u8]) -> bool {
        let mut values = headers.get_all("x-webhook-signature").iter();
        let (Some(value), None) = (values.next(), values.next()) else { return false };
        let Some(hex) = value.as_bytes().strip_prefix(b"sha256=") else { return false };
        let Some(signature) = crate::codec::decode_hex32(hex) else { return false };
        let mut mac = self.0.clone();
        mac.update(body);
        mac.verify_slice(&signature).is_ok()
    }
}

/// A parsed webhook event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// The event id (de-duplication); absent ids fall back to a hash of the body.
    pub id: Option<String>,
    /// `license.revoked`, `user.suspended`, ...
    pub event: String,
    /// When it happened, seconds since the epoch.
    pub timestamp: u64,
    /// The same in milliseconds, as precise as the provider gave it: events are ordered by it.
    pub timestamp_ms: u64,
    /// `data.userId`: the user's `sub`.
    pub user: Option<String>,
    /// `data.application`: the license name as in the `licenses` claim.
    pub application: Option<String>,
}

/// Reads an event: `{"id", "event", "timestamp" (RFC 3339 or seconds), "data": {...}}`.
pub fn parse_event(body: &[u8]) -> Result<WebhookEvent, &'static str> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| "the body is not JSON")?;
    let event = v.get("event").and_then(|e| e.as_str()).ok_or("no `event`")?;
    let timestamp_ms = match v.get("timestamp") {
        Some(serde_json::Value::String(s)) => humantime::parse_rfc3339_weak(s)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_millis()).ok())
            .ok_or("`timestamp` is not an RFC 3339 time")?,
        // seconds, or milliseconds as JavaScript's Date.now() gives them
        Some(serde_json::Value::Number(n)) => match n.as_u64().ok_or("`timestamp` is not a time")? {
            ms if ms > 100_000_000_000 => ms,
            s => s.saturating_mul(1000),
        },
        _ => return Err("no `timestamp`"),
    };
    let timestamp = timestamp_ms / 1000;
    let data = v.get("data").filter(|d| d.is_object()).ok_or("no `data` object")?;
    let text =
        |name: &str| data.get(name).and_then(|s| s.as_str()).filter(|s| !s.is_empty()).map(String::from);
    let id = match v.get("id") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        None | Some(serde_json::Value::Null) => None,
        _ => return Err("`id` is not a string"),
    };
    Ok(WebhookEvent {
        id,
        event: event.to_owned(),
        timestamp,
        timestamp_ms,
        user: text("userId"),
        application: text("application"),
    })
}

/// What an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied (or already in effect).
    Done,
    /// Not an event authgate acts on.
    Ignored,
}

impl Revocations {
    /// Applies one event to the user's record and sessions; `namespace` is the webhook
    /// provider's (see `identity::user_key`).
    pub async fn apply_event(
        &self,
        e: &WebhookEvent,
        namespace: Option<&str>,
    ) -> Result<Applied, crate::session::StoreError> {
        let Some(sub) = e.user.as_deref() else { return Ok(Applied::Ignored) };
        let user = self.user_index(&crate::identity::user_key(namespace, sub));
        let now = unix_now();
        // Events are ordered by the provider's own timestamps (`ts`, milliseconds), compared
        // only with each other; our clock only bounds the session cut-off (seconds), so that a
        // provider clock ahead of ours cannot make an event reach sessions begun after it
        // arrived. On a tie the restrictive event wins (revoked over assigned, suspended over
        // reactivated), whichever arrives last.
        let ts = e.timestamp_ms;
        let at = e.timestamp.min(now);
        match e.event.as_str() {
            "license.revoked" | "license.assigned" => {
                let Some(app) = e.application.clone() else { return Ok(Applied::Ignored) };
                let revoked = e.event == "license.revoked";
                self.update(&user, |m| {
                    // an older event for the application than the latest applied changes nothing
                    let newer = |t: u64| if revoked { t > ts } else { t >= ts };
                    if m.license_at.iter().any(|(a, t)| *a == app && newer(*t)) {
                        return;
                    }
                    m.license_at.retain(|(a, _)| *a != app);
                    m.license_at.push((app.clone(), ts));
                    m.revoked.retain(|(r, _)| *r != app);
                    if revoked {
                        m.revoked.push((app, at));
                    }
                })
                .await?;
            }
            "user.suspended" | "user.deleted" | "user.deactivated" => {
                // a provider clock behind ours must not spare a session begun just before: no
                // session can legitimately begin after a suspension
                let cutoff = e.timestamp.saturating_add(CLOCK_SKEW).min(now);
                let mut newer = false;
                self.update(&user, |m| {
                    if ts >= m.status_at {
                        m.status_at = ts;
                        m.suspended_at = Some(cutoff);
                        newer = true;
                    }
                })
                .await?;
                // an older event than the user's latest status change (a late replay, or a
                // suspension re-sent after the reactivation) ends nothing
                if newer {
                    self.store().delete_user(&user, cutoff.saturating_add(1)).await?;
                }
            }
            "user.reactivated" => {
                self.update(&user, |m| {
                    if ts > m.status_at {
                        m.status_at = ts;
                        m.suspended_at = None;
                    }
                })
                .await?;
            }
            "user.updated" => {
                self.update(&user, |m| m.stale_since = Some(m.stale_since.unwrap_or(0).max(at))).await?;
            }
            _ => return Ok(Applied::Ignored),
        }
        Ok(Applied::Done)
    }
}

/// Answers a webhook delivery whose body (at most the configured size) is `body`, from the
/// provider whose users' keys are qualified with `namespace`.
pub async fn handle(
    revocations: &Revocations,
    key: &WebhookKey,
    namespace: Option<&str>,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Reply {
    if !key.verify(headers, body) {
        count("refused", "bad_signature");
        tracing::warn!("webhook refused: missing or wrong signature");
        return Reply::json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({ "error": "invalid_signature", "message": "The webhook signature is invalid." }),
        );
    }
    let event = match parse_event(body) {
        Ok(e) => e,
        Err(why) => {
            count("malformed", "malformed");
            return Reply::json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": "malformed", "message": why }),
            );
        }
    };
    let id_key = match &event.id {
        Some(id) => revocations.sealer().index("authgate webhook id", id.as_bytes()),
        None => revocations.sealer().index("authgate webhook body", body),
    };
    let label = event_label(&event.event);
    if event.timestamp + MAX_EVENT_AGE < unix_now() {
        count(label, "stale");
        tracing::warn!(event = label, "webhook acknowledged but not applied: older than 25 h");
        return Reply::json(StatusCode::OK, &serde_json::json!({ "ok": true, "stale": true }));
    }
    match revocations.store().remember(&id_key, DEDUP_FOR).await {
        Ok(true) => {}
        Ok(false) => {
            count(label, "duplicate");
            return Reply::json(StatusCode::OK, &serde_json::json!({ "ok": true, "duplicate": true }));
        }
        Err(e) => return unavailable(&e),
    }
    match revocations.apply_event(&event, namespace).await {
        Ok(Applied::Done) => {
            count(label, "applied");
            let age = unix_now().saturating_sub(event.timestamp);
            tracing::info!(event = label, age_s = age, "webhook applied");
            Reply::json(StatusCode::OK, &serde_json::json!({ "ok": true }))
        }
        Ok(Applied::Ignored) => {
            count(label, "ignored");
            tracing::info!(event = label, "webhook acknowledged; nothing to do");
            Reply::json(StatusCode::OK, &serde_json::json!({ "ok": true, "ignored": true }))
        }
        Err(e) => {
            // let the platform's retry do it again
            let _ = revocations.store().forget(&id_key).await;
            unavailable(&e)
        }
    }
}

fn unavailable(e: &crate::session::StoreError) -> Reply {
    tracing::warn!(error = %e, "webhook not applied: the session store is unavailable");
    count("unknown", "unavailable");
    Reply::json(
        StatusCode::SERVICE_UNAVAILABLE,
        &serde_json::json!({ "error": "unavailable", "message": "Try again later." }),
    )
}

/// A bounded metrics label for an event type.
fn event_label(event: &str) -> &'static str {
    match event {
        "license.revoked" => "license.revoked",
        "license.assigned" => "license.assigned",
        "user.suspended" => "user.suspended",
        "user.deleted" => "user.deleted",
        "user.deactivated" => "user.deactivated",
        "user.reactivated" => "user.reactivated",
        "user.updated" => "user.updated",
        _ => "other",
    }
}

fn count(event: &str, outcome: &str) {
    crate::metrics::METRICS.events.with_label_values(&["webhook", event, outcome]).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap();
        mac.update(body);
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    }

    #[test]
    fn only_an_exact_signature_of_the_raw_body_passes() {
        let secret = b"whsec_0123456789abcdefghijklmnopqrstuvwxyz";
        let key = WebhookKey::new(secret);
        let body = br#"{"event":"user.suspended","timestamp":"2026-11-23T10:00:00Z","data":{"userId":"u1"}}"#;
        let good = sign(secret, body);
        let headers = |values: &[&str]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append("x-webhook-signature", http::HeaderValue::from_str(v).unwrap());
            }
            h
        };
        assert!(key.verify(&headers(&[&good]), body));
        let reserialised =
            serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(body).unwrap()).unwrap();
        let bad = [
            headers(&[]),
            headers(&[&format!("sha256={}", "0".repeat(64))]),
            headers(&[&good.replacen("sha256=", "sha1=", 1)]),
            headers(&[&good.replacen("sha256=", "SHA256=", 1)]),
            headers(&[&good.to_uppercase()]),
            headers(&[&good, &good]),
            headers(&[&good[..good.len() - 2]]),
            headers(&[&sign(b"another-secret-0123456789abcdefghijklmn", body)]),
            headers(&[&sign(secret, &reserialised)]),
        ];
        for (i, h) in bad.iter().enumerate() {
            assert!(!key.verify(h, body), "case {i} passed");
        }
    }

    #[test]
    fn events_are_read_strictly() {
        let e = parse_event(
            br#"{"id":"evt_1","event":"license.revoked","timestamp":"2026-11-23T10:00:00.000Z","data":{"userId":"u1","application":"wiki"}}"#,
        )
        .unwrap();
        assert_eq!(e.id.as_deref(), Some("evt_1"));
        assert_eq!(e.timestamp, 1_795_428_000);
        assert_eq!((e.user.as_deref(), e.application.as_deref()), (Some("u1"), Some("wiki")));
        let ms = parse_event(br#"{"event":"user.updated","timestamp":1795428000123,"data":{}}"#).unwrap();
        assert_eq!(ms.timestamp, 1_795_428_000, "milliseconds are read as such");
        for bad in [
            &b"not json"[..],
            br#"{"timestamp":"2026-11-23T10:00:00Z","data":{}}"#,
            br#"{"event":"user.updated","data":{}}"#,
            br#"{"event":"user.updated","timestamp":"yesterday","data":{}}"#,
            br#"{"event":"user.updated","timestamp":"2026-11-23T10:00:00Z"}"#,
            br#"{"id":5,"event":"user.updated","timestamp":"2026-11-23T10:00:00Z","data":{}}"#,
        ] {
            assert!(parse_event(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
