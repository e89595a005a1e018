//! Data loss prevention: finding secrets and personal data in MCP content.
//!
//! A [`Scanner`] is compiled once from a [`DlpConfig`] (built-in detectors, the ones turned off,
//! custom detectors, which IP ranges are private) and then finds [`Finding`]s in strings
//! ([`Scanner::scan_text`]) and in JSON documents ([`scan_json`], which walks every string so
//! escapes and Unicode are already decoded, and names each finding by its RFC 6901 JSON
//! pointer). [`redact_json`] replaces each finding with `[REDACTED:<detector>]`, keeping the
//! document valid; [`FindingKey`] turns a found value into a keyed hash, so audit records and
//! cross-server checks can compare values without holding them.
//!
//! Speed and accuracy numbers: `docs/performance.md` ("DLP"), `docs/dlp.md`.

mod checks;
mod json;
mod text;

pub use json::{JsonFinding, redact_json, scan_json};

use aho_corasick::AhoCorasick;
use serde::{Deserialize, Serialize};

/// How bad a finding is; policy decides what each level leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing (an internal address).
    Low,
    /// Personal data or a weak secret.
    Medium,
    /// A credential or financial datum.
    High,
    /// Key material.
    Critical,
}

impl Severity {
    /// The name used in config, decisions and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// The built-in detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// Payment card numbers of the major schemes, Luhn-checked, test numbers excluded.
    PaymentCard,
    /// US Social Security Numbers (`123-45-6789` shape), SSA validity rules.
    UsSsn,
    /// International bank account numbers, ISO 13616 length per country and mod-97 check.
    Iban,
    /// E-mail addresses.
    Email,
    /// Phone numbers: E.164 with `+`, and North American formats.
    Phone,
    /// IPv4 and IPv6 addresses in the configured private ranges.
    IpAddress,
    /// AWS access key ids (`AKIA…`, `ASIA…`).
    AwsAccessKeyId,
    /// AWS secret access keys assigned to a name that says so.
    AwsSecretAccessKey,
    /// GitHub tokens: `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` (checksum verified), `github_pat_`.
    GithubToken,
    /// Slack bot, user, app and refresh tokens (`xox…`).
    SlackToken,
    /// Slack incoming webhook URLs.
    SlackWebhook,
    /// Stripe secret and restricted keys, live and test.
    StripeKey,
    /// Google API keys (`AIza…`).
    GoogleApiKey,
    /// OpenAI API keys (with the `T3BlbkFJ` marker).
    OpenaiApiKey,
    /// Anthropic API keys (`sk-ant-…`).
    AnthropicApiKey,
    /// JSON Web Tokens (JWS compact serialization with a header naming `alg`).
    Jwt,
    /// PEM private keys (RFC 7468), whole block.
    PrivateKey,
    /// Passwords in database connection URLs.
    DatabaseUrl,
    /// High-entropy values assigned to secret-like names (`password`, `api_key`, `…_token`).
    SecretAssignment,
}

impl Builtin {
    /// Every built-in detector, in the order of their [`DetectorRef`]s.
    pub const ALL: [Builtin; 19] = [
        Builtin::PaymentCard,
        Builtin::UsSsn,
        Builtin::Iban,
        Builtin::Email,
        Builtin::Phone,
        Builtin::IpAddress,
        Builtin::AwsAccessKeyId,
        Builtin::AwsSecretAccessKey,
        Builtin::GithubToken,
        Builtin::SlackToken,
        Builtin::SlackWebhook,
        Builtin::StripeKey,
        Builtin::GoogleApiKey,
        Builtin::OpenaiApiKey,
        Builtin::AnthropicApiKey,
        Builtin::Jwt,
        Builtin::PrivateKey,
        Builtin::DatabaseUrl,
        Builtin::SecretAssignment,
    ];

    /// The detector id used in config, findings, redaction markers and audit records.
    pub fn id(self) -> &'static str {
        match self {
            Builtin::PaymentCard => "payment_card",
            Builtin::UsSsn => "us_ssn",
            Builtin::Iban => "iban",
            Builtin::Email => "email",
            Builtin::Phone => "phone",
            Builtin::IpAddress => "ip_address",
            Builtin::AwsAccessKeyId => "aws_access_key_id",
            Builtin::AwsSecretAccessKey => "aws_secret_access_key",
            Builtin::GithubToken => "github_token",
            Builtin::SlackToken => "slack_token",
            Builtin::SlackWebhook => "slack_webhook",
            Builtin::StripeKey => "stripe_key",
            Builtin::GoogleApiKey => "google_api_key",
            Builtin::OpenaiApiKey => "openai_api_key",
            Builtin::AnthropicApiKey => "anthropic_api_key",
            Builtin::Jwt => "jwt",
            Builtin::PrivateKey => "private_key",
            Builtin::DatabaseUrl => "database_url",
            Builtin::SecretAssignment => "secret_assignment",
        }
    }

    /// The detector's severity.
    pub fn severity(self) -> Severity {
        match self {
            Builtin::IpAddress => Severity::Low,
            Builtin::Email | Builtin::Phone => Severity::Medium,
            Builtin::PrivateKey => Severity::Critical,
            _ => Severity::High,
        }
    }

    /// Whether the detector knows only that a value looks secret, not what it is: a more
    /// specific detector wins an overlap with it.
    fn generic(self) -> bool {
        self == Builtin::SecretAssignment
    }

    /// Its place in [`Builtin::ALL`] (declaration order; a test checks they agree).
    fn index(self) -> usize {
        self as usize
    }
}

/// One detector of a scanner, built-in or custom.
#[derive(Debug, Clone)]
pub struct DetectorInfo {
    /// Its id.
    pub id: String,
    /// Its severity.
    pub severity: Severity,
    /// Which built-in it is; `None` for a custom detector.
    pub builtin: Option<Builtin>,
}

/// A detector of one [`Scanner`]: an index into [`Scanner::detectors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DetectorRef(usize);

/// A sensitive value found in a string: `start..end` are byte offsets into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// Which detector found it.
    pub detector: DetectorRef,
    /// Byte offset of its first byte.
    pub start: usize,
    /// Byte offset just past it.
    pub end: usize,
}

/// A finding of a built-in detector before it is given its scanner's [`DetectorRef`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raw {
    pub(crate) builtin: Builtin,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// The private ranges [`Builtin::IpAddress`] reports by default: RFC 1918 §3, RFC 6598 shared
/// address space, RFC 3927 link-local, RFC 4193 unique local and RFC 4291 §2.5.6 link-local
/// IPv6. Loopback is left out: `127.0.0.1` and `::1` are everywhere and say nothing.
pub const DEFAULT_PRIVATE_RANGES: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
];

/// DLP settings (the filter's `dlp` config block).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DlpConfig {
    /// Ids of built-in detectors to turn off. Default: none.
    #[serde(default)]
    pub disabled: Vec<String>,
    /// CIDR ranges whose addresses `ip_address` reports. Default [`DEFAULT_PRIVATE_RANGES`];
    /// `["0.0.0.0/0", "::/0"]` reports every address.
    #[serde(default = "default_private_ranges")]
    pub private_ranges: Vec<String>,
    /// Detectors of the deployment's own. Default: none.
    #[serde(default)]
    pub custom: Vec<CustomDetectorConfig>,
}

impl Default for DlpConfig {
    fn default() -> Self {
        DlpConfig {
            disabled: Vec::new(),
            private_ranges: default_private_ranges(),
            custom: Vec::new(),
        }
    }
}

fn default_private_ranges() -> Vec<String> {
    DEFAULT_PRIVATE_RANGES
        .iter()
        .map(|r| (*r).to_owned())
        .collect()
}

/// A custom detector: a regular expression (Rust `regex` syntax, linear time), run only on
/// strings that contain one of its keywords (ASCII case-insensitive) when keywords are given.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomDetectorConfig {
    /// Its id (letters, digits, `_`; not a built-in's).
    pub id: String,
    /// The pattern; the whole match is the finding.
    pub pattern: String,
    /// Words one of which must appear in a string for the pattern to run there. Default: none
    /// (the pattern runs on every string, which costs more).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Default `medium`.
    #[serde(default = "default_custom_severity")]
    pub severity: Severity,
}

fn default_custom_severity() -> Severity {
    Severity::Medium
}

/// A DLP config that cannot be used, found at load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DlpConfigError {
    /// `disabled` names a detector that does not exist.
    #[error("dlp.disabled: no built-in detector `{0}`")]
    UnknownDetector(String),
    /// Two detectors share an id, or a custom one takes a built-in's.
    #[error("dlp.custom: detector id `{0}` is already taken")]
    DuplicateId(String),
    /// A custom detector's id is empty or has characters other than letters, digits and `_`.
    #[error("dlp.custom: detector id `{0}` must be letters, digits and `_`")]
    BadId(String),
    /// A custom detector's pattern does not compile, or matches the empty string.
    #[error("dlp.custom `{id}`: pattern refused: {reason}")]
    BadPattern {
        /// The detector.
        id: String,
        /// Why.
        reason: String,
    },
    /// A private range is not `address/prefix`.
    #[error("dlp.privateRanges: `{0}` is not a CIDR range (address/prefix length)")]
    BadRange(String),
}

#[derive(Debug)]
struct CustomDetector {
    detector: DetectorRef,
    pattern: regex::Regex,
    keywords: Option<AhoCorasick>,
}

/// The compiled detector set. Build once at config load; scanning never fails.
#[derive(Debug)]
pub struct Scanner {
    detectors: Vec<DetectorInfo>,
    enabled: [bool; Builtin::ALL.len()],
    private_v4: Vec<(u32, u32)>,
    private_v6: Vec<(u128, u128)>,
    custom: Vec<CustomDetector>,
}

impl Scanner {
    /// Compiles `config`; every problem is reported with the field it comes from.
    pub fn new(config: &DlpConfig) -> Result<Scanner, DlpConfigError> {
        let mut enabled = [true; Builtin::ALL.len()];
        for id in &config.disabled {
            let builtin = Builtin::ALL
                .iter()
                .find(|b| b.id() == id)
                .ok_or_else(|| DlpConfigError::UnknownDetector(id.clone()))?;
            if let Some(slot) = enabled.get_mut(builtin.index()) {
                *slot = false;
            }
        }
        let mut detectors: Vec<DetectorInfo> = Builtin::ALL
            .iter()
            .map(|b| DetectorInfo {
                id: b.id().to_owned(),
                severity: b.severity(),
                builtin: Some(*b),
            })
            .collect();
        let mut custom = Vec::new();
        for c in &config.custom {
            if c.id.is_empty() || !c.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(DlpConfigError::BadId(c.id.clone()));
            }
            if detectors.iter().any(|d| d.id == c.id) {
                return Err(DlpConfigError::DuplicateId(c.id.clone()));
            }
            let bad = |reason: String| DlpConfigError::BadPattern {
                id: c.id.clone(),
                reason,
            };
            let pattern = regex::RegexBuilder::new(&c.pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| bad(e.to_string()))?;
            if pattern.is_match("") {
                return Err(bad("it matches the empty string".to_owned()));
            }
            let keywords = if c.keywords.is_empty() {
                None
            } else {
                Some(
                    AhoCorasick::builder()
                        .ascii_case_insensitive(true)
                        .build(&c.keywords)
                        .map_err(|e| bad(e.to_string()))?,
                )
            };
            custom.push(CustomDetector {
                detector: DetectorRef(detectors.len()),
                pattern,
                keywords,
            });
            detectors.push(DetectorInfo {
                id: c.id.clone(),
                severity: c.severity,
                builtin: None,
            });
        }
        let mut private_v4 = Vec::new();
        let mut private_v6 = Vec::new();
        for range in &config.private_ranges {
            match parse_cidr(range) {
                Some(Cidr::V4(net, mask)) => private_v4.push((net, mask)),
                Some(Cidr::V6(net, mask)) => private_v6.push((net, mask)),
                None => return Err(DlpConfigError::BadRange(range.clone())),
            }
        }
        Ok(Scanner {
            detectors,
            enabled,
            private_v4,
            private_v6,
            custom,
        })
    }

    /// Every detector (built-in ones first, then custom ones), whether turned off or not.
    pub fn detectors(&self) -> &[DetectorInfo] {
        &self.detectors
    }

    /// The detector a finding names.
    pub fn detector(&self, detector: DetectorRef) -> Option<&DetectorInfo> {
        self.detectors.get(detector.0)
    }

    fn enabled(&self, builtin: Builtin) -> bool {
        self.enabled.get(builtin.index()).copied().unwrap_or(false)
    }

    fn found(&self, raw: Raw) -> Finding {
        Finding {
            detector: DetectorRef(raw.builtin.index()),
            start: raw.start,
            end: raw.end,
        }
    }

    /// The findings in `text`, in order, none overlapping.
    pub fn scan_text(&self, text: &str) -> Vec<Finding> {
        let mut raws = Vec::new();
        self.builtin_pass(text.as_bytes(), &mut raws);
        self.resolve(text, raws)
    }

    /// The findings in the value of a field named `name` (a JSON member, a header): as
    /// [`Scanner::scan_text`], and the whole value when the name says it is a secret and the value
    /// looks like one.
    pub fn scan_field(&self, name: &str, value: &str) -> Vec<Finding> {
        let mut raws = Vec::new();
        self.builtin_pass(value.as_bytes(), &mut raws);
        let bytes = value.as_bytes();
        if text::aws_secret(name.as_bytes(), bytes) && self.enabled(Builtin::AwsSecretAccessKey) {
            raws.push(Raw {
                builtin: Builtin::AwsSecretAccessKey,
                start: 0,
                end: bytes.len(),
            });
        } else if self.enabled(Builtin::SecretAssignment)
            && text::secret_name(name.as_bytes())
            && text::secret_value(bytes)
        {
            raws.push(Raw {
                builtin: Builtin::SecretAssignment,
                start: 0,
                end: bytes.len(),
            });
        }
        self.resolve(value, raws)
    }

    fn builtin_pass(&self, b: &[u8], raws: &mut Vec<Raw>) {
        text::scan(
            b,
            &self.private_v4,
            &self.private_v6,
            &|builtin| self.enabled(builtin),
            raws,
        );
    }

    /// Adds the custom detectors' findings and merges overlapping ones: the merged span covers
    /// all of them (so redacting it leaves no part of any finding behind) and is named by the
    /// winner. Of two findings with the same span the more specific wins (a JWT beats "a
    /// secret-looking value assigned to `token`"), then the more severe; otherwise the more
    /// severe, then the more specific, then the longer.
    fn resolve(&self, text: &str, raws: Vec<Raw>) -> Vec<Finding> {
        let mut all: Vec<Ranked> = raws
            .into_iter()
            .map(|r| Ranked {
                finding: self.found(r),
                severity: r.builtin.severity(),
                specific: !r.builtin.generic(),
            })
            .collect();
        for custom in &self.custom {
            if custom.keywords.as_ref().is_some_and(|k| !k.is_match(text)) {
                continue;
            }
            let severity = self
                .detector(custom.detector)
                .map_or(Severity::Medium, |d| d.severity);
            for m in custom.pattern.find_iter(text).filter(|m| !m.is_empty()) {
                all.push(Ranked {
                    finding: Finding {
                        detector: custom.detector,
                        start: m.start(),
                        end: m.end(),
                    },
                    severity,
                    specific: true,
                });
            }
        }
        all.sort_by_key(|r| (r.finding.start, std::cmp::Reverse(r.finding.end)));
        let mut kept: Vec<Ranked> = Vec::with_capacity(all.len());
        for candidate in all {
            match kept.last_mut() {
                Some(last) if candidate.finding.start < last.finding.end => {
                    // Sorted by start, so the merged span starts where `last` does.
                    let (start, end) = (
                        last.finding.start,
                        last.finding.end.max(candidate.finding.end),
                    );
                    if candidate.beats(last) {
                        *last = candidate;
                    }
                    last.finding.start = start;
                    last.finding.end = end;
                }
                _ => kept.push(candidate),
            }
        }
        kept.into_iter().map(|r| r.finding).collect()
    }
}

/// A finding with what decides overlaps.
#[derive(Debug, Clone, Copy)]
struct Ranked {
    finding: Finding,
    severity: Severity,
    specific: bool,
}

impl Ranked {
    fn beats(&self, other: &Ranked) -> bool {
        let len = |r: &Ranked| r.finding.end - r.finding.start;
        let same_span =
            (self.finding.start, self.finding.end) == (other.finding.start, other.finding.end);
        if same_span {
            (self.specific, self.severity) > (other.specific, other.severity)
        } else {
            (self.severity, self.specific, len(self)) > (other.severity, other.specific, len(other))
        }
    }
}

enum Cidr {
    V4(u32, u32),
    V6(u128, u128),
}

fn parse_cidr(range: &str) -> Option<Cidr> {
    let (addr, prefix) = range.split_once('/')?;
    let prefix: u32 = prefix.parse().ok()?;
    if let Ok(v4) = addr.parse::<std::net::Ipv4Addr>() {
        let mask = u32::MAX
            .checked_shl(32u32.checked_sub(prefix)?)
            .unwrap_or(0);
        return Some(Cidr::V4(u32::from(v4) & mask, mask));
    }
    let v6 = addr.parse::<std::net::Ipv6Addr>().ok()?;
    let mask = u128::MAX
        .checked_shl(128u32.checked_sub(prefix)?)
        .unwrap_or(0);
    Some(Cidr::V6(u128::from(v6) & mask, mask))
}

/// The key behind findings' keyed hashes: HMAC-SHA256 (RFC 2104) over the normalised value, so
/// the same secret gives the same hash wherever it shows up (an audit search, the cross-server
/// flow check) and nobody without the key can test guesses against it.
#[derive(Clone)]
pub struct FindingKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for FindingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FindingKey(..)")
    }
}

impl FindingKey {
    /// A key from its bytes (at least 32 are expected; the caller checks).
    pub fn new(key: &[u8]) -> FindingKey {
        FindingKey { key: key.to_vec() }
    }

    /// The keyed hash of `value` as found by `detector`: `hmac-sha256:` and 32 hex digits (the
    /// first 128 bits). The value is normalised first so that the same datum written two ways
    /// (a card with or without spaces, an address in another case) hashes the same.
    pub fn hash(&self, detector: &DetectorInfo, value: &str) -> String {
        let normalised: Vec<u8> = match detector.builtin {
            Some(Builtin::PaymentCard | Builtin::UsSsn | Builtin::Phone | Builtin::Iban) => value
                .bytes()
                .filter(u8::is_ascii_alphanumeric)
                .map(|b| b.to_ascii_uppercase())
                .collect(),
            Some(Builtin::Email) => value.to_ascii_lowercase().into_bytes(),
            _ => value.as_bytes().to_vec(),
        };
        self.digest(&normalised)
    }

    /// `hmac-sha256:` and the first 128 bits of HMAC-SHA256 (RFC 2104) of `bytes` under this
    /// key, in hex: a digest that tells equal inputs apart without being an oracle for guessing
    /// them to whoever lacks the key.
    pub fn digest(&self, bytes: &[u8]) -> String {
        use hmac::Mac as _;
        // HMAC accepts keys of any length (RFC 2104 §2), so this cannot fail.
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(bytes);
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(12 + 32);
        out.push_str("hmac-sha256:");
        for byte in digest.iter().take(16) {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }
}

#[cfg(test)]
mod tests;
