//! Claims of the verified agent token that the filter cannot read from `jwt_authn` metadata as
//! single values: the delegation chain (RFC 8693 §4.1 `act`, nested), the scopes (RFC 9068
//! §2.2.3 `scope`) and `exp`.
//!
//! Envoy's `jwt_authn` writes the verified payload into a request header
//! (`forward_payload_header`, base64url without padding) and overwrites a header of that name the
//! client sent. The filter still trusts it only when its `sub` equals the `sub` read from
//! `jwt_authn`'s dynamic metadata, and always removes the header before forwarding.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::Value;

/// Deepest `act` nesting accepted: a longer chain is no real delegation but an attempt to make
/// the filter (or policy) walk an unbounded structure.
pub const MAX_ACT_DEPTH: usize = 16;

/// RFC 7515 §2 base64url; `jwt_authn` omits padding (`pad_forward_payload_header: false`) but a
/// padded value is read too.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What the filter takes from the verified payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenClaims {
    /// RFC 8693 §4.1: who acts for `sub`, current actor first, then the actors before it.
    pub delegation: Vec<String>,
    /// RFC 9068 §2.2.3 / RFC 8693 §4.2: `scope`, split on spaces.
    pub scopes: Vec<String>,
    /// RFC 7519 §4.1.4 `exp`, seconds since the epoch.
    pub expires_at: Option<u64>,
}

/// Why a forwarded payload cannot be used (every case answers 401 `invalid_token`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    #[error("the verified token payload is not base64url")]
    Base64,
    #[error("the verified token payload is not a JSON object: {0}")]
    Json(String),
    #[error("the verified token payload names another subject than the verified token")]
    SubjectMismatch,
    #[error("the token's `{0}` claim is malformed")]
    Malformed(&'static str),
    #[error("the token's delegation chain (`act`) is nested deeper than {MAX_ACT_DEPTH}")]
    DelegationTooDeep,
}

/// Decodes the forwarded payload `header_value` of the token whose verified `sub` is
/// `verified_sub`.
pub fn decode(header_value: &str, verified_sub: &str) -> Result<TokenClaims, ClaimsError> {
    let bytes = BASE64URL
        .decode(header_value.trim())
        .map_err(|_| ClaimsError::Base64)?;
    // serde_json refuses nesting deeper than 128 with an error, never a stack overflow.
    let payload: Value =
        serde_json::from_slice(&bytes).map_err(|e| ClaimsError::Json(e.to_string()))?;
    let Value::Object(payload) = payload else {
        return Err(ClaimsError::Json("not an object".to_string()));
    };
    // The header is only trusted for the token jwt_authn verified into metadata.
    match payload.get("sub") {
        Some(Value::String(sub)) if sub == verified_sub => {}
        _ => return Err(ClaimsError::SubjectMismatch),
    }
    let scopes = match payload.get("scope") {
        None | Some(Value::Null) => Vec::new(),
        // RFC 6749 §3.3: a space-delimited list.
        Some(Value::String(s)) => s
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(_) => return Err(ClaimsError::Malformed("scope")),
    };
    let expires_at = match payload.get("exp") {
        None | Some(Value::Null) => None,
        // RFC 7519 §2 NumericDate may carry a fraction; whole seconds are enough here.
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(secs), _) => Some(secs),
            (None, Some(f)) if f.is_finite() && f >= 0.0 => Some(f as u64),
            _ => return Err(ClaimsError::Malformed("exp")),
        },
        Some(_) => return Err(ClaimsError::Malformed("exp")),
    };
    Ok(TokenClaims {
        delegation: delegation_chain(payload.get("act"))?,
        scopes,
        expires_at,
    })
}

/// RFC 8693 §4.1: `act` is an object whose `sub` names the current actor; a nested `act` names
/// the actor before it. Only the outermost `act` is the current one; nested ones are history.
fn delegation_chain(mut act: Option<&Value>) -> Result<Vec<String>, ClaimsError> {
    let mut chain = Vec::new();
    while let Some(node) = act {
        if node.is_null() {
            break;
        }
        if chain.len() == MAX_ACT_DEPTH {
            return Err(ClaimsError::DelegationTooDeep);
        }
        let Value::Object(node) = node else {
            return Err(ClaimsError::Malformed("act"));
        };
        match node.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => chain.push(sub.clone()),
            _ => return Err(ClaimsError::Malformed("act.sub")),
        }
        act = node.get("act");
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
    use serde_json::json;

    fn encode(payload: &Value) -> String {
        URL_SAFE_NO_PAD.encode(payload.to_string())
    }

    #[test]
    fn nested_act_becomes_the_chain_current_actor_first() {
        let payload = json!({
            "sub": "alice", "exp": 1_900_000_000u64, "scope": "mcp  tools:echo",
            "act": {"sub": "agent-b", "act": {"sub": "agent-c"}}
        });
        let claims = decode(&encode(&payload), "alice").unwrap();
        assert_eq!(claims.delegation, ["agent-b", "agent-c"]);
        assert_eq!(claims.scopes, ["mcp", "tools:echo"]);
        assert_eq!(claims.expires_at, Some(1_900_000_000));
    }

    #[test]
    fn no_act_is_an_empty_chain_and_padding_is_accepted() {
        let payload = json!({"sub": "a", "exp": 12.5});
        let padded = URL_SAFE.encode(payload.to_string());
        let claims = decode(&padded, "a").unwrap();
        assert!(claims.delegation.is_empty() && claims.scopes.is_empty());
        assert_eq!(claims.expires_at, Some(12));
    }

    #[test]
    fn bad_base64_and_bad_json_are_refused() {
        assert_eq!(decode("!!not base64!!", "a"), Err(ClaimsError::Base64));
        let not_json = URL_SAFE_NO_PAD.encode("{nope");
        assert!(matches!(decode(&not_json, "a"), Err(ClaimsError::Json(_))));
        let array = URL_SAFE_NO_PAD.encode("[1]");
        assert!(matches!(decode(&array, "a"), Err(ClaimsError::Json(_))));
    }

    #[test]
    fn another_subject_is_refused() {
        for payload in [
            json!({"sub": "mallory"}),
            json!({"exp": 1}),
            json!({"sub": 7}),
        ] {
            assert_eq!(
                decode(&encode(&payload), "alice"),
                Err(ClaimsError::SubjectMismatch)
            );
        }
    }

    #[test]
    fn a_depth_bomb_is_refused_without_recursion() {
        let mut act = json!({"sub": "leaf"});
        for i in 0..MAX_ACT_DEPTH {
            act = json!({"sub": format!("a{i}"), "act": act});
        }
        let payload = json!({"sub": "s", "act": act});
        assert_eq!(
            decode(&encode(&payload), "s"),
            Err(ClaimsError::DelegationTooDeep)
        );
        // Deeper than serde_json's own limit: an error, never a stack overflow.
        let bomb = format!(r#"{{"sub":"s","act":{}"#, "[".repeat(100_000));
        assert!(decode(&URL_SAFE_NO_PAD.encode(bomb), "s").is_err());
        // Exactly the limit is fine.
        let mut act = json!({"sub": "a0"});
        for i in 1..MAX_ACT_DEPTH {
            act = json!({"sub": format!("a{i}"), "act": act});
        }
        let claims = decode(&encode(&json!({"sub": "s", "act": act})), "s").unwrap();
        assert_eq!(claims.delegation.len(), MAX_ACT_DEPTH);
    }

    #[test]
    fn malformed_claims_are_named() {
        for (payload, name) in [
            (json!({"sub": "s", "act": "b"}), "act"),
            (json!({"sub": "s", "act": {"iss": "x"}}), "act.sub"),
            (json!({"sub": "s", "scope": ["a"]}), "scope"),
            (json!({"sub": "s", "exp": "soon"}), "exp"),
            (json!({"sub": "s", "exp": -1}), "exp"),
        ] {
            assert_eq!(
                decode(&encode(&payload), "s"),
                Err(ClaimsError::Malformed(name)),
                "{payload}"
            );
        }
    }
}
