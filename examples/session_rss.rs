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

use authgate::session::{LastUsed, MemoryStore, SessionSealer, SessionStore, SessionTicket, StoredSession};

#[path = "support/sample_session.rs"]
mod sample;
use sample::sample_session;

/// Resident set size of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
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
        let s = sample_session(i, now, "", 12 * 3600);
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
