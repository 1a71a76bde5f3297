//! The gateway's assertion signing keys: PKCS#8 PEM files. The current key is created at first
//! start when absent (mode 0600, atomically, so instances sharing a volume agree on one key);
//! `authgate keys rotate` moves it to `<key_file>.previous`, which stays published until every
//! assertion it signed has expired, and writes a new one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::Jwk;

use crate::pem::{PemError, SigningKey, read_key};
use crate::random::{random_bytes, random_token};

/// Why a key could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        source: std::io::Error,
    },
    /// The key file cannot be used.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// Key generation failed.
    #[error("cannot generate a key: {0}")]
    Generate(String),
    /// A rotation so soon would drop a key whose assertions are still valid.
    #[error(
        "the previous key was retired less than {0:?} ago: its assertions may still be valid; wait, or remove {1} first"
    )]
    TooSoon(Duration, PathBuf),
}

/// A new private key for `algorithm`, as PKCS#8 PEM.
pub fn generate_pem(algorithm_name: &str) -> Result<String, KeyError> {
    let random = || random_bytes::<32>().map_err(|e| KeyError::Generate(e.to_string()));
    match algorithm_name {
        "ES256" => {
            use p256::pkcs8::EncodePrivateKey;
            // a random 32-byte string is a valid P-256 scalar except with negligible probability
            let secret = loop {
                if let Ok(s) = p256::SecretKey::from_slice(&random()?) {
                    break s;
                }
            };
            let pem = secret
                .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
                .map_err(|e| KeyError::Generate(e.to_string()))?;
            Ok(pem.as_str().to_owned())
        }
        "EdDSA" => {
            use ed25519_dalek::pkcs8::EncodePrivateKey;
            // PKCS#8 v1 (the seed only): the form jsonwebtoken reads
            let bytes = ed25519_dalek::pkcs8::KeypairBytes { secret_key: random()?, public_key: None };
            let pem = bytes
                .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
                .map_err(|e| KeyError::Generate(e.to_string()))?;
            Ok(pem.as_str().to_owned())
        }
        other => Err(KeyError::Generate(format!("unsupported algorithm {other}"))),
    }
}

/// Writes `pem` to `path` only if no file is there (atomically: a concurrent writer's complete
/// file wins), readable by the owner only. Returns false when a file was already there.
fn create_key_file(path: &Path, pem: &str) -> Result<bool, KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| KeyError::Io { path: path.to_owned(), source };
    // a random name (instances in containers share PIDs), created exclusively (never following
    // a file or link someone put there), owner-only from the start
    let nonce = random_token(9).map_err(|e| KeyError::Generate(e.to_string()))?;
    let tmp = path.with_extension(format!("tmp-{nonce}"));
    {
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
        f.write_all(pem.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(e)),
    }
}

/// The key at `path`, created first when absent.
pub fn load_or_create(path: &Path, algorithm_name: &str) -> Result<SigningKey, KeyError> {
    if !path.exists() && create_key_file(path, &generate_pem(algorithm_name)?)? {
        tracing::info!(path = %path.display(), "created the assertion signing key");
    }
    Ok(read_key(path, algorithm_name)?)
}

/// Where the previous key is kept after a rotation.
pub fn previous_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".previous");
    PathBuf::from(name)
}

/// Replaces the key at `path` with a new one; the old one becomes `<path>.previous` (its
/// modification time is the rotation time). Returns the new key's `kid`.
pub fn rotate(path: &Path, algorithm_name: &str, lifetime: Duration) -> Result<String, KeyError> {
    let io = |source| KeyError::Io { path: path.to_owned(), source };
    let previous = previous_path(path);
    let retired_recently = std::fs::metadata(&previous)
        .and_then(|m| m.modified())
        .is_ok_and(|at| at + lifetime > SystemTime::now());
    if retired_recently {
        return Err(KeyError::TooSoon(lifetime, previous));
    }
    if path.exists() {
        std::fs::rename(path, &previous).map_err(io)?;
        let f = std::fs::OpenOptions::new().append(true).open(&previous).map_err(io)?;
        f.set_modified(SystemTime::now()).map_err(io)?;
    }
    create_key_file(path, &generate_pem(algorithm_name)?)?;
    Ok(read_key(path, algorithm_name)?.kid)
}

/// The keys in use: the current one signs, the previous one (after a rotation) stays published
/// until `retire_at`.
#[derive(Debug)]
pub struct KeySet {
    /// Signs every new assertion.
    pub current: SigningKey,
    /// The key before the last rotation and when its last assertion expires.
    pub previous: Option<(Jwk, SystemTime)>,
}

impl KeySet {
    /// Loads (or creates) the current key and the previous one if its assertions may still be
    /// valid (`lifetime` after the rotation).
    pub fn load(path: &Path, algorithm_name: &str, lifetime: Duration) -> Result<Self, KeyError> {
        let current = load_or_create(path, algorithm_name)?;
        let previous_file = previous_path(path);
        let previous = std::fs::metadata(&previous_file)
            .and_then(|m| m.modified())
            .ok()
            .map(|rotated| rotated + lifetime + Duration::from_secs(60))
            .filter(|retire_at| *retire_at > SystemTime::now())
            .and_then(|retire_at| {
                let key = ["ES256", "EdDSA"].iter().find_map(|a| read_key(&previous_file, a).ok())?;
                (key.kid != current.kid).then_some((key.jwk, retire_at))
            });
        Ok(Self { current, previous })
    }

    /// The JWK Set to publish now.
    pub fn jwks(&self) -> serde_json::Value {
        let mut keys = vec![serde_json::to_value(&self.current.jwk).unwrap_or_default()];
        if let Some((jwk, retire_at)) = &self.previous {
            if *retire_at > SystemTime::now() {
                keys.push(serde_json::to_value(jwk).unwrap_or_default());
            }
        }
        serde_json::json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_once_with_owner_only_access_and_rotate() {
        use std::os::unix::fs::PermissionsExt;
        for alg in ["ES256", "EdDSA"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("key.pem");
            let first = load_or_create(&path, alg).unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(load_or_create(&path, alg).unwrap().kid, first.kid, "an existing key is kept");
            let set = KeySet::load(&path, alg, Duration::from_secs(300)).unwrap();
            assert_eq!(set.jwks()["keys"].as_array().unwrap().len(), 1);

            let new_kid = rotate(&path, alg, Duration::from_secs(300)).unwrap();
            assert!(
                matches!(rotate(&path, alg, Duration::from_secs(300)), Err(KeyError::TooSoon(..))),
                "a second rotation would drop a key still in use"
            );
            assert_ne!(new_kid, first.kid);
            let set = KeySet::load(&path, alg, Duration::from_secs(300)).unwrap();
            let published = set.jwks();
            let kids: Vec<&str> =
                published["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
            assert_eq!(kids, [new_kid.as_str(), first.kid.as_str()], "{alg}");
            let jwks = set.jwks().to_string();
            assert!(!jwks.contains("\"d\""), "a private part was published: {jwks}");
        }
    }

    #[test]
    fn a_key_of_another_kind_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, generate_pem("EdDSA").unwrap()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(read_key(&path, "EdDSA"), Err(PemError::Exposed { mode: 0o644, .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(read_key(&path, "ES256"), Err(PemError::Invalid { .. })));
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(read_key(&path, "EdDSA"), Err(PemError::Invalid { .. })));
    }
}
