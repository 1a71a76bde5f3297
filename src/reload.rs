//! Hot reload: SIGHUP (or `POST /reload` on the admin listener) re-reads and validates the
//! config file and swaps routes, policies, upstreams and header names in atomically. In-flight
//! requests keep the snapshot they started with; sessions and keys are untouched. A config
//! that fails validation, or that changes what only a restart can change, is refused and the
//! running one stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::{self, Config};
use crate::gateway::Gateway;

/// Why a reload was refused (the running config stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file is invalid.
    #[error("{0}")]
    Invalid(#[from] config::ConfigError),
    /// The new file changes settings that need a restart.
    #[error("these settings change only with a restart: {0}")]
    NeedsRestart(String),
    /// The new routes cannot be served (e.g. an upstream does not resolve).
    #[error(transparent)]
    Build(#[from] crate::gateway::BuildError),
}

/// Reloads one config file into the running gateway.
pub struct Reloader {
    path: PathBuf,
    gateway: Arc<ArcSwap<Gateway>>,
    /// Held across read → validate → swap: SIGHUP, `POST /reload` and `keys rotate` may ask at
    /// once, and a reload that read an older file must not finish last and revert a newer one.
    /// Each reload reads the file inside the lock, so the last one in reads the latest file.
    serial: std::sync::Mutex<()>,
    succeeded: AtomicU64,
    failed: AtomicU64,
}

impl Reloader {
    /// A reloader for the config at `path`, feeding `gateway`.
    pub fn new(path: PathBuf, gateway: Arc<ArcSwap<Gateway>>) -> Self {
        Self {
            path,
            gateway,
            serial: std::sync::Mutex::new(()),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Re-reads the file and swaps the new gateway in; counts and logs the outcome.
    pub fn reload(&self) -> Result<(), ReloadError> {
        // a panic elsewhere cannot leave the unit guard inconsistent: take it back
        let serial = self.serial.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = self.try_reload();
        drop(serial);
        match &result {
            Ok(()) => {
                self.succeeded.fetch_add(1, Ordering::Relaxed);
                crate::metrics::METRICS.reloads.with_label_values(&["ok"]).inc();
                tracing::info!(path = %self.path.display(), "configuration reloaded");
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                crate::metrics::METRICS.reloads.with_label_values(&["refused"]).inc();
                tracing::error!(path = %self.path.display(), error = %e, "configuration reload refused; the running configuration stays");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<(), ReloadError> {
        let new = config::load_file(&self.path)?;
        let current = self.gateway.load_full();
        restart_only_changes(&current.config, &new)?;
        let next = Gateway::build(Arc::new(new), current.verifiers.clone(), current.browser.clone())?;
        self.gateway.store(Arc::new(next));
        Ok(())
    }

    /// `(succeeded, failed)` reloads since start.
    pub fn counts(&self) -> (u64, u64) {
        (self.succeeded.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

/// Listeners, process settings, the provider, sessions, the public URLs and the extra claims
/// feed long-lived parts (sockets, key caches, session stores, verifiers, cookies): changing
/// them takes a restart, so a reload refuses (whole tables compared, secrets included).
fn restart_only_changes(old: &Config, new: &Config) -> Result<(), ReloadError> {
    let (a, b) = (&old.server, &new.server);
    let checks = [
        ("server.listen", a.listen == b.listen),
        ("server.admin_listen", a.admin_listen == b.admin_listen),
        ("server.h2c", a.h2c == b.h2c),
        ("server.tls", a.tls == b.tls),
        ("server.threads", a.threads == b.threads),
        ("server.grace_period", a.grace_period == b.grace_period),
        ("server.drain_period", a.drain_period == b.drain_period),
        ("server.public_url", a.public_url == b.public_url),
        ("[provider]", old.provider == new.provider),
        ("[providers]", old.providers == new.providers),
        ("[session]", old.session == new.session),
        ("headers.claims", old.headers.claims == new.headers.claims),
    ];
    let changed: Vec<&str> = checks.iter().filter(|(_, same)| !same).map(|(name, _)| *name).collect();
    if changed.is_empty() { Ok(()) } else { Err(ReloadError::NeedsRestart(changed.join(", "))) }
}

/// Reloads on SIGHUP (Pingora itself would let SIGHUP end the process).
pub struct SighupReloader(pub Arc<Reloader>);

#[async_trait]
impl BackgroundService for SighupReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reload through the admin listener");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => {
                    let reloader = self.0.clone();
                    // file reading and DNS resolution block: keep them off the async workers
                    let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Config {
        config::load_str(text, "t", std::path::Path::new("."), &|_| None).unwrap()
    }

    const BASE: &str = r#"
[server]
public_url = "https://app.example.com"
[provider]
issuer = "https://idp.example.com"
client_id = "authgate"
client_secret = "one-secret"
audience = "authgate"
[session]
secret = "0123456789abcdefghijklmnopqrstuvwxyzABCDEF"
[[routes]]
path = "/"
upstream = "http://127.0.0.1:3000"
auth = "browser"
"#;

    #[test]
    fn routes_may_change_but_long_lived_settings_may_not() {
        let old = load(BASE);
        let more_routes = format!(
            "{BASE}\n[[routes]]\npath = \"/pub\"\nupstream = \"http://127.0.0.1:3001\"\nauth = \"public\"\n"
        );
        assert!(restart_only_changes(&old, &load(&more_routes)).is_ok());
        let cases = [
            ("one-secret", "another-secret", "[provider]"),
            (
                "0123456789abcdefghijklmnopqrstuvwxyzABCDEF",
                "zyxwvutsrqponmlkjihgfedcba9876543210ZYXWVU",
                "[session]",
            ),
            ("https://app.example.com", "https://other.example.com", "server.public_url"),
            ("[server]\n", "[server]\ngrace_period = \"20s\"\n", "server.grace_period"),
            ("[server]\n", "[server]\nlisten = [\"127.0.0.1:8081\"]\n", "server.listen"),
        ];
        for (from, to, named) in cases {
            let changed = load(&BASE.replacen(from, to, 1));
            let err = restart_only_changes(&old, &changed).unwrap_err().to_string();
            assert!(err.contains(named), "{named}: {err}");
        }
    }

    /// Which `/v<N>` route the running gateway serves.
    fn served_version(gateway: &ArcSwap<Gateway>) -> u64 {
        let g = gateway.load();
        let path = &g.config.routes[1].path;
        path.trim_start_matches("/v").parse().unwrap()
    }

    #[test]
    fn concurrent_reloads_never_leave_an_older_file_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authgate.toml");
        let version = |n: u64| {
            format!(
                "{BASE}\n[[routes]]\npath = \"/v{n}\"\nupstream = \"http://127.0.0.1:3001\"\nauth = \"public\"\n"
            )
        };
        std::fs::write(&path, version(0)).unwrap();
        let first = Gateway::build(Arc::new(config::load_file(&path).unwrap()), Vec::new(), None).unwrap();
        let gateway = Arc::new(ArcSwap::from_pointee(first));
        let reloader = Arc::new(Reloader::new(path.clone(), gateway.clone()));
        // writers take turns writing ever newer files; each then reloads without waiting for
        // the others: once a writer's reload returns, the file it wrote (or a newer one) rules
        let written = Arc::new(std::sync::Mutex::new(0u64));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (reloader, gateway, written, path) =
                    (reloader.clone(), gateway.clone(), written.clone(), path.clone());
                std::thread::spawn(move || {
                    for _ in 0..150 {
                        let mine = {
                            let mut last = written.lock().unwrap();
                            *last += 1;
                            let tmp = path.with_extension(format!("tmp{last}"));
                            std::fs::write(&tmp, version(*last)).unwrap();
                            std::fs::rename(&tmp, &path).unwrap();
                            *last
                        };
                        reloader.reload().unwrap();
                        let served = served_version(&gateway);
                        assert!(served >= mine, "wrote /v{mine}, reloaded, and /v{served} is in force");
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(served_version(&gateway), *written.lock().unwrap(), "the last file written wins");
        assert_eq!(reloader.counts(), (600, 0));
    }
}
