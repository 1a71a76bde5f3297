//! Prometheus metrics (`authgate_*`), served on the admin listener at `/metrics`. Labels are
//! bounded: route names, status classes and fixed outcome words, never paths or users.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, from 100 µs to 30 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
];

/// Every metric authgate exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by route, status class (`2xx`) and auth decision.
    pub requests: IntCounterVec,
    /// Time spent in the gateway itself (total minus upstream), by route.
    pub gateway_seconds: HistogramVec,
    /// Time spent waiting for the upstream, by route.
    pub upstream_seconds: HistogramVec,
    /// Sign-ins by outcome (`started`, `completed`, or a failure reason).
    pub logins: IntCounterVec,
    /// Bearer-token checks by result (`cached`, `verified`, `refused`).
    pub tokens: IntCounterVec,
    /// `tokens{result="cached"}`, resolved once: it is counted on every bearer request.
    pub tokens_cached: prometheus::IntCounter,
    /// JWKS fetches by outcome (`ok`, `error`).
    pub jwks_fetches: IntCounterVec,
    /// Config reloads by outcome (`ok`, `refused`).
    pub reloads: IntCounterVec,
    /// Token-endpoint calls by grant and outcome (`ok`, `refused`, `throttled`, `failed`).
    pub token_requests: IntCounterVec,
    /// Token-endpoint calls that had to wait for (or were deferred by) the budget, by grant.
    pub token_budget_waits: IntCounterVec,
    /// Session refreshes by outcome (`refreshed`, `shared`, `ended`, `deferred`, `failed`).
    pub refreshes: IntCounterVec,
    /// Revocation events by source (`webhook`, `backchannel`), type and outcome.
    pub events: IntCounterVec,
    /// Sessions held by the memory store (set when scraped).
    pub sessions: IntGauge,
    /// Seconds since the signing keys were last loaded (set when scraped).
    pub jwks_age_seconds: IntGauge,
    /// Log lines dropped because the log writer's queue was full.
    pub log_lines_dropped: prometheus::IntCounter,
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable!("{name}: {e}"));
    let _ = registry.register(Box::new(c.clone()));
    c
}

fn histogram(registry: &Registry, name: &str, help: &str) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()), &["route"])
        .unwrap_or_else(|e| unreachable!("{name}: {e}"));
    let _ = registry.register(Box::new(h.clone()));
    h
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("{name}: {e}"));
    let _ = registry.register(Box::new(g.clone()));
    g
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let tokens =
            counter(&r, "authgate_bearer_tokens_total", "Bearer-token checks by result", &["result"]);
        Self {
            tokens_cached: tokens.with_label_values(&["cached"]),
            requests: counter(
                &r,
                "authgate_requests_total",
                "Requests by route, status class and auth decision",
                &["route", "status", "decision", "mode"],
            ),
            gateway_seconds: histogram(
                &r,
                "authgate_gateway_seconds",
                "Time added by the gateway (total minus upstream)",
            ),
            upstream_seconds: histogram(
                &r,
                "authgate_upstream_seconds",
                "Time waiting for the upstream's response header",
            ),
            logins: counter(&r, "authgate_logins_total", "Browser sign-ins by outcome", &["outcome"]),
            tokens,
            jwks_fetches: counter(&r, "authgate_jwks_fetches_total", "JWKS fetches by outcome", &["outcome"]),
            reloads: counter(
                &r,
                "authgate_config_reloads_total",
                "Configuration reloads by outcome",
                &["outcome"],
            ),
            token_requests: counter(
                &r,
                "authgate_token_requests_total",
                "Token-endpoint calls by grant and outcome",
                &["grant", "outcome"],
            ),
            token_budget_waits: counter(
                &r,
                "authgate_token_budget_waits_total",
                "Token-endpoint calls delayed or deferred by the client-side budget",
                &["grant"],
            ),
            refreshes: counter(&r, "authgate_refreshes_total", "Session refreshes by outcome", &["outcome"]),
            events: counter(
                &r,
                "authgate_events_total",
                "Webhook and back-channel logout events by source, type and outcome",
                &["source", "event", "outcome"],
            ),
            sessions: gauge(&r, "authgate_sessions", "Sessions in the memory store"),
            jwks_age_seconds: gauge(
                &r,
                "authgate_jwks_age_seconds",
                "Seconds since the signing keys were loaded",
            ),
            log_lines_dropped: {
                let c = prometheus::IntCounter::new(
                    "authgate_log_lines_dropped_total",
                    "Log lines dropped because the writer could not keep up",
                )
                .unwrap_or_else(|e| unreachable!("authgate_log_lines_dropped_total: {e}"));
                let _ = r.register(Box::new(c.clone()));
                c
            },
            registry: r,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// `2xx`, `4xx`, ... for a status code (`0` when no response was sent).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}
