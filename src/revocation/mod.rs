//! Revocation that takes effect now: signed provider webhooks (`webhook`), OIDC Back-Channel
//! Logout (`backchannel`), and the per-user revocation records and bearer deny-list they feed.
//!
//! Sessions are encrypted with a key only their cookie holds, so an event cannot rewrite them.
//! Instead each user may have a small sealed record (`RevocationRecord`): licenses revoked at a time,
//! a suspension time, an "identity changed" time. Every session is checked against its user's
//! record when it is opened (and cached sessions of that user are dropped when the record
//! changes, on every instance through the store's change channel). A record only affects
//! sessions created before the event's time, so an old event can never touch a newer session.

pub mod backchannel;
pub mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::unix_now;
use crate::session::{Session, SessionSealer, SessionStore, StoreError, StoreEvent};

/// What the provider told us about one user, sealed in the store under their keyed hash.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevocationRecord {
    /// Licenses revoked, each with the time of the revocation (seconds).
    #[serde(default)]
    pub revoked: Vec<(String, u64)>,
    /// Suspended, deleted or deactivated at this time (seconds); lifted by reactivation.
    #[serde(default)]
    pub suspended_at: Option<u64>,
    /// The provider's timestamp (milliseconds) of the latest suspension or reactivation applied:
    /// status events are ordered by the provider's own clock (older ones are ignored), never by
    /// ours.
    #[serde(default)]
    pub status_at: u64,
    /// Per application, the provider's timestamp (milliseconds) of the latest license event
    /// applied.
    #[serde(default)]
    pub license_at: Vec<(String, u64)>,
    /// The user's identity changed at this time: sessions refresh it on their next request.
    #[serde(default)]
    pub stale_since: Option<u64>,
    /// An operator put the user's bearer tokens on the deny-list until this time (seconds).
    #[serde(default)]
    pub denied_until: Option<u64>,
}

/// How a session fares against its user's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionVerdict {
    /// Usable (perhaps with licenses removed).
    Usable {
        /// Its identity must be refreshed before use.
        stale: bool,
    },
    /// The user was suspended after the session began.
    Ended,
}

impl RevocationRecord {
    /// Applies the record to a session: removes revoked licenses, ends suspended users' sessions.
    pub fn apply(&self, session: &mut Session) -> SessionVerdict {
        let created = session.created_at;
        if self.suspended_at.is_some_and(|t| created <= t) {
            return SessionVerdict::Ended;
        }
        session.identity.licenses.retain(|l| !self.revoked.iter().any(|(r, at)| r == l && created <= *at));
        let stale = self.stale_since.is_some_and(|t| session.tokens.access_issued_at < t);
        if stale && session.tokens.refresh_token.is_none() {
            // without a refresh token the identity can only be renewed by signing in again
            return SessionVerdict::Ended;
        }
        SessionVerdict::Usable { stale }
    }
}

/// The revocation records and the bearer deny-list, shared by every request.
pub struct Revocations {
    store: Arc<dyn SessionStore>,
    sealer: SessionSealer,
    /// Users on the deny-list by keyed hash, until (seconds); mirrored from the store.
    denied: RwLock<HashMap<[u8; 32], u64>>,
    /// False while the deny-list is empty: bearer requests then skip the user hash entirely.
    any_denied: AtomicBool,
    /// Records recently read, dropped when the store announces a change for the user.
    cache: moka::sync::Cache<[u8; 32], Option<Arc<RevocationRecord>>>,
    /// Bumped by every change announcement: a record read before one is not cached after it.
    generation: std::sync::atomic::AtomicU64,
    /// How long a record is kept after its last change.
    keep: Duration,
    /// How long a suspended user's bearer tokens are refused (the longest token lifetime).
    deny_for: Duration,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations").field("keep", &self.keep).finish_non_exhaustive()
    }
}

impl Revocations {
    /// Records kept in `store` for `keep` (at least the absolute session lifetime); suspended
    /// users' bearer tokens refused for `deny_for`.
    pub fn new(
        store: Arc<dyn SessionStore>,
        sealer: SessionSealer,
        keep: Duration,
        deny_for: Duration,
    ) -> Arc<Self> {
        let revocations = Arc::new(Self {
            store: store.clone(),
            sealer,
            denied: RwLock::new(HashMap::new()),
            any_denied: AtomicBool::new(false),
            generation: std::sync::atomic::AtomicU64::new(0),
            cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(30))
                .build(),
            keep,
            deny_for,
        });
        let weak = Arc::downgrade(&revocations);
        store.listen(Arc::new(move |event| {
            let Some(this) = weak.upgrade() else { return };
            this.generation.fetch_add(1, Ordering::SeqCst);
            match event {
                StoreEvent::User(user) => {
                    this.cache.invalidate(&user);
                    // the deny-list entry may have changed on another instance
                    if let Ok(handle) = tokio::runtime::Handle::try_current() {
                        handle.spawn(async move { this.reload_denied(&user).await });
                    }
                }
                StoreEvent::Reset => {
                    this.cache.invalidate_all();
                    if let Ok(handle) = tokio::runtime::Handle::try_current() {
                        handle.spawn(async move {
                            if let Err(e) = this.sync_denied().await {
                                tracing::warn!(error = %e, "cannot reload the deny-list");
                            }
                        });
                    }
                }
                StoreEvent::Session(_) => {}
            }
        }));
        revocations
    }

    /// The keyed hash a user is known by in the store.
    pub fn user_index(&self, sub: &str) -> [u8; 32] {
        self.sealer.user_index(sub)
    }

    /// Is this user (`sub` of the provider whose keys are qualified with `namespace`, see
    /// `identity::user_key`) on the deny-list? Costs one atomic load while nobody is (the key
    /// is built only past it).
    pub fn is_denied(&self, namespace: Option<&str>, sub: &str) -> bool {
        if !self.any_denied.load(Ordering::Relaxed) {
            return false;
        }
        let user = self.user_index(&crate::identity::user_key(namespace, sub));
        let denied = self.denied.read().unwrap_or_else(|e| e.into_inner());
        denied.get(&user).is_some_and(|until| *until > unix_now())
    }

    /// The record of `user`, if any (cached; the store announces changes).
    pub async fn record(&self, user: &[u8; 32]) -> Result<Option<Arc<RevocationRecord>>, StoreError> {
        if let Some(cached) = self.cache.get(user) {
            return Ok(cached);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let marks = match self.store.user_marks(user).await? {
            Some(sealed) => {
                match self.sealer.open_with::<RevocationRecord>("authgate user marks", user, &sealed) {
                    Ok(m) => Some(Arc::new(m)),
                    Err(_) => {
                        tracing::warn!("a revocation record cannot be opened (another session secret?)");
                        None
                    }
                }
            }
            None => None,
        };
        self.cache.insert(*user, marks.clone());
        if self.generation.load(Ordering::SeqCst) != generation {
            self.cache.invalidate(user);
        }
        Ok(marks)
    }

    /// Changes a user's record with `change` (under a store lock, so concurrent events for one
    /// user do not lose each other's changes). Returns whether anything changed.
    pub async fn update(
        &self,
        user: &[u8; 32],
        change: impl FnOnce(&mut RevocationRecord),
    ) -> Result<bool, StoreError> {
        let lock_key = crate::session::SessionKey(self.sealer.index("authgate marks lock", user));
        let mut token = None;
        for _ in 0..100 {
            token = self.store.lock(&lock_key, Duration::from_secs(10)).await?;
            if token.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let Some(token) = token else {
            return Err(StoreError::Unavailable("the user's revocation record stays locked".into()));
        };
        let result = self.update_locked(user, change).await;
        let _ = self.store.unlock(&lock_key, token).await;
        result
    }

    async fn update_locked(
        &self,
        user: &[u8; 32],
        change: impl FnOnce(&mut RevocationRecord),
    ) -> Result<bool, StoreError> {
        self.cache.invalidate(user);
        let old = self.record(user).await?.map(|m| (*m).clone()).unwrap_or_default();
        let mut marks = old.clone();
        change(&mut marks);
        if marks == old {
            return Ok(false);
        }
        let now = unix_now();
        // nothing older than the longest session is worth keeping
        let horizon = now.saturating_sub(self.keep.as_secs());
        marks.revoked.retain(|(_, at)| *at >= horizon);
        marks.license_at.retain(|(_, at)| *at >= horizon.saturating_mul(1000));
        marks.denied_until = marks.denied_until.filter(|until| *until > now);
        let denied_until = self.deny_end(&marks, now);
        let sealed = self
            .sealer
            .seal_with("authgate user marks", user, &marks)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        // a suspension's record must outlive its deny-list entry: a later event for the user
        // starts from it, and must not lift the suspension by forgetting it
        let ttl = match denied_until {
            Some(until) => self.keep.max(Duration::from_secs(until - now + 60)),
            None => self.keep,
        };
        self.store.save_user_marks(user, sealed, ttl, denied_until).await?;
        self.cache.invalidate(user);
        self.set_denied(user, denied_until);
        Ok(true)
    }

    fn set_denied(&self, user: &[u8; 32], until: Option<u64>) {
        let mut denied = self.denied.write().unwrap_or_else(|e| e.into_inner());
        let now = unix_now();
        denied.retain(|_, u| *u > now);
        match until {
            Some(until) => denied.insert(*user, until),
            None => denied.remove(user),
        };
        self.any_denied.store(!denied.is_empty(), Ordering::Relaxed);
    }

    /// Until when a user with record `marks` is on the deny-list, if they are at `now`: the
    /// later of a suspension's (which lasts as long as any token issued before it) and an
    /// operator's entry.
    fn deny_end(&self, marks: &RevocationRecord, now: u64) -> Option<u64> {
        let suspension = marks.suspended_at.map(|at| at.saturating_add(self.deny_for.as_secs()));
        suspension.max(marks.denied_until).filter(|until| *until > now)
    }

    /// Puts a user's bearer tokens on the deny-list until `until` (seconds), on every instance
    /// sharing the store; returns whether that changed anything.
    pub async fn deny(&self, user: &[u8; 32], until: u64) -> Result<bool, StoreError> {
        self.update(user, |r| r.denied_until = Some(until)).await
    }

    /// Lifts an operator's deny-list entry. Returns when the user stays denied anyway (a
    /// provider's suspension), if they do.
    pub async fn lift(&self, user: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        self.update(user, |r| r.denied_until = None).await?;
        let marks = self.record(user).await?;
        Ok(marks.and_then(|m| self.deny_end(&m, unix_now())))
    }

    async fn reload_denied(&self, user: &[u8; 32]) {
        // announcements close together spawn one reload each, in no order: a reload that read
        // before a later change reads again, so the last word is the latest record's
        for _ in 0..5 {
            let generation = self.generation.load(Ordering::SeqCst);
            if !self.reload_denied_once(user).await {
                return;
            }
            if self.generation.load(Ordering::SeqCst) == generation {
                return;
            }
        }
    }

    /// One read of the user's record into the deny-list; false when it could not be read.
    async fn reload_denied_once(&self, user: &[u8; 32]) -> bool {
        match self.record(user).await {
            Ok(marks) => {
                let until = marks.and_then(|m| self.deny_end(&m, unix_now()));
                self.set_denied(user, until);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a user's revocation record");
                false
            }
        }
    }

    /// Loads the whole deny-list from the store (at start, and after a lost change channel).
    pub async fn sync_denied(&self) -> Result<(), StoreError> {
        let list = self.store.denied_users().await?;
        let mut denied = self.denied.write().unwrap_or_else(|e| e.into_inner());
        *denied = list.into_iter().collect();
        self.any_denied.store(!denied.is_empty(), Ordering::Relaxed);
        Ok(())
    }

    /// The session store.
    pub fn store(&self) -> &dyn SessionStore {
        self.store.as_ref()
    }

    /// The sealer (for keyed hashes of event ids and `sid`s).
    pub fn sealer(&self) -> &SessionSealer {
        &self.sealer
    }
}

/// Loads the deny-list at start and every minute (in case a change message was missed).
pub struct DenyListSync(pub Arc<Revocations>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for DenyListSync {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        loop {
            let wait = match self.0.sync_denied().await {
                Ok(()) => Duration::from_secs(60),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load the deny-list; retrying");
                    Duration::from_secs(2)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
