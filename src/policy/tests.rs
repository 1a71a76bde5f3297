//! The policy table: licenses, people rules, machines, claim and e-mail rules.

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
    assert_eq!(policy(|p| p.organizations = vec!["org-a".into()]).authorize(&person(&[]), || None), Ok(()));
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
    assert_eq!(RoutePolicy::default().authorize(&machine("reporting-service"), || None), Err(Denial::Client));
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
    let who = |email: &str, verified: bool| serde_json::json!({ "email": email, "email_verified": verified });
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
