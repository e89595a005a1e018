//! [`SecretRef`]: the name of a secret, safe to log, put in config and in audit events.
//!
//! Syntax (one line, no spaces):
//!
//! ```text
//! reference = backend ":" path "#" field [ "?version=" number ]
//! backend   = "file" | "vault"
//! path      = segment *( "/" segment )
//! segment   = 1*( ALPHA / DIGIT / "-" / "_" / "." )     ; but not "." or ".."
//! field     = 1*( ALPHA / DIGIT / "-" / "_" / "." )
//! number    = a positive integer                        ; vault only
//! ```
//!
//! Examples: `file:upstream/github#token`, `vault:kv/upstream/github#token`,
//! `vault:kv/upstream/github#token?version=2`.
//!
//! - `file:` names an entry of the encrypted local secrets file: the path and field together
//!   are the entry's name. The file keeps no history, so `?version` is refused.
//! - `vault:` names a field of a Vault KV v2 secret: the first path segment is the mount of
//!   the KV v2 engine (`kv`, `secret`, ...), the rest is the secret's path under it, the field
//!   is a key of the secret's data. Without `?version` the latest version is read.
//!
//! The character set is narrow on purpose: a reference is pasted into URLs
//! (`/v1/<mount>/data/<path>`) without escaping, and `.`/`..` segments would let it walk out
//! of a mount.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

/// Which store a reference points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretBackend {
    /// The encrypted local secrets file (`file:`), the default store.
    File,
    /// HashiCorp Vault (or OpenBao) KV v2 over HTTP (`vault:`).
    Vault,
}

impl SecretBackend {
    /// The scheme written before the `:`.
    pub fn scheme(self) -> &'static str {
        match self {
            SecretBackend::File => "file",
            SecretBackend::Vault => "vault",
        }
    }
}

impl fmt::Display for SecretBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

/// Why a string is not a secret reference. Each message quotes the reference (a name, never a
/// secret) and says which part is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error(
        "secret reference {input:?} has no backend: write `file:<path>#<field>` or `vault:<mount>/<path>#<field>`"
    )]
    MissingBackend { input: String },
    #[error("secret reference {input:?}: unknown backend {backend:?} (expected `file` or `vault`)")]
    UnknownBackend { input: String, backend: String },
    #[error("secret reference {input:?} has no `#<field>` after the path")]
    MissingField { input: String },
    #[error(
        "secret reference {input:?}: path segment {segment:?} is not allowed (use letters, digits, `-`, `_`, `.`; no empty, `.` or `..` segments)"
    )]
    InvalidPathSegment { input: String, segment: String },
    #[error(
        "secret reference {input:?}: field {field:?} is not allowed (use letters, digits, `-`, `_`, `.`)"
    )]
    InvalidField { input: String, field: String },
    #[error(
        "secret reference {input:?}: vault references need a mount and a path, as in `vault:kv/upstream/github#token`"
    )]
    VaultPathWithoutMount { input: String },
    #[error(
        "secret reference {input:?}: only `?version=<positive integer>` may follow the field, got {query:?}"
    )]
    InvalidQuery { input: String, query: String },
    #[error("secret reference {input:?}: the file backend keeps no versions, remove `?version`")]
    VersionNotSupported { input: String },
}

/// A parsed, validated secret reference. `Display` writes it back in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    backend: SecretBackend,
    path: String,
    field: String,
    version: Option<NonZeroU64>,
}

impl SecretRef {
    /// Parses `input` (see the module docs for the syntax).
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let owned = || input.to_owned();
        let (scheme, rest) = input
            .split_once(':')
            .ok_or_else(|| ReferenceError::MissingBackend { input: owned() })?;
        let backend = match scheme {
            "file" => SecretBackend::File,
            "vault" => SecretBackend::Vault,
            "" => return Err(ReferenceError::MissingBackend { input: owned() }),
            other => {
                return Err(ReferenceError::UnknownBackend {
                    input: owned(),
                    backend: other.to_owned(),
                });
            }
        };
        let (path, field_and_query) = rest
            .split_once('#')
            .ok_or_else(|| ReferenceError::MissingField { input: owned() })?;
        let (field, query) = match field_and_query.split_once('?') {
            Some((field, query)) => (field, Some(query)),
            None => (field_and_query, None),
        };
        let version =
            match query {
                None => None,
                Some(query) => Some(parse_version_query(query).ok_or_else(|| {
                    ReferenceError::InvalidQuery {
                        input: owned(),
                        query: query.to_owned(),
                    }
                })?),
            };
        Self::from_parts(backend, path, field, version).map_err(|err| err.with_input(input))
    }

    /// Builds a reference from its parts, with the same checks as [`SecretRef::parse`].
    pub fn from_parts(
        backend: SecretBackend,
        path: &str,
        field: &str,
        version: Option<NonZeroU64>,
    ) -> Result<Self, ReferenceError> {
        let shown = || {
            let mut text = format!("{backend}:{path}#{field}");
            if let Some(version) = version {
                text.push_str(&format!("?version={version}"));
            }
            text
        };
        if let Some(bad) = path.split('/').find(|segment| !is_valid_segment(segment)) {
            return Err(ReferenceError::InvalidPathSegment {
                input: shown(),
                segment: bad.to_owned(),
            });
        }
        if field.is_empty() || !field.bytes().all(is_name_byte) {
            return Err(ReferenceError::InvalidField {
                input: shown(),
                field: field.to_owned(),
            });
        }
        match backend {
            SecretBackend::File if version.is_some() => {
                return Err(ReferenceError::VersionNotSupported { input: shown() });
            }
            SecretBackend::Vault if !path.contains('/') => {
                return Err(ReferenceError::VaultPathWithoutMount { input: shown() });
            }
            _ => {}
        }
        Ok(Self {
            backend,
            path: path.to_owned(),
            field: field.to_owned(),
            version,
        })
    }

    /// The store this reference points into.
    pub fn backend(&self) -> SecretBackend {
        self.backend
    }

    /// The path (for `vault:`, mount included), e.g. `kv/upstream/github`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The field within the secret, e.g. `token`.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// The requested version; `None` means the latest.
    pub fn version(&self) -> Option<NonZeroU64> {
        self.version
    }

    /// For `vault:` references, the KV v2 mount (first segment) and the secret path under it.
    pub fn vault_mount_and_path(&self) -> Option<(&str, &str)> {
        match self.backend {
            SecretBackend::Vault => self.path.split_once('/'),
            SecretBackend::File => None,
        }
    }
}

impl ReferenceError {
    /// `from_parts` quotes a rebuilt reference; `parse` quotes what the user wrote.
    fn with_input(self, input: &str) -> Self {
        let input = input.to_owned();
        match self {
            ReferenceError::InvalidPathSegment { segment, .. } => {
                ReferenceError::InvalidPathSegment { input, segment }
            }
            ReferenceError::InvalidField { field, .. } => {
                ReferenceError::InvalidField { input, field }
            }
            ReferenceError::VaultPathWithoutMount { .. } => {
                ReferenceError::VaultPathWithoutMount { input }
            }
            ReferenceError::VersionNotSupported { .. } => {
                ReferenceError::VersionNotSupported { input }
            }
            other => other,
        }
    }
}

fn parse_version_query(query: &str) -> Option<NonZeroU64> {
    let digits = query.strip_prefix("version=")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<NonZeroU64>().ok()
}

fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.')
}

fn is_valid_segment(segment: &str) -> bool {
    !segment.is_empty() && segment != "." && segment != ".." && segment.bytes().all(is_name_byte)
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}#{}", self.backend, self.path, self.field)?;
        if let Some(version) = self.version {
            write!(f, "?version={version}")?;
        }
        Ok(())
    }
}

impl FromStr for SecretRef {
    type Err = ReferenceError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Self::parse(input)
    }
}

/// References appear in config files as strings.
impl<'de> serde::Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A reference is a name, not a secret: it may be written to config, logs and audit events.
impl serde::Serialize for SecretRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_and_vault_references() {
        let file = SecretRef::parse("file:upstream/github#token").unwrap();
        assert_eq!(file.backend(), SecretBackend::File);
        assert_eq!(file.path(), "upstream/github");
        assert_eq!(file.field(), "token");
        assert_eq!(file.version(), None);
        assert_eq!(file.vault_mount_and_path(), None);

        let file_one_segment = SecretRef::parse("file:github#api_key").unwrap();
        assert_eq!(file_one_segment.path(), "github");

        let vault = SecretRef::parse("vault:kv/upstream/github#token?version=2").unwrap();
        assert_eq!(vault.backend(), SecretBackend::Vault);
        assert_eq!(
            vault.vault_mount_and_path(),
            Some(("kv", "upstream/github"))
        );
        assert_eq!(vault.version().map(NonZeroU64::get), Some(2));
    }

    #[test]
    fn display_round_trips_to_the_same_reference() {
        for text in [
            "file:upstream/github#token",
            "vault:kv/upstream/github#token",
            "vault:secret/a.b/c_d-e#F.1?version=17",
        ] {
            let parsed: SecretRef = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
            let json = serde_json::to_string(&parsed).unwrap();
            assert_eq!(serde_json::from_str::<SecretRef>(&json).unwrap(), parsed);
        }
    }

    #[test]
    fn refuses_malformed_references_with_a_message_naming_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("upstream/github#token", "has no backend"),
            (":upstream#token", "has no backend"),
            ("aws:upstream/github#token", "unknown backend \"aws\""),
            ("file:upstream/github", "no `#<field>`"),
            ("file:upstream/github#", "field \"\""),
            ("file:upstream/git hub#token", "segment \"git hub\""),
            ("file:upstream//github#token", "segment \"\""),
            ("file:#token", "segment \"\""),
            ("vault:kv/../sys/policy#token", "segment \"..\""),
            ("vault:kv/./x#token", "segment \".\""),
            ("vault:kv/x#to/ken", "field \"to/ken\""),
            ("vault:kv/x?version=2#token", "segment \"x?version=2\""),
            ("vault:github#token", "need a mount and a path"),
            ("vault:kv/x#token?version=0", "?version=<positive integer>"),
            ("vault:kv/x#token?version=-1", "?version=<positive integer>"),
            ("vault:kv/x#token?version=+1", "?version=<positive integer>"),
            ("vault:kv/x#token?ver=1", "?version=<positive integer>"),
            (
                "vault:kv/x#token?version=99999999999999999999",
                "positive integer",
            ),
            ("file:upstream/github#token?version=1", "keeps no versions"),
        ];
        for (input, expected) in cases {
            let err = SecretRef::parse(input).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{input}: {err:?} should mention {expected:?}"
            );
            assert!(
                err.contains(&format!("{input:?}")),
                "{err} should quote the input"
            );
        }
    }
}
