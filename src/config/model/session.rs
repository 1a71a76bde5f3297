//! `[session]`: where sessions live (memory or Redis, and how to reach Redis) and their lifetimes.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::Secret;
use crate::config::units::Duration;

/// Where sessions are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In this process (lost on restart, not shared).
    Memory,
    /// In Redis (shared by instances, survives restarts).
    Redis,
}

/// `[session]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// `memory` or `redis`.
    pub store: StoreKind,
    /// Redis URL (`redis://` or `rediss://`, credentials in it or from `${VAR}`) when
    /// `store = "redis"`.
    pub redis_url: Option<Secret>,
    /// PEM file of the CA certificate(s) a `rediss://` server must chain to, instead of the
    /// system's roots (a private CA).
    pub redis_ca_file: Option<PathBuf>,
    /// PEM certificate (chain) and key authgate shows a `rediss://` server that asks for one.
    pub redis_client_cert_file: Option<PathBuf>,
    /// The private key of `redis_client_cert_file` (PEM).
    pub redis_client_key_file: Option<PathBuf>,
    /// Prefix of every Redis key and the pub/sub channel (several gateways can share a Redis).
    pub redis_prefix: String,
    /// Time limit of a Redis connect or command; beyond it the request gets a 503.
    pub redis_timeout: Duration,
    /// Redis connections kept open per instance (commands are pipelined over them).
    pub redis_connections: usize,
    /// Refresh a session's access token this long before it expires (at most half its lifetime).
    pub refresh_before: Duration,
    /// A session whose access token expired and whose refresh keeps being deferred (provider
    /// busy or down) is admitted at most this long after the expiry, then signed out.
    pub max_stale: Duration,
    /// Key material for session encryption, at least 32 bytes.
    pub secret: Option<Secret>,
    /// File holding the session secret (instead of `secret`).
    pub secret_file: Option<PathBuf>,
    /// Name of the session cookie.
    pub cookie_name: String,
    /// A session unused for this long ends.
    pub idle_lifetime: Duration,
    /// A session ends this long after sign-in, however active.
    pub absolute_lifetime: Duration,
    /// How long a started sign-in may take (the `state` lives this long, once).
    pub login_lifetime: Duration,
    /// Most sessions the memory store holds (the least recently used go first).
    pub max_sessions: u64,
    /// Most sign-ins this instance starts within one `login_lifetime` (each keeps a login state
    /// in the store until it completes or expires); past it, new sign-ins get a 503 a while.
    pub max_pending_logins: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            store: StoreKind::Memory,
            redis_url: None,
            redis_ca_file: None,
            redis_client_cert_file: None,
            redis_client_key_file: None,
            redis_prefix: "authgate:".into(),
            redis_timeout: Duration::from_secs(2),
            redis_connections: 2,
            refresh_before: Duration::from_secs(5 * 60),
            max_stale: Duration::from_secs(15 * 60),
            secret: None,
            secret_file: None,
            cookie_name: "authgate_session".into(),
            idle_lifetime: Duration::from_secs(60 * 60),
            absolute_lifetime: Duration::from_secs(12 * 60 * 60),
            login_lifetime: Duration::from_secs(10 * 60),
            max_sessions: 200_000,
            max_pending_logins: 20_000,
        }
    }
}
