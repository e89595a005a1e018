//! The sidecar's own bearer credentials (the admin API's, the filter's proxy credential): the
//! check in front of their routes and the error answer with its challenge, in one place.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AdminCredential;
use crate::http::ErrorBody;

/// Why a request's credential was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credential is configured: the routes are disabled.
    Disabled,
    /// No bearer credential was sent.
    Missing,
    /// A bearer credential was sent and is not the configured one.
    Wrong,
}

/// Check the `Authorization: Bearer` credential of `headers` against `expected` (RFC 6750 §2.1).
pub fn check(expected: Option<&AdminCredential>, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(expected) = expected else {
        return Err(Refusal::Disabled);
    };
    let presented = presented(headers).ok_or(Refusal::Missing)?;
    if matches_digest(&presented_digest(presented), &expected.digest()) {
        Ok(())
    } else {
        Err(Refusal::Wrong)
    }
}

/// The `Authorization: Bearer` credential of `headers`, if one was sent (RFC 6750 §2.1).
pub fn presented(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            // RFC 9110 §11.1: the auth scheme is case-insensitive.
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

/// SHA-256 of a presented credential: what is compared, never the credential itself.
pub fn presented_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant time: fixed-length digests compared with `subtle`, so neither the content nor the
/// length of a secret leaks through timing.
pub fn matches_digest(presented: &[u8; 32], expected: &[u8; 32]) -> bool {
    bool::from(presented.ct_eq(expected))
}

/// The JSON error answer (`{"error", "message"}`), logged once (error for 5xx, warning
/// otherwise, under `what`); a credential refusal carries its Bearer challenge for `realm`.
pub fn error_response(
    status: StatusCode,
    code: &'static str,
    message: String,
    what: &str,
    refusal: Option<(Refusal, &str)>,
) -> Response {
    if status.is_server_error() {
        tracing::error!(error = %message, "{what} failed");
    } else {
        tracing::warn!(error = %message, "{what} refused");
    }
    let mut response = (
        status,
        Json(ErrorBody {
            error: code,
            message,
        }),
    )
        .into_response();
    // RFC 6750 §3: a 401 carries a Bearer challenge; §3.1: `invalid_token` when a credential
    // was sent and is wrong, no error code when none was sent.
    let challenge = match refusal {
        Some((Refusal::Missing, realm)) => Some(format!("Bearer realm=\"{realm}\"")),
        Some((Refusal::Wrong, realm)) => {
            Some(format!("Bearer realm=\"{realm}\", error=\"invalid_token\""))
        }
        Some((Refusal::Disabled, _)) | None => None,
    };
    if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-credential-of-at-least-32-characters";

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn checks_scheme_case_and_value() {
        let expected = AdminCredential::new(SECRET).unwrap();
        assert_eq!(
            check(Some(&expected), &with(&format!("bearer {SECRET}"))),
            Ok(())
        );
        assert_eq!(
            check(Some(&expected), &with(&format!("Bearer {SECRET}x"))),
            Err(Refusal::Wrong)
        );
        assert_eq!(
            check(Some(&expected), &with(&format!("Basic {SECRET}"))),
            Err(Refusal::Missing)
        );
        assert_eq!(
            check(Some(&expected), &HeaderMap::new()),
            Err(Refusal::Missing)
        );
        assert_eq!(
            check(None, &with(&format!("Bearer {SECRET}"))),
            Err(Refusal::Disabled)
        );
    }

    #[test]
    fn refusals_carry_their_challenge() {
        let missing = error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no".to_owned(),
            "test",
            Some((Refusal::Missing, "r")),
        );
        assert_eq!(
            missing.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"r\""
        );
        let wrong = error_response(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "no".to_owned(),
            "test",
            Some((Refusal::Wrong, "r")),
        );
        assert_eq!(
            wrong.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"r\", error=\"invalid_token\""
        );
        let other = error_response(StatusCode::FORBIDDEN, "x", "no".to_owned(), "test", None);
        assert!(other.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
