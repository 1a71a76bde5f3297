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
/// The key a user's revocation records and deny-list entries go by: the subject for
/// `[provider]`, the provider's name and the subject for the others (two providers may issue the
/// same subject to different people: one's sign-out must never reach the other's user).
pub fn user_key<'a>(namespace: Option<&str>, sub: &'a str) -> std::borrow::Cow<'a, str> {
    match namespace {
        None => std::borrow::Cow::Borrowed(sub),
        Some(ns) => std::borrow::Cow::Owned(format!("{ns}\u{1f}{sub}")),
    }
}

pub use prepared::{AssertionSlot, AssertionSubject, PreparedIdentity, SignedAssertion, fingerprint};
