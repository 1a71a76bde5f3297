//! A signed-in user as the test IdP's tokens make them, for the tools that fill session stores
//! (`session_rss`, `load_credentials`).

use authgate::identity::Identity;
use authgate::session::{Session, SessionTokens};

/// User `i`, signed in at `now` at `provider` for `lifetime` seconds (its access token as long),
/// holding the `wiki` and `crm` licenses, with token sizes typical of Keycloak (access token
/// ~1.2 KB, refresh token ~0.8 KB, id_token ~1.1 KB).
pub fn sample_session(i: usize, now: u64, provider: &str, lifetime: u64) -> Session {
    let filler = |n: usize, seed: usize| -> String {
        (0..n).map(|k| char::from(b'A' + ((k * 7 + seed) % 26) as u8)).collect()
    };
    Session {
        identity: Identity {
            subject: format!("a1b2c3d4-0000-4000-8000-{i:012}"),
            client_id: Some("authgate".into()),
            email: Some(format!("user{i}@acme.test")),
            name: Some(format!("User Number {i}")),
            given_name: Some("User".into()),
            family_name: Some(format!("Number {i}")),
            organization_id: Some("5f0c8a52-1d8e-4a43-9a54-6f1f5c0d2a11".into()),
            user_type: Some("customer_user".into()),
            licenses: vec!["wiki".into(), "crm".into()],
            permissions: vec!["org:users:read".into()],
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
            expires_at: now + lifetime,
            ..Identity::default()
        },
        tokens: SessionTokens {
            access_token: filler(1200, i),
            refresh_token: Some(filler(800, i + 1)),
            id_token: filler(1100, i + 2),
            access_expires_at: now + lifetime,
            access_issued_at: now,
        },
        sid: Some(format!("sid-{i}")),
        created_at: now,
        expires_at: now + lifetime,
        provider: provider.to_owned(),
    }
}
