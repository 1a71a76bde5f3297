//! The Redis session store: shared by every instance, surviving restarts. Redis holds what the
//! memory store holds (ciphertext, keyed hashes, expiry times) and enforces the lifetimes
//! itself with key TTLs. Writes are compare-and-set in Lua so that no concurrent update is
//! lost; changes are published so that every instance drops its decrypted copies.
//!
//! Keys (under the configured prefix): `s:<hex>` a session (hash: v version, u user, d sealed,
//! e absolute end, c creation, i provider session), `u:<hex>` the set of a user's session keys,
//! `i:<hex>` the set of a provider session's keys, `m:<hex>` a user's sealed revocation record,
//! `denied` the deny-list (sorted set of users by end time), `l:<hex>` a pending login,
//! `k:<hex>` a lock, `d:<hex>` a de-duplication mark; the channel `events` carries `s<hex>` and
//! `u<hex>` messages. Lua reaches keys it is not given as `KEYS`, so a Redis Cluster
//! is not supported (a single primary, with replicas or Sentinel in front, is).
//!
//! With Sentinel the primary is asked of the sentinels at start, every second, and at once
//! after a failed command; when it moves, commands go to the new one and the change channel
//! resubscribes there (dropping every cached copy, as after any lost subscription).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};

use super::SessionKey;
use super::redis_scripts::Scripts;
use super::store::{
    LastUsed, Listeners, SessionStore, SessionSummary, StoreError, StoreEvent, StoreListener, StoredSession,
};
use crate::clock::unix_now;
use crate::codec::{decode_hex32, hex_lower};
use crate::config::{Secret, SentinelUrl};
use crate::random::random_bytes;

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL (may hold a password); unused with `sentinel`.
    pub url: Secret,
    /// Reach the primary through Sentinel instead.
    pub sentinel: Option<SentinelSettings>,
    /// Session writes wait until this many replicas have them (0: no waiting).
    pub wait_replicas: u32,
    /// PEM CA certificate(s) a `rediss://` server must chain to, instead of the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate chain and key, for a server that asks for one.
    pub client_pem: Option<(Vec<u8>, Secret)>,
    /// Prefix of every key and of the channel.
    pub prefix: String,
    /// Connect and command time limit.
    pub timeout: Duration,
    /// Connections to keep.
    pub connections: usize,
    /// A session unused this long ends.
    pub idle: Duration,
    /// How long a pending login is kept.
    pub login_ttl: Duration,
}

/// The sentinels to ask for the primary.
#[derive(Debug, Clone)]
pub struct SentinelSettings {
    /// Sentinels, primary name, the data nodes' credentials and database.
    pub url: SentinelUrl,
    /// The sentinels' own user, if any.
    pub username: Option<String>,
    /// The sentinels' own password, if any.
    pub password: Option<Secret>,
}

/// The primary commands go to: its client and pooled connections.
struct Primary {
    client: redis::Client,
    connections: Vec<ConnectionManager>,
}

/// What the store's tasks share: the current primary (none while Sentinel names none) and how
/// to connect to one.
struct Shared {
    primary: ArcSwapOption<Primary>,
    /// Bumped whenever the primary changes: the change channel follows it.
    moves: tokio::sync::watch::Sender<u64>,
    /// Wakes the Sentinel watcher early (a command failed: perhaps a failover).
    recheck: tokio::sync::Notify,
    config: ConnectionManagerConfig,
    connections: usize,
}

impl Shared {
    /// Connections (lazily opened) to the primary `client` reaches; must run inside the Redis
    /// runtime, whose tasks drive them.
    fn connect(&self, client: redis::Client) -> Result<Primary, redis::RedisError> {
        let connections = (0..self.connections.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), self.config.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Primary { client, connections })
    }
}

/// A connection a command goes over: one of the pool, or (writes that `WAIT`) one of its own.
enum Conn {
    Pooled(ConnectionManager),
    /// `WAIT` blocks its connection until replicas answer: on a pooled one, every read queued
    /// behind it would wait too. And it must follow the write on the very same connection,
    /// which a pooled one that reconnects in between does not promise.
    Own(redis::aio::MultiplexedConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Pooled(c) => c.req_packed_command(cmd),
            Conn::Own(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Pooled(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Own(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Pooled(c) => c.get_db(),
            Conn::Own(c) => c.get_db(),
        }
    }
}

/// Sessions in Redis.
pub struct RedisStore {
    shared: Arc<Shared>,
    next: AtomicUsize,
    /// Sentinel mode: failed commands make the watcher look for a new primary at once.
    sentinel: bool,
    wait_replicas: u32,
    wait_ms: u64,
    timeout: Duration,
    prefix: String,
    channel: String,
    idle_ms: u64,
    login_ttl_ms: u64,
    listeners: Listeners,
    scripts: Scripts,
    /// Redis I/O runs on its own small runtime: the connections' driver tasks must outlive
    /// whichever request or service runtime first touched them.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    // the error text never holds the URL's password (redis-rs prints kinds and server replies)
    StoreError::Unavailable(format!("redis: {e}"))
}

/// How often the sentinels are asked for the primary when nothing fails.
const SENTINEL_POLL: Duration = Duration::from_secs(1);

/// The least time between two questions to the sentinels (failing commands come in bursts).
const SENTINEL_BACKOFF: Duration = Duration::from_millis(200);

/// A Sentinel client for `s`, with the TLS settings of the data nodes for the sentinels too.
fn sentinel_client(
    s: &SentinelSettings,
    tls: Option<&redis::TlsCertificates>,
) -> Result<SentinelClient, redis::RedisError> {
    let u = &s.url;
    let addrs = u.sentinels.iter().map(|(host, port)| match u.tls {
        true => redis::ConnectionAddr::TcpTls {
            host: host.clone(),
            port: *port,
            insecure: false,
            tls_params: None,
        },
        false => redis::ConnectionAddr::Tcp(host.clone(), *port),
    });
    let mut b = SentinelClientBuilder::new(addrs, &u.primary, SentinelServerType::Master)?
        .set_client_to_redis_db(u.db);
    if let Some(user) = &u.username {
        b = b.set_client_to_redis_username(user);
    }
    if let Some(password) = &u.password {
        b = b.set_client_to_redis_password(password.expose());
    }
    if let Some(user) = &s.username {
        b = b.set_client_to_sentinel_username(user);
    }
    if let Some(password) = &s.password {
        b = b.set_client_to_sentinel_password(password.expose());
    }
    if u.tls {
        b = b
            .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
        if let Some(certs) = tls {
            b = b
                .set_client_to_redis_certificates(clone_certs(certs))
                .set_client_to_sentinel_certificates(clone_certs(certs));
        }
    }
    b.build()
}

fn clone_certs(c: &redis::TlsCertificates) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: c.client_tls.as_ref().map(|t| redis::ClientTlsConfig {
            client_cert: t.client_cert.clone(),
            client_key: t.client_key.clone(),
        }),
        root_cert: c.root_cert.clone(),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    /// Ends the user's sessions created before `before` (only those without a provider session
    /// id when `unbound_only`) and announces it.
    async fn delete_user_sessions(
        &self,
        user: &[u8; 32],
        before: u64,
        unbound_only: bool,
    ) -> Result<usize, StoreError> {
        let mut conn = self.write_conn().await?;
        let n: i64 = self
            .scripts
            .delete_user
            .key(self.key("u", user))
            .arg(&self.channel)
            .arg(format!("u{}", hex_lower(user)))
            .arg(before)
            .arg(if unbound_only { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        self.replicated(&mut conn).await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// `SET key value NX PX ttl`: true when the key was new (and is now set).
    async fn set_new(&self, key: String, value: u64, ttl: Duration) -> Result<bool, StoreError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ms(ttl))
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(set.is_some())
    }

    /// Connects lazily (a Redis that is down at start only makes requests that need a session
    /// fail with 503 until it is back) and starts listening for other instances' changes (and,
    /// with Sentinel, for the primary's moves).
    pub fn new(settings: &RedisSettings) -> Result<Self, StoreError> {
        let tls = match (&settings.ca_pem, &settings.client_pem) {
            (None, None) => None,
            (roots, client) => Some(redis::TlsCertificates {
                client_tls: client.as_ref().map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.expose().as_bytes().to_vec(),
                }),
                root_cert: roots.clone(),
            }),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("authgate-redis")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot start the Redis runtime: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let shared = Arc::new(Shared {
            primary: ArcSwapOption::empty(),
            moves: tokio::sync::watch::Sender::new(0),
            recheck: tokio::sync::Notify::new(),
            config,
            connections: settings.connections,
        });
        match &settings.sentinel {
            None => {
                let client = match &tls {
                    None => redis::Client::open(settings.url.expose()),
                    Some(certs) => redis::Client::build_with_tls(settings.url.expose(), clone_certs(certs)),
                }
                .map_err(unavailable)?;
                let _inside = runtime.enter();
                shared.primary.store(Some(Arc::new(shared.connect(client).map_err(unavailable)?)));
            }
            Some(sentinel) => {
                let client = sentinel_client(sentinel, tls.as_ref()).map_err(unavailable)?;
                runtime.spawn(watch_primary(shared.clone(), client, settings.timeout));
            }
        }
        let store = Self {
            shared,
            next: AtomicUsize::new(0),
            sentinel: settings.sentinel.is_some(),
            wait_replicas: settings.wait_replicas,
            // the WAIT answers within the command time limit, so that its answer is read
            wait_ms: ms(settings.timeout * 3 / 4),
            timeout: settings.timeout,
            prefix: settings.prefix.clone(),
            channel: format!("{}events", settings.prefix),
            idle_ms: ms(settings.idle),
            login_ttl_ms: ms(settings.login_ttl),
            listeners: Listeners::default(),
            scripts: Scripts::new(),
            runtime: Some(runtime),
        };
        store.subscribe();
        Ok(store)
    }

    /// The primary (none while Sentinel names none).
    fn primary(&self) -> Result<Arc<Primary>, StoreError> {
        self.shared.primary.load_full().ok_or_else(|| {
            self.shared.recheck.notify_one();
            StoreError::Unavailable("no Redis primary is known (asking the sentinels)".into())
        })
    }

    /// A pooled connection to the primary.
    fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let primary = self.primary()?;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % primary.connections.len();
        Ok(primary.connections[i].clone())
    }

    /// A connection for a write: pooled, or with `redis_wait_replicas` one of its own (writes
    /// are sign-ins, refreshes and sign-outs: rare enough to pay a connect each).
    async fn write_conn(&self) -> Result<Conn, StoreError> {
        if self.wait_replicas == 0 {
            return Ok(Conn::Pooled(self.conn()?));
        }
        let primary = self.primary()?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        // the connection's driver runs on the Redis runtime, like the pool's
        let connect =
            async move { primary.client.get_multiplexed_async_connection_with_config(&config).await };
        let connected = match &self.runtime {
            Some(rt) => rt.spawn(connect).await.map_err(|e| StoreError::Unavailable(e.to_string()))?,
            None => connect.await,
        };
        Ok(Conn::Own(connected.map_err(|e| self.failed(e))?))
    }

    /// A command failed: with Sentinel, perhaps because the primary moved.
    fn failed(&self, e: redis::RedisError) -> StoreError {
        if self.sentinel {
            self.shared.recheck.notify_one();
        }
        unavailable(e)
    }

    /// With `redis_wait_replicas`, waits until that many replicas have this connection's
    /// writes; a write they did not confirm in time is reported failed (the user is not told
    /// about a session a failover could lose).
    async fn replicated(&self, conn: &mut Conn) -> Result<(), StoreError> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        let acked: i64 = redis::cmd("WAIT")
            .arg(self.wait_replicas)
            .arg(self.wait_ms)
            .query_async(conn)
            .await
            .map_err(|e| self.failed(e))?;
        if acked < i64::from(self.wait_replicas) {
            return Err(StoreError::Unavailable(format!(
                "only {acked} of {} Redis replicas confirmed a session write in time",
                self.wait_replicas
            )));
        }
        Ok(())
    }

    fn key(&self, kind: &str, bytes: &[u8]) -> String {
        format!("{}{kind}:{}", self.prefix, hex_lower(bytes))
    }

    /// Follows the channel for as long as the store lives, reconnecting after a loss. After
    /// every (re)connection all cached copies are dropped: messages may have been missed.
    fn subscribe(&self) {
        let Some(runtime) = &self.runtime else { return };
        let (shared, channel, listeners) =
            (self.shared.clone(), self.channel.clone(), self.listeners.clone());
        runtime.spawn(async move {
            let tell = |event| listeners.tell(event);
            loop {
                // subscribed where commands go: on the primary, followed when it moves
                let mut moves = shared.moves.subscribe();
                let Some(primary) = shared.primary.load_full() else {
                    let _ = tokio::time::timeout(Duration::from_secs(1), moves.changed()).await;
                    continue;
                };
                match primary.client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        if pubsub.subscribe(&channel).await.is_ok() {
                            tell(StoreEvent::Reset);
                            let (mut sink, mut messages) = pubsub.split();
                            // a half-open connection delivers nothing and reports nothing: ping it
                            let mut heartbeat = tokio::time::interval(HEARTBEAT);
                            heartbeat.tick().await;
                            loop {
                                tokio::select! {
                                    msg = messages.next() => match msg {
                                        Some(msg) => {
                                            if let Some(event) = parse_event(msg.get_payload_bytes()) {
                                                tell(event);
                                            }
                                        }
                                        None => break,
                                    },
                                    _ = heartbeat.tick() => {
                                        let pong = tokio::time::timeout(HEARTBEAT / 3, sink.ping::<redis::Value>()).await;
                                        if !matches!(pong, Ok(Ok(_))) {
                                            break;
                                        }
                                    }
                                    _ = moves.changed() => break,
                                }
                            }
                            // changes made meanwhile would go unseen: copies must not outlive them
                            tell(StoreEvent::Reset);
                            tracing::warn!("lost the Redis change channel; reconnecting");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot subscribe to Redis changes yet"),
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
}

/// How often the change channel is checked for life.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Follows the primary the sentinels name: asks every `SENTINEL_POLL`, and at once (but not
/// more often than `SENTINEL_BACKOFF`) when a command failed; a new primary gets new
/// connections, and the change channel resubscribes. Until one is first named, commands fail
/// with "no primary" and readiness says so; a failed question keeps the primary there is.
async fn watch_primary(shared: Arc<Shared>, mut sentinel: SentinelClient, timeout: Duration) {
    loop {
        let asked = tokio::time::timeout(timeout * 2, sentinel.async_get_client()).await;
        match asked {
            Ok(Ok(client)) => {
                let current = shared.primary.load();
                let addr = client.get_connection_info().addr().to_string();
                let same = current
                    .as_ref()
                    .is_some_and(|p| p.client.get_connection_info().addr().to_string() == addr);
                if !same {
                    match shared.connect(client) {
                        Ok(primary) => {
                            shared.primary.store(Some(Arc::new(primary)));
                            shared.moves.send_modify(|n| *n += 1);
                            tracing::warn!(primary = %addr, "the sentinels name a new Redis primary; following it");
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot connect to the new Redis primary"),
                    }
                }
            }
            failed => {
                // keep the primary we have: if it is gone, its commands fail by themselves; if
                // it was demoted, they fail with READONLY and we ask again
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "the sentinels did not answer in time".to_owned(),
                };
                tracing::debug!(error = %why, "cannot ask the sentinels for the Redis primary");
            }
        }
        tokio::time::sleep(SENTINEL_BACKOFF).await;
        let _ = tokio::time::timeout(SENTINEL_POLL, shared.recheck.notified()).await;
    }
}

fn parse_event(payload: &[u8]) -> Option<StoreEvent> {
    let text = std::str::from_utf8(payload).ok()?;
    let (kind, rest) = text.split_at_checked(1)?;
    let bytes = decode_hex32(rest.as_bytes())?;
    match kind {
        "s" => Some(StoreEvent::Session(SessionKey(bytes))),
        "u" => Some(StoreEvent::User(bytes)),
        _ => None,
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        // dropping a runtime may block; this may run inside another runtime
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<Arc<StoredSession>>, StoreError> {
        type Fields = (u64, String, Vec<u8>, u64, Option<u64>, Option<String>);
        let now = unix_now();
        let found: Option<Fields> = self
            .scripts
            .load
            .key(self.key("s", &key.0))
            .arg(now)
            .arg(self.idle_ms)
            .invoke_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(found.and_then(|(version, user, sealed, expires_at, created_at, sid)| {
            Some(Arc::new(StoredSession {
                sealed,
                version,
                user: decode_hex32(user.as_bytes())?,
                expires_at,
                created_at: created_at.unwrap_or(0),
                sid: sid.as_deref().and_then(|s| decode_hex32(s.as_bytes())),
                last_used: LastUsed::at(now),
            }))
        }))
    }

    async fn save(
        &self,
        key: &SessionKey,
        session: StoredSession,
        expected: Option<u64>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.write_conn().await?;
        let written: i64 = self
            .scripts
            .save
            .key(self.key("s", &key.0))
            .key(self.key("u", &session.user))
            .key(self.key("i", &session.sid.unwrap_or_default()))
            .arg(expected.map(|v| v.to_string()).unwrap_or_default())
            .arg(session.version)
            .arg(hex_lower(&session.user))
            .arg(&session.sealed)
            .arg(session.expires_at)
            .arg(unix_now())
            .arg(self.idle_ms)
            .arg(&self.channel)
            .arg(format!("s{}", hex_lower(&key.0)))
            .arg(session.created_at)
            .arg(session.sid.map(|s| hex_lower(&s)).unwrap_or_default())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        if written == 1 {
            self.replicated(&mut conn).await?;
        }
        Ok(written == 1)
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        let mut conn = self.write_conn().await?;
        let _: i64 = self
            .scripts
            .delete
            .key(self.key("s", &key.0))
            .arg(&self.channel)
            .arg(format!("s{}", hex_lower(&key.0)))
            .arg(format!("{}u:", self.prefix))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        self.replicated(&mut conn).await
    }

    async fn user_sessions(&self, user: &[u8; 32]) -> Result<Vec<SessionSummary>, StoreError> {
        let rows: Vec<(String, u64, u64, u64)> = self
            .scripts
            .user_sessions
            .key(self.key("u", user))
            .arg(unix_now())
            .arg(format!("{}s:", self.prefix))
            .invoke_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(key, created_at, last_used, expires_at)| {
                let key = SessionKey(decode_hex32(key.as_bytes())?);
                Some(SessionSummary { key, created_at, last_used, expires_at })
            })
            .collect())
    }

    async fn delete_user(&self, user: &[u8; 32], before: u64) -> Result<usize, StoreError> {
        self.delete_user_sessions(user, before, false).await
    }

    async fn delete_user_without_sid(&self, user: &[u8; 32], before: u64) -> Result<usize, StoreError> {
        self.delete_user_sessions(user, before, true).await
    }

    async fn delete_sid(&self, sid: &[u8; 32]) -> Result<usize, StoreError> {
        let mut conn = self.write_conn().await?;
        let n: i64 = self
            .scripts
            .delete_sid
            .key(self.key("i", sid))
            .arg(&self.channel)
            .arg(format!("{}s:", self.prefix))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        self.replicated(&mut conn).await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    async fn user_marks(&self, user: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        redis::cmd("GET")
            .arg(self.key("m", user))
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))
    }

    async fn save_user_marks(
        &self,
        user: &[u8; 32],
        sealed: Vec<u8>,
        ttl: Duration,
        denied_until: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut conn = self.write_conn().await?;
        let _: i64 = self
            .scripts
            .save_marks
            .key(self.key("m", user))
            .key(format!("{}denied", self.prefix))
            .arg(sealed)
            .arg(ms(ttl))
            .arg(denied_until.map(|u| u.to_string()).unwrap_or_default())
            .arg(hex_lower(user))
            .arg(unix_now())
            .arg(&self.channel)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        self.replicated(&mut conn).await
    }

    async fn denied_users(&self) -> Result<Vec<([u8; 32], u64)>, StoreError> {
        let list: Vec<(String, u64)> = redis::cmd("ZRANGE")
            .arg(format!("{}denied", self.prefix))
            .arg(unix_now())
            .arg("+inf")
            .arg("BYSCORE")
            .arg("WITHSCORES")
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(list.into_iter().filter_map(|(u, until)| Some((decode_hex32(u.as_bytes())?, until))).collect())
    }

    async fn put_login(&self, key: [u8; 32], sealed: Vec<u8>) -> Result<(), StoreError> {
        let _: () = redis::cmd("SET")
            .arg(self.key("l", &key))
            .arg(sealed)
            .arg("PX")
            .arg(self.login_ttl_ms)
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    async fn peek_login(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        redis::cmd("GET")
            .arg(self.key("l", key))
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))
    }

    async fn take_login(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        redis::cmd("GETDEL")
            .arg(self.key("l", key))
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))
    }

    async fn lock(&self, key: &SessionKey, ttl: Duration) -> Result<Option<u64>, StoreError> {
        let token =
            u64::from_le_bytes(random_bytes::<8>().map_err(|e| StoreError::Unavailable(e.to_string()))?);
        let taken = self.set_new(self.key("k", &key.0), token, ttl).await?;
        Ok(taken.then_some(token))
    }

    async fn unlock(&self, key: &SessionKey, token: u64) -> Result<(), StoreError> {
        let _: i64 = self
            .scripts
            .unlock
            .key(self.key("k", &key.0))
            .arg(token)
            .invoke_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    async fn remember(&self, key: &[u8; 32], ttl: Duration) -> Result<bool, StoreError> {
        self.set_new(self.key("d", key), 1, ttl).await
    }

    async fn forget(&self, key: &[u8; 32]) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("DEL")
            .arg(self.key("d", key))
            .query_async(&mut self.conn()?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(())
    }

    fn listen(&self, listener: StoreListener) {
        self.listeners.add(listener);
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String =
            redis::cmd("PING").query_async(&mut self.conn()?).await.map_err(|e| self.failed(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_messages_round_trip() {
        let key = [0xab; 32];
        assert_eq!(
            parse_event(format!("s{}", hex_lower(&key)).as_bytes()),
            Some(StoreEvent::Session(SessionKey(key)))
        );
        assert_eq!(parse_event(format!("u{}", hex_lower(&key)).as_bytes()), Some(StoreEvent::User(key)));
        for junk in ["", "s", "x00", "sZZ", &format!("q{}", hex_lower(&key))] {
            assert_eq!(parse_event(junk.as_bytes()), None, "{junk:?}");
        }
    }
}
