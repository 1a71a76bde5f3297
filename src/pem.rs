//! Reading PEM files: the assertion signing key, and the certificates and keys of a TLS
//! connection to Redis. `authgate check` and the runtime read them with the same functions, so
//! that a file `check` accepts is one the gateway can use.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey};

/// Why a PEM file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// Reading the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        source: std::io::Error,
    },
    /// The file is not a key of the configured kind.
    #[error("{path}: not a PKCS#8 PEM {algorithm} private key")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The configured algorithm.
        algorithm: String,
    },
    /// Others than the owner may read the key.
    #[error("{path}: mode {mode:o} lets others read the signing key; chmod 600 it")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// A private key ready to sign, with its public JWK.
pub struct SigningKey {
    /// RFC 7638 thumbprint, the `kid` of every assertion it signs.
    pub kid: String,
    /// `ES256` or `EdDSA`.
    pub algorithm: Algorithm,
    /// The private key.
    pub encoding: EncodingKey,
    /// The public key as published.
    pub jwk: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("algorithm", &self.algorithm).finish()
    }
}

fn algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "ES256" => Some(Algorithm::ES256),
        "EdDSA" => Some(Algorithm::EdDSA),
        _ => None,
    }
}

/// Parses a PEM key for `algorithm` (`ES256` or `EdDSA`).
pub fn parse_key(pem: &[u8], algorithm_name: &str, path: &Path) -> Result<SigningKey, PemError> {
    let invalid = || PemError::Invalid { path: path.to_owned(), algorithm: algorithm_name.to_owned() };
    let alg = algorithm(algorithm_name).ok_or_else(invalid)?;
    let encoding = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
        _ => EncodingKey::from_ed_pem(pem),
    }
    .map_err(|_| invalid())?;
    let mut jwk = Jwk::from_encoding_key(&encoding, alg).map_err(|_| invalid())?;
    let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(|_| invalid())?;
    jwk.common.key_id = Some(kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(SigningKey { kid, algorithm: alg, encoding, jwk })
}

/// Reads the key at `path` (refusing one that others than its owner may read).
pub fn read_key(path: &Path, algorithm_name: &str) -> Result<SigningKey, PemError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| PemError::Io { path: path.to_owned(), source };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(PemError::Exposed { path: path.to_owned(), mode: mode & 0o777 });
    }
    let pem = std::fs::read(path).map_err(io)?;
    parse_key(&pem, algorithm_name, path)
}

/// What a PEM file given for a TLS connection must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPem {
    /// CA certificates to trust.
    Roots,
    /// A client certificate chain.
    ClientCertificate,
    /// A client private key.
    ClientKey,
}

/// Checks that `pem` holds what `kind` needs: at least one well-formed certificate, or a key.
/// The error never quotes the file.
pub fn check_tls_pem(kind: TlsPem, pem: &[u8]) -> Result<(), String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    if kind == TlsPem::ClientKey {
        return PrivateKeyDer::from_pem_slice(pem)
            .map(drop)
            .map_err(|_| "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".into());
    }
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file ({e})"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(())
}

/// Checks that a client certificate chain and key (PEM, each already checked by
/// `check_tls_pem`) can be used together: the key is the certificate's, and the certificate is
/// one TLS accepts. `cert_key` names the certificate's setting in the error.
pub fn check_client_pair(cert_pem: &[u8], key_pem: &[u8], cert_key: &str) -> Result<(), String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file ({e})"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| "holds no PEM private key".to_owned())?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(chain, key)
        .map(drop)
        .map_err(|e| format!("cannot be used with {cert_key}: {e}"))
}
