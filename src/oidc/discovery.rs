//! The provider's discovery document (OpenID Connect Discovery 1.0), fetched through the bounded
//! client and read into `openidconnect`'s `ProviderMetadata`, with the endpoints authgate uses
//! beyond the core ones (end-session, revocation, introspection, RFC 9207).

use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod, CoreGrantType,
    CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreResponseMode,
    CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthType, ClientId, ClientSecret, EndSessionUrl, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IntrospectionUrl, LogoutProviderMetadata, ProviderMetadata, RevocationUrl,
};
use serde::{Deserialize, Serialize};

use super::fetch::{FetchError, Fetcher};
use crate::config::Secret;

/// Discovery fields authgate reads that `openidconnect` does not model.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ExtraProviderMetadata {
    /// Token revocation (RFC 7009).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<RevocationUrl>,
    /// Token introspection (RFC 7662).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection_endpoint: Option<IntrospectionUrl>,
    /// RFC 9207: the provider puts `iss` in authorization responses (then it must be checked).
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

impl AdditionalProviderMetadata for ExtraProviderMetadata {}

/// The discovery document as `openidconnect` reads it, end-session endpoint included.
pub type ProviderDocument = ProviderMetadata<
    LogoutProviderMetadata<ExtraProviderMetadata>,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// The `openidconnect` client for this provider: authorization endpoint set, token endpoint
/// as discovered.
pub type ProviderClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A checked discovery document.
#[derive(Debug, Clone)]
pub struct Discovery {
    document: ProviderDocument,
}

impl Discovery {
    /// Reads and checks a discovery document for `issuer`.
    pub fn parse(body: &[u8], issuer: &str) -> Result<Self, DiscoveryError> {
        let document: ProviderDocument =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body))
                .map_err(|e| DiscoveryError::Malformed(e.to_string()))?;
        if document.issuer().as_str() != issuer {
            return Err(DiscoveryError::IssuerMismatch {
                expected: issuer.to_owned(),
                found: document.issuer().to_string(),
            });
        }
        let doc = Self { document };
        // an https provider must keep every endpoint on https: secrets and keys travel there
        if issuer.starts_with("https://") {
            let endpoints = [
                ("jwks_uri", Some(doc.jwks_uri())),
                ("authorization_endpoint", Some(doc.authorization_endpoint())),
                ("token_endpoint", doc.token_endpoint()),
                ("end_session_endpoint", doc.end_session_endpoint().map(|u| u.as_str())),
                ("revocation_endpoint", doc.revocation_endpoint()),
                ("introspection_endpoint", doc.introspection_endpoint()),
            ];
            for (name, endpoint) in endpoints {
                if let Some(e) = endpoint.filter(|e| !e.starts_with("https://")) {
                    return Err(DiscoveryError::Malformed(format!("{name} is not https: {e}")));
                }
            }
        }
        Ok(doc)
    }

    fn extra(&self) -> &ExtraProviderMetadata {
        &self.document.additional_metadata().additional_metadata
    }

    /// Where the signing keys are.
    pub fn jwks_uri(&self) -> &str {
        self.document.jwks_uri().as_str()
    }

    /// Where browsers sign in.
    pub fn authorization_endpoint(&self) -> &str {
        self.document.authorization_endpoint().as_str()
    }

    /// Where codes and refresh tokens are exchanged.
    pub fn token_endpoint(&self) -> Option<&str> {
        self.document.token_endpoint().map(|u| u.as_str())
    }

    /// RP-initiated logout.
    pub fn end_session_endpoint(&self) -> Option<&EndSessionUrl> {
        self.document.additional_metadata().end_session_endpoint.as_ref()
    }

    /// Token revocation (RFC 7009).
    pub fn revocation_endpoint(&self) -> Option<&str> {
        self.extra().revocation_endpoint.as_ref().map(|u| u.as_str())
    }

    /// Token introspection (RFC 7662).
    pub fn introspection_endpoint(&self) -> Option<&str> {
        self.extra().introspection_endpoint.as_ref().map(|u| u.as_str())
    }

    /// Does the provider name itself in authorization responses (RFC 9207)?
    pub fn issuer_in_authorization_response(&self) -> bool {
        self.extra().authorization_response_iss_parameter_supported
    }

    /// The `openidconnect` client for `client_id`. Client authentication at the token endpoint
    /// follows discovery: `client_secret_basic` unless the provider only supports
    /// `client_secret_post`; a public client sends its id in the body.
    pub fn client(&self, client_id: &str, secret: Option<&Secret>) -> ProviderClient {
        let methods = self.document.token_endpoint_auth_methods_supported().map(Vec::as_slice).unwrap_or(&[]);
        let post_only = !methods.is_empty()
            && !methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
            && methods.contains(&CoreClientAuthMethod::ClientSecretPost);
        let client = CoreClient::from_provider_metadata(
            self.document.clone(),
            ClientId::new(client_id.to_owned()),
            secret.map(|s| ClientSecret::new(s.expose().to_owned())),
        )
        // the configured scopes name `openid` themselves
        .disable_openid_scope();
        if post_only { client.set_auth_type(AuthType::RequestBody) } else { client }
    }
}

/// Why the discovery document cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// It could not be fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// It is not a discovery document.
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

/// Fetches and checks the discovery document of `issuer` (through the bounded client, not
/// `ProviderMetadata::discover_async`: every provider call has the same time and size limits).
pub async fn discover(fetcher: &Fetcher, issuer: &str) -> Result<Discovery, DiscoveryError> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let fetched = fetcher.get(&url).await?;
    Discovery::parse(&fetched.body, issuer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(extra: serde_json::Value) -> Vec<u8> {
        let mut d = serde_json::json!({
            "issuer": "https://idp.example.com",
            "jwks_uri": "https://idp.example.com/jwks",
            "authorization_endpoint": "https://idp.example.com/auth",
            "token_endpoint": "https://idp.example.com/token",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        if let (Some(d), serde_json::Value::Object(extra)) = (d.as_object_mut(), extra) {
            d.extend(extra);
        }
        serde_json::to_vec(&d).unwrap()
    }

    #[test]
    fn documents_are_read_with_the_endpoints_authgate_uses() {
        let d = Discovery::parse(
            &doc(serde_json::json!({
                "end_session_endpoint": "https://idp.example.com/logout",
                "revocation_endpoint": "https://idp.example.com/revoke",
                "introspection_endpoint": "https://idp.example.com/introspect",
                "authorization_response_iss_parameter_supported": true,
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                "some_future_field": {"x": 1},
            })),
            "https://idp.example.com",
        )
        .unwrap();
        assert_eq!(d.jwks_uri(), "https://idp.example.com/jwks");
        assert_eq!(d.end_session_endpoint().unwrap().as_str(), "https://idp.example.com/logout");
        assert_eq!(d.revocation_endpoint(), Some("https://idp.example.com/revoke"));
        assert_eq!(d.introspection_endpoint(), Some("https://idp.example.com/introspect"));
        assert!(d.issuer_in_authorization_response());
        assert!(matches!(d.client("authgate", None).auth_type(), AuthType::RequestBody));
    }

    #[test]
    fn another_issuer_or_a_plain_http_endpoint_is_refused() {
        let e = Discovery::parse(&doc(serde_json::json!({})), "https://other.example.com").unwrap_err();
        assert!(matches!(e, DiscoveryError::IssuerMismatch { .. }), "{e}");
        let e = Discovery::parse(
            &doc(serde_json::json!({"token_endpoint": "http://idp.example.com/token"})),
            "https://idp.example.com",
        )
        .unwrap_err();
        assert!(e.to_string().contains("token_endpoint is not https"), "{e}");
        let e = Discovery::parse(br#"{"issuer":"https://idp.example.com"}"#, "https://idp.example.com")
            .unwrap_err();
        assert!(matches!(e, DiscoveryError::Malformed(_)), "{e}");
    }
}
