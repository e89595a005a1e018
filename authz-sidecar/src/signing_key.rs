//! The RS256 signing key of the token service and its public JWK Set.
//!
//! One RSA key per sidecar deployment, kept in a PKCS#8 PEM file (mode 0600). It is generated at
//! first start when the file is missing and loaded afterwards, so tokens stay valid across
//! restarts. The key id (`kid`) is the RFC 7638 JWK thumbprint of the public key, so the same key
//! always has the same id and Envoy's `jwt_authn` can pick it from the JWKS.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::rand_core::OsRng;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, pkcs1v15};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Size of a generated key. RFC 7518 §3.3: "A key of size 2048 bits or larger MUST be used".
pub const GENERATED_KEY_BITS: usize = 2048;
/// Smallest key accepted when loading a key file (RFC 7518 §3.3).
pub const MIN_KEY_BITS: usize = 2048;

/// Why the signing key could not be loaded, generated or stored.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file exists but could not be read.
    #[error("cannot read signing key {path}: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file is missing (only reported where generating is not wanted).
    #[error(
        "signing key {path} does not exist: start the authz-sidecar once with this config (it generates the key) or point `key_file` at the sidecar's key"
    )]
    Missing {
        /// The key file.
        path: PathBuf,
    },
    /// The key file is not a PKCS#8 PEM RSA private key.
    #[error("signing key {path} is not a PKCS#8 PEM RSA private key: {message}")]
    Decode {
        /// The key file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// The key is too small for RS256.
    #[error(
        "signing key {path} has {bits} bits; RS256 needs at least {MIN_KEY_BITS} (RFC 7518 §3.3)"
    )]
    TooSmall {
        /// The key file.
        path: PathBuf,
        /// Its modulus size.
        bits: usize,
    },
    /// Generating a key failed.
    #[error("cannot generate an RSA key: {0}")]
    Generate(String),
    /// The generated key could not be written.
    #[error("cannot write signing key {path}: {source}")]
    Write {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Signing failed.
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// Whether [`SigningKey::load_or_generate`] found the key or made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Read from the existing key file.
    Loaded,
    /// Generated now and written to the key file.
    Generated,
}

/// A public RSA key as a JWK (RFC 7517 §4, RFC 7518 §6.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RsaPublicJwk {
    /// Key type, always `RSA`.
    pub kty: String,
    /// Intended use, always `sig` (RFC 7517 §4.2).
    #[serde(rename = "use")]
    pub key_use: String,
    /// Algorithm, always `RS256` (RFC 7518 §3.3).
    pub alg: String,
    /// Key id: the RFC 7638 thumbprint.
    pub kid: String,
    /// Modulus, base64url without padding, big-endian (RFC 7518 §6.3.1.1).
    pub n: String,
    /// Public exponent, base64url without padding, big-endian (RFC 7518 §6.3.1.2).
    pub e: String,
}

/// A JWK Set (RFC 7517 §5), served at `/.well-known/jwks.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<RsaPublicJwk>,
}

/// The token service's private key, with its public JWK precomputed.
#[derive(Clone)]
pub struct SigningKey {
    signer: pkcs1v15::SigningKey<Sha256>,
    private_key: RsaPrivateKey,
    public_jwk: RsaPublicJwk,
}

impl std::fmt::Debug for SigningKey {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.public_jwk.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Load the key at `path`, or generate one and write it there (mode 0600, parent folders
    /// created) when the file does not exist.
    pub fn load_or_generate(path: &Path) -> Result<(SigningKey, KeyOrigin), KeyError> {
        match SigningKey::load(path) {
            Ok(key) => Ok((key, KeyOrigin::Loaded)),
            Err(KeyError::Missing { .. }) => {
                let key = SigningKey::generate()?;
                match key.write_new(path) {
                    Ok(()) => Ok((key, KeyOrigin::Generated)),
                    // Another process created the file first: use its key so both agree.
                    Err(KeyError::Write { source, .. })
                        if source.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        Ok((SigningKey::load(path)?, KeyOrigin::Loaded))
                    }
                    Err(err) => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    }

    /// Load the key at `path`; a missing file is [`KeyError::Missing`].
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let pem = match std::fs::read_to_string(path) {
            Ok(pem) => pem,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::Missing {
                    path: path.to_owned(),
                });
            }
            Err(source) => {
                return Err(KeyError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let private_key = RsaPrivateKey::from_pkcs8_pem(&pem).map_err(|err| KeyError::Decode {
            path: path.to_owned(),
            message: err.to_string(),
        })?;
        let bits = private_key.size() * 8;
        if bits < MIN_KEY_BITS {
            return Err(KeyError::TooSmall {
                path: path.to_owned(),
                bits,
            });
        }
        Ok(SigningKey::from_private_key(private_key))
    }

    /// A fresh [`GENERATED_KEY_BITS`]-bit key from the OS random source.
    pub fn generate() -> Result<SigningKey, KeyError> {
        let private_key = RsaPrivateKey::new(&mut OsRng, GENERATED_KEY_BITS)
            .map_err(|err| KeyError::Generate(err.to_string()))?;
        Ok(SigningKey::from_private_key(private_key))
    }

    fn from_private_key(private_key: RsaPrivateKey) -> SigningKey {
        let n = URL_SAFE_NO_PAD.encode(private_key.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(private_key.e().to_bytes_be());
        let kid = rfc7638_thumbprint(&n, &e);
        SigningKey {
            signer: pkcs1v15::SigningKey::<Sha256>::new(private_key.clone()),
            private_key,
            public_jwk: RsaPublicJwk {
                kty: "RSA".to_owned(),
                key_use: "sig".to_owned(),
                alg: "RS256".to_owned(),
                kid,
                n,
                e,
            },
        }
    }

    /// Write the key as PKCS#8 PEM to `path`, never replacing an existing file: the PEM goes to a
    /// private temporary file first, then is hard-linked into place (which fails if `path`
    /// exists), so a reader never sees a half-written key.
    fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let write_err = |source| KeyError::Write {
            path: path.to_owned(),
            source,
        };
        let pem = self
            .private_key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|err| write_err(std::io::Error::other(err.to_string())))?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(write_err)?;
        }
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp_path = PathBuf::from(tmp_name);
        let result = write_private_file(&tmp_path, pem.as_bytes())
            .and_then(|()| std::fs::hard_link(&tmp_path, path));
        // The temporary name is only a staging area; failing to remove it loses nothing.
        let _ = std::fs::remove_file(&tmp_path);
        result.map_err(write_err)
    }

    /// The key id (RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        &self.public_jwk.kid
    }

    /// The public key as a JWK.
    pub fn public_jwk(&self) -> &RsaPublicJwk {
        &self.public_jwk
    }

    /// The JWK Set holding this key.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.public_jwk.clone()],
        }
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `message` (RS256, RFC 7518 §3.3; RFC 8017 §8.2).
    /// The randomized signer blinds the private-key operation against timing side channels.
    pub fn sign_rs256(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let signature = self
            .signer
            .try_sign_with_rng(&mut OsRng, message)
            .map_err(|err| KeyError::Sign(err.to_string()))?;
        Ok(signature.to_vec())
    }
}

#[cfg(unix)]
fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// RFC 7638 §3: SHA-256 over the JSON object of the required RSA members (`e`, `kty`, `n`, in
/// lexicographic order, no whitespace; §3.2), base64url-encoded without padding.
fn rfc7638_thumbprint(n: &str, e: &str) -> String {
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 2048-bit test key made with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`
    /// (generating one in a debug build takes seconds; most tests share this one).
    pub(crate) const TEST_KEY_PEM: &str = include_str!("../testdata/test-signing-key.pem");

    pub(crate) fn test_key() -> SigningKey {
        SigningKey::from_private_key(RsaPrivateKey::from_pkcs8_pem(TEST_KEY_PEM).unwrap())
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1: the example key and its thumbprint.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let e = "AQAB";
        assert_eq!(
            rfc7638_thumbprint(n, e),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn key_is_generated_once_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/nested/key.pem");

        let (first, origin) = SigningKey::load_or_generate(&path).unwrap();
        assert_eq!(origin, KeyOrigin::Generated);
        assert!(path.is_file());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let pem = std::fs::read_to_string(&path).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");

        let (second, origin) = SigningKey::load_or_generate(&path).unwrap();
        assert_eq!(origin, KeyOrigin::Loaded);
        assert_eq!(first.kid(), second.kid());
        assert_eq!(first.public_jwk(), second.public_jwk());
        // No staging file left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["key.pem"]);
    }

    #[test]
    fn load_does_not_generate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let err = SigningKey::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("start the authz-sidecar once"));
        assert!(!path.exists());
    }

    #[test]
    fn garbage_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "not a key").unwrap();
        let err = SigningKey::load_or_generate(&path).unwrap_err();
        assert!(matches!(err, KeyError::Decode { .. }), "{err}");
        // The bad file is not replaced by a new key.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key");
    }

    #[test]
    fn small_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let small = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        std::fs::write(
            &path,
            small.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
        )
        .unwrap();
        let err = SigningKey::load(&path).unwrap_err();
        assert!(
            matches!(err, KeyError::TooSmall { bits: 1024, .. }),
            "{err}"
        );
    }

    #[test]
    fn jwks_has_the_rfc7517_shape() {
        let key = test_key();
        let jwks = serde_json::to_value(key.jwks()).unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        let jwk = keys[0].as_object().unwrap();
        let mut names: Vec<_> = jwk.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["alg", "e", "kid", "kty", "n", "use"]);
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["alg"], "RS256");
        assert_eq!(jwk["e"], "AQAB");
        let n = jwk["n"].as_str().unwrap();
        // base64url without padding (RFC 7518 §6.3.1.1): 256 bytes -> 342 characters.
        assert!(!n.contains('=') && !n.contains('+') && !n.contains('/'));
        assert_eq!(URL_SAFE_NO_PAD.decode(n).unwrap().len(), 256);
        assert_eq!(jwk["kid"], rfc7638_thumbprint(n, "AQAB"));
    }

    #[test]
    fn debug_does_not_print_key_material() {
        let key = test_key();
        let text = format!("{key:?}");
        assert!(text.contains(key.kid()));
        assert!(!text.contains(&key.public_jwk().n[..20]));
    }
}
