//! Client authentication with `private_key_jwt` (RFC 7523 §2.2 and §3; RFC 7521 §4.2): the
//! agent proves who it is with a short-lived JWT signed by one of its registered keys.
//!
//! Pure apart from the replay cache: the caller passes the time, the accepted audiences and a
//! lookup of the enabled agents' keys. Every check cites the rule it enforces; any failure is an
//! [`AssertionError`], answered as `invalid_client` (RFC 7523 §3.2).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::client_key::{AssertionAlg, ClientKey};

/// RFC 7523 §2.2: the `client_assertion_type` of a JWT client assertion.
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Furthest in the future an assertion's `exp` may be: five minutes. RFC 7523 §3 item 4 lets the
/// server reject JWTs with an "unreasonably far in the future" expiry; short assertions keep the
/// replay cache small and a leaked assertion useless quickly.
pub const MAX_ASSERTION_LIFETIME_SECS: u64 = 300;
/// Clock skew tolerated on `exp`, `nbf` and `iat` (RFC 7523 §3 items 4-6 allow "some small leeway").
pub const CLOCK_SKEW_SECS: u64 = 30;
/// Largest accepted assertion (compact JWS characters).
pub const MAX_ASSERTION_BYTES: usize = 8 * 1024;
/// Most `jti`s remembered at once; past this, new assertions are refused until old ones expire
/// rather than letting memory grow without bound.
pub const MAX_REPLAY_ENTRIES: usize = 100_000;
/// Longest accepted `jti`.
const MAX_JTI_LEN: usize = 256;

/// Why a client assertion was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// Not a compact JWS with a JSON header and claims.
    #[error("client_assertion is not a well-formed signed JWT: {0}")]
    Malformed(String),
    /// `alg` is missing or outside the allow-list.
    #[error("client_assertion alg {0} is not allowed (RS256 or ES256 only)")]
    Algorithm(String),
    /// A header parameter this server refuses to honour.
    #[error("client_assertion header parameter `{0}` is not accepted")]
    HeaderParameter(String),
    /// A required claim is missing or has the wrong type.
    #[error("client_assertion claim `{0}` is missing or invalid")]
    Claim(&'static str),
    /// `iss`, `sub` and `client_id` do not name the same client.
    #[error("client_assertion iss and sub must both equal the client_id")]
    ClientMismatch,
    /// No enabled agent has this id.
    #[error("client `{0}` is not enrolled or is disabled")]
    UnknownClient(String),
    /// The signature does not verify with any key registered for this algorithm (and `kid`).
    #[error("client_assertion signature does not verify with a key registered for `{0}`")]
    BadSignature(String),
    /// `aud` does not name this authorization server.
    #[error("client_assertion aud must name this token endpoint or issuer")]
    Audience,
    /// `exp` is in the past.
    #[error("client_assertion has expired")]
    Expired,
    /// `exp` is too far in the future.
    #[error("client_assertion exp is more than {MAX_ASSERTION_LIFETIME_SECS} s ahead")]
    LifetimeTooLong,
    /// `nbf` or `iat` is in the future.
    #[error("client_assertion is not valid yet (nbf or iat in the future)")]
    NotYetValid,
    /// `iat` is older than an assertion can live.
    #[error("client_assertion iat is too old")]
    IssuedTooLongAgo,
    /// This `jti` was already used.
    #[error("client_assertion jti was already used")]
    Replayed,
    /// The replay cache is full.
    #[error("too many client assertions in flight; retry shortly")]
    ReplayCacheFull,
}

/// What a verified assertion establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAssertion {
    /// The authenticated client (agent id).
    pub client_id: String,
    /// The assertion's `jti`.
    pub jti: String,
    /// The assertion's `exp`.
    pub expires_at: u64,
}

/// The server side of the checks.
#[derive(Debug, Clone, Copy)]
pub struct AssertionRules<'a> {
    /// Values `aud` may contain: the token endpoint URL and the issuer (RFC 7523 §3 item 3).
    pub audiences: &'a [String],
    /// Now, seconds since the epoch.
    pub now: u64,
}

/// Verify `assertion` (everything but replay: see [`ReplayCache::remember`]).
///
/// `client_id` is the optional form parameter (RFC 7521 §4.2: when present it must identify the
/// same client). `keys_of` answers the registered keys of an *enabled* agent.
pub fn verify_client_assertion<'k>(
    assertion: &str,
    client_id: Option<&str>,
    keys_of: impl Fn(&str) -> Option<&'k [ClientKey]>,
    rules: AssertionRules<'_>,
) -> Result<VerifiedAssertion, AssertionError> {
    if assertion.len() > MAX_ASSERTION_BYTES {
        return Err(AssertionError::Malformed(format!(
            "longer than {MAX_ASSERTION_BYTES} bytes"
        )));
    }
    // RFC 7515 §7.1 compact serialization: exactly three parts (a five-part JWE is refused).
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header_b64, claims_b64, signature_b64] = parts.as_slice() else {
        return Err(AssertionError::Malformed(
            "expected three base64url parts".to_owned(),
        ));
    };
    let header = decode_json_object("header", header_b64)?;
    let claims = decode_json_object("claims", claims_b64)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|err| AssertionError::Malformed(format!("signature: {err}")))?;

    // RFC 8725 §3.1 and §2.1: the algorithm comes from an allow-list, never from trust in the
    // header; `none` and the HMAC family (a public key used as an HMAC secret) are refused.
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| AssertionError::Algorithm("(missing)".to_owned()))?;
    let alg = AssertionAlg::from_name(alg_name)
        .ok_or_else(|| AssertionError::Algorithm(format!("`{alg_name}`")))?;
    // Keys come only from the registry: header-supplied keys or key URLs are refused (RFC 8725
    // §3.10 on trusting received data; RFC 7515 §4.1.2-4.1.6). RFC 7515 §4.1.11: `crit` names
    // extensions we do not implement, so the JWS must be rejected.
    for refused in ["jku", "jwk", "x5u", "x5c", "crit"] {
        if header.contains_key(refused) {
            return Err(AssertionError::HeaderParameter(refused.to_owned()));
        }
    }
    // RFC 8725 §3.11 (explicit typing): an access token (`at+jwt`, RFC 9068 §2.1) is not a
    // client assertion, even when signed by a key we know.
    if let Some(typ) = header.get("typ") {
        let typ = typ.as_str().unwrap_or_default();
        if !typ.eq_ignore_ascii_case("JWT") {
            return Err(AssertionError::HeaderParameter(format!("typ `{typ}`")));
        }
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(AssertionError::HeaderParameter("kid".to_owned())),
    };

    // RFC 7523 §3 items 1 and 2, §2.2: `iss` and `sub` MUST both be the client_id.
    let iss = string_claim(&claims, "iss")?;
    let sub = string_claim(&claims, "sub")?;
    if iss != sub || client_id.is_some_and(|given| given != iss) {
        return Err(AssertionError::ClientMismatch);
    }
    let keys = keys_of(iss).ok_or_else(|| AssertionError::UnknownClient(iss.to_owned()))?;

    // RFC 7523 §3 item 9: the JWT MUST be signed by the client; the key is the one named by
    // `kid` (RFC 7515 §4.1.4), or any of the client's keys for this algorithm.
    let signing_input = &assertion[..header_b64.len() + 1 + claims_b64.len()];
    let verified = keys
        .iter()
        .filter(|key| key.alg() == alg && kid.is_none_or(|kid| key.kid() == kid))
        .any(|key| key.verify(alg, signing_input.as_bytes(), &signature));
    if !verified {
        return Err(AssertionError::BadSignature(iss.to_owned()));
    }

    // RFC 7523 §3 item 3: `aud` MUST identify this authorization server (token endpoint URL or
    // issuer identifier); a string or an array of strings (RFC 7519 §4.1.3).
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => rules.audiences.contains(aud),
        Some(Value::Array(auds)) => auds
            .iter()
            .filter_map(Value::as_str)
            .any(|aud| rules.audiences.iter().any(|ours| ours == aud)),
        _ => false,
    };
    if !audience_ok {
        return Err(AssertionError::Audience);
    }

    // RFC 7523 §3 item 4: `exp` MUST be present and in the future (small leeway); we also cap
    // how far ahead it may be.
    let exp = numeric_date(&claims, "exp")?.ok_or(AssertionError::Claim("exp"))?;
    if exp.saturating_add(CLOCK_SKEW_SECS) <= rules.now {
        return Err(AssertionError::Expired);
    }
    if exp
        > rules
            .now
            .saturating_add(MAX_ASSERTION_LIFETIME_SECS + CLOCK_SKEW_SECS)
    {
        return Err(AssertionError::LifetimeTooLong);
    }
    // RFC 7523 §3 item 5: not before `nbf`.
    if let Some(nbf) = numeric_date(&claims, "nbf")?
        && nbf > rules.now.saturating_add(CLOCK_SKEW_SECS)
    {
        return Err(AssertionError::NotYetValid);
    }
    // RFC 7523 §3 item 6: the server may reject an `iat` too far in the past; one in the future
    // is not credible either.
    if let Some(iat) = numeric_date(&claims, "iat")? {
        if iat > rules.now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(AssertionError::NotYetValid);
        }
        if iat.saturating_add(MAX_ASSERTION_LIFETIME_SECS + CLOCK_SKEW_SECS) < rules.now {
            return Err(AssertionError::IssuedTooLongAgo);
        }
    }
    // RFC 7523 §3 item 7 lets the server keep used `jti`s to refuse replays; we require one so
    // every assertion is single-use.
    let jti = string_claim(&claims, "jti")?;
    if jti.is_empty() || jti.len() > MAX_JTI_LEN {
        return Err(AssertionError::Claim("jti"));
    }
    Ok(VerifiedAssertion {
        client_id: iss.to_owned(),
        jti: jti.to_owned(),
        expires_at: exp,
    })
}

fn decode_json_object(part: &str, b64: &str) -> Result<Map<String, Value>, AssertionError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|err| AssertionError::Malformed(format!("{part}: {err}")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(AssertionError::Malformed(format!(
            "{part} is not a JSON object"
        ))),
        Err(err) => Err(AssertionError::Malformed(format!("{part}: {err}"))),
    }
}

fn string_claim<'c>(
    claims: &'c Map<String, Value>,
    name: &'static str,
) -> Result<&'c str, AssertionError> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|value| !value.is_empty())
        .ok_or(AssertionError::Claim(name))
}

/// RFC 7519 §2 NumericDate: seconds since the epoch, possibly fractional; negative refused.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u64>, AssertionError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => {
            if let Some(seconds) = value.as_u64() {
                return Ok(Some(seconds));
            }
            match value.as_f64() {
                Some(seconds) if seconds.is_finite() && seconds >= 0.0 => {
                    // Truncation is intended: a fractional second does not matter at this skew.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    Ok(Some(seconds as u64))
                }
                _ => Err(AssertionError::Claim(name)),
            }
        }
    }
}

/// Used `jti`s per client, kept until the assertion could no longer be accepted anyway
/// (`exp` + skew), so each assertion is accepted once (RFC 7523 §3 item 7).
///
/// In memory, per sidecar process: replicas behind a load balancer do not share it (a shared
/// store is future work, see docs/identity.md).
#[derive(Debug, Default)]
pub struct ReplayCache {
    state: Mutex<ReplayState>,
}

#[derive(Debug, Default)]
struct ReplayState {
    /// (client_id, jti) → time after which the entry can be forgotten.
    seen: HashMap<(String, String), u64>,
    /// Size at which expired entries are swept next (amortizes the sweep).
    sweep_at: usize,
}

/// Sweep no more often than this many entries.
const MIN_SWEEP_SIZE: usize = 1024;

impl ReplayCache {
    /// An empty cache.
    pub fn new() -> ReplayCache {
        ReplayCache::default()
    }

    /// Record the assertion's `jti`; an already recorded one is [`AssertionError::Replayed`].
    pub fn remember(&self, assertion: &VerifiedAssertion, now: u64) -> Result<(), AssertionError> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.seen.len() >= state.sweep_at {
            state.seen.retain(|_, forget_after| *forget_after >= now);
            state.sweep_at = (state.seen.len() * 2).max(MIN_SWEEP_SIZE);
        }
        let key = (assertion.client_id.clone(), assertion.jti.clone());
        if let Some(forget_after) = state.seen.get(&key)
            && *forget_after >= now
        {
            return Err(AssertionError::Replayed);
        }
        if state.seen.len() >= MAX_REPLAY_ENTRIES {
            return Err(AssertionError::ReplayCacheFull);
        }
        state
            .seen
            .insert(key, assertion.expires_at.saturating_add(CLOCK_SKEW_SECS));
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::client_key::tests::TestClientKey;

    pub(crate) const TOKEN_ENDPOINT: &str = "http://127.0.0.1:9911/oauth/token";
    pub(crate) const NOW: u64 = 1_800_000_000;

    pub(crate) fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    /// A compact JWS over `header` and `claims`, signed by `key`.
    pub(crate) fn sign(key: &TestClientKey, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let signature = key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    pub(crate) fn good_claims(client: &str, now: u64) -> Value {
        serde_json::json!({
            "iss": client, "sub": client, "aud": TOKEN_ENDPOINT,
            "iat": now, "exp": now + 60, "jti": format!("jti-{client}-{now}"),
        })
    }

    struct Fixture {
        key: TestClientKey,
        registered: Vec<ClientKey>,
        audiences: Vec<String>,
    }

    impl Fixture {
        fn new(key: TestClientKey) -> Fixture {
            let registered = vec![ClientKey::from_value(key.public_jwk("k1")).unwrap()];
            Fixture {
                key,
                registered,
                audiences: vec![TOKEN_ENDPOINT.to_owned(), "behavry-authz".to_owned()],
            }
        }

        fn header(&self) -> Value {
            serde_json::json!({"alg": self.key.alg(), "kid": "k1", "typ": "JWT"})
        }

        fn verify(&self, assertion: &str) -> Result<VerifiedAssertion, AssertionError> {
            verify_client_assertion(
                assertion,
                None,
                |id| (id == "agent-1").then_some(self.registered.as_slice()),
                AssertionRules {
                    audiences: &self.audiences,
                    now: NOW,
                },
            )
        }

        fn with_claims(
            &self,
            edit: impl FnOnce(&mut Value),
        ) -> Result<VerifiedAssertion, AssertionError> {
            let mut claims = good_claims("agent-1", NOW);
            edit(&mut claims);
            self.verify(&sign(&self.key, &self.header(), &claims))
        }

        fn with_header(
            &self,
            edit: impl FnOnce(&mut Value),
        ) -> Result<VerifiedAssertion, AssertionError> {
            let mut header = self.header();
            edit(&mut header);
            self.verify(&sign(&self.key, &header, &good_claims("agent-1", NOW)))
        }
    }

    #[test]
    fn good_assertions_verify_with_rsa_and_ec_keys() {
        for key in [TestClientKey::rsa(), TestClientKey::ec()] {
            let fixture = Fixture::new(key);
            let verified = fixture.with_claims(|_| {}).unwrap();
            assert_eq!(verified.client_id, "agent-1");
            assert_eq!(verified.expires_at, NOW + 60);
            // The issuer is an accepted audience too, and `aud` may be an array.
            fixture
                .with_claims(|c| c["aud"] = "behavry-authz".into())
                .unwrap();
            fixture
                .with_claims(|c| c["aud"] = serde_json::json!(["elsewhere", TOKEN_ENDPOINT]))
                .unwrap();
            // Without kid, the client's keys for the algorithm are tried.
            fixture
                .with_header(|h| {
                    h.as_object_mut().unwrap().remove("kid");
                })
                .unwrap();
        }
    }

    #[test]
    fn algorithm_attacks_are_refused() {
        let fixture = Fixture::new(TestClientKey::rsa());
        for alg in ["none", "None", "HS256", "PS256", "ES256"] {
            let err = fixture.with_header(|h| h["alg"] = alg.into()).unwrap_err();
            if alg == "ES256" {
                // Allowed name, but the key is RSA: no key of that algorithm verifies.
                assert_eq!(err, AssertionError::BadSignature("agent-1".to_owned()));
            } else {
                assert!(matches!(err, AssertionError::Algorithm(_)), "{alg}: {err}");
            }
        }
        // Unsigned token with alg none and an empty signature.
        let unsigned = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none"})),
            b64(&good_claims("agent-1", NOW))
        );
        assert!(matches!(
            fixture.verify(&unsigned),
            Err(AssertionError::Algorithm(_))
        ));
    }

    #[test]
    fn header_supplied_keys_and_wrong_types_are_refused() {
        let fixture = Fixture::new(TestClientKey::ec());
        for parameter in ["jku", "jwk", "x5u", "x5c", "crit"] {
            let err = fixture
                .with_header(|h| h[parameter] = "x".into())
                .unwrap_err();
            assert_eq!(err, AssertionError::HeaderParameter(parameter.to_owned()));
        }
        let err = fixture
            .with_header(|h| h["typ"] = "at+jwt".into())
            .unwrap_err();
        assert!(matches!(err, AssertionError::HeaderParameter(_)));
    }

    #[test]
    fn unregistered_key_unknown_kid_and_tampering_are_refused() {
        let fixture = Fixture::new(TestClientKey::ec());
        let stranger = TestClientKey::ec();
        let forged = sign(&stranger, &fixture.header(), &good_claims("agent-1", NOW));
        assert_eq!(
            fixture.verify(&forged).unwrap_err(),
            AssertionError::BadSignature("agent-1".to_owned())
        );
        let err = fixture.with_header(|h| h["kid"] = "k2".into()).unwrap_err();
        assert_eq!(err, AssertionError::BadSignature("agent-1".to_owned()));

        let good = sign(
            &fixture.key,
            &fixture.header(),
            &good_claims("agent-1", NOW),
        );
        let mut parts: Vec<&str> = good.split('.').collect();
        let mut claims = good_claims("agent-1", NOW);
        claims["exp"] = (NOW + 200).into();
        let tampered_claims = b64(&claims);
        parts[1] = &tampered_claims;
        assert!(matches!(
            fixture.verify(&parts.join(".")),
            Err(AssertionError::BadSignature(_))
        ));
    }

    #[test]
    fn client_identity_rules() {
        let fixture = Fixture::new(TestClientKey::ec());
        let err = fixture
            .with_claims(|c| c["sub"] = "agent-2".into())
            .unwrap_err();
        assert_eq!(err, AssertionError::ClientMismatch);
        let err = fixture
            .with_claims(|c| {
                c["iss"] = "nobody".into();
                c["sub"] = "nobody".into();
            })
            .unwrap_err();
        assert_eq!(err, AssertionError::UnknownClient("nobody".to_owned()));
        // The client_id form parameter must agree.
        let assertion = sign(
            &fixture.key,
            &fixture.header(),
            &good_claims("agent-1", NOW),
        );
        let err = verify_client_assertion(
            &assertion,
            Some("agent-2"),
            |_| Some(fixture.registered.as_slice()),
            AssertionRules {
                audiences: &fixture.audiences,
                now: NOW,
            },
        )
        .unwrap_err();
        assert_eq!(err, AssertionError::ClientMismatch);
    }

    #[test]
    fn time_and_audience_rules() {
        let fixture = Fixture::new(TestClientKey::ec());
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(Edit, AssertionError)> = vec![
            (
                Box::new(|c| c["aud"] = "http://elsewhere/oauth/token".into()),
                AssertionError::Audience,
            ),
            (
                Box::new(|c| c["aud"] = serde_json::json!(["a", "b"])),
                AssertionError::Audience,
            ),
            (
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("aud");
                }),
                AssertionError::Audience,
            ),
            (
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                AssertionError::Claim("exp"),
            ),
            (
                Box::new(|c| c["exp"] = "soon".into()),
                AssertionError::Claim("exp"),
            ),
            (
                Box::new(|c| c["exp"] = (NOW - CLOCK_SKEW_SECS - 1).into()),
                AssertionError::Expired,
            ),
            (
                Box::new(|c| c["exp"] = (NOW + 3600).into()),
                AssertionError::LifetimeTooLong,
            ),
            (
                Box::new(|c| c["nbf"] = (NOW + 120).into()),
                AssertionError::NotYetValid,
            ),
            (
                Box::new(|c| c["iat"] = (NOW + 120).into()),
                AssertionError::NotYetValid,
            ),
            (
                Box::new(|c| c["iat"] = (NOW - 3600).into()),
                AssertionError::IssuedTooLongAgo,
            ),
            (
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("jti");
                }),
                AssertionError::Claim("jti"),
            ),
        ];
        for (edit, expected) in cases {
            assert_eq!(fixture.with_claims(edit).unwrap_err(), expected);
        }
        // Within the skew is fine.
        fixture
            .with_claims(|c| c["exp"] = (NOW - CLOCK_SKEW_SECS + 1).into())
            .unwrap();
        fixture
            .with_claims(|c| c["nbf"] = (NOW + 10).into())
            .unwrap();
    }

    #[test]
    fn malformed_assertions_are_refused() {
        let fixture = Fixture::new(TestClientKey::ec());
        for bad in ["", "a.b", "a.b.c.d.e", "!!!.e30.", "e30.e30.", "W10.e30.AA"] {
            assert!(
                matches!(
                    fixture.verify(bad),
                    Err(AssertionError::Malformed(_) | AssertionError::Algorithm(_))
                ),
                "{bad}"
            );
        }
        let huge = "a".repeat(MAX_ASSERTION_BYTES + 1);
        assert!(matches!(
            fixture.verify(&huge),
            Err(AssertionError::Malformed(_))
        ));
    }

    #[test]
    fn replay_cache_accepts_each_jti_once_until_it_expires() {
        let cache = ReplayCache::new();
        let assertion = VerifiedAssertion {
            client_id: "agent-1".to_owned(),
            jti: "j1".to_owned(),
            expires_at: NOW + 60,
        };
        cache.remember(&assertion, NOW).unwrap();
        assert_eq!(
            cache.remember(&assertion, NOW + 1),
            Err(AssertionError::Replayed)
        );
        // Same jti from another client is another assertion.
        let other_client = VerifiedAssertion {
            client_id: "agent-2".to_owned(),
            ..assertion.clone()
        };
        cache.remember(&other_client, NOW).unwrap();
        // After exp + skew the entry may be forgotten (the assertion itself is expired by then).
        cache
            .remember(&assertion, NOW + 60 + CLOCK_SKEW_SECS + 1)
            .unwrap();
    }
}
