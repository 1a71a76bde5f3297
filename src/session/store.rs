//! Session stores: one trait, the embedded memory store here and Redis (`redis.rs`) behind it.
//! Stores see only ciphertext, keyed hashes and expiry times.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::SessionKey;
use crate::clock::unix_now;

/// A session as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// AES-256-GCM ciphertext of the session.
    pub sealed: Vec<u8>,
    /// Bumped on every write; writes name the version they replace.
    pub version: u64,
    /// Keyed hash of the user's `sub`, to end all of a user's sessions.
    pub user: [u8; 32],
    /// Absolute end of the session, seconds since the epoch.
    pub expires_at: u64,
    /// Sign-in time, seconds since the epoch (revocation events name a time: only sessions
    /// created before it are affected).
    pub created_at: u64,
    /// Keyed hash of the provider's session id (`sid`), for back-channel logout.
    pub sid: Option<[u8; 32]>,
    /// When the store last read or wrote it (set by the store).
    pub last_used: LastUsed,
}

/// Seconds since the epoch of a session's last use: an atomic, because the memory store
/// updates it on a session it shares (`Arc`) with readers.
#[derive(Debug, Default)]
pub struct LastUsed(std::sync::atomic::AtomicU64);

impl LastUsed {
    /// Used at `at` (seconds).
    pub fn at(at: u64) -> Self {
        Self(std::sync::atomic::AtomicU64::new(at))
    }

    /// The time, seconds since the epoch (0: never recorded).
    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set(&self, at: u64) {
        self.0.store(at, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Clone for LastUsed {
    fn clone(&self) -> Self {
        Self::at(self.get())
    }
}

impl PartialEq for LastUsed {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for LastUsed {}

/// What an operator may see of one session: times, never its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    /// Its store key.
    pub key: SessionKey,
    /// Sign-in time (seconds since the epoch).
    pub created_at: u64,
    /// Last read or write by any instance (seconds; within the instances' 5 s reuse of a read).
    pub last_used: u64,
    /// Absolute end (seconds).
    pub expires_at: u64,
}

/// A change to stored sessions that instances holding decrypted copies must drop them for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreEvent {
    /// One session was rewritten (refresh, identity change) or ended.
    Session(SessionKey),
    /// Every session of a user (by the keyed hash of `sub`) ended.
    User([u8; 32]),
    /// Changes may have been missed (e.g. the store connection was lost): drop every copy.
    Reset,
}

/// Called with every `StoreEvent`, from this instance or (Redis) any other.
pub type StoreListener = Arc<dyn Fn(StoreEvent) + Send + Sync>;

/// The listeners of a store.
#[derive(Default, Clone)]
pub struct Listeners(Arc<RwLock<Vec<StoreListener>>>);

impl Listeners {
    /// Adds one.
    pub fn add(&self, listener: StoreListener) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).push(listener);
    }

    /// Tells every listener.
    pub fn tell(&self, event: StoreEvent) {
        for listener in self.0.read().unwrap_or_else(|e| e.into_inner()).iter() {
            listener(event);
        }
    }
}

/// A store failure (the memory store has none; Redis has).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or answered an error.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
}

/// Where sessions and pending logins live.
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// The session under `key`, if it exists and has not expired (reading refreshes idleness).
    async fn load(&self, key: &SessionKey) -> Result<Option<Arc<StoredSession>>, StoreError>;

    /// Writes `session` if the stored version is `expected` (`None`: must not exist yet).
    /// Returns whether it was written.
    async fn save(
        &self,
        key: &SessionKey,
        session: StoredSession,
        expected: Option<u64>,
    ) -> Result<bool, StoreError>;

    /// Ends one session.
    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError>;

    /// The user's live sessions (for session administration; a scan in the memory store).
    async fn user_sessions(&self, user: &[u8; 32]) -> Result<Vec<SessionSummary>, StoreError>;

    /// Ends every session of a user created before `before` (seconds); returns how many.
    async fn delete_user(&self, user: &[u8; 32], before: u64) -> Result<usize, StoreError>;

    /// Like `delete_user`, for the user's sessions stored without a provider session id only.
    async fn delete_user_without_sid(&self, user: &[u8; 32], before: u64) -> Result<usize, StoreError>;

    /// Ends every session of one provider session (keyed hash of its `sid`); returns how many.
    async fn delete_sid(&self, sid: &[u8; 32]) -> Result<usize, StoreError>;

    /// The sealed revocation record of a user, if any.
    async fn user_marks(&self, user: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Replaces a user's sealed revocation record for `ttl`, and keeps the user on the deny-list
    /// until `denied_until` (seconds) when given, else takes them off it. Announces the change.
    async fn save_user_marks(
        &self,
        user: &[u8; 32],
        sealed: Vec<u8>,
        ttl: Duration,
        denied_until: Option<u64>,
    ) -> Result<(), StoreError>;

    /// Users on the deny-list, with the time (seconds) each stays there.
    async fn denied_users(&self) -> Result<Vec<([u8; 32], u64)>, StoreError>;

    /// Keeps a pending login for the store's login lifetime.
    async fn put_login(&self, key: [u8; 32], sealed: Vec<u8>) -> Result<(), StoreError>;

    /// Reads a pending login without using it up (its owner is checked before it is taken).
    async fn peek_login(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Takes a pending login (single use: a second take finds nothing).
    async fn take_login(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Takes the lock named `key` for at most `ttl` (across instances when the store is shared);
    /// returns its token, or `None` when someone else holds it.
    async fn lock(&self, key: &SessionKey, ttl: Duration) -> Result<Option<u64>, StoreError>;

    /// Releases a lock taken with `token` (a lock that expired and was retaken is left alone).
    async fn unlock(&self, key: &SessionKey, token: u64) -> Result<(), StoreError>;

    /// Records `key` for `ttl`; returns false when it was already recorded (de-duplication).
    async fn remember(&self, key: &[u8; 32], ttl: Duration) -> Result<bool, StoreError>;

    /// Drops a key recorded by `remember` (its processing failed and may be retried).
    async fn forget(&self, key: &[u8; 32]) -> Result<(), StoreError>;

    /// Registers a listener told about every `StoreEvent`.
    fn listen(&self, listener: StoreListener);

    /// Checks that the store answers (for readiness).
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// How many sessions the store holds, when it can tell cheaply.
    fn session_count(&self) -> Option<u64> {
        None
    }
}

/// Bytes of pending-login state kept at most (a login is about 400 bytes: ~160 000 logins).
const MAX_LOGIN_BYTES: u64 = 64 * 1024 * 1024;

/// Sessions in this process: bounded, with idle and absolute lifetimes enforced on every read.
pub struct MemoryStore {
    sessions: moka::sync::Cache<SessionKey, Arc<StoredSession>>,
    logins: moka::sync::Cache<[u8; 32], Arc<Vec<u8>>>,
    locks: Mutex<HashMap<SessionKey, (u64, Instant)>>,
    /// Sealed revocation records by user, each until its `Instant`.
    marks: moka::sync::Cache<[u8; 32], (Arc<Vec<u8>>, Instant)>,
    denied: Mutex<HashMap<[u8; 32], u64>>,
    /// De-duplication keys and when each is forgotten (`Instant`).
    seen: moka::sync::Cache<[u8; 32], Instant>,
    listeners: Listeners,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("sessions", &self.sessions.entry_count()).finish_non_exhaustive()
    }
}

/// A session expires at its absolute end, or after `idle` without a read.
struct SessionExpiry {
    idle: Duration,
}

impl SessionExpiry {
    fn remaining(&self, s: &StoredSession) -> Duration {
        Duration::from_secs(s.expires_at.saturating_sub(unix_now())).min(self.idle)
    }
}

impl moka::Expiry<SessionKey, Arc<StoredSession>> for SessionExpiry {
    fn expire_after_create(&self, _k: &SessionKey, v: &Arc<StoredSession>, _at: Instant) -> Option<Duration> {
        Some(self.remaining(v))
    }

    fn expire_after_read(
        &self,
        _k: &SessionKey,
        v: &Arc<StoredSession>,
        _at: Instant,
        _left: Option<Duration>,
        _modified: Instant,
    ) -> Option<Duration> {
        Some(self.remaining(v))
    }

    fn expire_after_update(
        &self,
        _k: &SessionKey,
        v: &Arc<StoredSession>,
        _at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.remaining(v))
    }
}

impl MemoryStore {
    /// Ends the user's sessions created before `before` (only those without a provider session
    /// id when `unbound_only`) and announces it.
    fn delete_user_sessions(&self, user: &[u8; 32], before: u64, unbound_only: bool) -> usize {
        // a scan: user-wide logout is rare (webhooks, back-channel logout), reads are not
        let doomed: Vec<SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, s)| &s.user == user && s.created_at < before && (!unbound_only || s.sid.is_none()))
            .map(|(k, _)| *k)
            .collect();
        for k in &doomed {
            self.sessions.invalidate(k);
        }
        self.tell(StoreEvent::User(*user));
        doomed.len()
    }

    /// A store of at most `max_sessions` sessions, each ending after `idle` without use.
    pub fn new(max_sessions: u64, idle: Duration, login_ttl: Duration) -> Self {
        Self {
            // LRU, not moka's default TinyLFU admission: a new session (or login) must always be
            // kept, or a flood of one-off entries would make real users' entries vanish
            sessions: moka::sync::Cache::builder()
                .max_capacity(max_sessions)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .expire_after(SessionExpiry { idle })
                .build(),
            // pending logins are bounded in bytes: a client cannot pile them up without limit
            logins: moka::sync::Cache::builder()
                .max_capacity(MAX_LOGIN_BYTES)
                .weigher(|_k: &[u8; 32], v: &Arc<Vec<u8>>| u32::try_from(v.len() + 64).unwrap_or(u32::MAX))
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .time_to_live(login_ttl)
                .build(),
            locks: Mutex::new(HashMap::new()),
            marks: moka::sync::Cache::builder().max_capacity(1_000_000).build(),
            denied: Mutex::new(HashMap::new()),
            seen: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(48 * 3600))
                .build(),
            listeners: Listeners::default(),
        }
    }

    fn tell(&self, event: StoreEvent) {
        self.listeners.tell(event);
    }

    /// Sessions currently held (approximate, for metrics).
    pub fn len(&self) -> u64 {
        self.sessions.entry_count()
    }

    /// True when no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<Arc<StoredSession>>, StoreError> {
        let now = unix_now();
        let found = self.sessions.get(key).filter(|s| s.expires_at > now);
        if let Some(s) = &found {
            s.last_used.set(now);
        }
        Ok(found)
    }

    async fn save(
        &self,
        key: &SessionKey,
        session: StoredSession,
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        use moka::ops::compute::Op;
        let mut written = false;
        session.last_used.set(unix_now());
        self.sessions.entry(*key).and_compute_with(|current| {
            let current_version = current.map(|e| e.into_value().version);
            if current_version == expected {
                written = true;
                Op::Put(Arc::new(session))
            } else {
                Op::Nop
            }
        });
        if written && expected.is_some() {
            self.tell(StoreEvent::Session(*key));
        }
        Ok(written)
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.sessions.invalidate(key);
        self.tell(StoreEvent::Session(*key));
        Ok(())
    }

    async fn user_sessions(&self, user: &[u8; 32]) -> Result<Vec<SessionSummary>, StoreError> {
        // a scan, as for user-wide logout: rare, and only on the admin listener
        let now = unix_now();
        Ok(self
            .sessions
            .iter()
            .filter(|(_, s)| &s.user == user && s.expires_at > now)
            .map(|(k, s)| SessionSummary {
                key: *k,
                created_at: s.created_at,
                last_used: s.last_used.get(),
                expires_at: s.expires_at,
            })
            .collect())
    }

    async fn delete_user(&self, user: &[u8; 32], before: u64) -> Result<usize, StoreError> {
        Ok(self.delete_user_sessions(user, before, false))
    }

    async fn delete_user_without_sid(&self, user: &[u8; 32], before: u64) -> Result<usize, StoreError> {
        Ok(self.delete_user_sessions(user, before, true))
    }

    async fn delete_sid(&self, sid: &[u8; 32]) -> Result<usize, StoreError> {
        let doomed: Vec<SessionKey> =
            self.sessions.iter().filter(|(_, s)| s.sid.as_ref() == Some(sid)).map(|(k, _)| *k).collect();
        for k in &doomed {
            self.sessions.invalidate(k);
            self.tell(StoreEvent::Session(*k));
        }
        Ok(doomed.len())
    }

    async fn user_marks(&self, user: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.marks.get(user).filter(|(_, until)| *until > Instant::now()).map(|(m, _)| (*m).clone()))
    }

    async fn save_user_marks(
        &self,
        user: &[u8; 32],
        sealed: Vec<u8>,
        ttl: Duration,
        denied_until: Option<u64>,
    ) -> Result<(), StoreError> {
        self.marks.insert(*user, (Arc::new(sealed), Instant::now() + ttl));
        {
            let mut denied = self.denied.lock().unwrap_or_else(|e| e.into_inner());
            let now = unix_now();
            denied.retain(|_, until| *until > now);
            match denied_until {
                Some(until) => denied.insert(*user, until),
                None => denied.remove(user),
            };
        }
        self.tell(StoreEvent::User(*user));
        Ok(())
    }

    async fn denied_users(&self) -> Result<Vec<([u8; 32], u64)>, StoreError> {
        let now = unix_now();
        let denied = self.denied.lock().unwrap_or_else(|e| e.into_inner());
        Ok(denied.iter().filter(|(_, until)| **until > now).map(|(u, until)| (*u, *until)).collect())
    }

    async fn put_login(&self, key: [u8; 32], sealed: Vec<u8>) -> Result<(), StoreError> {
        self.logins.insert(key, Arc::new(sealed));
        Ok(())
    }

    async fn peek_login(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.logins.get(key).map(|v| (*v).clone()))
    }

    async fn take_login(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.logins.remove(key).map(|v| (*v).clone()))
    }

    async fn lock(&self, key: &SessionKey, ttl: Duration) -> Result<Option<u64>, StoreError> {
        let now = Instant::now();
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.retain(|_, (_, until)| *until > now);
        if locks.contains_key(key) {
            return Ok(None);
        }
        let token = u64::from_le_bytes(
            crate::random::random_bytes::<8>().map_err(|e| StoreError::Unavailable(e.to_string()))?,
        );
        locks.insert(*key, (token, now + ttl));
        Ok(Some(token))
    }

    async fn unlock(&self, key: &SessionKey, token: u64) -> Result<(), StoreError> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks.get(key).is_some_and(|(t, _)| *t == token) {
            locks.remove(key);
        }
        Ok(())
    }

    async fn remember(&self, key: &[u8; 32], ttl: Duration) -> Result<bool, StoreError> {
        use moka::ops::compute::Op;
        let now = Instant::now();
        let mut first = false;
        self.seen.entry(*key).and_compute_with(|current| match current {
            Some(e) if *e.value() > now => Op::Nop,
            _ => {
                first = true;
                Op::Put(now + ttl)
            }
        });
        Ok(first)
    }

    async fn forget(&self, key: &[u8; 32]) -> Result<(), StoreError> {
        self.seen.invalidate(key);
        Ok(())
    }

    fn listen(&self, listener: StoreListener) {
        self.listeners.add(listener);
    }

    fn session_count(&self) -> Option<u64> {
        Some(self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(version: u64, user: u8, expires_in: u64) -> StoredSession {
        StoredSession {
            sealed: vec![1, 2, 3],
            version,
            user: [user; 32],
            expires_at: unix_now() + expires_in,
            created_at: unix_now() - 10,
            sid: Some([user; 32]),
            last_used: LastUsed::default(),
        }
    }

    #[tokio::test]
    async fn writes_are_versioned() {
        let store = MemoryStore::new(100, Duration::from_secs(60), Duration::from_secs(600));
        let k = SessionKey([7; 32]);
        assert!(store.save(&k, stored(1, 1, 60), None).await.unwrap());
        assert!(!store.save(&k, stored(1, 1, 60), None).await.unwrap(), "exists already");
        assert!(!store.save(&k, stored(2, 1, 60), Some(5)).await.unwrap(), "stale version");
        assert!(store.save(&k, stored(2, 1, 60), Some(1)).await.unwrap());
        assert_eq!(store.load(&k).await.unwrap().unwrap().version, 2);
        store.delete(&k).await.unwrap();
        assert!(store.load(&k).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn absolute_and_idle_lifetimes_end_sessions() {
        let store = MemoryStore::new(100, Duration::from_millis(300), Duration::from_secs(600));
        let (a, b) = (SessionKey([1; 32]), SessionKey([2; 32]));
        store.save(&a, stored(1, 1, 0), None).await.unwrap();
        assert!(store.load(&a).await.unwrap().is_none(), "past its absolute end");
        store.save(&b, stored(1, 1, 60), None).await.unwrap();
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert!(store.load(&b).await.unwrap().is_some(), "kept alive by use");
        }
        tokio::time::sleep(Duration::from_millis(450)).await;
        store.sessions.run_pending_tasks();
        assert!(store.load(&b).await.unwrap().is_none(), "idle too long");
    }

    #[tokio::test]
    async fn users_can_be_signed_out_everywhere_and_logins_are_single_use() {
        let store = MemoryStore::new(100, Duration::from_secs(60), Duration::from_secs(600));
        for i in 0..3u8 {
            store.save(&SessionKey([i; 32]), stored(1, 9, 60), None).await.unwrap();
        }
        store.save(&SessionKey([50; 32]), stored(1, 8, 60), None).await.unwrap();
        assert_eq!(store.delete_user(&[9; 32], unix_now() - 20).await.unwrap(), 0, "all newer than that");
        assert_eq!(store.delete_user(&[9; 32], unix_now()).await.unwrap(), 3);
        // an operator's "everywhere" includes a session begun this very second
        let fresh = StoredSession { created_at: unix_now(), ..stored(1, 9, 60) };
        store.save(&SessionKey([40; 32]), fresh, None).await.unwrap();
        assert_eq!(store.user_sessions(&[9; 32]).await.unwrap().len(), 1);
        assert_eq!(store.delete_user(&[9; 32], u64::MAX).await.unwrap(), 1);
        assert!(store.load(&SessionKey([50; 32])).await.unwrap().is_some());
        // only the sessions stored without a provider session id
        store.save(&SessionKey([60; 32]), stored(1, 7, 60), None).await.unwrap();
        store
            .save(&SessionKey([61; 32]), StoredSession { sid: None, ..stored(1, 7, 60) }, None)
            .await
            .unwrap();
        assert_eq!(store.delete_user_without_sid(&[7; 32], unix_now()).await.unwrap(), 1);
        assert!(store.load(&SessionKey([60; 32])).await.unwrap().is_some(), "the one with a sid stays");
        assert!(store.load(&SessionKey([61; 32])).await.unwrap().is_none());

        store.put_login([3; 32], vec![9]).await.unwrap();
        assert_eq!(store.peek_login(&[3; 32]).await.unwrap(), Some(vec![9]));
        assert_eq!(store.peek_login(&[3; 32]).await.unwrap(), Some(vec![9]), "a peek uses nothing up");
        assert_eq!(store.take_login(&[3; 32]).await.unwrap(), Some(vec![9]));
        assert_eq!(store.take_login(&[3; 32]).await.unwrap(), None);
    }
}
