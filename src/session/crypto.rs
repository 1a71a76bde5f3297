//! Session tickets and sealing: random ids and keys, keyed hashing, AES-256-GCM.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::random::random_bytes;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What the browser's session cookie holds: a random id and a random key (128 bits each).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionTicket {
    id: [u8; 16],
    key: [u8; 16],
}

impl std::fmt::Debug for SessionTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionTicket(<redacted>)")
    }
}

/// Where a session is stored: a keyed hash of its id, so the store never sees the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey(pub [u8; 32]);

/// Why stored bytes could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Wrong key, tampered ciphertext or bad format.
    #[error("cannot decrypt")]
    Decrypt,
    /// Decrypted, but not the expected content.
    #[error("malformed content")]
    Malformed,
    /// The system random source failed.
    #[error("no randomness")]
    Random,
}

impl From<crate::random::RandomError> for SealError {
    fn from(_: crate::random::RandomError) -> Self {
        SealError::Random
    }
}

impl SessionTicket {
    /// A fresh random ticket.
    pub fn generate() -> Result<Self, SealError> {
        let b = random_bytes::<32>()?;
        let (id, key) = b.split_at(16);
        Ok(Self {
            id: id.try_into().map_err(|_| SealError::Random)?,
            key: key.try_into().map_err(|_| SealError::Random)?,
        })
    }

    /// The cookie value (43 characters of base64url).
    pub fn encode(&self) -> String {
        let mut b = [0u8; 32];
        b[..16].copy_from_slice(&self.id);
        b[16..].copy_from_slice(&self.key);
        B64.encode(b)
    }

    /// Parses a cookie value; anything but exactly 32 base64url bytes is `None`.
    pub fn decode(value: &str) -> Option<Self> {
        if value.len() != 43 {
            return None;
        }
        let b = B64.decode(value).ok()?;
        let (id, key) = b.split_at_checked(16)?;
        Some(Self { id: id.try_into().ok()?, key: key.try_into().ok()? })
    }
}

/// Seals and opens sessions (and login states) with the gateway secret.
#[derive(Clone)]
pub struct SessionSealer {
    /// HMAC-SHA256 keyed with the secret, cloned for each use.
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for SessionSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSealer(<redacted>)")
    }
}

impl SessionSealer {
    /// A sealer keyed by the configured session secret.
    pub fn new(secret: &[u8]) -> Self {
        #[allow(clippy::expect_used)] // at start-up only, and HMAC accepts keys of any length
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
        Self { keyed }
    }

    fn mac(&self, label: &[u8], data: &[u8]) -> [u8; 32] {
        let mut m = self.keyed.clone();
        m.update(label);
        m.update(&[0]);
        m.update(data);
        m.finalize().into_bytes().into()
    }

    /// The store key of a ticket's session.
    pub fn session_key(&self, ticket: &SessionTicket) -> SessionKey {
        SessionKey(self.mac(b"authgate session id", &ticket.id))
    }

    /// The keyed hash a user (`sub`) is known by in the store: their sessions are indexed by
    /// it, their revocation record is kept under it.
    pub fn user_index(&self, sub: &str) -> [u8; 32] {
        self.index("authgate user", sub.as_bytes())
    }

    /// The keyed hash a provider session id (`sid`) is indexed by (back-channel logout).
    pub fn sid_index(&self, sid: &str) -> [u8; 32] {
        self.index("authgate provider session", sid.as_bytes())
    }

    /// A keyed hash for indexing by other values (login `state`, binding cookie, event ids).
    pub fn index(&self, label: &str, value: &[u8]) -> [u8; 32] {
        self.mac(label.as_bytes(), value)
    }

    /// Encrypts a session for the store.
    pub fn seal_session<T: serde::Serialize>(
        &self,
        ticket: &SessionTicket,
        value: &T,
    ) -> Result<Vec<u8>, SealError> {
        let key = self.mac(b"authgate session key", &ticket.key);
        seal(&key, &ticket.id, value)
    }

    /// Decrypts a session from the store.
    pub fn open_session<T: serde::de::DeserializeOwned>(
        &self,
        ticket: &SessionTicket,
        sealed: &[u8],
    ) -> Result<T, SealError> {
        let key = self.mac(b"authgate session key", &ticket.key);
        open(&key, &ticket.id, sealed)
    }

    /// Encrypts a value under a secret only the browser and provider see (a login `state`).
    pub fn seal_with(
        &self,
        label: &str,
        secret: &[u8],
        value: &impl serde::Serialize,
    ) -> Result<Vec<u8>, SealError> {
        seal(&self.mac(label.as_bytes(), secret), label.as_bytes(), value)
    }

    /// Decrypts what `seal_with` sealed.
    pub fn open_with<T: serde::de::DeserializeOwned>(
        &self,
        label: &str,
        secret: &[u8],
        sealed: &[u8],
    ) -> Result<T, SealError> {
        open(&self.mac(label.as_bytes(), secret), label.as_bytes(), sealed)
    }
}

fn seal<T: serde::Serialize>(key: &[u8; 32], aad: &[u8], value: &T) -> Result<Vec<u8>, SealError> {
    let plain = serde_json::to_vec(value).map_err(|_| SealError::Malformed)?;
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| SealError::Decrypt)?;
    let nonce = random_bytes::<12>()?;
    let ct =
        cipher.encrypt(&Nonce::from(nonce), Payload { msg: &plain, aad }).map_err(|_| SealError::Decrypt)?;
    let mut out = Vec::with_capacity(12 + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

fn open<T: serde::de::DeserializeOwned>(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<T, SealError> {
    let (nonce, ct) = sealed.split_at_checked(12).ok_or(SealError::Decrypt)?;
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| SealError::Decrypt)?;
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| SealError::Decrypt)?;
    let plain =
        cipher.decrypt(&Nonce::from(nonce), Payload { msg: ct, aad }).map_err(|_| SealError::Decrypt)?;
    serde_json::from_slice(&plain).map_err(|_| SealError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip_and_reject_anything_else() {
        let t = SessionTicket::generate().unwrap();
        let v = t.encode();
        assert_eq!(v.len(), 43);
        assert_eq!(SessionTicket::decode(&v), Some(t.clone()));
        assert_ne!(SessionTicket::generate().unwrap(), t);
        for bad in ["", "x", &v[..42], &format!("{v}A"), &v.replace(&v[..1], "*"), "=".repeat(43).as_str()] {
            assert!(SessionTicket::decode(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn sealed_sessions_need_the_ticket_and_the_secret() {
        let sealer = SessionSealer::new(b"0123456789abcdef0123456789abcdef-test");
        let t = SessionTicket::generate().unwrap();
        let sealed = sealer.seal_session(&t, &"alice@acme.test access-token-xyz").unwrap();
        let text = String::from_utf8_lossy(&sealed);
        assert!(!text.contains("alice") && !text.contains("access-token"), "plaintext in the store");
        assert_eq!(sealer.open_session::<String>(&t, &sealed).unwrap(), "alice@acme.test access-token-xyz");

        let other_ticket = SessionTicket::generate().unwrap();
        assert_eq!(sealer.open_session::<String>(&other_ticket, &sealed), Err(SealError::Decrypt));
        let other_secret = SessionSealer::new(b"another-secret-0123456789abcdef-xx");
        assert_eq!(other_secret.open_session::<String>(&t, &sealed), Err(SealError::Decrypt));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(sealer.open_session::<String>(&t, &tampered), Err(SealError::Decrypt));
        assert_eq!(sealer.open_session::<String>(&t, &sealed[..10]), Err(SealError::Decrypt));
        // the store key does not reveal the id, and differs per secret
        assert_ne!(sealer.session_key(&t), other_secret.session_key(&t));
    }
}
