//! Claim rules of a route: any claim of the token (or id_token), by path, with the values it
//! must hold. For providers without Calimatic's claims: Keycloak `realm_access.roles`, Entra ID
//! and Okta `groups`, ...

use serde::Deserialize;

/// `[[routes.claims]]`: the claim at `claim` must hold one of `any` and every one of `all`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRuleConfig {
    /// A dotted path (`realm_access.roles`) or a JSON pointer (`/resource_access/wiki/roles`).
    pub claim: String,
    /// At least one of these values.
    #[serde(default)]
    pub any: Vec<String>,
    /// Every one of these values.
    #[serde(default)]
    pub all: Vec<String>,
}

/// Splits a claim path into the keys to walk: a JSON pointer (RFC 6901, starting with `/`,
/// `~1` for `/` and `~0` for `~`) or a dotted path (no empty segment). Array elements are
/// reached by their index.
pub fn claim_path(path: &str) -> Result<Vec<String>, String> {
    let segments: Vec<String> = match path.strip_prefix('/') {
        Some(pointer) => pointer
            .split('/')
            .map(|s| {
                let mut out = String::with_capacity(s.len());
                let mut chars = s.chars();
                while let Some(c) = chars.next() {
                    match (c, c == '~') {
                        (_, true) => match chars.next() {
                            Some('0') => out.push('~'),
                            Some('1') => out.push('/'),
                            _ => {
                                return Err(format!(
                                    "{path:?}: `~` must be followed by 0 or 1 in a JSON pointer"
                                ));
                            }
                        },
                        (c, false) => out.push(c),
                    }
                }
                Ok(out)
            })
            .collect::<Result<_, _>>()?,
        None => path.split('.').map(str::to_owned).collect(),
    };
    if path.is_empty() || (!path.starts_with('/') && segments.iter().any(String::is_empty)) {
        return Err(format!(
            "{path:?} is not a claim path (`groups`, `realm_access.roles` or a JSON pointer)"
        ));
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_dotted_or_json_pointers() {
        assert_eq!(claim_path("groups").unwrap(), ["groups"]);
        assert_eq!(claim_path("realm_access.roles").unwrap(), ["realm_access", "roles"]);
        assert_eq!(claim_path("/resource_access/wiki/roles").unwrap(), ["resource_access", "wiki", "roles"]);
        assert_eq!(claim_path("/a~1b/c~0d").unwrap(), ["a/b", "c~d"]);
        assert_eq!(claim_path("/https:~1~1example.com~1roles").unwrap(), ["https://example.com/roles"]);
        for bad in ["", "a..b", ".a", "a.", "/a~2", "/a~"] {
            assert!(claim_path(bad).is_err(), "{bad}");
        }
    }
}
