//! Stopping without dropping a request. On SIGTERM readiness turns false at once while the
//! listeners keep accepting for `server.drain_period`: load balancers that poll readiness (and
//! Kubernetes, which takes the pod out of its Services) move traffic away meanwhile, and every
//! HTTP/1 response tells its keep-alive client to reconnect elsewhere. Only then are the
//! listeners closed and requests in flight given `server.grace_period` to finish (Pingora's
//! graceful terminate). Pingora alone closes every listener the moment SIGTERM arrives, before
//! anything upstream of it knows to stop sending.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{SignalKind, signal};

/// Whether this instance is draining: shared by the proxy, the admin listener and the signal
/// watch.
#[derive(Debug, Clone, Default)]
pub struct Drain(Arc<AtomicBool>);

impl Drain {
    /// A drain that has not started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Has a stop begun? (One relaxed load: it is read on every request.)
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Begins the stop.
    pub fn start(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The shutdown signals as Pingora takes them, with a drain before the graceful terminate:
/// SIGTERM drains then terminates gracefully, SIGINT stops at once (also during a drain; once
/// the listeners are closed Pingora's grace period runs its course), SIGQUIT is Pingora's
/// graceful upgrade. HTTP/2 clients are not told to leave during the drain (Pingora 0.9 has no
/// per-connection GOAWAY): they get it when the listeners close.
#[derive(Debug)]
pub struct DrainOnTerm {
    drain: Drain,
    period: Duration,
}

impl DrainOnTerm {
    /// Drains `drain` for `period` on SIGTERM.
    pub fn new(drain: Drain, period: Duration) -> Self {
        Self { drain, period }
    }
}

#[async_trait]
impl ShutdownSignalWatch for DrainOnTerm {
    async fn recv(&self) -> ShutdownSignal {
        let (quit, term, int) =
            (signal(SignalKind::quit()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (quit, term, int) else {
            // the signals keep their default action (the process ends, without any grace)
            tracing::error!("cannot watch the shutdown signals; SIGTERM stops without a drain");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = term.recv() => {}
        }
        self.drain.start();
        tracing::info!(
            drain_period = %humantime::format_duration(self.period),
            "SIGTERM: not ready any more, still accepting connections until the drain period ends"
        );
        tokio::select! {
            _ = tokio::time::sleep(self.period) => {}
            // a second SIGTERM (an impatient operator) ends the drain early
            _ = term.recv() => {}
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
        }
        tracing::info!("drain over: closing the listeners, requests in flight may finish");
        ShutdownSignal::GracefulTerminate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_is_seen_by_every_holder() {
        let drain = Drain::new();
        let proxy_side = drain.clone();
        assert!(!proxy_side.is_draining());
        drain.start();
        assert!(proxy_side.is_draining());
    }
}
