//! The rules of `[[routes]]`: unique host + path and names, upstream origins, and what each
//! `auth` mode needs from the rest of the configuration.

use std::collections::HashMap;

use super::{Problems, origin_url, timeout};
use crate::config::{AuthMode, ClaimRuleConfig, Config, RouteConfig, RuleAccess};
use crate::routing::{HostPattern, PathGlob, normalize_route_path, path_has_prefix};

/// Checks every route.
pub(super) fn routes(config: &Config, p: &mut Problems) {
    if config.routes.is_empty() {
        p.at("routes", "no routes: add at least one [[routes]] table");
    }
    let mut keys: HashMap<(String, String), usize> = HashMap::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, r) in config.routes.iter().enumerate() {
        let at = |k: &str| format!("routes[{i}].{k}");
        let host = match HostPattern::parse(&r.host) {
            Ok(h) => Some(h),
            Err(e) => {
                p.at(at("host"), e);
                None
            }
        };
        let path = match normalize_route_path(&r.path) {
            Ok(path) => Some(path),
            Err(e) => {
                p.at(at("path"), e);
                None
            }
        };
        if let (Some(h), Some(mut path)) = (host, path) {
            if config.server.case_insensitive_paths {
                path.make_ascii_lowercase();
            }
            if let Some(first) = keys.insert((h.to_string(), path.clone()), i) {
                p.at(at("path"), format!("host {} path {path} is already routed by routes[{first}]", h));
            }
        }
        if let Some(name) = &r.name {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                p.at(at("name"), "use letters, digits, '-', '_' and '.' only");
            } else if let Some(first) = names.insert(name.clone(), i) {
                p.at(at("name"), format!("{name:?} is already the name of routes[{first}]"));
            }
        }
        if r.upstream.is_empty() && !config.forward_auth.enabled {
            p.at(
                at("upstream"),
                "needs at least one upstream URL (only a route a front proxy serves, with [forward_auth] enabled, has none)",
            );
        }
        if r.upstream.is_empty()
            && config.assertion.enabled
            && r.auth != AuthMode::Public
            && r.assertion != Some(false)
            && r.assertion_audience.is_none()
        {
            p.at(at("assertion_audience"), "a route without upstream needs the assertion's audience named");
        }
        for (j, u) in r.upstream.iter().enumerate() {
            if let Err(e) = origin_url(u) {
                p.at(format!("routes[{i}].upstream[{j}]"), e);
            }
        }
        match r.auth {
            AuthMode::Public => {
                for key in r.policy_keys_set() {
                    p.at(at(key), "has no effect on a `public` route: nobody is authenticated there");
                }
            }
            mode => {
                let list = config.provider_list();
                let accepted = config.route_providers(r);
                for (j, name) in r.providers.iter().enumerate() {
                    if !list.iter().any(|(n, _)| n == name) {
                        let known: Vec<&str> = list.iter().map(|(n, _)| *n).collect();
                        p.at(
                            format!("routes[{i}].providers[{j}]"),
                            format!("no provider is named {name:?} (configured: {})", known.join(", ")),
                        );
                    }
                }
                if list.is_empty() {
                    p.at(at("auth"), format!("`{}` routes need a [provider] section", mode.as_str()));
                } else if r.providers.is_empty() && accepted.is_empty() {
                    p.at(
                        at("providers"),
                        "several providers are configured and none is [provider]: name the ones this route accepts",
                    );
                }
                if mode == AuthMode::Browser && !r.clients.is_empty() {
                    p.at(
                        at("clients"),
                        "client-credentials tokens are bearer tokens: use auth = \"api\" or \"any\"",
                    );
                }
                let audience_known = !r.audience.is_empty()
                    || (!accepted.is_empty() && accepted.iter().all(|&k| !list[k].1.audience.is_empty()));
                if matches!(mode, AuthMode::Api | AuthMode::Any) && !audience_known {
                    p.at(
                        at("audience"),
                        "bearer tokens need an expected audience: set it here or in each of its providers' audience",
                    );
                }
                if mode == AuthMode::Browser && !r.audience.is_empty() {
                    p.at(at("audience"), "applies to bearer tokens only: use auth = \"api\" or \"any\"");
                }
                // sign-in sets cookies on the host it returns to: it must be a public_url's host
                if let (AuthMode::Browser | AuthMode::Any, Ok(HostPattern::Exact(h))) =
                    (mode, HostPattern::parse(&r.host))
                {
                    let covered = config.server.public_url.iter().any(|u| {
                        url::Url::parse(u).ok().and_then(|u| u.host_str().map(|x| x.eq_ignore_ascii_case(&h)))
                            == Some(true)
                    });
                    if !covered && !config.server.public_url.is_empty() {
                        p.at(
                            at("host"),
                            format!("browser sign-in on {h} needs a server.public_url with that host"),
                        );
                    }
                }
                if mode != AuthMode::Api && config.server.public_url.is_empty() {
                    p.at(at("auth"), "browser sign-in needs `server.public_url` to build the redirect URI");
                }
            }
        }
        claim_keys(&format!("routes[{i}]"), &r.claims, &r.emails, &r.email_domains, p);
        rules(config, i, r, p);
        for (key, d) in [
            ("connect_timeout", r.connect_timeout),
            ("read_timeout", r.read_timeout),
            ("write_timeout", r.write_timeout),
        ] {
            if let Some(d) = d {
                timeout(&at(key), d, p);
            }
        }
    }
}

/// Checks the claim and e-mail keys of a route or rule at `at`.
fn claim_keys(at: &str, claims: &[ClaimRuleConfig], emails: &[String], domains: &[String], p: &mut Problems) {
    for (j, rule) in claims.iter().enumerate() {
        let key = format!("{at}.claims[{j}]");
        if let Err(e) = crate::config::claim_path(&rule.claim) {
            p.at(format!("{key}.claim"), e);
        }
        if rule.any.is_empty() && rule.all.is_empty() {
            p.at(key.clone(), "needs `any` or `all` values");
        }
        if rule.any.iter().chain(&rule.all).any(String::is_empty) {
            p.at(key, "values must not be empty");
        }
    }
    for (j, e) in emails.iter().enumerate() {
        if !e.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && is_domain(domain)) {
            p.at(format!("{at}.emails[{j}]"), format!("{e:?} is not an e-mail address"));
        }
    }
    for (j, d) in domains.iter().enumerate() {
        if !is_domain(d) {
            p.at(format!("{at}.email_domains[{j}]"), format!("{d:?} is not a domain (no `@`, no `*`)"));
        }
    }
}

/// Checks the rules inside route `i`: each matches something, does one thing, and can match a
/// path under the route.
fn rules(config: &Config, i: usize, r: &RouteConfig, p: &mut Problems) {
    let route_path = normalize_route_path(&r.path).ok().map(|mut path| {
        if config.server.case_insensitive_paths {
            path.make_ascii_lowercase();
        }
        path
    });
    for (j, rule) in r.rules.iter().enumerate() {
        let at = format!("routes[{i}].rules[{j}]");
        if rule.methods.is_empty() && rule.paths.is_empty() && rule.networks.is_empty() {
            p.at(
                at.clone(),
                "matches every request: give `methods`, `paths` or `networks` (or set the route's own keys)",
            );
        }
        for (k, m) in rule.methods.iter().enumerate() {
            let token = !m.is_empty()
                && m.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                p.at(format!("{at}.methods[{k}]"), format!("{m:?} is not an HTTP method"));
            } else if m.bytes().any(|b| b.is_ascii_lowercase()) {
                // methods are case-sensitive: `get` is not `GET`, and no client sends it
                p.at(
                    format!("{at}.methods[{k}]"),
                    format!("methods are upper case: write {:?}", m.to_ascii_uppercase()),
                );
            }
        }
        for (k, pattern) in rule.paths.iter().enumerate() {
            let key = format!("{at}.paths[{k}]");
            match PathGlob::parse(pattern, config.server.case_insensitive_paths) {
                Err(e) => p.at(key, e),
                // `/*` on route `/` (or `/app/*` on `/app`) with no other condition is the route
                Ok(glob)
                    if rule.methods.is_empty()
                        && rule.networks.is_empty()
                        && glob
                            .covers_below()
                            .zip(route_path.as_deref())
                            .is_some_and(|(below, route)| path_has_prefix(route, below)) =>
                {
                    p.at(key, format!("{pattern:?} covers the whole route: this rule matches every request (set the route's own keys)"));
                }
                Ok(glob) => {
                    let lit = glob.literal_prefix().trim_end_matches('/');
                    let lit = if config.server.case_insensitive_paths {
                        lit.to_ascii_lowercase()
                    } else {
                        lit.to_owned()
                    };
                    if let Some(route) = &route_path {
                        // the pattern must be able to match a path this route serves
                        let reachable = route == "/"
                            || path_has_prefix(&lit, route)
                            || (route.starts_with(&lit) && glob.literal_prefix().len() < pattern.len());
                        if !reachable {
                            p.at(
                                key,
                                format!(
                                    "{pattern:?} is outside the route's path {route:?}: it can never match"
                                ),
                            );
                        }
                    }
                }
            }
        }
        let policy_keys = rule.policy_keys_set();
        match (rule.access, r.auth) {
            (Some(_), _) if !policy_keys.is_empty() => {
                for key in policy_keys {
                    p.at(format!("{at}.{key}"), "a rule with `access` applies no policy: remove one of them");
                }
            }
            (None, _) if policy_keys.is_empty() => {
                p.at(at.clone(), "needs `access = \"public\"`, `access = \"deny\"` or policy keys to apply");
            }
            (Some(RuleAccess::Public), AuthMode::Public) => {
                p.at(format!("{at}.access"), "has no effect on a `public` route: everything there is public");
            }
            (None, AuthMode::Public) => {
                p.at(
                    at.clone(),
                    "policy keys have no effect on a `public` route: nobody is authenticated there",
                );
            }
            (None, AuthMode::Browser) if rule.clients.is_some() => {
                p.at(
                    format!("{at}.clients"),
                    "client-credentials tokens are bearer tokens: use auth = \"api\" or \"any\"",
                );
            }
            _ => {}
        }
        claim_keys(
            &at,
            rule.claims.as_deref().unwrap_or_default(),
            rule.emails.as_deref().unwrap_or_default(),
            rule.email_domains.as_deref().unwrap_or_default(),
            p,
        );
    }
}

/// A DNS name as e-mail domains are written: labels of letters, digits and `-`.
fn is_domain(d: &str) -> bool {
    d.contains('.')
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}
