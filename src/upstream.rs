//! Upstream pools: the addresses behind a route, chosen round-robin, with passive health.
//!
//! Hand-written rather than pingora's `LoadBalancer` because that one only knows active health
//! checks; here a backend that refuses a connection is skipped for a while, right away, and the
//! request is retried on the next one.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::clock::monotonic_ms;

/// How long a backend that failed to connect is passed over.
const DOWN_FOR: Duration = Duration::from_secs(10);

/// Why an upstream URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Not a usable URL (validation normally catches this first).
    #[error("{0:?} is not a valid upstream URL")]
    BadUrl(String),
    /// The host name did not resolve.
    #[error("cannot resolve {url:?}: {source}")]
    Resolve {
        /// The upstream URL.
        url: String,
        /// The resolver's error.
        source: std::io::Error,
    },
}

/// One address to forward to.
#[derive(Debug)]
pub struct Backend {
    /// Resolved socket address.
    pub addr: SocketAddr,
    /// Connect with TLS.
    pub tls: bool,
    /// TLS server name (the URL's host).
    pub sni: String,
    /// `host[:port]` as written in the URL, the `Host` sent upstream unless `preserve_host`.
    pub authority: String,
    /// Until when (ms on the process clock) this backend is skipped; 0 when healthy.
    down_until_ms: AtomicU64,
}

impl Backend {
    fn is_up(&self, now_ms: u64) -> bool {
        self.down_until_ms.load(Ordering::Relaxed) <= now_ms
    }
}

/// The backends of one route.
#[derive(Debug)]
pub struct UpstreamPool {
    backends: Vec<Backend>,
    next: AtomicUsize,
}

impl UpstreamPool {
    /// Resolves every URL now (pingora's peer constructor would resolve on a worker thread and
    /// panic on failure); a name with several addresses contributes each of them.
    pub fn resolve(urls: &[String]) -> Result<Self, UpstreamError> {
        let mut backends = Vec::new();
        for raw in urls {
            let url = url::Url::parse(raw).map_err(|_| UpstreamError::BadUrl(raw.clone()))?;
            let host = url.host_str().ok_or_else(|| UpstreamError::BadUrl(raw.clone()))?;
            let tls = url.scheme() == "https";
            let port = url.port_or_known_default().ok_or_else(|| UpstreamError::BadUrl(raw.clone()))?;
            let authority = match url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_owned(),
            };
            let bare_host = host.trim_start_matches('[').trim_end_matches(']');
            let addrs = (bare_host, port)
                .to_socket_addrs()
                .map_err(|source| UpstreamError::Resolve { url: raw.clone(), source })?;
            for addr in addrs {
                if backends.iter().any(|b: &Backend| b.addr == addr && b.tls == tls) {
                    continue;
                }
                backends.push(Backend {
                    addr,
                    tls,
                    sni: bare_host.to_owned(),
                    authority: authority.clone(),
                    down_until_ms: AtomicU64::new(0),
                });
            }
        }
        // no URL at all is a route the front proxy serves (forward-auth only): an empty pool
        if backends.is_empty() && !urls.is_empty() {
            return Err(UpstreamError::BadUrl(urls.join(", ")));
        }
        Ok(Self { backends, next: AtomicUsize::new(0) })
    }

    /// Number of backends.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// A forward-auth-only route's pool has no backend.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// The backend at `index`.
    pub fn get(&self, index: usize) -> Option<&Backend> {
        self.backends.get(index)
    }

    /// The next healthy backend in round-robin order that is not in `tried`. When every
    /// candidate is down, the one that has been down longest is tried anyway: refusing outright
    /// would turn a brief outage into a longer one.
    pub fn select(&self, tried: &[usize]) -> Option<usize> {
        let n = self.backends.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = monotonic_ms();
        let candidates = (0..n).map(|k| (start + k) % n).filter(|i| !tried.contains(i));
        let mut fallback: Option<(u64, usize)> = None;
        for i in candidates {
            let b = &self.backends[i];
            if b.is_up(now) {
                return Some(i);
            }
            let until = b.down_until_ms.load(Ordering::Relaxed);
            if fallback.is_none_or(|(u, _)| until < u) {
                fallback = Some((until, i));
            }
        }
        fallback.map(|(_, i)| i)
    }

    /// Records that `index` refused or timed out a connection.
    pub fn mark_down(&self, index: usize) {
        if let Some(b) = self.backends.get(index) {
            let until = monotonic_ms() + u64::try_from(DOWN_FOR.as_millis()).unwrap_or(u64::MAX);
            b.down_until_ms.store(until, Ordering::Relaxed);
        }
    }

    /// Records that `index` accepted a connection.
    pub fn mark_up(&self, index: usize) {
        if let Some(b) = self.backends.get(index) {
            if b.down_until_ms.load(Ordering::Relaxed) != 0 {
                b.down_until_ms.store(0, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: u16) -> UpstreamPool {
        let urls: Vec<String> = (0..n).map(|i| format!("http://127.0.0.1:{}", 9000 + i)).collect();
        UpstreamPool::resolve(&urls).unwrap()
    }

    #[test]
    fn round_robin_over_all_backends() {
        let p = pool(3);
        let picks: Vec<usize> = (0..6).map(|_| p.select(&[]).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn a_backend_marked_down_is_skipped_until_it_recovers() {
        let p = pool(3);
        p.mark_down(1);
        let picks: Vec<usize> = (0..6).map(|_| p.select(&[]).unwrap()).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        p.mark_up(1);
        let picks: Vec<usize> = (0..3).map(|_| p.select(&[]).unwrap()).collect();
        assert!(picks.contains(&1), "{picks:?}");
    }

    #[test]
    fn retries_never_repeat_a_backend_and_all_down_still_tries_one() {
        let p = pool(2);
        let first = p.select(&[]).unwrap();
        let second = p.select(&[first]).unwrap();
        assert_ne!(first, second);
        assert_eq!(p.select(&[first, second]), None);
        p.mark_down(0);
        p.mark_down(1);
        assert!(p.select(&[]).is_some());
    }

    #[test]
    fn urls_keep_their_authority_and_tls() {
        let p = UpstreamPool::resolve(&["https://localhost:8443".into(), "http://127.0.0.1".into()]).unwrap();
        let tls: Vec<_> = (0..p.len()).map(|i| p.get(i).unwrap()).filter(|b| b.tls).collect();
        assert!(!tls.is_empty());
        assert!(
            tls.iter()
                .all(|b| b.authority == "localhost:8443" && b.sni == "localhost" && b.addr.port() == 8443)
        );
        let plain = (0..p.len()).map(|i| p.get(i).unwrap()).find(|b| !b.tls).unwrap();
        assert_eq!((plain.authority.as_str(), plain.addr.port()), ("127.0.0.1", 80));
        assert!(UpstreamPool::resolve(&["http://no-such-host.invalid".into()]).is_err());
    }
}
