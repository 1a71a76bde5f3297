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
mod tests;
