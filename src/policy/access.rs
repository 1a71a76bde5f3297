//! Who may use a route before anyone signs in: the route's ordered rules (by method, path and
//! network), its CORS preflight pass and its allowed and denied networks. The outcome is a
//! plain `Access`: forward without sign-in, refuse, or authenticate and apply a policy.

use std::net::IpAddr;

use http::{HeaderMap, Method};
use ipnet::IpNet;

use super::RoutePolicy;
use crate::config::{RouteConfig, RuleAccess};
use crate::routing::PathGlob;

/// The access rules of one route, with its own policy.
#[derive(Debug, Default)]
pub struct RouteAccess {
    /// The route's own policy (what applies when no rule says otherwise).
    pub policy: RoutePolicy,
    rules: Vec<AccessRule>,
    /// Some rule matches on methods: a method-override header is refused.
    judges_methods: bool,
    cors_preflight: bool,
    allow_networks: Vec<IpNet>,
    deny_networks: Vec<IpNet>,
}

#[derive(Debug)]
struct AccessRule {
    methods: Vec<Method>,
    paths: Vec<PathGlob>,
    networks: Vec<IpNet>,
    action: RuleAction,
}

#[derive(Debug)]
enum RuleAction {
    Public,
    Deny,
    Policy(Box<RoutePolicy>),
}

/// What a request on a route is, for the rules: read once per request, and only on a route
/// that has rules.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// Its method.
    pub method: &'a Method,
    /// Its route key (`routing::route_key` of the normalised path).
    pub key: &'a str,
    /// Its headers (a preflight is told by them).
    pub headers: &'a HeaderMap,
    /// The client's address, through trusted proxies.
    pub client: Option<IpAddr>,
}

/// What the rules make of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// Authenticate the caller, then apply this policy.
    Policy(&'a RoutePolicy),
    /// Forward without sign-in and without identity headers.
    Public(Pass),
    /// Refuse with 403.
    Deny(Refusal),
}

/// Why a request passes without sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The rule at this index (in the route's `rules`) is `public`.
    Rule(usize),
    /// The client is in `allow_networks`.
    Network,
    /// A CORS preflight on a `cors_preflight` route.
    Preflight,
}

/// Why a request is refused before sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The rule at this index is `deny`.
    Rule(usize),
    /// The client is in `deny_networks`, or its address is unknown where networks are denied.
    Network,
    /// A method-override header on a route whose rules judge methods (400): the app would run
    /// another method than the one judged.
    MethodOverride,
}

/// Headers with which frameworks (Rails, Laravel, Symfony, Express `method-override`) let a
/// request run as another method than its own.
const METHOD_OVERRIDE_HEADERS: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

impl Refusal {
    /// The code for logs and metrics.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Rule(_) => "denied_by_rule",
            Refusal::Network => "network_denied",
            Refusal::MethodOverride => "method_override",
        }
    }

    /// The status it is answered with.
    pub fn status(self) -> u16 {
        match self {
            Refusal::MethodOverride => 400,
            _ => 403,
        }
    }
}

impl RouteAccess {
    /// The access rules written in a route's config; a method or pattern that validation
    /// should have refused is an error here (never a condition silently left out).
    pub fn from_route(r: &RouteConfig, case_insensitive: bool) -> Result<Self, String> {
        let policy = RoutePolicy::from_route(r);
        let mut rules = Vec::with_capacity(r.rules.len());
        for (j, rule) in r.rules.iter().enumerate() {
            let methods = rule
                .methods
                .iter()
                .map(|m| Method::from_bytes(m.as_bytes()).map_err(|_| format!("rules[{j}].methods: {m:?}")))
                .collect::<Result<_, _>>()?;
            let paths = rule
                .paths
                .iter()
                .map(|p| PathGlob::parse(p, case_insensitive).map_err(|e| format!("rules[{j}].paths: {e}")))
                .collect::<Result<_, _>>()?;
            rules.push(AccessRule {
                methods,
                paths,
                networks: rule.networks.clone(),
                action: match rule.access {
                    Some(RuleAccess::Public) => RuleAction::Public,
                    Some(RuleAccess::Deny) => RuleAction::Deny,
                    None => RuleAction::Policy(Box::new(policy.overridden_by(rule))),
                },
            });
        }
        Ok(Self {
            policy,
            judges_methods: rules.iter().any(|r| !r.methods.is_empty()),
            rules,
            cors_preflight: r.cors_preflight,
            allow_networks: r.allow_networks.clone(),
            deny_networks: r.deny_networks.clone(),
        })
    }

    /// Only the route's policy, whatever the request: nothing here to read per request.
    pub fn is_plain(&self) -> bool {
        self.rules.is_empty()
            && !self.cors_preflight
            && self.allow_networks.is_empty()
            && self.deny_networks.is_empty()
    }

    /// Judges a request, in this order: a denied network (or an unknown client address where
    /// networks are denied) is refused; the first rule that matches makes it public, refuses
    /// it, or chooses the policy; where no rule matched, an allowed network passes; a preflight
    /// passes on a `cors_preflight` route; otherwise the policy applies.
    pub fn judge(&self, req: &AccessRequest<'_>) -> Access<'_> {
        let from = |nets: &[IpNet]| req.client.is_some_and(|ip| nets.iter().any(|n| n.contains(&ip)));
        if !self.deny_networks.is_empty() && (req.client.is_none() || from(&self.deny_networks)) {
            return Access::Deny(Refusal::Network);
        }
        if self.judges_methods && METHOD_OVERRIDE_HEADERS.iter().any(|h| req.headers.contains_key(*h)) {
            return Access::Deny(Refusal::MethodOverride);
        }
        let mut policy = &self.policy;
        match self.rules.iter().enumerate().find(|(_, rule)| rule.matches(req)) {
            Some((i, rule)) => match &rule.action {
                RuleAction::Public => return Access::Public(Pass::Rule(i)),
                RuleAction::Deny => return Access::Deny(Refusal::Rule(i)),
                // a stricter area stays stricter, for allowed networks too
                RuleAction::Policy(p) => policy = p,
            },
            None if from(&self.allow_networks) => return Access::Public(Pass::Network),
            None => {}
        }
        // a preflight carries no credentials and only asks the app whether it may ask: it
        // passes wherever it would otherwise get 401
        if self.cors_preflight && is_preflight(req.method, req.headers) {
            return Access::Public(Pass::Preflight);
        }
        Access::Policy(policy)
    }

    /// One summary line per rule, for the route table.
    pub fn rule_summaries(&self) -> Vec<String> {
        let mut out = Vec::new();
        let nets = |n: &[IpNet]| n.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        if !self.deny_networks.is_empty() {
            out.push(format!("from [{}]: deny", nets(&self.deny_networks)));
        }
        for rule in &self.rules {
            let mut cond = Vec::new();
            if !rule.methods.is_empty() {
                cond.push(rule.methods.iter().map(Method::as_str).collect::<Vec<_>>().join("|"));
            }
            if !rule.paths.is_empty() {
                cond.push(rule.paths.iter().map(|p| p.source.as_str()).collect::<Vec<_>>().join(" "));
            }
            if !rule.networks.is_empty() {
                cond.push(format!("from [{}]", nets(&rule.networks)));
            }
            let action = match &rule.action {
                RuleAction::Public => "public".to_owned(),
                RuleAction::Deny => "deny".to_owned(),
                RuleAction::Policy(p) => p.summary(),
            };
            out.push(format!("{}: {action}", cond.join(" ")));
        }
        if !self.allow_networks.is_empty() {
            out.push(format!("from [{}]: public", nets(&self.allow_networks)));
        }
        if self.cors_preflight {
            out.push("CORS preflight: public".to_owned());
        }
        out
    }
}

impl AccessRule {
    fn matches(&self, req: &AccessRequest<'_>) -> bool {
        // `GET` covers `HEAD` (the app runs the same handler for both), and `delete` is `DELETE`
        // (frameworks such as Django upper-case the method they are given)
        let asked = req.method.as_str();
        let method = self.methods.is_empty()
            || self.methods.iter().any(|m| {
                m.as_str().eq_ignore_ascii_case(asked)
                    || (m == Method::GET && asked.eq_ignore_ascii_case("HEAD"))
            });
        let path = self.paths.is_empty() || self.paths.iter().any(|p| p.matches(req.key));
        let network = self.networks.is_empty()
            || req.client.is_some_and(|ip| self.networks.iter().any(|n| n.contains(&ip)));
        method && path && network
    }
}

/// A CORS preflight (Fetch standard): `OPTIONS` with `Origin` and an
/// `Access-Control-Request-Method` naming a method. Browsers never send credentials with one.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    let names_a_method = |v: &http::HeaderValue| {
        !v.is_empty()
            && v.as_bytes().iter().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
    };
    method == Method::OPTIONS
        && headers.contains_key(http::header::ORIGIN)
        && headers.get(http::header::ACCESS_CONTROL_REQUEST_METHOD).is_some_and(names_a_method)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(toml_text: &str) -> RouteAccess {
        let r: RouteConfig = toml::from_str(toml_text).unwrap();
        RouteAccess::from_route(&r, true).unwrap()
    }

    fn judge<'a>(
        access: &'a RouteAccess,
        method: &str,
        key: &str,
        headers: &[(&str, &str)],
        client: &str,
    ) -> Access<'a> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let req = AccessRequest { method: &method, key, headers: &map, client: client.parse().ok() };
        access.judge(&req)
    }

    const LEGACY: &str = r#"
        upstream = "http://127.0.0.1:3000"
        auth = "browser"
        licenses = ["wiki"]
        cors_preflight = true
        allow_networks = ["10.1.0.0/16"]
        deny_networks = ["10.1.66.0/24"]
        [[rules]]
        paths = ["/health"]
        access = "public"
        [[rules]]
        methods = ["POST"]
        paths = ["/hooks/*"]
        access = "public"
        [[rules]]
        paths = ["/hooks/*"]
        access = "deny"
        [[rules]]
        paths = ["/admin/*"]
        permissions = ["wiki:admin"]
        [[rules]]
        methods = ["GET"]
        paths = ["/metrics"]
        networks = ["192.168.0.0/16"]
        access = "public"
        [[rules]]
        paths = ["/metrics"]
        access = "deny"
    "#;

    #[test]
    fn first_matching_rule_decides() {
        let access = route(LEGACY);
        let outside = "203.0.113.9";
        assert_eq!(judge(&access, "GET", "/health", &[], outside), Access::Public(Pass::Rule(0)));
        assert_eq!(judge(&access, "POST", "/hooks/github", &[], outside), Access::Public(Pass::Rule(1)));
        assert_eq!(judge(&access, "GET", "/hooks/github", &[], outside), Access::Deny(Refusal::Rule(2)));
        assert_eq!(judge(&access, "PUT", "/hooks", &[], outside), Access::Deny(Refusal::Rule(2)));
        let Access::Policy(admin) = judge(&access, "GET", "/admin/users", &[], outside) else {
            panic!("the admin rule chooses a policy")
        };
        // the rule's key in place of the route's, the rest kept
        assert_eq!(admin.permissions, ["wiki:admin"]);
        assert_eq!(admin.licenses_any, ["wiki"]);
        assert_eq!(judge(&access, "GET", "/wiki/page", &[], outside), Access::Policy(&access.policy));
        assert_eq!(judge(&access, "HEAD", "/metrics", &[], "192.168.1.1"), Access::Public(Pass::Rule(4)));
        assert_eq!(judge(&access, "POST", "/metrics", &[], "192.168.1.1"), Access::Deny(Refusal::Rule(5)));
        assert_eq!(judge(&access, "GET", "/metrics", &[], outside), Access::Deny(Refusal::Rule(5)));
        // a method in lower case is the same method to the frameworks that upper-case it
        assert_eq!(judge(&access, "post", "/hooks/github", &[], outside), Access::Public(Pass::Rule(1)));
        assert_eq!(judge(&access, "get", "/metrics", &[], outside), Access::Deny(Refusal::Rule(5)));
        // a method override would run another method than the one judged
        let over = [("X-HTTP-Method-Override", "DELETE")];
        assert_eq!(
            judge(&access, "POST", "/hooks/github", &over, outside),
            Access::Deny(Refusal::MethodOverride)
        );
    }

    #[test]
    fn a_stricter_area_stays_stricter_from_allowed_networks() {
        let access = route(LEGACY);
        let Access::Policy(admin) = judge(&access, "GET", "/admin/users", &[], "10.1.2.3") else {
            panic!("an allowed network does not open the admin area")
        };
        assert_eq!(admin.permissions, ["wiki:admin"]);
        // elsewhere it passes
        assert_eq!(judge(&access, "GET", "/wiki/x", &[], "10.1.2.3"), Access::Public(Pass::Network));
    }

    #[test]
    fn networks_and_preflights() {
        let access = route(LEGACY);
        let preflight = [("Origin", "https://ui.example.com"), ("Access-Control-Request-Method", "PUT")];
        let outside = "203.0.113.9";
        assert_eq!(
            judge(&access, "OPTIONS", "/wiki/x", &preflight, outside),
            Access::Public(Pass::Preflight)
        );
        // an OPTIONS that is not a preflight is judged as usual
        assert_eq!(
            judge(&access, "OPTIONS", "/wiki/x", &preflight[..1], outside),
            Access::Policy(&access.policy)
        );
        assert_eq!(judge(&access, "OPTIONS", "/wiki/x", &[], outside), Access::Policy(&access.policy));
        // a denying rule wins over the preflight pass
        assert_eq!(
            judge(&access, "OPTIONS", "/hooks/x", &preflight, outside),
            Access::Deny(Refusal::Rule(2))
        );
        assert_eq!(judge(&access, "GET", "/wiki/x", &[], "10.1.2.3"), Access::Public(Pass::Network));
        assert_eq!(judge(&access, "GET", "/wiki/x", &[], "10.1.66.7"), Access::Deny(Refusal::Network));
        // an unknown client address is refused where networks are denied...
        assert_eq!(judge(&access, "GET", "/wiki/x", &[], "unknown"), Access::Deny(Refusal::Network));
        // ...and in no allowed network
        let allow_only = route(&LEGACY.replace("deny_networks = [\"10.1.66.0/24\"]", ""));
        assert_eq!(judge(&allow_only, "GET", "/wiki/x", &[], "unknown"), Access::Policy(&allow_only.policy));
        // a preflight must name a method
        let bad = [("Origin", "https://ui.example.com"), ("Access-Control-Request-Method", "P UT")];
        assert_eq!(judge(&access, "OPTIONS", "/wiki/x", &bad, outside), Access::Policy(&access.policy));
    }

    #[test]
    fn a_route_without_rules_is_plain() {
        let plain = route("upstream = \"http://127.0.0.1:3000\"\nauth = \"browser\"");
        assert!(plain.is_plain());
        assert!(!route(LEGACY).is_plain());
        assert_eq!(judge(&plain, "OPTIONS", "/x", &[], "10.0.0.1"), Access::Policy(&plain.policy));
    }

    #[test]
    fn rules_are_summarised_for_the_route_table() {
        let lines = route(LEGACY).rule_summaries();
        assert_eq!(lines[0], "from [10.1.66.0/24]: deny");
        assert_eq!(lines[2], "POST /hooks/*: public");
        assert_eq!(lines[4], "/admin/*: licenses any [wiki]; permissions [wiki:admin]");
        assert_eq!(lines[5], "GET /metrics from [192.168.0.0/16]: public");
        assert_eq!(lines.last().map(String::as_str), Some("CORS preflight: public"));
    }
}
