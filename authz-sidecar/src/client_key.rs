//! Agents' registered public keys: the keys their `private_key_jwt` client assertions are
//! verified with (RFC 7523 §2.2). No shared secrets: the sidecar only ever holds public keys.
//!
//! A key is stored as a public JWK (RFC 7517 §4): RSA (RFC 7518 §6.3.1, at least 2048 bits,
//! RS256) or EC on P-256 (RFC 7518 §6.2.1, ES256). Each key is bound to exactly one algorithm
//! (RFC 8725 §3.1), so an assertion cannot pick a weaker use of the same key. A JWK without `kid`
//! gets its RFC 7638 thumbprint as `kid`. Operators may also hand in a PEM public key
//! (`SubjectPublicKeyInfo`, or PKCS#1 for RSA); [`parse_public_key`] turns it into the JWK.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier as _;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey, pkcs1v15};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::signing_key::MIN_KEY_BITS;

/// Longest accepted `kid`.
pub const MAX_KID_LEN: usize = 128;
/// Byte length of a P-256 coordinate and of each half of an ES256 signature (RFC 7518 §3.4).
const P256_FIELD_BYTES: usize = 32;
/// JWK members that only a private key has (RFC 7518 §6.2.2, §6.3.2): refused, with a clear
/// message, so nobody uploads a private key by mistake.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The JWS algorithms client assertions may use. Everything else (`none`, `HS*`, `PS*`, ...) is
/// refused (RFC 8725 §3.1: an explicit allow-list; §2.1 and RFC 7518 §3.6 on `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3).
    Rs256,
    /// ECDSA P-256 with SHA-256 (RFC 7518 §3.4).
    Es256,
}

impl AssertionAlg {
    /// The allowed algorithms, as advertised in the RFC 8414 metadata.
    pub const ALL: [AssertionAlg; 2] = [AssertionAlg::Rs256, AssertionAlg::Es256];

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            AssertionAlg::Rs256 => "RS256",
            AssertionAlg::Es256 => "ES256",
        }
    }

    /// The algorithm named `name`, if allowed. Case-sensitive (RFC 7515 §4.1.1: `alg` is a
    /// case-sensitive string), so `none`, `None` and `rs256` are all refused.
    pub fn from_name(name: &str) -> Option<AssertionAlg> {
        AssertionAlg::ALL.into_iter().find(|alg| alg.name() == name)
    }
}

/// Why a public key could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    /// The input is not a JWK object of the accepted shape.
    #[error("not a public JWK: {0}")]
    Json(String),
    /// The input carries private key material.
    #[error("this is a private key; register the public key only")]
    PrivateKey,
    /// `kty` / `crv` is not RSA or EC P-256.
    #[error("unsupported key type: {0} (RSA or EC P-256 only)")]
    UnsupportedKeyType(String),
    /// A member is missing or malformed.
    #[error("invalid JWK member `{member}`: {reason}")]
    Member {
        /// The member name.
        member: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The RSA key is smaller than RS256 allows.
    #[error("RSA key has {0} bits; RS256 needs at least {MIN_KEY_BITS} (RFC 7518 §3.3)")]
    TooSmall(usize),
    /// The PEM could not be decoded as a public key.
    #[error("not a PEM public key (SubjectPublicKeyInfo RSA or EC P-256, or PKCS#1 RSA): {0}")]
    Pem(String),
    /// A `kid` given next to a JWK differs from the JWK's own.
    #[error("--kid `{given}` differs from the JWK's kid `{in_jwk}`")]
    KidMismatch {
        /// The separately given kid.
        given: String,
        /// The JWK's kid.
        in_jwk: String,
    },
}

/// A public JWK as stored and served by the admin API. Only these members are accepted
/// (`deny_unknown_fields`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientJwk {
    /// `RSA` or `EC`.
    pub kty: String,
    /// Key id, unique per agent. Default: the RFC 7638 thumbprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `RS256` for RSA, `ES256` for EC; filled in when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// `sig` when present (RFC 7517 §4.2).
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// RSA modulus (base64url, RFC 7518 §6.3.1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent (RFC 7518 §6.3.1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC curve, `P-256` (RFC 7518 §6.2.1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// EC x coordinate (RFC 7518 §6.2.1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate (RFC 7518 §6.2.1.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// The verifier of one key.
#[derive(Clone)]
enum KeyVerifier {
    Rs256(pkcs1v15::VerifyingKey<Sha256>),
    Es256(p256::ecdsa::VerifyingKey),
}

/// A validated public key: its normalized JWK (with `kid`, `alg` and `use` set) and a verifier.
#[derive(Clone)]
pub struct ClientKey {
    jwk: ClientJwk,
    kid: String,
    alg: AssertionAlg,
    verifier: KeyVerifier,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl ClientKey {
    /// Validate a JWK given as JSON text.
    pub fn from_json(text: &str) -> Result<ClientKey, KeyFormatError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|err| KeyFormatError::Json(err.to_string()))?;
        ClientKey::from_value(value)
    }

    /// Validate a JWK given as a JSON value (e.g. inside an admin API body).
    pub fn from_value(value: serde_json::Value) -> Result<ClientKey, KeyFormatError> {
        let Some(object) = value.as_object() else {
            return Err(KeyFormatError::Json(
                "a JWK must be a JSON object".to_owned(),
            ));
        };
        if PRIVATE_MEMBERS.iter().any(|m| object.contains_key(*m)) {
            return Err(KeyFormatError::PrivateKey);
        }
        let jwk: ClientJwk =
            serde_json::from_value(value).map_err(|err| KeyFormatError::Json(err.to_string()))?;
        ClientKey::from_jwk(jwk)
    }

    /// Validate a parsed JWK.
    pub fn from_jwk(mut jwk: ClientJwk) -> Result<ClientKey, KeyFormatError> {
        // RFC 7517 §4.2: a key registered for client authentication is a signature key.
        if let Some(key_use) = &jwk.key_use
            && key_use != "sig"
        {
            return Err(KeyFormatError::Member {
                member: "use",
                reason: format!("must be `sig`, got `{key_use}`"),
            });
        }
        let (alg, verifier, thumbprint) = match jwk.kty.as_str() {
            "RSA" => rsa_verifier(&jwk)?,
            "EC" => ec_verifier(&jwk)?,
            other => return Err(KeyFormatError::UnsupportedKeyType(other.to_owned())),
        };
        // RFC 8725 §3.1: one algorithm per key; the JWK's `alg`, when given, must be that one.
        if let Some(given) = &jwk.alg
            && given != alg.name()
        {
            return Err(KeyFormatError::Member {
                member: "alg",
                reason: format!("`{given}` does not fit this key (expected {})", alg.name()),
            });
        }
        let kid = match jwk.kid.take() {
            Some(kid) => check_kid(kid)?,
            None => thumbprint,
        };
        jwk.kid = Some(kid.clone());
        jwk.alg = Some(alg.name().to_owned());
        jwk.key_use = Some("sig".to_owned());
        Ok(ClientKey {
            jwk,
            kid,
            alg,
            verifier,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key verifies.
    pub fn alg(&self) -> AssertionAlg {
        self.alg
    }

    /// The normalized public JWK.
    pub fn jwk(&self) -> &ClientJwk {
        &self.jwk
    }

    /// Whether `signature` is a valid `alg` signature of `message` by this key. A key never
    /// verifies an algorithm other than its own (RFC 8725 §3.1).
    pub fn verify(&self, alg: AssertionAlg, message: &[u8], signature: &[u8]) -> bool {
        match (&self.verifier, alg) {
            (KeyVerifier::Rs256(key), AssertionAlg::Rs256) => {
                pkcs1v15::Signature::try_from(signature)
                    .is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
            // RFC 7518 §3.4: the JWS signature is R || S, 32 bytes each (not DER).
            (KeyVerifier::Es256(key), AssertionAlg::Es256) => {
                signature.len() == 2 * P256_FIELD_BYTES
                    && p256::ecdsa::Signature::from_slice(signature)
                        .is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
            _ => false,
        }
    }
}

/// A public key from a file's text: a JWK (JSON object) or a PEM public key. `kid`, when given,
/// names the key (for PEM) or must equal the JWK's own `kid`.
pub fn parse_public_key(text: &str, kid: Option<&str>) -> Result<ClientKey, KeyFormatError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let mut value: serde_json::Value =
            serde_json::from_str(trimmed).map_err(|err| KeyFormatError::Json(err.to_string()))?;
        if let (Some(given), Some(object)) = (kid, value.as_object_mut()) {
            match object.get("kid").and_then(serde_json::Value::as_str) {
                Some(in_jwk) if in_jwk != given => {
                    return Err(KeyFormatError::KidMismatch {
                        given: given.to_owned(),
                        in_jwk: in_jwk.to_owned(),
                    });
                }
                _ => {
                    object.insert("kid".to_owned(), serde_json::Value::from(given));
                }
            }
        }
        return ClientKey::from_value(value);
    }
    if trimmed.contains("PRIVATE KEY-----") {
        return Err(KeyFormatError::PrivateKey);
    }
    let mut jwk = if trimmed.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
        let key = RsaPublicKey::from_pkcs1_pem(trimmed)
            .map_err(|err| KeyFormatError::Pem(err.to_string()))?;
        rsa_jwk(&key)
    } else if let Ok(key) = RsaPublicKey::from_public_key_pem(trimmed) {
        rsa_jwk(&key)
    } else {
        let key = p256::PublicKey::from_public_key_pem(trimmed)
            .map_err(|err| KeyFormatError::Pem(err.to_string()))?;
        ec_jwk(&key)
    };
    jwk.kid = kid.map(str::to_owned);
    ClientKey::from_jwk(jwk)
}

fn rsa_jwk(key: &RsaPublicKey) -> ClientJwk {
    ClientJwk {
        kty: "RSA".to_owned(),
        kid: None,
        alg: None,
        key_use: None,
        n: Some(URL_SAFE_NO_PAD.encode(key.n().to_bytes_be())),
        e: Some(URL_SAFE_NO_PAD.encode(key.e().to_bytes_be())),
        crv: None,
        x: None,
        y: None,
    }
}

fn ec_jwk(key: &p256::PublicKey) -> ClientJwk {
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    let point = key.to_encoded_point(false);
    let encode = |c: Option<&p256::FieldBytes>| c.map(|bytes| URL_SAFE_NO_PAD.encode(bytes));
    ClientJwk {
        kty: "EC".to_owned(),
        kid: None,
        alg: None,
        key_use: None,
        n: None,
        e: None,
        crv: Some("P-256".to_owned()),
        x: encode(point.x()),
        y: encode(point.y()),
    }
}

fn required<'a>(
    member: &'static str,
    value: &'a Option<String>,
) -> Result<&'a str, KeyFormatError> {
    value.as_deref().ok_or(KeyFormatError::Member {
        member,
        reason: "missing".to_owned(),
    })
}

fn decode_member(member: &'static str, value: &str) -> Result<Vec<u8>, KeyFormatError> {
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|err| KeyFormatError::Member {
            member,
            reason: format!("not base64url without padding: {err}"),
        })
}

fn refuse_members(jwk: &ClientJwk, members: &[(&'static str, bool)]) -> Result<(), KeyFormatError> {
    for (member, present) in members {
        if *present {
            return Err(KeyFormatError::Member {
                member,
                reason: format!("does not belong in a {} key", jwk.kty),
            });
        }
    }
    Ok(())
}

fn rsa_verifier(jwk: &ClientJwk) -> Result<(AssertionAlg, KeyVerifier, String), KeyFormatError> {
    refuse_members(
        jwk,
        &[
            ("crv", jwk.crv.is_some()),
            ("x", jwk.x.is_some()),
            ("y", jwk.y.is_some()),
        ],
    )?;
    let n = required("n", &jwk.n)?;
    let e = required("e", &jwk.e)?;
    let key = RsaPublicKey::new(
        BigUint::from_bytes_be(&decode_member("n", n)?),
        BigUint::from_bytes_be(&decode_member("e", e)?),
    )
    .map_err(|err| KeyFormatError::Member {
        member: "n",
        reason: err.to_string(),
    })?;
    let bits = key.size() * 8;
    if bits < MIN_KEY_BITS {
        return Err(KeyFormatError::TooSmall(bits));
    }
    // RFC 7638 §3.2: the required RSA members in lexicographic order.
    let thumbprint = thumbprint(&format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#));
    Ok((
        AssertionAlg::Rs256,
        KeyVerifier::Rs256(pkcs1v15::VerifyingKey::<Sha256>::new(key)),
        thumbprint,
    ))
}

fn ec_verifier(jwk: &ClientJwk) -> Result<(AssertionAlg, KeyVerifier, String), KeyFormatError> {
    refuse_members(jwk, &[("n", jwk.n.is_some()), ("e", jwk.e.is_some())])?;
    let crv = required("crv", &jwk.crv)?;
    if crv != "P-256" {
        return Err(KeyFormatError::UnsupportedKeyType(format!("EC {crv}")));
    }
    let x = required("x", &jwk.x)?;
    let y = required("y", &jwk.y)?;
    let x_bytes = decode_member("x", x)?;
    let y_bytes = decode_member("y", y)?;
    // RFC 7518 §6.2.1.2: the coordinate is the full-length octet string, 32 bytes for P-256.
    for (member, bytes) in [("x", &x_bytes), ("y", &y_bytes)] {
        if bytes.len() != P256_FIELD_BYTES {
            return Err(KeyFormatError::Member {
                member,
                reason: format!("must be {P256_FIELD_BYTES} bytes, got {}", bytes.len()),
            });
        }
    }
    // SEC 1 §2.3.3 uncompressed point 0x04 || X || Y; decoding checks it is on the curve.
    let mut point = Vec::with_capacity(1 + 2 * P256_FIELD_BYTES);
    point.push(0x04);
    point.extend_from_slice(&x_bytes);
    point.extend_from_slice(&y_bytes);
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|err| {
        KeyFormatError::Member {
            member: "x",
            reason: format!("not a point on P-256: {err}"),
        }
    })?;
    // RFC 7638 §3.2: `crv`, `kty`, `x`, `y` in lexicographic order.
    let thumbprint = thumbprint(&format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#
    ));
    Ok((AssertionAlg::Es256, KeyVerifier::Es256(key), thumbprint))
}

/// RFC 7638 §3.1: base64url(SHA-256(canonical JSON of the required members)).
fn thumbprint(canonical: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// A `kid` ends up in URL paths of the admin API and in logs: visible ASCII without `/`, bounded.
fn check_kid(kid: String) -> Result<String, KeyFormatError> {
    let valid = !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@' | '+' | '=')
        });
    if !valid {
        return Err(KeyFormatError::Member {
            member: "kid",
            reason: format!("must be 1 to {MAX_KID_LEN} ASCII letters, digits or - _ . : @ + ="),
        });
    }
    Ok(kid)
}

#[cfg(test)]
pub(crate) mod tests {
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::EncodePublicKey as _;
    use rsa::RsaPrivateKey;
    use rsa::pkcs8::{DecodePrivateKey as _, LineEnding};
    use rsa::rand_core::OsRng;
    use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};

    use super::*;
    use crate::signing_key::tests::TEST_KEY_PEM;

    /// A client's private key, for signing test assertions.
    #[derive(Clone)]
    pub(crate) enum TestClientKey {
        Rsa(Box<RsaPrivateKey>),
        Ec(p256::ecdsa::SigningKey),
    }

    impl TestClientKey {
        /// The shared RSA test key (generating RSA keys in debug builds is slow).
        pub(crate) fn rsa() -> TestClientKey {
            TestClientKey::Rsa(Box::new(
                RsaPrivateKey::from_pkcs8_pem(TEST_KEY_PEM).unwrap(),
            ))
        }

        pub(crate) fn ec() -> TestClientKey {
            TestClientKey::Ec(p256::ecdsa::SigningKey::random(&mut OsRng))
        }

        pub(crate) fn public_jwk(&self, kid: &str) -> serde_json::Value {
            let mut jwk = match self {
                TestClientKey::Rsa(key) => rsa_jwk(&key.to_public_key()),
                TestClientKey::Ec(key) => ec_jwk(&p256::PublicKey::from(key.verifying_key())),
            };
            jwk.kid = Some(kid.to_owned());
            serde_json::to_value(jwk).unwrap()
        }

        pub(crate) fn alg(&self) -> &'static str {
            match self {
                TestClientKey::Rsa(_) => "RS256",
                TestClientKey::Ec(_) => "ES256",
            }
        }

        pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
            match self {
                TestClientKey::Rsa(key) => {
                    pkcs1v15::SigningKey::<Sha256>::new(key.as_ref().clone())
                        .sign_with_rng(&mut OsRng, message)
                        .to_vec()
                }
                TestClientKey::Ec(key) => {
                    let signature: p256::ecdsa::Signature = key.sign(message);
                    signature.to_bytes().to_vec()
                }
            }
        }
    }

    #[test]
    fn rsa_and_ec_keys_verify_their_own_algorithm_only() {
        for private in [TestClientKey::rsa(), TestClientKey::ec()] {
            let key = ClientKey::from_value(private.public_jwk("k1")).unwrap();
            let alg = AssertionAlg::from_name(private.alg()).unwrap();
            assert_eq!(key.alg(), alg);
            let signature = private.sign(b"message");
            assert!(key.verify(alg, b"message", &signature));
            assert!(!key.verify(alg, b"other message", &signature));
            let other = match alg {
                AssertionAlg::Rs256 => AssertionAlg::Es256,
                AssertionAlg::Es256 => AssertionAlg::Rs256,
            };
            assert!(!key.verify(other, b"message", &signature));
            assert_eq!(key.jwk().alg.as_deref(), Some(private.alg()));
            assert_eq!(key.jwk().key_use.as_deref(), Some("sig"));
        }
    }

    #[test]
    fn only_the_allow_listed_algorithms_exist() {
        for name in [
            "none", "None", "NONE", "HS256", "rs256", "PS256", "ES384", "EdDSA", "",
        ] {
            assert_eq!(AssertionAlg::from_name(name), None, "{name}");
        }
        assert_eq!(AssertionAlg::from_name("RS256"), Some(AssertionAlg::Rs256));
        assert_eq!(AssertionAlg::from_name("ES256"), Some(AssertionAlg::Es256));
    }

    #[test]
    fn missing_kid_becomes_the_rfc7638_thumbprint() {
        // RFC 7638 §3.1 example key and thumbprint.
        let jwk = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
        });
        let key = ClientKey::from_value(jwk).unwrap();
        assert_eq!(key.kid(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn bad_jwks_are_refused_with_a_reason() {
        let ec = TestClientKey::ec().public_jwk("k");
        let with = |member: &str, value: serde_json::Value| {
            let mut jwk = ec.clone();
            jwk[member] = value;
            ClientKey::from_value(jwk).unwrap_err()
        };
        assert_eq!(with("d", "AAAA".into()), KeyFormatError::PrivateKey);
        assert!(matches!(
            with("crv", "P-384".into()),
            KeyFormatError::UnsupportedKeyType(_)
        ));
        assert!(matches!(
            with("alg", "RS256".into()),
            KeyFormatError::Member { member: "alg", .. }
        ));
        assert!(matches!(
            with("use", "enc".into()),
            KeyFormatError::Member { member: "use", .. }
        ));
        assert!(matches!(
            with("x", "AAAA".into()),
            KeyFormatError::Member { member: "x", .. }
        ));
        assert!(matches!(
            with("kid", "a/b".into()),
            KeyFormatError::Member { member: "kid", .. }
        ));
        assert!(matches!(with("extra", 1.into()), KeyFormatError::Json(_)));
        assert!(matches!(
            with("kty", "oct".into()),
            KeyFormatError::UnsupportedKeyType(_)
        ));
        // A point that is not on the curve.
        let mut off_curve = ec.clone();
        off_curve["y"] = URL_SAFE_NO_PAD.encode([7_u8; 32]).into();
        assert!(matches!(
            ClientKey::from_value(off_curve).unwrap_err(),
            KeyFormatError::Member { member: "x", .. }
        ));
    }

    #[test]
    fn small_rsa_keys_are_refused() {
        let small = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        let jwk = serde_json::to_value(rsa_jwk(&small.to_public_key())).unwrap();
        assert_eq!(
            ClientKey::from_value(jwk).unwrap_err(),
            KeyFormatError::TooSmall(1024)
        );
    }

    #[test]
    fn pem_public_keys_become_jwks() {
        let rsa = RsaPrivateKey::from_pkcs8_pem(TEST_KEY_PEM).unwrap();
        let spki = rsa
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let key = parse_public_key(&spki, Some("rsa-1")).unwrap();
        assert_eq!((key.kid(), key.alg()), ("rsa-1", AssertionAlg::Rs256));

        let ec = p256::ecdsa::SigningKey::random(&mut OsRng);
        let spki = p256::PublicKey::from(ec.verifying_key())
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let key = parse_public_key(&spki, None).unwrap();
        assert_eq!(key.alg(), AssertionAlg::Es256);
        assert_eq!(key.kid().len(), 43, "thumbprint kid");

        assert_eq!(
            parse_public_key(TEST_KEY_PEM, None).unwrap_err(),
            KeyFormatError::PrivateKey
        );
        assert!(matches!(
            parse_public_key(
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                None
            ),
            Err(KeyFormatError::Pem(_))
        ));
    }

    #[test]
    fn jwk_text_takes_the_given_kid_or_checks_it() {
        let mut jwk = TestClientKey::ec().public_jwk("k");
        jwk.as_object_mut().unwrap().remove("kid");
        let text = jwk.to_string();
        assert_eq!(
            parse_public_key(&text, Some("named")).unwrap().kid(),
            "named"
        );
        let text = TestClientKey::ec().public_jwk("inside").to_string();
        assert!(matches!(
            parse_public_key(&text, Some("outside")),
            Err(KeyFormatError::KidMismatch { .. })
        ));
    }
}
