//! Refreshing a session's tokens without ever failing a request because another one refreshed
//! first (the rotating-refresh-token race that logs oauth2-proxy users out).
//!
//! In one process, concurrent requests on a session share one refresh (single flight). Across
//! instances, a store lock picks one refresher; the others wait for its write and use its
//! tokens. Every candidate re-reads the stored session first, so a refresh already done by
//! someone else is never repeated with a spent refresh token. New tokens are written with a
//! versioned compare-and-set, re-applied to the newest copy when a concurrent write won. The
//! refresh runs as its own task: a request that goes away mid-refresh cannot lose rotated tokens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ActiveSession, BrowserAuth, MAX_TOKEN_LIFETIME, SessionLookup};
use crate::clock::unix_now;
use crate::oidc::budget::Grant;
use crate::oidc::login::{self, LoginError, TokenResponse, access_token_claims};
use crate::revocation::SessionVerdict;
use crate::session::{Session, SessionTicket, SessionTokens};

/// What a refresh came to, shared by every request that waited on it.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    /// Newer tokens (from this refresh or someone else's).
    Fresh(Arc<ActiveSession>),
    /// Keep using the session as it is (deferred, or the provider or store is unavailable).
    Kept,
    /// The provider said the grant is gone (`invalid_grant`): the session has ended.
    Ended,
}

/// How long a request waits for another instance's refresh when its own token has expired.
const WAIT_FOR_OTHER: Duration = Duration::from_secs(5);
/// How long a session's refresh is put off after the provider failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);
/// How long an expired session waits for token-endpoint budget before going on without.
const EXPIRED_PATIENCE: Duration = Duration::from_secs(5);
/// How long rotated tokens that could not be stored are kept and retried.
const UNSAVED_RETRY_FOR: Duration = Duration::from_secs(60);

fn counted(outcome: &'static str) {
    crate::metrics::METRICS.refreshes.with_label_values(&[outcome]).inc();
}

impl BrowserAuth {
    /// Should this request refresh the session's tokens first? When the access token is within
    /// `refresh_before` of expiry (at most half its lifetime) or the identity changed at the
    /// provider, and the refresh is not deferred.
    pub(super) fn due_for_refresh(&self, active: &ActiveSession, now: u64) -> bool {
        let tokens = &active.session.tokens;
        if tokens.refresh_token.is_none() {
            return false;
        }
        let lifetime = tokens.access_expires_at.saturating_sub(tokens.access_issued_at);
        let window = self.refresh_before.as_secs().min(lifetime / 2);
        if !active.stale && now.saturating_add(window) < tokens.access_expires_at {
            return false;
        }
        self.deferred.get(&active.key).is_none_or(|until| until <= Instant::now())
    }

    /// Refreshes `seen` (opened from `cookie`), sharing the work with concurrent requests.
    pub(super) async fn refresh(&self, cookie: &str, seen: Arc<ActiveSession>) -> SessionLookup {
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let (Some(ticket), Some(me)) = (SessionTicket::decode(cookie), self.me.upgrade()) else {
            return SessionLookup::Invalid;
        };
        let cell = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            inflight.entry(seen.key).or_default().clone()
        };
        let outcome = cell
            .get_or_init(|| {
                let seen = seen.clone();
                async move {
                    tokio::spawn(async move { me.refresh_shared(&ticket, &seen).await })
                        .await
                        .unwrap_or(Outcome::Kept)
                }
            })
            .await
            .clone();
        {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if inflight.get(&seen.key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                inflight.remove(&seen.key);
            }
        }
        match outcome {
            Outcome::Fresh(active) => {
                self.remember_opened(cookie, &active, generation);
                SessionLookup::Found(active)
            }
            Outcome::Kept => SessionLookup::Found(seen),
            Outcome::Ended => {
                self.opened.invalidate(cookie);
                SessionLookup::Invalid
            }
        }
    }

    async fn refresh_shared(&self, ticket: &SessionTicket, seen: &ActiveSession) -> Outcome {
        let current = match self.open(ticket).await {
            Ok(Some(current)) => current,
            Ok(None) => return Outcome::Ended,
            Err(e) => {
                tracing::warn!(error = %e, "session store unavailable; refresh put off");
                return Outcome::Kept;
            }
        };
        if current.version != seen.version && !self.due_for_refresh(&current, unix_now()) {
            counted("shared");
            return Outcome::Fresh(Arc::new(current));
        }
        let lock = match self.store.lock(&current.key, self.lock_ttl).await {
            Ok(Some(token)) => token,
            Ok(None) => return self.await_other_refresh(ticket, current).await,
            Err(e) => {
                tracing::warn!(error = %e, "session store unavailable; refresh put off");
                return Outcome::Kept;
            }
        };
        let outcome = self.refresh_locked(ticket, current).await;
        if let Err(e) = self.store.unlock(&seen.key, lock).await {
            tracing::warn!(error = %e, "cannot release the refresh lock (it expires by itself)");
        }
        outcome
    }

    /// Another instance is refreshing. A still-valid token goes on being used at once; an
    /// expired one waits for the other instance's write and uses its tokens.
    async fn await_other_refresh(&self, ticket: &SessionTicket, current: ActiveSession) -> Outcome {
        if current.session.tokens.access_expires_at > unix_now() {
            return Outcome::Kept;
        }
        let deadline = Instant::now() + WAIT_FOR_OTHER;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match self.open(ticket).await {
                Ok(Some(newer)) if newer.version != current.version => {
                    counted("shared");
                    return Outcome::Fresh(Arc::new(newer));
                }
                Ok(None) => return Outcome::Ended,
                _ => {}
            }
        }
        Outcome::Kept
    }

    async fn refresh_locked(&self, ticket: &SessionTicket, current: ActiveSession) -> Outcome {
        // the lock holder before us may have finished between our read and our lock
        let current = match self.open(ticket).await {
            Ok(Some(latest)) if latest.version != current.version => {
                if !self.due_for_refresh(&latest, unix_now()) {
                    counted("shared");
                    return Outcome::Fresh(Arc::new(latest));
                }
                latest
            }
            Ok(Some(_)) => current,
            Ok(None) => return Outcome::Ended,
            Err(_) => return Outcome::Kept,
        };
        let Some(refresh_token) = current.session.tokens.refresh_token.clone() else { return Outcome::Kept };
        // refreshed at the provider the session was signed in at
        let client = self.client(current.provider);
        let provider = client.verifier.provider();
        if let Err(wait) = self.take_budget(&current).await {
            crate::metrics::METRICS.token_budget_waits.with_label_values(&[Grant::Refresh.label()]).inc();
            return self.defer(&current, wait, "no token-endpoint budget");
        }
        let Some(discovery) = provider.discovery() else {
            return self.defer(&current, RETRY_AFTER_FAILURE, "discovery not loaded");
        };
        let tokens = match login::refresh_grant(
            provider.fetcher(),
            &discovery,
            &client.settings,
            &provider.budget,
            &refresh_token,
        )
        .await
        {
            Ok(tokens) => tokens,
            Err(LoginError::Refused(code)) if code == "invalid_grant" => {
                // refused because someone else redeemed it after all? then use their tokens
                if let Ok(Some(latest)) = self.open(ticket).await {
                    if latest.version != current.version {
                        counted("shared");
                        return Outcome::Fresh(Arc::new(latest));
                    }
                }
                tracing::info!("the provider ended the session (invalid_grant at refresh)");
                return self.end(&current).await;
            }
            Err(LoginError::RateLimited(pause)) => {
                return self.defer(&current, pause, "the provider answered 429");
            }
            Err(e) => {
                tracing::warn!(error = %e, "token refresh failed");
                counted("failed");
                return self.defer_quietly(&current, RETRY_AFTER_FAILURE);
            }
        };
        let Some(refreshed) = self.apply_tokens(&current.session, tokens) else {
            tracing::warn!("refreshed tokens name another subject; ending the session");
            return self.end(&current).await;
        };
        self.write_refreshed(ticket, current, refreshed).await
    }

    /// Budget for a refresh: an early one only from spare budget; one whose access token has
    /// expired from the refreshes' share (which sign-ins cannot take) and may wait a few seconds.
    async fn take_budget(&self, current: &ActiveSession) -> Result<(), Duration> {
        let budget = &self.client(current.provider).verifier.provider().budget;
        if current.session.tokens.access_expires_at > unix_now() {
            return budget.try_take(Grant::EarlyRefresh);
        }
        let deadline = Instant::now() + EXPIRED_PATIENCE;
        loop {
            match budget.try_take(Grant::Refresh) {
                Ok(()) => return Ok(()),
                Err(wait) if Instant::now() + wait <= deadline => tokio::time::sleep(wait).await,
                Err(wait) => return Err(wait),
            }
        }
    }

    /// The session with new tokens and the identity they carry now.
    fn apply_tokens(&self, old: &Session, tokens: TokenResponse) -> Option<Session> {
        let now = unix_now();
        let id_token = tokens.id_token.unwrap_or_else(|| old.tokens.id_token.clone());
        // both came from the token endpoint over TLS, or were verified at sign-in
        let id_claims = access_token_claims(&id_token)?;
        let access_claims = access_token_claims(&tokens.access_token);
        let same = |claims: &serde_json::Value| {
            claims.get("sub").and_then(|s| s.as_str()).is_none_or(|s| s == old.identity.subject)
        };
        if !same(&id_claims) || !access_claims.as_ref().is_none_or(same) {
            return None;
        }
        let mut session = old.clone();
        let provider = self.provider_index(&old.provider).unwrap_or(0);
        session.identity =
            self.session_identity(provider, &id_claims, access_claims.as_ref(), old.expires_at);
        session.tokens = SessionTokens {
            access_token: tokens.access_token,
            // a provider that does not rotate keeps the old refresh token valid
            refresh_token: tokens.refresh_token.or_else(|| old.tokens.refresh_token.clone()),
            id_token,
            access_expires_at: now.saturating_add(tokens.expires_in.unwrap_or(300).min(MAX_TOKEN_LIFETIME)),
            access_issued_at: now,
        };
        Some(session)
    }

    /// Writes the refreshed session over `base` (compare-and-set); when a concurrent write
    /// won, the new tokens and identity are applied to the newest copy instead. Tokens that
    /// cannot be stored now are kept in this process and stored as soon as the store answers.
    async fn write_refreshed(
        &self,
        ticket: &SessionTicket,
        mut base: ActiveSession,
        refreshed: Session,
    ) -> Outcome {
        for _ in 0..3 {
            let mut session = base.session.clone();
            session.tokens = refreshed.tokens.clone();
            session.identity = refreshed.identity.clone();
            let version = base.version + 1;
            let Ok(stored) = self.stored(ticket, &session, version) else { break };
            match self.store.save(&base.key, stored, Some(base.version)).await {
                Ok(true) => {
                    counted("refreshed");
                    return match self.admitted(base.key, session, version, base.user).await {
                        Some(Some(active)) => Outcome::Fresh(Arc::new(active)),
                        Some(None) => Outcome::Ended,
                        None => Outcome::Kept,
                    };
                }
                Ok(false) => match self.open(ticket).await {
                    Ok(Some(latest)) => base = latest,
                    Ok(None) => return Outcome::Ended,
                    Err(_) => break,
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot store refreshed tokens yet");
                    break;
                }
            }
        }
        counted("unsaved");
        self.keep_unsaved(ticket.clone(), refreshed.clone());
        match self.admitted(base.key, refreshed, base.version, base.user).await {
            Some(Some(active)) => Outcome::Fresh(Arc::new(active)),
            Some(None) => Outcome::Ended,
            None => Outcome::Kept,
        }
    }

    /// The refreshed session as requests may use it (the user's revocation record applied).
    async fn admitted(
        &self,
        key: crate::session::SessionKey,
        mut session: Session,
        version: u64,
        user: [u8; 32],
    ) -> Option<Option<ActiveSession>> {
        let stale = match self.apply_revocations(&user, &mut session).await {
            Ok(SessionVerdict::Usable { stale }) => stale,
            Ok(SessionVerdict::Ended) => return Some(None),
            // revocations cannot be checked: the session as it was opened (with them) is used
            Err(_) => return None,
        };
        let provider = self.provider_index(&session.provider).unwrap_or(0);
        Some(Some(ActiveSession::new(key, session, version, user, stale, provider)))
    }

    /// Retries storing rotated tokens in the background: the provider has spent the old refresh
    /// token, so losing the new one would end the session at the next refresh.
    fn keep_unsaved(&self, ticket: SessionTicket, refreshed: Session) {
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let deadline = Instant::now() + UNSAVED_RETRY_FOR;
            let key = me.sealer.session_key(&ticket);
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let based_on = match me.store.load(&key).await {
                    Ok(Some(stored)) => stored.version,
                    Ok(None) => return,
                    Err(_) => continue,
                };
                let Ok(stored) = me.stored(&ticket, &refreshed, based_on + 1) else { return };
                if let Ok(true) = me.store.save(&key, stored, Some(based_on)).await {
                    tracing::info!("refreshed tokens stored after a store outage");
                    return;
                }
            }
            tracing::warn!("refreshed tokens could not be stored; the session may need a new sign-in");
        });
    }

    async fn end(&self, current: &ActiveSession) -> Outcome {
        counted("ended");
        if let Err(e) = self.store.delete(&current.key).await {
            tracing::warn!(error = %e, "cannot delete the ended session");
        }
        Outcome::Ended
    }

    fn defer(&self, current: &ActiveSession, wait: Duration, why: &'static str) -> Outcome {
        tracing::info!(reason = why, retry_in_ms = wait.as_millis() as u64, "session refresh deferred");
        counted("deferred");
        self.defer_quietly(current, wait)
    }

    fn defer_quietly(&self, current: &ActiveSession, wait: Duration) -> Outcome {
        self.deferred.insert(current.key, Instant::now() + wait);
        Outcome::Kept
    }
}
