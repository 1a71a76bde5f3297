//! What forwarding an identity needs, computed once per opened session or verified bearer
//! token rather than once per request.

use super::headers::IdentityHeaderValues;
use crate::assertion::{AssertionSlot, fingerprint};
use crate::jwt::Identity;

/// An identity made ready for forwarding: its header values (encoded and validated), the hash
/// of what an assertion would say of it, and the last assertion signed for it.
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
