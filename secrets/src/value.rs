//! [`SecretValue`]: a secret that can be used but never printed, serialized or left in memory.

use std::fmt;

use zeroize::Zeroizing;

/// What `Debug` and `Display` print instead of a secret.
pub const REDACTED: &str = "[REDACTED]";

/// A secret (an upstream API key, a password). Deliberately:
///
/// - `Debug` and `Display` print `[REDACTED]`, so a secret formatted into a log line, an error
///   or an audit event shows nothing;
/// - there is no `Serialize` (nor `Deserialize`): a secret cannot end up in JSON by accident;
/// - the bytes are overwritten with zeros when the value is dropped (`zeroize`). Copies made
///   before the value was built (an HTTP body, a decrypted buffer) are wiped where this crate
///   owns them; that is best effort, not a guarantee against a memory dump.
///
/// The only way to the text is [`SecretValue::expose`], named so that every use is easy to find.
#[derive(Clone)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    /// Takes ownership of `secret`; its buffer is wiped when this value is dropped.
    pub fn new(secret: String) -> Self {
        Self(Zeroizing::new(secret))
    }

    /// The secret text, for the one place that must send it (e.g. an upstream header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes (lets callers check for an empty secret without exposing it).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretValue {
    fn from(secret: String) -> Self {
        Self::new(secret)
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let secret = SecretValue::new("ghp_live_abcdef123456".to_owned());
        for shown in [
            format!("{secret}"),
            format!("{secret:?}"),
            format!("{secret:#?}"),
            format!("{:?}", Some(secret.clone())),
            format!("{:?}", vec![secret.clone()]),
        ] {
            assert!(!shown.contains("ghp_live"), "leaked in {shown}");
            assert!(shown.contains(REDACTED));
        }
        assert_eq!(secret.expose(), "ghp_live_abcdef123456");
        assert_eq!(secret.len(), 21);
        assert!(!secret.is_empty());
    }
}
