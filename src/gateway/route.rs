//! A route as the proxy uses it (its matcher, policy, upstream pool and timeouts), and the
//! route table `authgate check` prints.

use std::time::Duration;

use crate::config::{AuthMode, Config};
use crate::policy::RouteAccess;
use crate::routing::{HostPattern, normalize_route_path};
use crate::upstream::UpstreamPool;

/// One validated `[[routes]]` entry, ready to serve.
#[derive(Debug)]
pub struct Route {
    /// Name for logs and metrics.
    pub name: String,
    /// The name the config gives it, for the pages people read (none: "this application").
    pub label: Option<String>,
    /// Host matcher.
    pub host: HostPattern,
    /// Normalised path prefix.
    pub path: String,
    /// How callers authenticate.
    pub auth: AuthMode,
    /// Its rules and what callers must have.
    pub access: RouteAccess,
    /// Where requests go.
    pub upstream: UpstreamPool,
    /// The providers whose sessions and tokens are accepted here (the first is the one a
    /// sign-in goes to when only one is).
    pub providers: Vec<RouteProvider>,
    /// Send the access token upstream.
    pub pass_access_token: bool,
    /// Keep the client's `Host`.
    pub preserve_host: bool,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// The signed identity assertion sent here, if any.
    pub assertion: Option<RouteAssertion>,
}

/// A provider a route accepts, with the audiences its bearer tokens must carry here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteProvider {
    /// Its index in `Config::provider_list` (and `Gateway::verifiers`).
    pub index: usize,
    /// One of these must be in a bearer token's `aud`.
    pub audiences: Vec<String>,
}

impl Route {
    /// Does the route accept the provider at `index`?
    pub fn accepts(&self, index: usize) -> bool {
        self.providers.iter().any(|p| p.index == index)
    }
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

/// The route table as `authgate check` prints it: one aligned row per route.
pub fn route_table(config: &Config) -> String {
    let mut rows = vec![["ROUTE", "HOST", "PATH", "AUTH", "REACHED", "UPSTREAM", "POLICY"].map(String::from)];
    let forward = config.forward_auth.enabled;
    for r in &config.routes {
        let access = RouteAccess::from_route(r, config.server.case_insensitive_paths).unwrap_or_default();
        let path = normalize_route_path(&r.path).unwrap_or_else(|_| r.path.clone());
        let host = HostPattern::parse(&r.host).map(|h| h.to_string()).unwrap_or_else(|_| r.host.clone());
        rows.push([
            r.name.clone().unwrap_or_else(|| format!("{host}{path}")),
            host,
            path,
            r.auth.as_str().to_owned(),
            // how requests reach the route: through authgate, or a front proxy asking it
            match (r.upstream.is_empty(), forward) {
                (false, true) => "inline+forward",
                (false, false) => "inline",
                (true, _) => "forward",
            }
            .to_owned(),
            if r.upstream.is_empty() { "-".to_owned() } else { r.upstream.join(",") },
            access.policy.summary(),
        ]);
        // the rules inside the route, one indented row each, in the order they are tried
        for line in access.rule_summaries() {
            rows.push([
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                format!("  {line}"),
            ]);
        }
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
