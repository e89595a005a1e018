//! OAuth 2.0 Protected Resource Metadata (RFC 9728) for each MCP route.
//!
//! The MCP authorization spec (2025-06-18 and later, "Authorization Server Discovery") asks an
//! MCP server acting as a resource server to publish this document and to point at it from
//! `WWW-Authenticate` on 401 answers, so clients can find the authorization server. Behavry
//! answers for the servers behind it: the filter serves
//! `/.well-known/oauth-protected-resource<route prefix>` (RFC 9728 §3.1: the well-known segment
//! goes between the host and the resource's path) itself, without reaching any upstream.

use serde::Deserialize;
use serde_json::json;

use crate::config::FilterConfig;
use crate::exchange::LocalReply;

/// RFC 9728 §3: the well-known URI suffix.
pub const WELL_KNOWN_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// What the filter says about the protected resources it fronts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProtectedResource {
    /// RFC 9728 §2 `authorization_servers`: issuer identifiers of the servers that mint tokens
    /// for these resources.
    pub authorization_servers: Vec<String>,
    /// RFC 9728 §2 `scopes_supported`.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Scheme, host and port clients use to reach the gateway (e.g. `https://mcp.example.com`).
    /// Default: the request's own `:scheme` and `:authority`.
    #[serde(default)]
    pub resource_base_url: Option<String>,
}

/// URL of the metadata document of the route at `route_prefix` (what `WWW-Authenticate`'s
/// `resource_metadata` names, RFC 9728 §5.1), or `None` when no document is served.
pub fn document_url(
    config: &FilterConfig,
    route_prefix: &str,
    scheme: &str,
    authority: &str,
) -> Option<String> {
    let settings = config.protected_resource.as_ref()?;
    let base = settings
        .resource_base_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{authority}"));
    // RFC 9728 §3.1: the well-known segment goes between the host and the resource's path.
    Some(format!(
        "{}{WELL_KNOWN_PREFIX}{route_prefix}",
        base.trim_end_matches('/')
    ))
}

/// The metadata document for a GET on `path`, or `None` when `path` is not the well-known URI of
/// a configured route.
pub fn answer(
    config: &FilterConfig,
    method: &str,
    path: &str,
    scheme: &str,
    authority: &str,
) -> Option<LocalReply> {
    let settings = config.protected_resource.as_ref()?;
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let resource_path = path.strip_prefix(WELL_KNOWN_PREFIX)?;
    let route = config
        .routes
        .iter()
        .find(|r| r.path_prefix == resource_path)?;
    if !method.eq_ignore_ascii_case("GET") {
        return Some(LocalReply {
            status: 405,
            headers: vec![("allow".to_string(), "GET".to_string())],
            body: Vec::new(),
        });
    }
    let base = settings
        .resource_base_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{authority}"));
    let base = base.trim_end_matches('/');
    // RFC 9728 §2: `resource` is the protected resource's identifier, the URL clients use; it
    // must equal the resource the metadata was fetched for (§3.3).
    let document = json!({
        "resource": format!("{base}{}", route.path_prefix),
        "authorization_servers": settings.authorization_servers,
        "bearer_methods_supported": ["header"],
        "scopes_supported": settings.scopes_supported,
        "resource_name": route.server,
    });
    Some(LocalReply {
        status: 200,
        headers: vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("cache-control".to_string(), "max-age=300".to_string()),
        ],
        body: document.to_string().into_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn config(base: Option<&str>) -> FilterConfig {
        let base = base.map_or(String::new(), |b| format!(r#", "resourceBaseUrl": "{b}""#));
        let json = format!(
            r#"{{"routes": [{{"pathPrefix": "/mcp/everything", "server": "everything"}}],
                "authz": {{"cluster": "a"}}, "audit": {{"cluster": "b"}},
                "protectedResource": {{"authorizationServers": ["https://auth.example"],
                                       "scopesSupported": ["mcp"]{base}}}}}"#
        );
        FilterConfig::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn serves_metadata_for_each_route() {
        let reply = answer(
            &config(None),
            "GET",
            "/.well-known/oauth-protected-resource/mcp/everything",
            "http",
            "127.0.0.1:10000",
        )
        .unwrap();
        assert_eq!(reply.status, 200);
        let doc: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(doc["resource"], "http://127.0.0.1:10000/mcp/everything");
        assert_eq!(doc["authorization_servers"][0], "https://auth.example");
        assert_eq!(doc["bearer_methods_supported"][0], "header");
    }

    #[test]
    fn configured_base_url_wins_and_other_paths_are_not_answered() {
        let config = config(Some("https://mcp.example.com/"));
        let reply = answer(
            &config,
            "GET",
            "/.well-known/oauth-protected-resource/mcp/everything?x",
            "http",
            "internal:1",
        )
        .unwrap();
        let doc: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(doc["resource"], "https://mcp.example.com/mcp/everything");
        for path in [
            "/.well-known/oauth-protected-resource/mcp/other",
            "/.well-known/oauth-protected-resource",
            "/mcp/everything",
        ] {
            assert!(
                answer(&config, "GET", path, "http", "h").is_none(),
                "{path}"
            );
        }
        let post = answer(
            &config,
            "POST",
            "/.well-known/oauth-protected-resource/mcp/everything",
            "http",
            "h",
        )
        .unwrap();
        assert_eq!(post.status, 405);
    }

    #[test]
    fn document_url_is_what_answer_serves() {
        let config = config(None);
        let url = document_url(&config, "/mcp/everything", "http", "127.0.0.1:10000").unwrap();
        assert_eq!(
            url,
            "http://127.0.0.1:10000/.well-known/oauth-protected-resource/mcp/everything"
        );
        let path = url.strip_prefix("http://127.0.0.1:10000").unwrap();
        assert!(answer(&config, "GET", path, "http", "127.0.0.1:10000").is_some());
        let based = document_url(&config_with_base(), "/mcp/everything", "http", "x").unwrap();
        assert_eq!(
            based,
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp/everything"
        );
    }

    fn config_with_base() -> FilterConfig {
        config(Some("https://mcp.example.com/"))
    }

    #[test]
    fn without_settings_nothing_is_served() {
        let json = r#"{"routes": [{"pathPrefix": "/mcp/e", "server": "e"}],
            "authz": {"cluster": "a"}, "audit": {"cluster": "b"}}"#;
        let config = FilterConfig::from_json(json.as_bytes()).unwrap();
        assert!(
            answer(
                &config,
                "GET",
                "/.well-known/oauth-protected-resource/mcp/e",
                "http",
                "h"
            )
            .is_none()
        );
    }
}
