//! What the scripted server demands of its callers, to play an upstream MCP server that has its
//! own credentials (docs/identity.md, "Upstream credentials"):
//!
//! * [`UpstreamAuth::Bearer`]: an RFC 9068 access token issued for this server — RS256 from a
//!   key of the given JWK Set (RFC 7517 §5), `typ` `at+jwt` (RFC 9068 §4), the configured
//!   `iss`, this server's resource URI in `aud` (RFC 8707 §2), not expired;
//! * [`UpstreamAuth::Header`]: a static API key in a named header.
//!
//! Anything else is answered 401 with `WWW-Authenticate: Bearer` (RFC 6750 §3) and never
//! reaches the MCP service. `GET /raw/count` (readiness and the request counter) stays open.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};

/// The credential callers must present.
#[derive(Debug, Clone, Default)]
pub enum UpstreamAuth {
    /// No credential needed.
    #[default]
    Open,
    /// An access token for this server.
    Bearer {
        /// Keys of the issuer.
        jwks: Arc<JwkSet>,
        /// Expected `iss`.
        issuer: String,
        /// This server's resource URI, expected in `aud`.
        audience: String,
    },
    /// A static key.
    Header {
        /// Lowercase header name.
        name: String,
        /// The key.
        value: String,
    },
}

/// Why a request was refused, for the 401 body (never echoes the credential).
fn check(auth: &UpstreamAuth, headers: &HeaderMap) -> Result<(), String> {
    match auth {
        UpstreamAuth::Open => Ok(()),
        UpstreamAuth::Header { name, value } => match headers.get(name.as_str()) {
            Some(sent) if sent.as_bytes() == value.as_bytes() => Ok(()),
            Some(_) => Err(format!("wrong {name}")),
            None => Err(format!("{name} is required")),
        },
        UpstreamAuth::Bearer {
            jwks,
            issuer,
            audience,
        } => {
            let token = headers
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .ok_or("a bearer token is required")?;
            let head = decode_header(token).map_err(|err| format!("bad token header: {err}"))?;
            if head.typ.as_deref() != Some("at+jwt") {
                return Err("typ must be at+jwt".to_owned());
            }
            let kid = head.kid.ok_or("the token names no kid")?;
            let jwk = jwks.find(&kid).ok_or("unknown kid")?;
            let key = DecodingKey::from_jwk(jwk).map_err(|err| format!("bad key: {err}"))?;
            let mut validation = Validation::new(Algorithm::RS256);
            validation.set_issuer(&[issuer]);
            validation.set_audience(&[audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            decode::<serde_json::Value>(token, &key, &validation)
                .map(|_| ())
                .map_err(|err| format!("token refused: {err}"))
        }
    }
}

/// Middleware: refuse requests without the credential, except `GET /raw/count`.
pub async fn require(State(auth): State<UpstreamAuth>, request: Request, next: Next) -> Response {
    if request.uri().path() == crate::request_counter::COUNT_PATH {
        return next.run(request).await;
    }
    match check(&auth, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(reason) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            reason,
        )
            .into_response(),
    }
}
