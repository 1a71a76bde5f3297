//! Who is calling: the `Identity` a verified token or a sign-in gives (claims read strictly),
//! the one table of identity fields and the headers they travel in, and an identity prepared
//! once for forwarding (header values, assertion cache key and slot).

mod claims;
mod headers;
mod prepared;

pub(crate) use claims::{AccessClaims, TokenContext};
pub use claims::{ClaimsError, Identity, MAX_LIFETIME_SECS, numeric_date};
pub use headers::{
    BadHeaderName, IdentityField, IdentityHeaderNames, IdentityHeaderValues, add_identity_headers,
};
pub use prepared::{AssertionSlot, AssertionSubject, PreparedIdentity, SignedAssertion, fingerprint};
