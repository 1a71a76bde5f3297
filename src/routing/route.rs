//! A route as the proxy uses it: its matcher, policy, upstream pool and timeouts.

use std::time::Duration;

use super::HostPattern;
use crate::config::AuthMode;
use crate::policy::RoutePolicy;
use crate::upstream::UpstreamPool;

/// One validated `[[routes]]` entry, ready to serve.
#[derive(Debug)]
pub struct Route {
    /// Name for logs and metrics.
    pub name: String,
    /// Host matcher.
    pub host: HostPattern,
    /// Normalised path prefix.
    pub path: String,
    /// How callers authenticate.
    pub auth: AuthMode,
    /// What callers must have.
    pub policy: RoutePolicy,
    /// Where requests go.
    pub upstream: UpstreamPool,
    /// Audiences accepted in bearer tokens here.
    pub audiences: Vec<String>,
    /// Send the access token upstream.
    pub pass_access_token: bool,
    /// Keep the client's `Host`.
    pub preserve_host: bool,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// The signed identity assertion sent here, if any.
    pub assertion: Option<RouteAssertion>,
}

/// How a route's upstream gets the signed identity assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAssertion {
    /// The route's index in the config (the assertion cache keys on it).
    pub index: usize,
    /// The assertion's `aud`.
    pub audience: String,
}

/// Upstream timeouts of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// Between response bytes.
    pub read: Duration,
    /// Between request bytes.
    pub write: Duration,
    /// Idle pooled connection.
    pub idle: Duration,
}
