//! The identity headers: one table of fields (`IdentityField::ALL`), from which both the
//! configured names and an identity's values are laid out, so that a name can never be paired
//! with another field's value.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::Identity;
use crate::codec::{header_list, header_value};
use crate::config::HeaderNames;

/// One identity field sent upstream in a header of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityField {
    /// `sub`.
    UserId,
    /// `email`.
    Email,
    /// `name`.
    Name,
    /// `given_name`.
    GivenName,
    /// `family_name`.
    FamilyName,
    /// `licenses`, comma-separated.
    Licenses,
    /// `organization_id`.
    Organization,
    /// `permissions`, comma-separated.
    Permissions,
    /// `user_type`.
    UserType,
    /// An M2M token's client id.
    ClientId,
}

/// How many fields there are.
const FIELDS: usize = 10;

impl IdentityField {
    /// Every field, in the order names and values are laid out.
    pub const ALL: [IdentityField; FIELDS] = [
        Self::UserId,
        Self::Email,
        Self::Name,
        Self::GivenName,
        Self::FamilyName,
        Self::Licenses,
        Self::Organization,
        Self::Permissions,
        Self::UserType,
        Self::ClientId,
    ];

    /// Its key under `[headers]`.
    pub fn config_key(self) -> &'static str {
        match self {
            Self::UserId => "user_id",
            Self::Email => "email",
            Self::Name => "name",
            Self::GivenName => "given_name",
            Self::FamilyName => "family_name",
            Self::Licenses => "licenses",
            Self::Organization => "organization",
            Self::Permissions => "permissions",
            Self::UserType => "user_type",
            Self::ClientId => "client_id",
        }
    }

    /// Its configured header name.
    fn configured(self, h: &HeaderNames) -> &str {
        match self {
            Self::UserId => &h.user_id,
            Self::Email => &h.email,
            Self::Name => &h.name,
            Self::GivenName => &h.given_name,
            Self::FamilyName => &h.family_name,
            Self::Licenses => &h.licenses,
            Self::Organization => &h.organization,
            Self::Permissions => &h.permissions,
            Self::UserType => &h.user_type,
            Self::ClientId => &h.client_id,
        }
    }

    /// Is it sent for this kind of caller? A machine (M2M token) is named by its client id
    /// only; a person by everything else.
    fn sent_for(self, machine: bool) -> bool {
        (self == Self::ClientId) == machine
    }

    /// Its value for `who`, encoded (`header_value`); `None` leaves the header out. License and
    /// permission lists are always sent, empty when there are none, so that an app never
    /// mistakes "none" for "not told".
    fn value(self, who: &Identity) -> Option<HeaderValue> {
        let one = |v: Option<&str>| v.and_then(|v| shared(header_value(v, false).into_owned()));
        let list = |items: &[String]| shared(header_list(items)).or(Some(HeaderValue::from_static("")));
        match self {
            Self::UserId => one(Some(&who.subject)),
            Self::Email => one(who.email.as_deref()),
            Self::Name => one(who.name.as_deref()),
            Self::GivenName => one(who.given_name.as_deref()),
            Self::FamilyName => one(who.family_name.as_deref()),
            Self::Licenses => list(&who.licenses),
            Self::Organization => one(who.organization_id.as_deref()),
            Self::Permissions => list(&who.permissions),
            Self::UserType => one(who.user_type.as_deref()),
            Self::ClientId => one(who.client_id.as_deref()),
        }
    }
}

fn shared(value: String) -> Option<HeaderValue> {
    // encoded values are visible ASCII only, so this cannot fail; a failure drops the header
    HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).ok()
}

/// A configured header name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("headers.{key}: {value:?} is not a header name")]
pub struct BadHeaderName {
    /// The key under `[headers]`.
    pub key: String,
    /// What it says.
    pub value: String,
}

/// The `[headers]` names, parsed once (cloning one is a reference count), in
/// `IdentityField::ALL` order, plus the configured extra claims.
#[derive(Debug, Clone)]
pub struct IdentityHeaderNames {
    fields: [HeaderName; FIELDS],
    /// Configured extra claims: claim name → header.
    pub claims: Vec<(String, HeaderName)>,
}

impl IdentityHeaderNames {
    /// Parses the configured names.
    pub fn parse(h: &HeaderNames) -> Result<Self, BadHeaderName> {
        let name = |key: String, v: &str| {
            HeaderName::from_bytes(v.as_bytes()).map_err(|_| BadHeaderName { key, value: v.to_owned() })
        };
        let mut fields = Vec::with_capacity(FIELDS);
        for f in IdentityField::ALL {
            fields.push(name(f.config_key().to_owned(), f.configured(h))?);
        }
        Ok(Self {
            // one name per field of `ALL`, so the conversion cannot fail
            fields: fields.try_into().map_err(|_| BadHeaderName { key: "?".into(), value: String::new() })?,
            claims: h
                .claims
                .iter()
                .map(|(claim, header)| Ok((claim.clone(), name(format!("claims.{claim}"), header)?)))
                .collect::<Result<_, BadHeaderName>>()?,
        })
    }

    /// The header `field` travels in.
    pub fn of(&self, field: IdentityField) -> &HeaderName {
        &self.fields[field as usize]
    }
}

/// An identity as header values: encoded and validated once, then cloned per request by
/// reference count. Computed once per opened session or verified bearer token
/// (`PreparedIdentity`).
#[derive(Debug, Clone)]
pub struct IdentityHeaderValues {
    fields: [Option<HeaderValue>; FIELDS],
    claims: Vec<(String, HeaderValue)>,
}

impl IdentityHeaderValues {
    /// The header values of `who`.
    pub fn of(who: &Identity) -> Self {
        Self {
            fields: IdentityField::ALL.map(|f| if f.sent_for(who.machine) { f.value(who) } else { None }),
            claims: who
                .claims
                .iter()
                .filter_map(|(claim, values)| Some((claim.clone(), shared(header_list(values))?)))
                .collect(),
        }
    }

    /// The value sent for `field`, if any.
    pub fn of_field(&self, field: IdentityField) -> Option<&HeaderValue> {
        self.fields[field as usize].as_ref()
    }
}

/// Adds the caller's identity headers (after the client's copies were stripped) and drops the
/// caller's `Authorization`: the app learns who is calling, not their token, unless the route
/// passes it (`pass_token`, sent as `Authorization: Bearer`).
pub fn add_identity_headers(
    headers: &mut HeaderMap,
    names: &IdentityHeaderNames,
    values: &IdentityHeaderValues,
    pass_token: Option<&str>,
) -> Result<(), http::header::InvalidHeaderValue> {
    headers.remove(http::header::AUTHORIZATION);
    // both arrays are laid out by `IdentityField::ALL`: a name meets its own field's value
    for (name, value) in names.fields.iter().zip(&values.fields) {
        if let Some(v) = value {
            headers.insert(name.clone(), v.clone());
        }
    }
    for (claim, value) in &values.claims {
        if let Some((_, header)) = names.claims.iter().find(|(c, _)| c == claim) {
            headers.insert(header.clone(), value.clone());
        }
    }
    if let Some(token) = pass_token {
        headers.insert(http::header::AUTHORIZATION, HeaderValue::try_from(format!("Bearer {token}"))?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person() -> Identity {
        Identity {
            subject: "u1".into(),
            client_id: Some("authgate".into()),
            email: Some("ann@acme.test".into()),
            name: Some("Ann\r\nX-User-Id: admin".into()),
            organization_id: Some("org-1".into()),
            licenses: vec!["wiki".into(), "crm,admin".into()],
            claims: vec![("department".into(), vec!["R&D".into()])],
            ..Identity::default()
        }
    }

    fn sent(who: &Identity, pass: Option<&str>) -> HeaderMap {
        let mut config = HeaderNames::default();
        config.claims.insert("department".into(), "X-User-Department".into());
        let names = IdentityHeaderNames::parse(&config).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer client-token"));
        add_identity_headers(&mut headers, &names, &IdentityHeaderValues::of(who), pass).unwrap();
        headers
    }

    #[test]
    fn every_field_travels_in_its_own_header() {
        let h = sent(&person(), None);
        assert_eq!(h["x-user-id"], "u1");
        assert_eq!(h["x-user-email"], "ann@acme.test");
        assert_eq!(h["x-user-name"], "Ann%0D%0AX-User-Id: admin");
        assert_eq!(h["x-user-org"], "org-1");
        assert_eq!(h["x-user-licenses"], "wiki,crm%2Cadmin");
        assert_eq!(h["x-user-permissions"], "", "an empty list is said, not left out");
        assert_eq!(h["x-user-department"], "R%26D", "list claims keep only token characters");
        assert!(!h.contains_key("x-user-type") && !h.contains_key("x-user-given-name"));
        assert!(!h.contains_key("x-client-id"), "a person's azp is not a client identity");
        assert!(!h.contains_key("authorization"), "the caller's token never reaches the app");
    }

    #[test]
    fn a_machine_is_named_by_its_client_id_only() {
        let mut m2m = person();
        m2m.machine = true;
        let h = sent(&m2m, Some("tok.en"));
        assert_eq!(h["x-client-id"], "authgate");
        assert_eq!(h["authorization"], "Bearer tok.en");
        for name in ["x-user-id", "x-user-email", "x-user-licenses", "x-user-permissions"] {
            assert!(!h.contains_key(name), "{name}");
        }
    }

    #[test]
    fn names_and_values_are_laid_out_by_one_table() {
        let names = IdentityHeaderNames::parse(&HeaderNames::default()).unwrap();
        let values = IdentityHeaderValues::of(&person());
        assert_eq!(names.of(IdentityField::Email), "x-user-email");
        assert_eq!(values.of_field(IdentityField::Email).unwrap(), "ann@acme.test");
        let bad = HeaderNames { email: "X User".into(), ..HeaderNames::default() };
        let e = IdentityHeaderNames::parse(&bad).unwrap_err();
        assert_eq!(e.to_string(), "headers.email: \"X User\" is not a header name");
    }
}
