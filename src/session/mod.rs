//! Server-side sessions: the model, its encryption, and the stores that hold the ciphertext.
//!
//! The browser holds only an opaque ticket (a session id and a per-session key). The store holds
//! AES-256-GCM ciphertext under a keyed hash of the id, with the id as associated data; the
//! encryption key comes from the ticket's key and the gateway's secret together. A dump of the
//! store is useless without the cookies and the secret; a cookie is useless without the store.

mod crypto;
mod model;
mod store;

pub use crypto::{SealError, SessionKey, SessionSealer, SessionTicket, random_token};
pub use model::{LoginState, Session, SessionTokens};
pub use store::{MemoryStore, SessionStore, StoreError, StoredSession};
