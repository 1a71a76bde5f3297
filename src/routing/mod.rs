//! The route table: host (exact, `*.suffix` or `*`), then the longest path prefix on the
//! normalised path. Built once per config and shared read-only by every request.

mod glob;
mod path;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

pub use glob::PathGlob;
pub use path::{
    PathRejection, has_dot_segments, normalize_path, normalize_route_path, path_has_prefix, route_key,
};

/// The host part of a route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `*`: any host.
    Any,
    /// `*.example.com`: any host under the suffix (stored with its leading dot), not the apex.
    Suffix(String),
    /// `app.example.com`.
    Exact(String),
}

impl HostPattern {
    /// Parses a route's `host` key.
    pub fn parse(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        let lower = match lower.strip_suffix('.') {
            Some(l) if l != "*" => l.to_owned(),
            _ => lower,
        };
        if lower == "*" {
            return Ok(HostPattern::Any);
        }
        let (pattern, name) = match lower.strip_prefix("*.") {
            Some(rest) => (HostPattern::Suffix(format!(".{rest}")), rest),
            None => (HostPattern::Exact(lower.clone()), lower.as_str()),
        };
        // IPv6 only in brackets: that is how a request's Host spells it
        let valid_ip = is_bracketed_ipv6(name) || name.parse::<std::net::Ipv4Addr>().is_ok();
        let valid_name = is_dns_name(name);
        if !(valid_name || matches!(pattern, HostPattern::Exact(_)) && valid_ip) {
            return Err(format!("{s:?} is not a host name, `*.domain` or `*` (no scheme, port or path)"));
        }
        Ok(pattern)
    }

    fn specificity(&self) -> usize {
        match self {
            HostPattern::Any => 0,
            HostPattern::Suffix(s) => s.len(),
            HostPattern::Exact(_) => usize::MAX,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
            HostPattern::Exact(h) => f.write_str(h),
        }
    }
}

/// The authority a request names, canonical: `host[:port]`, host in lower case without a
/// trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    text: String,
    host_len: usize,
}

impl Authority {
    /// `app.example.com`, `127.0.0.1` or `[::1]`: what routes match.
    pub fn host(&self) -> &str {
        &self.text[..self.host_len]
    }

    /// The explicit port, if any.
    pub fn port(&self) -> Option<u16> {
        self.text.get(self.host_len + 1..).and_then(|p| p.parse().ok())
    }

    /// `host[:port]`, for `Host` and `X-Forwarded-Host`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Parses a request's `Host` (or `:authority`); `None` if it is anything but a DNS name, an
/// IPv4 address or a bracketed IPv6 address, with an optional numeric port. Strict, because
/// upstream frameworks split a malformed host differently (`a.com:b.com` is `a.com` to some).
pub fn parse_authority(raw: &str) -> Option<Authority> {
    let (host, port) = if raw.starts_with('[') {
        let end = raw.find(']')?;
        match &raw[end + 1..] {
            "" => (&raw[..=end], None),
            rest => (&raw[..=end], Some(rest.strip_prefix(':')?)),
        }
    } else {
        match raw.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
        None => None,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if !(is_dns_name(host) || is_bracketed_ipv6(host)) {
        return None;
    }
    let mut text = host.to_ascii_lowercase();
    if let Some(p) = port {
        text.push(':');
        text.push_str(&p.to_string());
    }
    Some(Authority { text, host_len: host.len() })
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn is_bracketed_ipv6(name: &str) -> bool {
    name.strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok())
}

/// A lookup structure over routes of any type `R` that has a host and a path prefix.
#[derive(Debug)]
pub struct RouteTable<R> {
    exact: HashMap<String, Vec<Arc<R>>>,
    /// Wildcard buckets, most specific (longest suffix) first.
    suffixes: Vec<(String, Vec<Arc<R>>)>,
    any: Vec<Arc<R>>,
    prefix_of: fn(&R) -> &str,
}

impl<R> RouteTable<R> {
    /// Builds the table; `host_of` and `prefix_of` read a route's pattern and normalised prefix.
    pub fn new(
        routes: impl IntoIterator<Item = Arc<R>>,
        host_of: impl Fn(&R) -> &HostPattern,
        prefix_of: fn(&R) -> &str,
    ) -> Self {
        let mut exact: HashMap<String, Vec<Arc<R>>> = HashMap::new();
        let mut suffixes: HashMap<String, Vec<Arc<R>>> = HashMap::new();
        let mut any = Vec::new();
        for r in routes {
            match host_of(&r) {
                HostPattern::Any => any.push(r),
                HostPattern::Suffix(s) => suffixes.entry(s.clone()).or_default().push(r),
                HostPattern::Exact(h) => exact.entry(h.clone()).or_default().push(r),
            }
        }
        // Longest prefix first, so the first match is the most specific one.
        let by_len = |v: &mut Vec<Arc<R>>| v.sort_by_key(|r| std::cmp::Reverse(prefix_of(r).len()));
        exact.values_mut().for_each(by_len);
        suffixes.values_mut().for_each(by_len);
        by_len(&mut any);
        let mut suffixes: Vec<_> = suffixes.into_iter().collect();
        suffixes.sort_by_key(|(s, _)| std::cmp::Reverse(HostPattern::Suffix(s.clone()).specificity()));
        Self { exact, suffixes, any, prefix_of }
    }

    /// The route for a normalised host and a route key (see `route_key`). The most specific
    /// host pattern that matches decides alone (like a server block): its routes are searched,
    /// never a less specific host's.
    pub fn find(&self, host: &str, key: &str) -> Option<&Arc<R>> {
        let bucket = self
            .exact
            .get(host)
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(suffix, _)| host.ends_with(suffix.as_str()) && host.len() > suffix.len())
                    .map(|(_, routes)| routes)
            })
            .unwrap_or(&self.any);
        bucket.iter().find(|r| path_has_prefix(key, (self.prefix_of)(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct R {
        name: &'static str,
        host: HostPattern,
        path: String,
    }

    fn table(spec: &[(&'static str, &str, &str)]) -> RouteTable<R> {
        let routes = spec.iter().map(|(name, host, path)| {
            Arc::new(R {
                name,
                host: HostPattern::parse(host).unwrap(),
                path: normalize_route_path(path).unwrap(),
            })
        });
        RouteTable::new(routes, |r| &r.host, |r| &r.path)
    }

    #[test]
    fn most_specific_host_then_longest_prefix() {
        let t = table(&[
            ("app-root", "app.example.com", "/"),
            ("app-admin", "app.example.com", "/admin"),
            ("app-admin-api", "app.example.com", "/admin/api"),
            ("wild", "*.example.com", "/"),
            ("deep-wild", "*.eu.example.com", "/"),
            ("fallback", "*", "/"),
            ("fallback-pub", "*", "/pub"),
        ]);
        let cases = [
            ("app.example.com", "/", Some("app-root")),
            ("app.example.com", "/admin", Some("app-admin")),
            ("app.example.com", "/admin/", Some("app-admin")),
            ("app.example.com", "/admin/api/v1", Some("app-admin-api")),
            ("app.example.com", "/administrator", Some("app-root")),
            ("app.example.com", "/admin.json", Some("app-admin")),
            ("app.example.com", "/admin/api.xml", Some("app-admin-api")),
            ("app.example.com", "/admin.json/api", Some("app-admin")),
            ("app.example.com", "/admin;jsessionid=1/x", Some("app-admin")),
            ("other.example.com", "/admin", Some("wild")),
            ("a.b.example.com", "/", Some("wild")),
            ("x.eu.example.com", "/", Some("deep-wild")),
            ("example.com", "/", Some("fallback")),
            ("evil.com", "/pub/x", Some("fallback-pub")),
            ("example.com.evil.com", "/", Some("fallback")),
            ("notexample.com", "/", Some("fallback")),
        ];
        for (host, path, want) in cases {
            let key = route_key(path, false);
            assert_eq!(t.find(host, &key).map(|r| r.name), want, "{host}{path}");
        }
    }

    #[test]
    fn a_matching_host_without_a_matching_path_is_not_found() {
        let t = table(&[("app", "app.example.com", "/app"), ("fallback", "*", "/")]);
        assert!(t.find("app.example.com", "/other").is_none());
        assert_eq!(t.find("else.example.com", "/other").map(|r| r.name), Some("fallback"));
    }

    #[test]
    fn request_authorities_are_parsed_strictly() {
        let cases = [
            ("App.Example.COM", Some(("app.example.com", None))),
            ("app.example.com:8443", Some(("app.example.com", Some(8443)))),
            ("app.example.com.", Some(("app.example.com", None))),
            ("app.example.com.:80", Some(("app.example.com", Some(80)))),
            ("127.0.0.1:8080", Some(("127.0.0.1", Some(8080)))),
            ("[::1]:8080", Some(("[::1]", Some(8080)))),
            ("[::1]", Some(("[::1]", None))),
            ("", None),
            ("app.example.com:", None),
            ("app.example.com:http", None),
            ("app.example.com:99999", None),
            ("admin.example.com:x.example.com:443", None),
            ("admin.example.com:443:443", None),
            ("a b", None),
            ("evil.com/x", None),
            ("user@evil.com", None),
            ("a..b", None),
            ("::1", None),
            ("[::1]x", None),
            ("[not-v6]", None),
        ];
        for (raw, want) in cases {
            let got = parse_authority(raw);
            let got = got.as_ref().map(|a| (a.host(), a.port()));
            assert_eq!(got, want, "{raw:?}");
        }
        assert_eq!(parse_authority("App.Example.com.:8443").unwrap().as_str(), "app.example.com:8443");
    }

    #[test]
    fn host_patterns_parse_or_explain() {
        assert_eq!(HostPattern::parse("*").unwrap(), HostPattern::Any);
        assert_eq!(HostPattern::parse("*.Example.com").unwrap(), HostPattern::Suffix(".example.com".into()));
        assert_eq!(
            HostPattern::parse("App.example.com.").unwrap(),
            HostPattern::Exact("app.example.com".into())
        );
        assert_eq!(HostPattern::parse("127.0.0.1").unwrap(), HostPattern::Exact("127.0.0.1".into()));
        for bad in
            ["", "https://app", "app:8080", "app/x", "a..b", "*.", "**.x", "a.*.com", "*.127.0.0.1x:", "::1"]
        {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
