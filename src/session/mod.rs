//! Server-side sessions: the model, its encryption, and the stores that hold the ciphertext.
//!
//! The browser holds only an opaque ticket (a session id and a per-session key). The store holds
//! AES-256-GCM ciphertext under a keyed hash of the id, with the id as associated data; the
//! encryption key comes from the ticket's key and the gateway's secret together. A dump of the
//! store is useless without the cookies and the secret; a cookie is useless without the store.

mod crypto;
mod model;
mod redis;
mod redis_scripts;
mod store;

pub use crypto::{SealError, SessionKey, SessionSealer, SessionTicket};
pub use model::{LoginState, Session, SessionTokens};
pub use redis::{RedisSettings, RedisStore, SentinelSettings};
pub use store::{
    LastUsed, MemoryStore, SessionStore, SessionSummary, StoreError, StoreEvent, StoreListener, StoredSession,
};

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::identity::Identity;

    /// What a store holds for a real session: no token, email, name or license in plaintext,
    /// and nothing that names the session id.
    #[tokio::test]
    async fn the_store_holds_no_plaintext() {
        let identity = Identity {
            subject: "a1b2c3d4-0000-4000-8000-00000000a11c".into(),
            client_id: Some("authgate".into()),
            email: Some("alice@acme.test".into()),
            name: Some("Alice Anders".into()),
            given_name: Some("Alice".into()),
            family_name: Some("Anders".into()),
            organization_id: Some("org-acme".into()),
            user_type: Some("customer_admin".into()),
            licenses: vec!["wiki".into(), "crm".into()],
            permissions: vec!["org:manage".into()],
            scopes: vec!["openid".into()],
            expires_at: crate::clock::unix_now() + 3600,
            ..Identity::default()
        };
        let session = Session {
            identity,
            tokens: SessionTokens {
                access_token: "eyJhbGciOiJSUzI1NiJ9.ACCESS-TOKEN-PAYLOAD.sig".into(),
                refresh_token: Some("REFRESH-TOKEN-VALUE".into()),
                id_token: "eyJhbGciOiJSUzI1NiJ9.ID-TOKEN-PAYLOAD.sig".into(),
                access_expires_at: 0,
                access_issued_at: 0,
            },
            sid: Some("idp-session-id".into()),
            created_at: 0,
            expires_at: crate::clock::unix_now() + 3600,
            provider: String::new(),
        };
        let sealer = SessionSealer::new(b"test-secret-0123456789abcdefghijklmnop");
        let store = MemoryStore::new(10, Duration::from_secs(60), Duration::from_secs(60));
        let ticket = SessionTicket::generate().unwrap();
        let key = sealer.session_key(&ticket);
        let stored = StoredSession {
            sealed: sealer.seal_session(&ticket, &session).unwrap(),
            version: 1,
            user: sealer.user_index(&session.identity.subject),
            expires_at: session.expires_at,
            created_at: session.created_at,
            sid: None,
            last_used: LastUsed::default(),
        };
        assert!(store.save(&key, stored, None).await.unwrap());

        let held = store.load(&key).await.unwrap().unwrap();
        let mut everything = held.sealed.clone();
        everything.extend_from_slice(&held.user);
        everything.extend_from_slice(&key.0);
        let text = String::from_utf8_lossy(&everything);
        for secret in [
            "ACCESS-TOKEN",
            "REFRESH-TOKEN",
            "ID-TOKEN",
            "alice",
            "Alice",
            "acme",
            "wiki",
            "a1b2c3d4",
            "idp-session-id",
            &ticket.encode(),
        ] {
            assert!(!text.contains(secret), "{secret} is readable in the store");
        }
        // and the cookie (with the gateway secret) opens it again
        let opened: Session = sealer.open_session(&ticket, &held.sealed).unwrap();
        assert_eq!(opened.tokens.refresh_token.as_deref(), Some("REFRESH-TOKEN-VALUE"));
        assert_eq!(opened.identity.email.as_deref(), Some("alice@acme.test"));
    }
}
