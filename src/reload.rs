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
    succeeded: AtomicU64,
    failed: AtomicU64,
}

impl Reloader {
    /// A reloader for the config at `path`, feeding `gateway`.
    pub fn new(path: PathBuf, gateway: Arc<ArcSwap<Gateway>>) -> Self {
        Self { path, gateway, succeeded: AtomicU64::new(0), failed: AtomicU64::new(0) }
    }

    /// Re-reads the file and swaps the new gateway in; counts and logs the outcome.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let result = self.try_reload();
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
        let next = Gateway::build(Arc::new(new), current.verifier.clone(), current.browser.clone())?;
        self.gateway.store(Arc::new(next));
        Ok(())
    }

    /// `(succeeded, failed)` reloads since start.
    pub fn counts(&self) -> (u64, u64) {
        (self.succeeded.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

/// Listeners, the provider, sessions and the header set feed long-lived parts (sockets, key
/// caches, session stores, verifiers): changing them takes a restart, so a reload refuses.
fn restart_only_changes(old: &Config, new: &Config) -> Result<(), ReloadError> {
    let mut changed = Vec::new();
    let s = (&old.server, &new.server);
    if s.0.listen != s.1.listen || s.0.admin_listen != s.1.admin_listen || s.0.h2c != s.1.h2c {
        changed.push("server listeners");
    }
    if format!("{:?}", s.0.tls) != format!("{:?}", s.1.tls) || s.0.threads != s.1.threads {
        changed.push("server.tls / server.threads");
    }
    if format!("{:?}", old.provider) != format!("{:?}", new.provider) {
        changed.push("[provider]");
    }
    let (a, b) = (&old.session, &new.session);
    let session_same = a.store == b.store
        && a.secret == b.secret
        && a.redis_url == b.redis_url
        && a.cookie_name == b.cookie_name
        && a.idle_lifetime == b.idle_lifetime
        && a.absolute_lifetime == b.absolute_lifetime
        && a.login_lifetime == b.login_lifetime
        && a.max_sessions == b.max_sessions;
    if !session_same {
        changed.push("[session]");
    }
    if old.headers.claims != new.headers.claims {
        changed.push("headers.claims");
    }
    if old.server.public_url != new.server.public_url && new.provider.is_some() {
        changed.push("server.public_url");
    }
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
