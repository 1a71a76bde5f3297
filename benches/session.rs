//! Per-request cost of a browser session: ticket decode, keyed hash, store lookup and
//! AES-256-GCM decrypt of a realistic session. Run with `cargo bench --bench session`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

use authgate::identity::Identity;
use authgate::session::{
    LastUsed, MemoryStore, Session, SessionSealer, SessionStore, SessionTicket, SessionTokens, StoredSession,
};

fn session() -> Session {
    let now = authgate::clock::unix_now();
    Session {
        identity: Identity {
            subject: "a1b2c3d4-0000-4000-8000-00000000a11c".into(),
            client_id: Some("authgate".into()),
            email: Some("alice@acme.test".into()),
            name: Some("Alice Anders".into()),
            given_name: Some("Alice".into()),
            family_name: Some("Anders".into()),
            organization_id: Some("5f0c8a52-1d8e-4a43-9a54-6f1f5c0d2a11".into()),
            user_type: Some("customer_admin".into()),
            licenses: vec!["wiki".into(), "crm".into()],
            permissions: vec!["org:manage".into(), "org:users:read".into()],
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
            expires_at: now + 3600,
            ..Identity::default()
        },
        tokens: SessionTokens {
            access_token: "x".repeat(900),
            refresh_token: Some("r".repeat(60)),
            id_token: "i".repeat(800),
            access_expires_at: now + 900,
            access_issued_at: 0,
        },
        sid: Some("sid-123".into()),
        created_at: now,
        expires_at: now + 3600,
        provider: String::new(),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sealer = SessionSealer::new(b"bench-secret-0123456789abcdefghijklmnop");
    let store = MemoryStore::new(200_000, Duration::from_secs(3600), Duration::from_secs(600));
    let ticket = SessionTicket::generate().unwrap();
    let s = session();
    let stored = StoredSession {
        sealed: sealer.seal_session(&ticket, &s).unwrap(),
        version: 1,
        user: sealer.index("authgate user", s.identity.subject.as_bytes()),
        expires_at: s.expires_at,
        created_at: s.created_at,
        sid: None,
        last_used: LastUsed::default(),
    };
    rt.block_on(store.save(&sealer.session_key(&ticket), stored, None)).unwrap();
    let cookie = ticket.encode();

    c.bench_function("session/lookup_decode_decrypt", |b| {
        b.to_async(&rt).iter(|| async {
            let t = SessionTicket::decode(black_box(&cookie)).unwrap();
            let held = store.load(&sealer.session_key(&t)).await.unwrap().unwrap();
            let s: Session = sealer.open_session(&t, &held.sealed).unwrap();
            black_box(s.identity.licenses.len())
        })
    });
    c.bench_function("session/seal", |b| {
        b.iter(|| sealer.seal_session(&ticket, black_box(&s)).unwrap().len())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
