//! Browser sessions: the lookup on every request (with its cache and the revocation records),
//! sign-out and userinfo here; signing in (`sign_in`) and refreshing tokens (`refresh`) beside.
//! Each endpoint returns a `Reply`; the proxy only writes it.

mod client;
pub mod cookies;
mod login_budget;
pub mod operators;
mod pages;
mod refresh;
mod sign_in;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::clock::unix_now;
use crate::http_util::cookie_values;
use crate::identity::PreparedIdentity;
use crate::oidc::login::{self, LoginSettings};
use crate::random::random_token;
use crate::reply::Reply;
use crate::revocation::{Revocations, SessionVerdict};
use crate::session::{
    SealError, Session, SessionKey, SessionSealer, SessionStore, SessionTicket, StoreEvent, StoredSession,
};
pub use client::ProviderClient;
use cookies::CookieSettings;
pub use pages::userinfo;

/// Longest access-token lifetime believed from `expires_in`.
const MAX_TOKEN_LIFETIME: u64 = crate::identity::MAX_LIFETIME_SECS;

/// The sign-in machinery, shared by every request (it outlives config reloads).
pub struct BrowserAuth {
    /// One per provider, in `Config::provider_list` order: the first, and the others (so that
    /// there is always one).
    first: ProviderClient,
    rest: Vec<ProviderClient>,
    store: Arc<dyn SessionStore>,
    sealer: SessionSealer,
    /// The settings every provider shares (lifetimes, limits): the first provider's.
    settings: LoginSettings,
    cookies: CookieSettings,
    /// Recently opened sessions by their exact cookie value, so that a browser's requests do
    /// not each pay a store read and a decrypt. Entries live `SESSION_CACHE_TTL`: the store is
    /// still read that often (which also keeps the session from going idle), and sign-out,
    /// refreshes and revocations (here or, through the store, on any instance) remove it at once.
    opened: moka::sync::Cache<String, Arc<ActiveSession>>,
    /// The cookie each cached session was opened with, to drop it by its store key.
    opened_by_key: moka::sync::Cache<SessionKey, String>,
    /// Refresh the access token this long before it expires (at most half its lifetime).
    refresh_before: Duration,
    /// Refreshes under way in this process, one per session (single flight).
    inflight: Mutex<HashMap<SessionKey, Arc<tokio::sync::OnceCell<refresh::Outcome>>>>,
    /// Sessions whose refresh was deferred (no budget, 429, provider down) until then.
    deferred: moka::sync::Cache<SessionKey, Instant>,
    /// Bumped by every store change event: a session read before an event is not cached after it.
    generation: Arc<AtomicU64>,
    /// How long one refresher holds a session's store lock at most.
    lock_ttl: Duration,
    /// Revocation records applied to every session opened.
    revocations: Arc<Revocations>,
    /// Sign-ins this instance may still start (each keeps a login state in the store).
    login_budget: login_budget::LoginBudget,
    /// Itself, for refreshes that must finish even when the request that began them is gone.
    me: Weak<BrowserAuth>,
}

/// When sessions' tokens are refreshed.
#[derive(Debug, Clone, Copy)]
pub struct RefreshSettings {
    /// Refresh this long before the access token expires (at most half its lifetime).
    pub before: Duration,
    /// How long one refresher holds a session's store lock at most (past any provider call).
    pub lock_ttl: Duration,
}

/// How long an opened session is reused before the store is asked again.
const SESSION_CACHE_TTL: Duration = Duration::from_secs(5);

/// Bytes of opened sessions kept (by their tokens' and cookie's size, plus what every entry
/// holds besides): bounded in bytes, not entries, so that many users with Keycloak-sized tokens
/// cannot grow the process by hundreds of MiB (a session is read again from the store, and
/// decrypted, when it is not here).
const SESSION_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// What one opened session weighs in `SESSION_CACHE_BYTES`.
fn opened_weight(cookie: &str, active: &ActiveSession) -> u32 {
    let t = &active.session.tokens;
    let tokens = t.access_token.len() + t.refresh_token.as_ref().map_or(0, String::len) + t.id_token.len();
    // twice the tokens: their claims, parsed when a claim rule asks, and the identity and its
    // prepared header values grow with them; plus the entry, the signed assertion, the maps
    let bytes = cookie.len() + 2 * tokens + 4096;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl std::fmt::Debug for BrowserAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserAuth").field("cookies", &self.cookies).finish_non_exhaustive()
    }
}

/// The outcome of looking for a session cookie.
#[derive(Debug)]
pub enum SessionLookup {
    /// A live session.
    Found(Arc<ActiveSession>),
    /// No session cookie.
    Absent,
    /// A cookie that is garbage, tampered, unknown or expired: treat as anonymous and clear it.
    Invalid,
    /// The store could not be asked: neither signed in nor out (503, the cookie is kept).
    Unavailable,
}

/// A session in use by the current request.
#[derive(Debug)]
pub struct ActiveSession {
    /// Where it is stored.
    pub key: SessionKey,
    /// The decrypted session.
    pub session: Session,
    /// The stored version it was read at.
    pub version: u64,
    /// The keyed hash of its user.
    pub user: [u8; 32],
    /// Its user's identity changed at the provider: refresh before use.
    pub stale: bool,
    /// Its identity, prepared for forwarding once, when opened.
    pub prepared: PreparedIdentity,
    /// The provider it was signed in at (its index in `Config::provider_list`).
    pub provider: usize,
    /// Its tokens' claims, parsed when a route's claim rules first ask.
    claims: std::sync::OnceLock<Option<Arc<serde_json::Value>>>,
}

impl ActiveSession {
    /// A session opened at `version`.
    pub fn new(
        key: SessionKey,
        session: Session,
        version: u64,
        user: [u8; 32],
        stale: bool,
        provider: usize,
    ) -> Self {
        let prepared = PreparedIdentity::of(&session.identity);
        Self { key, session, version, user, stale, prepared, provider, claims: std::sync::OnceLock::new() }
    }

    /// The claims of the session's access token, with the id_token's for those it lacks (both
    /// came from the token endpoint, the id_token verified at sign-in), for claim rules.
    pub fn claims(&self) -> Option<Arc<serde_json::Value>> {
        self.claims
            .get_or_init(|| {
                let tokens = &self.session.tokens;
                let access = crate::oidc::login::access_token_claims(&tokens.access_token);
                let id = crate::oidc::login::access_token_claims(&tokens.id_token);
                let merged = match (access, id) {
                    (Some(serde_json::Value::Object(mut a)), Some(serde_json::Value::Object(i))) => {
                        for (k, v) in i {
                            a.entry(k).or_insert(v);
                        }
                        serde_json::Value::Object(a)
                    }
                    (Some(a @ serde_json::Value::Object(_)), _) => a,
                    (_, Some(i)) => i,
                    _ => return None,
                };
                Some(Arc::new(merged))
            })
            .clone()
    }
}

impl BrowserAuth {
    /// Sign-in at the providers of `first` and `rest`, keeping sessions in `store`.
    pub fn new(
        first: ProviderClient,
        rest: Vec<ProviderClient>,
        store: Arc<dyn SessionStore>,
        sealer: SessionSealer,
        cookies: CookieSettings,
        refresh: RefreshSettings,
        revocations: Arc<Revocations>,
    ) -> Arc<Self> {
        let opened: moka::sync::Cache<String, Arc<ActiveSession>> = moka::sync::Cache::builder()
            .max_capacity(SESSION_CACHE_BYTES)
            .weigher(|cookie: &String, active: &Arc<ActiveSession>| opened_weight(cookie, active))
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .time_to_live(SESSION_CACHE_TTL)
            .build();
        // at least as many as `opened` can hold (its entries weigh 4 KiB or more)
        let opened_by_key: moka::sync::Cache<SessionKey, String> = moka::sync::Cache::builder()
            .max_capacity(SESSION_CACHE_BYTES / 1024)
            .time_to_live(SESSION_CACHE_TTL)
            .build();
        let (cached, by_key) = (opened.clone(), opened_by_key.clone());
        let generation = Arc::new(AtomicU64::new(0));
        let bump = generation.clone();
        store.listen(Arc::new(move |event| {
            bump.fetch_add(1, Ordering::SeqCst);
            match event {
                StoreEvent::Session(key) => {
                    if let Some(cookie) = by_key.remove(&key) {
                        cached.invalidate(&cookie);
                    }
                }
                // rare (webhooks, back-channel logout): a scan is fine
                StoreEvent::User(user) => {
                    for (cookie, active) in cached.iter() {
                        if active.user == user {
                            cached.invalidate(cookie.as_str());
                        }
                    }
                }
                StoreEvent::Reset => cached.invalidate_all(),
            }
        }));
        let deferred =
            moka::sync::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(600)).build();
        let settings = first.settings.clone();
        let login_budget = login_budget::LoginBudget::new(settings.max_pending_logins, settings.login_ttl);
        Arc::new_cyclic(|me| Self {
            first,
            rest,
            store,
            sealer,
            login_budget,
            settings,
            cookies,
            opened,
            opened_by_key,
            refresh_before: refresh.before,
            inflight: Mutex::new(HashMap::new()),
            deferred,
            generation,
            lock_ttl: refresh.lock_ttl,
            revocations,
            me: me.clone(),
        })
    }

    /// The provider clients, in `Config::provider_list` order.
    pub fn clients(&self) -> impl Iterator<Item = &ProviderClient> {
        std::iter::once(&self.first).chain(&self.rest)
    }

    /// How many providers there are.
    pub fn provider_count(&self) -> usize {
        1 + self.rest.len()
    }

    /// The client of the provider at `index` (indexes come from `provider_index` and the
    /// validated config; the first for any other).
    fn client(&self, index: usize) -> &ProviderClient {
        match index {
            0 => &self.first,
            i => self.rest.get(i - 1).unwrap_or(&self.first),
        }
    }

    /// The index of the provider named `name`; a session or login stored before there were
    /// several providers names none and was `[provider]`'s.
    fn provider_index(&self, name: &str) -> Option<usize> {
        let name = if name.is_empty() { crate::config::DEFAULT_PROVIDER } else { name };
        self.clients().position(|c| c.name() == name)
    }

    /// The revocation key of a user of the provider at `index` (see `identity::user_key`).
    fn user_key<'a>(&self, index: usize, sub: &'a str) -> std::borrow::Cow<'a, str> {
        crate::identity::user_key(self.client(index).namespace(), sub)
    }

    /// The revocation records and deny-list.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// Keeps `active` as the session `cookie` opens, for `SESSION_CACHE_TTL`, unless a store
    /// change was announced since `generation` (the copy may predate it).
    fn remember_opened(&self, cookie: &str, active: &Arc<ActiveSession>, generation: u64) {
        self.opened_by_key.insert(active.key, cookie.to_owned());
        self.opened.insert(cookie.to_owned(), active.clone());
        if self.generation.load(Ordering::SeqCst) != generation {
            self.opened.invalidate(cookie);
        }
    }

    /// The cookie settings.
    pub fn cookies(&self) -> &CookieSettings {
        &self.cookies
    }

    /// The session store.
    pub fn store(&self) -> &dyn SessionStore {
        self.store.as_ref()
    }

    /// The session a request's cookies name, if any, its tokens refreshed when due.
    pub async fn lookup(&self, cookie_header: Option<&str>) -> SessionLookup {
        self.find(cookie_header, true).await
    }

    /// The session a request's cookies name, as it is (for sign-out and userinfo).
    pub async fn peek(&self, cookie_header: Option<&str>) -> SessionLookup {
        self.find(cookie_header, false).await
    }

    async fn find(&self, cookie_header: Option<&str>, refresh: bool) -> SessionLookup {
        let mut seen = false;
        let mut found: Option<(&str, Arc<ActiveSession>)> = None;
        let now = unix_now();
        for value in cookie_values(cookie_header, &self.cookies.session) {
            seen = true;
            // keyed by the whole cookie (id and key): a forged key never matches an entry
            let active = match self.opened.get(value).filter(|a| a.session.expires_at > now) {
                Some(active) => active,
                None => {
                    let Some(ticket) = SessionTicket::decode(value) else { continue };
                    let generation = self.generation.load(Ordering::SeqCst);
                    match self.open(&ticket).await {
                        Ok(Some(active)) => {
                            let active = Arc::new(active);
                            self.remember_opened(value, &active, generation);
                            active
                        }
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "session store unavailable");
                            return SessionLookup::Unavailable;
                        }
                    }
                }
            };
            match &found {
                None => found = Some((value, active)),
                Some((_, first)) if first.key == active.key => {}
                // cookie tossing (a sibling host set a second cookie of our name over plain
                // http): which one is the user's cannot be told, so neither is used
                Some(_) => {
                    tracing::info!("two session cookies open different sessions; neither is used");
                    return SessionLookup::Invalid;
                }
            }
        }
        let lookup = match found {
            Some((value, active)) if refresh && self.due_for_refresh(&active, now) => {
                self.refresh(value, active).await
            }
            Some((_, active)) => SessionLookup::Found(active),
            None if seen => SessionLookup::Invalid,
            None => SessionLookup::Absent,
        };
        // only requests that would use the session: sign-out and userinfo (`peek`) must still
        // find it, or a long-idle user could not sign out at all
        match lookup {
            SessionLookup::Found(active) if refresh && self.too_stale(&active, now) => {
                tracing::info!("the session's token expired longer than session.max_stale ago; signed out");
                SessionLookup::Invalid
            }
            other => other,
        }
    }

    /// Has the session's access token been expired for longer than `max_stale`, its refresh
    /// deferred all along (the provider busy or down)? Such a session is no longer admitted: it
    /// may stand for a user the provider has since disabled. Sessions without a refresh token
    /// cannot be refreshed at all and are judged by their own lifetimes only.
    fn too_stale(&self, active: &ActiveSession, now: u64) -> bool {
        let tokens = &active.session.tokens;
        tokens.refresh_token.is_some()
            && now > tokens.access_expires_at.saturating_add(self.settings.max_stale.as_secs())
    }

    /// Reads and decrypts the session `ticket` names; `None` when it is unknown, expired or
    /// does not open with this ticket's key.
    async fn open(
        &self,
        ticket: &SessionTicket,
    ) -> Result<Option<ActiveSession>, crate::session::StoreError> {
        let key = self.sealer.session_key(ticket);
        let Some(stored) = self.store.load(&key).await? else { return Ok(None) };
        let mut session = match self.sealer.open_session::<Session>(ticket, &stored.sealed) {
            Ok(session) if session.expires_at > unix_now() => session,
            _ => return Ok(None),
        };
        // a session of a provider no longer configured is no session
        let Some(provider) = self.provider_index(&session.provider) else { return Ok(None) };
        let stale = match self.apply_revocations(&stored.user, &mut session).await? {
            SessionVerdict::Usable { stale } => stale,
            SessionVerdict::Ended => return Ok(None),
        };
        Ok(Some(ActiveSession::new(key, session, stored.version, stored.user, stale, provider)))
    }

    /// Applies the user's revocation record (revoked licenses, suspension, identity changes).
    async fn apply_revocations(
        &self,
        user: &[u8; 32],
        session: &mut Session,
    ) -> Result<SessionVerdict, crate::session::StoreError> {
        Ok(match self.revocations.record(user).await? {
            Some(marks) => marks.apply(session),
            None => SessionVerdict::Usable { stale: false },
        })
    }

    /// What the store keeps of `session` (sealed with `ticket`) at `version`.
    fn stored(
        &self,
        ticket: &SessionTicket,
        session: &Session,
        version: u64,
    ) -> Result<StoredSession, SealError> {
        let provider = self.provider_index(&session.provider).unwrap_or(0);
        Ok(StoredSession {
            sealed: self.sealer.seal_session(ticket, session)?,
            version,
            user: self.user_index(&self.user_key(provider, &session.identity.subject)),
            expires_at: session.expires_at,
            created_at: session.created_at,
            sid: session.sid.as_deref().map(|sid| self.sid_index(&self.user_key(provider, sid))),
            last_used: crate::session::LastUsed::at(unix_now()),
        })
    }

    /// The keyed hash a provider session id (`sid`) is indexed by.
    pub fn sid_index(&self, sid: &str) -> [u8; 32] {
        self.sealer.sid_index(sid)
    }

    /// Where a pending login is stored: a keyed hash of its `state`.
    fn login_key(&self, state: &str) -> [u8; 32] {
        self.sealer.index("authgate login state", state.as_bytes())
    }

    /// What a login remembers of the browser that started it: a keyed hash of its binding cookie.
    fn binding_hash(&self, binding: &str) -> [u8; 32] {
        self.sealer.index("authgate login browser", binding.as_bytes())
    }

    /// The keyed hash a user's sessions are indexed by.
    pub fn user_index(&self, sub: &str) -> [u8; 32] {
        self.sealer.user_index(sub)
    }

    /// Signs out: ends the session, revokes its refresh token (in the background), and sends
    /// the browser to the provider's end-session endpoint.
    pub async fn sign_out(&self, origin: &str, cookie_header: Option<&str>) -> Reply {
        let active = match self.peek(cookie_header).await {
            SessionLookup::Found(a) => Some(a),
            _ => None,
        };
        for value in cookie_values(cookie_header, &self.cookies.session) {
            self.opened.invalidate(value);
        }
        if let Some(active) = &active {
            self.opened_by_key.invalidate(&active.key);
        }
        // the provider the session was signed in at (no session: the first's post-logout page)
        let client = self.client(active.as_ref().map_or(0, |a| a.provider));
        let post_logout =
            client.settings.post_logout_redirect_uri.clone().unwrap_or_else(|| format!("{origin}/"));
        let discovery = client.verifier.provider().discovery();
        let mut location = post_logout.clone();
        if let Some(active) = active {
            if let Err(e) = self.store.delete(&active.key).await {
                tracing::warn!(error = %e, "cannot delete the session");
            }
            let tokens = &active.session.tokens;
            if let (Some(refresh), Some(endpoint)) =
                (tokens.refresh_token.clone(), discovery.as_ref().and_then(|d| d.revocation_endpoint()))
            {
                self.revoke_in_background(client, endpoint.to_owned(), refresh);
            }
            if let Some(end_session) = discovery.as_ref().and_then(|d| d.end_session_endpoint()) {
                let state = random_token(16).unwrap_or_default();
                location = login::end_session_url(
                    end_session,
                    &tokens.id_token,
                    &client.settings,
                    &post_logout,
                    state,
                );
            }
            tracing::info!("signed out");
        }
        let mut reply = Reply::redirect(&location);
        reply.header(http::header::SET_COOKIE, self.cookies.clear_session());
        reply
    }

    /// Revokes a refresh token (RFC 7009) off the request path. Not through `openidconnect`: its
    /// `revoke_token` refuses an `http:` endpoint, which a provider on a private network may have.
    fn revoke_in_background(&self, client: &ProviderClient, endpoint: String, refresh_token: String) {
        let fetcher = client.verifier.provider().fetcher().clone();
        let client_id = client.settings.client_id.clone();
        let secret = client.settings.client_secret.clone();
        tokio::spawn(async move {
            let form = [("token", refresh_token.as_str()), ("token_type_hint", "refresh_token")];
            let result = match &secret {
                Some(s) => fetcher.post_form(&endpoint, &client_id, s.expose(), &form).await,
                None => {
                    let mut form = form.to_vec();
                    form.push(("client_id", &client_id));
                    fetcher.post_form_anonymous(&endpoint, &form).await
                }
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "refresh-token revocation failed");
            }
        });
    }
}
