//! How much memory the embedded session store needs: fills a `MemoryStore` with N sessions
//! (default 100 000) sealed exactly as authgate stores them, with Keycloak-sized tokens, and
//! prints the process RSS before and after. `scripts/load` runs it.
//!
//! ```sh
//! cargo run --release --example session_rss -- 100000
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)] // a test or tool: failing loudly is the point

use std::time::Duration;

/// The allocator authgate runs with (`src/main.rs`): RSS depends on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use authgate::identity::Identity;
use authgate::session::{
    LastUsed, MemoryStore, Session, SessionSealer, SessionStore, SessionTicket, SessionTokens, StoredSession,
};

/// Resident set size of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// A signed-in user as the test IdP's tokens make them, with token sizes typical of Keycloak
/// (access token ~1.2 KB, refresh token ~0.8 KB, id_token ~1.1 KB).
fn session(i: usize, now: u64) -> Session {
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
            expires_at: now + 12 * 3600,
            ..Identity::default()
        },
        tokens: SessionTokens {
            access_token: filler(1200, i),
            refresh_token: Some(filler(800, i + 1)),
            id_token: filler(1100, i + 2),
            access_expires_at: now + 900,
            access_issued_at: now,
        },
        sid: Some(format!("sid-{i}")),
        created_at: now,
        expires_at: now + 12 * 3600,
        provider: String::new(),
    }
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let sealer = SessionSealer::new(b"rss-measurement-secret-0123456789abcdefghij");
    let store = MemoryStore::new(200_000, Duration::from_secs(3600), Duration::from_secs(600));
    let now = authgate::clock::unix_now();
    let before = rss_kib();
    let mut sealed_bytes = 0usize;
    for i in 0..n {
        let s = session(i, now);
        let ticket = SessionTicket::generate().expect("randomness");
        let sealed = sealer.seal_session(&ticket, &s).expect("seal");
        sealed_bytes += sealed.len();
        let stored = StoredSession {
            sealed,
            version: 1,
            user: sealer.index("authgate user", s.identity.subject.as_bytes()),
            expires_at: s.expires_at,
            created_at: s.created_at,
            sid: Some(sealer.index("authgate provider session", b"sid")),
            last_used: LastUsed::default(),
        };
        rt.block_on(store.save(&sealer.session_key(&ticket), stored, None)).expect("save");
    }
    let after = rss_kib();
    let held = n; // all kept: the store holds up to 200 000
    println!(
        "{held} sessions in the memory store ({} bytes sealed each): RSS {} MiB before, {} MiB after, {} bytes per session",
        sealed_bytes / n.max(1),
        before / 1024,
        after / 1024,
        (after.saturating_sub(before) * 1024) / (n.max(1) as u64)
    );
}
