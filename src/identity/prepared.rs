//! What forwarding an identity needs, computed once per opened session or verified bearer
//! token rather than once per request: its header values, the hash of what a signed assertion
//! would say of it, and the last assertion signed for it.

use std::sync::Arc;

use http::HeaderValue;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Identity, IdentityHeaderValues};

/// An identity made ready for forwarding.
#[derive(Debug)]
pub struct PreparedIdentity {
    /// The `X-User-*` header values.
    pub header_values: IdentityHeaderValues,
    /// What a signed assertion would say of it, hashed (the assertion cache key).
    pub fingerprint: [u8; 32],
    /// The last signed assertion made for it.
    pub assertion: AssertionSlot,
}

impl PreparedIdentity {
    /// Prepares `identity`.
    pub fn of(identity: &Identity) -> Self {
        Self {
            header_values: IdentityHeaderValues::of(identity),
            fingerprint: fingerprint(identity),
            assertion: AssertionSlot::default(),
        }
    }
}

/// What a signed assertion says about its caller (a machine by its client id only).
#[derive(Debug, Serialize)]
pub struct AssertionSubject<'a> {
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    licenses: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    organization_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_type: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    permissions: &'a [String],
}

impl<'a> AssertionSubject<'a> {
    /// What an assertion says about `who`.
    pub fn of(who: &'a Identity) -> Self {
        if who.machine {
            let client = who.client_id.as_deref().unwrap_or(&who.subject);
            return Self {
                sub: client,
                client_id: Some(client),
                email: None,
                name: None,
                licenses: &[],
                organization_id: None,
                user_type: None,
                permissions: &[],
            };
        }
        Self {
            sub: &who.subject,
            client_id: None,
            email: who.email.as_deref(),
            name: who.name.as_deref(),
            licenses: &who.licenses,
            organization_id: who.organization_id.as_deref(),
            user_type: who.user_type.as_deref(),
            permissions: &who.permissions,
        }
    }
}

/// A hash of what an assertion would say about `who` (and until when): equal hashes, equal
/// assertions.
pub fn fingerprint(who: &Identity) -> [u8; 32] {
    let mut h = Sha256::new();
    // serialising to a hasher cannot fail; a failure would only cost a cache miss
    let _ = serde_json::to_writer(HashWriter(&mut h), &AssertionSubject::of(who));
    h.update(who.expires_at.to_be_bytes());
    h.finalize().into()
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A signed assertion, kept for reuse while it is fresh.
pub struct SignedAssertion {
    /// The JWT, as a header value.
    pub value: HeaderValue,
    /// Its `iss`.
    pub issuer: Box<str>,
    /// Its `iat`.
    pub issued_at: u64,
    /// Its `exp`.
    pub expires_at: u64,
    /// The signer (config generation) that made it.
    pub signer: u64,
    /// The route it was made for.
    pub route: usize,
}

impl std::fmt::Debug for SignedAssertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedAssertion")
            .field("value", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The last assertion made for one opened session or verified token, so that its next request
/// on the same route skips even the cache lookup.
#[derive(Default)]
pub struct AssertionSlot(pub arc_swap::ArcSwapOption<SignedAssertion>);

impl AssertionSlot {
    /// Remembers `signed`.
    pub fn store(&self, signed: Arc<SignedAssertion>) {
        self.0.store(Some(signed));
    }
}

impl std::fmt::Debug for AssertionSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AssertionSlot")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_changes_with_what_an_assertion_would_say() {
        let who = Identity { subject: "u1".into(), licenses: vec!["wiki".into()], ..Identity::default() };
        let same = who.clone();
        let mut revoked = who.clone();
        revoked.licenses.clear();
        let mut later = who.clone();
        later.expires_at += 1;
        let mut scoped = who.clone();
        scoped.scopes.push("extra".into());
        assert_eq!(fingerprint(&who), fingerprint(&same));
        assert_ne!(fingerprint(&who), fingerprint(&revoked));
        assert_ne!(fingerprint(&who), fingerprint(&later));
        // scopes are not in an assertion: no new one for them
        assert_eq!(fingerprint(&who), fingerprint(&scoped));
    }
}
