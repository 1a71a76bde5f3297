//! Per-route access policy: which licenses, permissions, user types, organizations, scopes and
//! M2M clients a route admits, and the decision for one caller.

use std::sync::Arc;

use serde_json::Value;

use crate::config::{ClaimRuleConfig, RouteConfig, RuleConfig, claim_path};
use crate::identity::Identity;

mod access;
pub use access::{Access, AccessRequest, Pass, Refusal, RouteAccess, is_preflight};

/// A rule on any claim: the values found at `path` must include one of `any` and all of `all`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimRule {
    /// The config's spelling, for the route table.
    pub claim: String,
    /// The keys to walk (object members, or array indexes).
    pub path: Vec<String>,
    /// At least one of these.
    pub any: Vec<String>,
    /// Every one of these.
    pub all: Vec<String>,
}

impl ClaimRule {
    /// Does `claims` satisfy the rule? A missing claim, or one that is neither a string nor an
    /// array of strings, fails closed. Values are compared exactly.
    fn holds(&self, claims: &Value) -> bool {
        let mut at = claims;
        for key in &self.path {
            at = match at {
                Value::Object(map) => match map.get(key) {
                    Some(v) => v,
                    None => return false,
                },
                Value::Array(items) => match key.parse::<usize>().ok().and_then(|i| items.get(i)) {
                    Some(v) => v,
                    None => return false,
                },
                _ => return false,
            };
        }
        let values: Vec<&str> = match at {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => match items.iter().map(Value::as_str).collect::<Option<Vec<_>>>() {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
        (self.any.is_empty() || self.any.iter().any(|a| values.contains(&a.as_str())))
            && self.all.iter().all(|a| values.contains(&a.as_str()))
    }
}

/// What a caller must have to use a route. Empty lists impose nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePolicy {
    /// At least one of these licenses.
    pub licenses_any: Vec<String>,
    /// Every one of these licenses.
    pub licenses_all: Vec<String>,
    /// Every one of these permissions.
    pub permissions: Vec<String>,
    /// `user_type` is one of these.
    pub user_types: Vec<String>,
    /// The organization is one of these.
    pub organizations: Vec<String>,
    /// Client-credentials tokens of these client ids are admitted.
    pub clients: Vec<String>,
    /// Bearer tokens must carry every one of these scopes.
    pub scopes: Vec<String>,
    /// Users of these types skip the people rules.
    pub bypass_user_types: Vec<String>,
    /// Rules on any claim (never skipped by `bypass_user_types`).
    pub claims: Vec<ClaimRule>,
    /// The verified e-mail address is one of these (stored with a lower-case domain).
    pub emails: Vec<String>,
    /// The verified e-mail address's domain is one of these (lower case).
    pub email_domains: Vec<String>,
}

/// Why a caller is refused (403); for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// None of `licenses_any`.
    #[error("lacks a required license")]
    License,
    /// Not every one of `licenses_all`.
    #[error("lacks one of the required licenses")]
    AllLicenses,
    /// Not every one of `permissions`.
    #[error("lacks a required permission")]
    Permission,
    /// `user_type` not admitted.
    #[error("user type not admitted")]
    UserType,
    /// Organization not admitted.
    #[error("organization not admitted")]
    Organization,
    /// Missing a required scope.
    #[error("lacks a required scope")]
    Scope,
    /// A client-credentials token of a client the route does not list.
    #[error("client not admitted")]
    Client,
    /// A person on a route that lists only clients.
    #[error("route admits only listed clients")]
    ClientsOnly,
    /// A claim rule does not hold.
    #[error("a required claim is missing or lacks a required value")]
    Claim,
    /// The verified e-mail address is not admitted (or there is none).
    #[error("e-mail address not admitted")]
    Email,
}

impl RoutePolicy {
    /// The policy written in a route's config.
    pub fn from_route(r: &RouteConfig) -> Self {
        Self {
            licenses_any: r.licenses.clone(),
            licenses_all: r.licenses_all.clone(),
            permissions: r.permissions.clone(),
            user_types: r.user_types.clone(),
            organizations: r.organizations.clone(),
            clients: r.clients.clone(),
            scopes: r.scopes.clone(),
            bypass_user_types: r.bypass_user_types.clone(),
            claims: claim_rules(&r.claims),
            emails: r.emails.iter().map(|e| lower_domain(e)).collect(),
            email_domains: r.email_domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
        }
    }

    /// This policy with the keys a rule sets in place of its own.
    pub fn overridden_by(&self, rule: &RuleConfig) -> Self {
        let or = |set: &Option<Vec<String>>, own: &Vec<String>| set.clone().unwrap_or_else(|| own.clone());
        Self {
            licenses_any: or(&rule.licenses, &self.licenses_any),
            licenses_all: or(&rule.licenses_all, &self.licenses_all),
            permissions: or(&rule.permissions, &self.permissions),
            user_types: or(&rule.user_types, &self.user_types),
            organizations: or(&rule.organizations, &self.organizations),
            clients: or(&rule.clients, &self.clients),
            scopes: or(&rule.scopes, &self.scopes),
            bypass_user_types: or(&rule.bypass_user_types, &self.bypass_user_types),
            claims: rule.claims.as_deref().map_or_else(|| self.claims.clone(), claim_rules),
            emails: rule
                .emails
                .as_ref()
                .map_or_else(|| self.emails.clone(), |e| e.iter().map(|e| lower_domain(e)).collect()),
            email_domains: rule.email_domains.as_ref().map_or_else(
                || self.email_domains.clone(),
                |d| d.iter().map(|d| d.to_ascii_lowercase()).collect(),
            ),
        }
    }

    /// Does the route need the caller's claims (claim or e-mail rules)?
    pub fn needs_claims(&self) -> bool {
        !self.claims.is_empty() || !self.emails.is_empty() || !self.email_domains.is_empty()
    }

    /// Decides whether `who` may use the route. Machine (client-credentials) callers are
    /// admitted only by `clients`; people by the license, permission, type and organization
    /// rules, and not at all on a route that lists clients and no rule for people (a machine
    /// endpoint). Comparisons are exact and case-sensitive.
    pub fn authorize(
        &self,
        who: &Identity,
        claims: impl FnOnce() -> Option<Arc<Value>>,
    ) -> Result<(), Denial> {
        let has = |list: &[String], x: &str| list.iter().any(|l| l == x);
        if !self.scopes.iter().all(|s| has(&who.scopes, s)) {
            return Err(Denial::Scope);
        }
        if who.machine {
            return match &who.client_id {
                Some(c) if has(&self.clients, c) => Ok(()),
                _ => Err(Denial::Client),
            };
        }
        let people_rules = [
            &self.licenses_any,
            &self.licenses_all,
            &self.permissions,
            &self.user_types,
            &self.organizations,
        ];
        if !self.clients.is_empty() && people_rules.iter().all(|r| r.is_empty()) && !self.needs_claims() {
            return Err(Denial::ClientsOnly);
        }
        // claim and e-mail rules hold for everyone, platform admins included
        if self.needs_claims() {
            let claims = claims().unwrap_or_else(|| Arc::new(Value::Null));
            if !self.claims.iter().all(|rule| rule.holds(&claims)) {
                return Err(Denial::Claim);
            }
            if !self.emails.is_empty() || !self.email_domains.is_empty() {
                // only an address the provider verified
                let verified = claims.get("email_verified") == Some(&Value::Bool(true));
                let email = claims.get("email").and_then(Value::as_str).filter(|_| verified);
                let Some((_, domain)) = email.and_then(|e| e.rsplit_once('@')) else {
                    return Err(Denial::Email);
                };
                let email = email.map(lower_domain).unwrap_or_default();
                let domain = domain.to_ascii_lowercase();
                let listed = self.emails.contains(&email) || self.email_domains.contains(&domain);
                if !listed {
                    return Err(Denial::Email);
                }
            }
        }
        if who.user_type.as_deref().is_some_and(|t| has(&self.bypass_user_types, t)) {
            return Ok(());
        }
        if !self.licenses_any.is_empty() && !self.licenses_any.iter().any(|l| has(&who.licenses, l)) {
            return Err(Denial::License);
        }
        if !self.licenses_all.iter().all(|l| has(&who.licenses, l)) {
            return Err(Denial::AllLicenses);
        }
        if !self.permissions.iter().all(|p| has(&who.permissions, p)) {
            return Err(Denial::Permission);
        }
        if !self.user_types.is_empty() && !who.user_type.as_deref().is_some_and(|t| has(&self.user_types, t))
        {
            return Err(Denial::UserType);
        }
        if !self.organizations.is_empty()
            && !who.organization_id.as_deref().is_some_and(|o| has(&self.organizations, o))
        {
            return Err(Denial::Organization);
        }
        Ok(())
    }

    /// Why `denial` refused someone, in words for the person refused: what the route needs
    /// (never what their token holds), to follow the application's name ("needs the wiki
    /// license").
    pub fn explain(&self, denial: Denial) -> String {
        let words = |list: &[String], last: &str| match list {
            [] => String::new(),
            [one] => one.clone(),
            [init @ .., end] => format!("{} {last} {end}", init.join(", ")),
        };
        match denial {
            Denial::License if self.licenses_any.len() == 1 => {
                format!("needs the {} license", words(&self.licenses_any, "or"))
            }
            Denial::License => format!("needs one of the licenses {}", words(&self.licenses_any, "or")),
            Denial::AllLicenses => format!("needs the licenses {}", words(&self.licenses_all, "and")),
            Denial::Permission if self.permissions.len() == 1 => {
                format!("needs the {} permission", words(&self.permissions, "and"))
            }
            Denial::Permission => format!("needs the permissions {}", words(&self.permissions, "and")),
            Denial::UserType => "is not open to your type of account".to_owned(),
            Denial::Organization => "is not open to your organization".to_owned(),
            Denial::Scope => format!("needs a token with the scopes {}", words(&self.scopes, "and")),
            Denial::Client => "is not open to this client application".to_owned(),
            Denial::ClientsOnly => "is open to listed applications only, not to people".to_owned(),
            Denial::Claim => "needs a group or role your account does not have".to_owned(),
            Denial::Email => "is not open to your e-mail address".to_owned(),
        }
    }

    /// A one-line summary for the route table, e.g. `licenses any [wiki, crm]`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = [
            ("licenses any", &self.licenses_any),
            ("licenses all", &self.licenses_all),
            ("permissions", &self.permissions),
            ("user_types", &self.user_types),
            ("organizations", &self.organizations),
            ("clients", &self.clients),
            ("scopes", &self.scopes),
            ("emails", &self.emails),
            ("email_domains", &self.email_domains),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k} [{}]", v.join(", ")))
        .chain(self.claims.iter().map(|c| {
            let mut s = format!("claim {}", c.claim);
            if !c.any.is_empty() {
                s.push_str(&format!(" any [{}]", c.any.join(", ")));
            }
            if !c.all.is_empty() {
                s.push_str(&format!(" all [{}]", c.all.join(", ")));
            }
            s
        }))
        .collect();
        if parts.is_empty() { "-".into() } else { parts.join("; ") }
    }
}

fn claim_rules(rules: &[ClaimRuleConfig]) -> Vec<ClaimRule> {
    rules
        .iter()
        .map(|c| ClaimRule {
            claim: c.claim.clone(),
            // validated with the config: an invalid path matches nothing (fails closed)
            path: claim_path(&c.claim).unwrap_or_else(|_| vec![String::new(), String::new()]),
            any: c.any.clone(),
            all: c.all.clone(),
        })
        .collect()
}

/// An e-mail address with its domain in lower case (the local part is the provider's to judge).
fn lower_domain(email: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
        None => email.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(licenses: &[&str]) -> Identity {
        Identity {
            subject: "u1".into(),
            client_id: Some("authgate".into()),
            organization_id: Some("org-a".into()),
            user_type: Some("customer_user".into()),
            licenses: licenses.iter().map(|s| s.to_string()).collect(),
            permissions: vec!["org:users:read".into()],
            scopes: vec!["openid".into(), "profile".into()],
            expires_at: 0,
            ..Identity::default()
        }
    }

    fn machine(client: &str) -> Identity {
        Identity { machine: true, subject: client.into(), client_id: Some(client.into()), ..person(&[]) }
    }

    fn policy(f: impl FnOnce(&mut RoutePolicy)) -> RoutePolicy {
        let mut p = RoutePolicy::default();
        f(&mut p);
        p
    }

    #[test]
    fn license_matching_is_exact() {
        let wiki = policy(|p| p.licenses_any = vec!["wiki".into()]);
        let cases: &[(&[&str], Result<(), Denial>)] = &[
            (&["wiki"], Ok(())),
            (&["crm", "wiki"], Ok(())),
            (&["Wiki"], Err(Denial::License)),
            (&["wiki "], Err(Denial::License)),
            (&["wikiadmin"], Err(Denial::License)),
            (&["wik"], Err(Denial::License)),
            (&[], Err(Denial::License)),
        ];
        for (licenses, want) in cases {
            assert_eq!(wiki.authorize(&person(licenses), || None), *want, "{licenses:?}");
        }
        let both = policy(|p| p.licenses_all = vec!["wiki".into(), "crm".into()]);
        assert_eq!(both.authorize(&person(&["wiki"]), || None), Err(Denial::AllLicenses));
        assert_eq!(both.authorize(&person(&["crm", "wiki"]), || None), Ok(()));
    }

    #[test]
    fn people_rules_and_scopes() {
        assert_eq!(
            policy(|p| p.permissions = vec!["org:manage".into()]).authorize(&person(&[]), || None),
            Err(Denial::Permission)
        );
        assert_eq!(
            policy(|p| p.permissions = vec!["org:users:read".into()]).authorize(&person(&[]), || None),
            Ok(())
        );
        assert_eq!(
            policy(|p| p.user_types = vec!["platform_admin".into()]).authorize(&person(&[]), || None),
            Err(Denial::UserType)
        );
        assert_eq!(
            policy(|p| p.organizations = vec!["org-b".into()]).authorize(&person(&[]), || None),
            Err(Denial::Organization)
        );
        assert_eq!(
            policy(|p| p.organizations = vec!["org-a".into()]).authorize(&person(&[]), || None),
            Ok(())
        );
        assert_eq!(
            policy(|p| p.scopes = vec!["admin".into()]).authorize(&person(&[]), || None),
            Err(Denial::Scope)
        );
        assert_eq!(RoutePolicy::default().authorize(&person(&[]), || None), Ok(()));
        let bypass = policy(|p| {
            p.licenses_any = vec!["wiki".into()];
            p.bypass_user_types = vec!["customer_user".into()];
        });
        assert_eq!(bypass.authorize(&person(&[]), || None), Ok(()), "the type bypasses the license rule");
        let admin = Identity { user_type: Some("customer_admin".into()), ..person(&[]) };
        assert_eq!(bypass.authorize(&admin, || None), Err(Denial::License));
    }

    #[test]
    fn machines_need_to_be_listed() {
        let listed = policy(|p| {
            p.clients = vec!["reporting-service".into()];
            p.licenses_any = vec!["wiki".into()];
        });
        assert_eq!(listed.authorize(&machine("reporting-service"), || None), Ok(()));
        assert_eq!(listed.authorize(&machine("other-service"), || None), Err(Denial::Client));
        assert_eq!(
            RoutePolicy::default().authorize(&machine("reporting-service"), || None),
            Err(Denial::Client)
        );
        // a person is still judged by licenses on a route that also lists clients
        assert_eq!(listed.authorize(&person(&["wiki"]), || None), Ok(()));
        assert_eq!(listed.authorize(&person(&[]), || None), Err(Denial::License));
        // and not admitted at all where only clients are listed
        let machines_only = policy(|p| p.clients = vec!["reporting-service".into()]);
        assert_eq!(machines_only.authorize(&person(&["wiki"]), || None), Err(Denial::ClientsOnly));
    }

    fn claims(v: serde_json::Value) -> impl FnOnce() -> Option<Arc<Value>> {
        move || Some(Arc::new(v))
    }

    fn rule(claim: &str, any: &[&str], all: &[&str]) -> ClaimRule {
        ClaimRule {
            claim: claim.into(),
            path: claim_path(claim).unwrap(),
            any: any.iter().map(|s| s.to_string()).collect(),
            all: all.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn claim_rules_on_any_claim_fail_closed() {
        let keycloak = serde_json::json!({
            "groups": ["staff", "wiki-editors"],
            "realm_access": { "roles": ["user", "offline_access"] },
            "resource_access": { "wiki": { "roles": ["editor"] } },
            "department": "Teaching",
            "level": 3,
            "mixed": ["a", 1],
            "https://example.com/roles": ["x"],
        });
        let cases = [
            (rule("groups", &["wiki-editors"], &[]), true),
            (rule("groups", &["admins", "staff"], &[]), true),
            (rule("groups", &[], &["staff", "wiki-editors"]), true),
            (rule("groups", &[], &["staff", "admins"]), false),
            (rule("groups", &["Staff"], &[]), false),
            (rule("groups", &["staff "], &[]), false),
            (rule("realm_access.roles", &["user"], &[]), true),
            (rule("/resource_access/wiki/roles", &["editor"], &[]), true),
            (rule("resource_access.crm.roles", &["editor"], &[]), false),
            (rule("department", &["Teaching"], &[]), true),
            (rule("level", &["3"], &[]), false),
            (rule("mixed", &["a"], &[]), false),
            (rule("realm_access", &["user"], &[]), false),
            (rule("/https:~1~1example.com~1roles", &["x"], &[]), true),
            (rule("groups.0", &["staff"], &[]), true),
            (rule("missing", &["x"], &[]), false),
        ];
        for (r, want) in cases {
            let p = policy(|p| p.claims = vec![r.clone()]);
            let got = p.authorize(&person(&[]), claims(keycloak.clone()));
            assert_eq!(got.is_ok(), want, "{} any {:?} all {:?}", r.claim, r.any, r.all);
        }
        // no claims at all (an opaque token): every claim rule fails
        let p = policy(|p| p.claims = vec![rule("groups", &["staff"], &[])]);
        assert_eq!(p.authorize(&person(&[]), || None), Err(Denial::Claim));
        // platform admins do not skip them
        let p = policy(|p| {
            p.claims = vec![rule("groups", &["admins"], &[])];
            p.bypass_user_types = vec!["customer_user".into()];
        });
        assert_eq!(p.authorize(&person(&[]), claims(keycloak)), Err(Denial::Claim));
    }

    #[test]
    fn email_rules_admit_only_verified_addresses_of_exact_domains() {
        let domains = policy(|p| p.email_domains = vec!["acme.test".into()]);
        let emails = policy(|p| p.emails = vec![lower_domain("alice@ACME.test")]);
        let who =
            |email: &str, verified: bool| serde_json::json!({ "email": email, "email_verified": verified });
        let cases = [
            ("alice@acme.test", true, true, true),
            ("alice@ACME.Test", true, true, true),
            ("Alice@acme.test", true, true, false),
            ("alice@acme.test", false, false, false),
            ("alice@acme.test.evil", true, false, false),
            ("alice@evilacme.test", true, false, false),
            ("alice@sub.acme.test", true, false, false),
            ("bob@acme.test", true, true, false),
            ("alice", true, false, false),
        ];
        for (email, verified, by_domain, by_address) in cases {
            assert_eq!(
                domains.authorize(&person(&[]), claims(who(email, verified))).is_ok(),
                by_domain,
                "{email}"
            );
            assert_eq!(
                emails.authorize(&person(&[]), claims(who(email, verified))).is_ok(),
                by_address,
                "{email}"
            );
        }
        assert_eq!(
            domains.authorize(&person(&[]), claims(serde_json::json!({"email_verified": true}))),
            Err(Denial::Email)
        );
    }
}
