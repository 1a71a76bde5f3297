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

/// A `redis+sentinel://` (or `rediss+sentinel://`) URL, read:
/// `redis+sentinel://[user:password@]host:port[,host:port...]/primary-name[/db]`. The
/// credentials are the data nodes'; the sentinels' own are `redis_sentinel_username` and
/// `redis_sentinel_password`. Hand-read: the `url` crate takes one host only.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// The sentinels, `host:port`.
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the primary under.
    pub primary: String,
    /// The data nodes' user (ACL), if any.
    pub username: Option<String>,
    /// The data nodes' password, if any.
    pub password: Option<Secret>,
    /// Database number.
    pub db: i64,
    /// TLS to sentinels and data nodes (`rediss+sentinel://`).
    pub tls: bool,
}

impl std::fmt::Debug for SentinelUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelUrl")
            .field("sentinels", &self.sentinels)
            .field("primary", &self.primary)
            .field("db", &self.db)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl SentinelUrl {
    /// Reads `url`; `None` when it is not a sentinel URL at all, `Some(Err(why))` when it is
    /// one but malformed (`why` never holds the password).
    pub fn parse(url: &str) -> Option<Result<Self, &'static str>> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            (false, rest)
        } else {
            (true, url.strip_prefix("rediss+sentinel://")?)
        };
        Some(Self::parse_rest(rest, tls))
    }

    fn parse_rest(rest: &str, tls: bool) -> Result<Self, &'static str> {
        let (authority, path) = rest.split_once('/').ok_or("names no primary: add /<primary-name>")?;
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut sentinels = Vec::new();
        for host in hosts.split(',') {
            let (name, port) = host.rsplit_once(':').ok_or("every sentinel needs host:port")?;
            let port =
                port.parse::<u16>().ok().filter(|p| *p > 0).ok_or("a sentinel port is not a port number")?;
            let name = match name.strip_prefix('[') {
                Some(v6) => v6.strip_suffix(']').filter(|a| a.parse::<std::net::Ipv6Addr>().is_ok()),
                None => Some(name).filter(|n| !n.contains([':', '[', ']'])),
            }
            .ok_or("an IPv6 sentinel is written [address]:port")?;
            if name.is_empty() || name.contains(['/', '?', '#', '@', ' ']) {
                return Err("a sentinel host is empty or malformed");
            }
            sentinels.push((name.to_owned(), port));
        }
        let mut parts = path.split('/');
        let primary = parts.next().unwrap_or_default();
        if primary.is_empty() || !primary.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#') {
            return Err("names no primary: add /<primary-name>");
        }
        let db = match parts.next() {
            None | Some("") => 0,
            Some(db) => db.parse::<i64>().ok().filter(|d| *d >= 0).ok_or("the database is a number")?,
        };
        if parts.next().is_some() {
            return Err("has more path than /<primary-name>/<db>");
        }
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                // percent-decoded as in any URL's userinfo
                let parsed = url::Url::parse(&format!("redis://{info}@sentinel/"))
                    .map_err(|_| "its credentials are malformed")?;
                // form decoding, with the two characters it would misread escaped first
                let decode = |s: &str| {
                    let escaped = s.replace('+', "%2B").replace('&', "%26");
                    url::form_urlencoded::parse(format!("x={escaped}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                let user = Some(decode(parsed.username())).filter(|u| !u.is_empty());
                let pass = parsed.password().map(|p| Secret::new(decode(p)));
                (user, pass)
            }
        };
        Ok(Self { sentinels, primary: primary.to_owned(), username, password, db, tls })
    }
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
    /// Sentinels' own credentials, when they have any (the URL's are the data nodes').
    pub redis_sentinel_username: Option<String>,
    /// The sentinels' password.
    pub redis_sentinel_password: Option<Secret>,
    /// Session writes wait (`WAIT`) until this many replicas have them; 0: they do not wait.
    pub redis_wait_replicas: u32,
    /// `redis_url` as validation read it, when it names sentinels (carried, never parsed again).
    #[serde(skip)]
    pub redis_sentinel: Option<SentinelUrl>,
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
            redis_sentinel_username: None,
            redis_sentinel_password: None,
            redis_wait_replicas: 0,
            redis_sentinel: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_are_read_and_their_mistakes_named() {
        let u = SentinelUrl::parse(
            "redis+sentinel://:p%40ss@10.0.0.1:26379,[::1]:26380,s3.internal:26381/mymaster/2",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            u.sentinels,
            [("10.0.0.1".into(), 26379), ("::1".into(), 26380), ("s3.internal".into(), 26381)]
        );
        assert_eq!((u.primary.as_str(), u.db, u.tls, u.username.as_deref()), ("mymaster", 2, false, None));
        assert_eq!(u.password.as_ref().map(|p| p.expose()), Some("p@ss"));
        let u = SentinelUrl::parse("rediss+sentinel://app:p&w+x@h:1/m").unwrap().unwrap();
        assert_eq!(u.password.as_ref().map(|p| p.expose()), Some("p&w+x"), "& and + are the password's");
        assert_eq!((u.tls, u.username.as_deref(), u.db), (true, Some("app"), 0));
        assert!(SentinelUrl::parse("redis://h:6379").is_none(), "not a sentinel URL at all");
        for bad in [
            "redis+sentinel://h:26379",
            "redis+sentinel://h:26379/",
            "redis+sentinel://h/m",
            "redis+sentinel://h:0/m",
            "redis+sentinel://:26379/m",
            "redis+sentinel://h:26379/m/-1",
            "redis+sentinel://fe80::1:26379/m",
            "redis+sentinel://[zz]:26379/m",
            "redis+sentinel://h:26379/m?x=1",
            "redis+sentinel://h:26379/m/1/x",
        ] {
            assert!(matches!(SentinelUrl::parse(bad), Some(Err(_))), "{bad}");
        }
        let debug = format!("{:?}", SentinelUrl::parse("redis+sentinel://:hunter2@h:1/m").unwrap().unwrap());
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
