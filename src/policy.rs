//! Per-route access policy: which licenses, permissions, user types, organizations, scopes and
//! M2M clients a route admits, and the decision for one caller.

use crate::config::RouteConfig;
use crate::identity::Identity;

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
        }
    }

    /// Decides whether `who` may use the route. Machine (client-credentials) callers are
    /// admitted only by `clients`; people by the license, permission, type and organization
    /// rules, and not at all on a route that lists clients and no rule for people (a machine
    /// endpoint). Comparisons are exact and case-sensitive.
    pub fn authorize(&self, who: &Identity) -> Result<(), Denial> {
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
        if !self.clients.is_empty() && people_rules.iter().all(|r| r.is_empty()) {
            return Err(Denial::ClientsOnly);
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
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k} [{}]", v.join(", ")))
        .collect();
        if parts.is_empty() { "-".into() } else { parts.join("; ") }
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
            assert_eq!(wiki.authorize(&person(licenses)), *want, "{licenses:?}");
        }
        let both = policy(|p| p.licenses_all = vec!["wiki".into(), "crm".into()]);
        assert_eq!(both.authorize(&person(&["wiki"])), Err(Denial::AllLicenses));
        assert_eq!(both.authorize(&person(&["crm", "wiki"])), Ok(()));
    }

    #[test]
    fn people_rules_and_scopes() {
        assert_eq!(
            policy(|p| p.permissions = vec!["org:manage".into()]).authorize(&person(&[])),
            Err(Denial::Permission)
        );
        assert_eq!(policy(|p| p.permissions = vec!["org:users:read".into()]).authorize(&person(&[])), Ok(()));
        assert_eq!(
            policy(|p| p.user_types = vec!["platform_admin".into()]).authorize(&person(&[])),
            Err(Denial::UserType)
        );
        assert_eq!(
            policy(|p| p.organizations = vec!["org-b".into()]).authorize(&person(&[])),
            Err(Denial::Organization)
        );
        assert_eq!(policy(|p| p.organizations = vec!["org-a".into()]).authorize(&person(&[])), Ok(()));
        assert_eq!(policy(|p| p.scopes = vec!["admin".into()]).authorize(&person(&[])), Err(Denial::Scope));
        assert_eq!(RoutePolicy::default().authorize(&person(&[])), Ok(()));
        let bypass = policy(|p| {
            p.licenses_any = vec!["wiki".into()];
            p.bypass_user_types = vec!["customer_user".into()];
        });
        assert_eq!(bypass.authorize(&person(&[])), Ok(()), "the type bypasses the license rule");
        let admin = Identity { user_type: Some("customer_admin".into()), ..person(&[]) };
        assert_eq!(bypass.authorize(&admin), Err(Denial::License));
    }

    #[test]
    fn machines_need_to_be_listed() {
        let listed = policy(|p| {
            p.clients = vec!["reporting-service".into()];
            p.licenses_any = vec!["wiki".into()];
        });
        assert_eq!(listed.authorize(&machine("reporting-service")), Ok(()));
        assert_eq!(listed.authorize(&machine("other-service")), Err(Denial::Client));
        assert_eq!(RoutePolicy::default().authorize(&machine("reporting-service")), Err(Denial::Client));
        // a person is still judged by licenses on a route that also lists clients
        assert_eq!(listed.authorize(&person(&["wiki"])), Ok(()));
        assert_eq!(listed.authorize(&person(&[])), Err(Denial::License));
        // and not admitted at all where only clients are listed
        let machines_only = policy(|p| p.clients = vec!["reporting-service".into()]);
        assert_eq!(machines_only.authorize(&person(&["wiki"])), Err(Denial::ClientsOnly));
    }
}
