//! The provider's discovery document (OpenID Connect Discovery 1.0), fetched and checked.

use serde::Deserialize;

use super::fetch::{FetchError, Fetcher};

/// The parts of `/.well-known/openid-configuration` authgate uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    /// Must equal the configured issuer exactly.
    pub issuer: String,
    /// Where the signing keys are.
    pub jwks_uri: String,
    /// Where browsers sign in.
    pub authorization_endpoint: Option<String>,
    /// Where codes and refresh tokens are exchanged.
    pub token_endpoint: Option<String>,
    /// RP-initiated logout.
    pub end_session_endpoint: Option<String>,
    /// Token revocation (RFC 7009).
    pub revocation_endpoint: Option<String>,
    /// Token introspection (RFC 7662).
    pub introspection_endpoint: Option<String>,
    /// Scopes the provider knows.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Client authentication methods at the token endpoint.
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// RFC 9207: the provider puts `iss` in authorization responses (then it must be checked).
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

/// Why the discovery document cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// It could not be fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// It is not the expected JSON.
    #[error("the discovery document is malformed: {0}")]
    Malformed(String),
    /// It names another issuer (a mix-up or a misconfiguration).
    #[error("the discovery document names issuer {found:?}, not the configured {expected:?}")]
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The document's issuer.
        found: String,
    },
}

/// Fetches and checks the discovery document of `issuer`.
pub async fn discover(fetcher: &Fetcher, issuer: &str) -> Result<Discovery, DiscoveryError> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let fetched = fetcher.get(&url).await?;
    let doc: Discovery =
        serde_json::from_slice(&fetched.body).map_err(|e| DiscoveryError::Malformed(e.to_string()))?;
    if doc.issuer != issuer {
        return Err(DiscoveryError::IssuerMismatch { expected: issuer.to_owned(), found: doc.issuer });
    }
    // an https provider must keep every endpoint on https: secrets and keys travel there
    let https_only = issuer.starts_with("https://");
    let endpoints = [
        ("jwks_uri", Some(&doc.jwks_uri)),
        ("authorization_endpoint", doc.authorization_endpoint.as_ref()),
        ("token_endpoint", doc.token_endpoint.as_ref()),
        ("end_session_endpoint", doc.end_session_endpoint.as_ref()),
        ("revocation_endpoint", doc.revocation_endpoint.as_ref()),
        ("introspection_endpoint", doc.introspection_endpoint.as_ref()),
    ];
    for (name, endpoint) in endpoints {
        if let Some(e) = endpoint {
            let u = url::Url::parse(e).map_err(|err| DiscoveryError::Malformed(format!("{name}: {err}")))?;
            if https_only && u.scheme() != "https" {
                return Err(DiscoveryError::Malformed(format!("{name} is not https: {e}")));
            }
        }
    }
    Ok(doc)
}
