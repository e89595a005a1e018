//! Finding sensitive values in one string.
//!
//! One loop over the bytes stops only at the few bytes every detector's shape contains at a
//! fixed place (digits, `:`, `=`, `@`, `_`, `-`, `A`, `J`); there each candidate detector checks
//! the bytes around it, full shape and validator, and returns a span or nothing. Most text (prose,
//! code, logs) is therefore skipped at the speed of a table lookup per byte (eight bytes per
//! branch), with no keyword automaton: a secret-like name is looked for behind an `=` or `:`
//! instead of in front of one. Where stops are dense (logs, numbers) the cost is per stop, so each
//! detector first rules out the common non-secret shapes from a few bytes (a date's second group,
//! a name's last three letters) before it groups digits or reads a whole name; docs/performance.md
//! ("DLP") has the instruction counts.
//! Spans start and end on ASCII bytes, so they are always `str` boundaries. Overlapping findings
//! are merged by the caller.

use super::checks::{
    card_issuer_known, entropy_bits, github_checksum_valid, iban_length, iban_mod97_valid,
    is_placeholder, is_test_card, luhn_valid, ssn_valid,
};
use super::{Builtin, Raw};
use std::net::Ipv6Addr;

/// What the byte loop stops at.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Stop {
    Pass = 0,
    Digit,
    Colon,
    Equals,
    At,
    Underscore,
    Dash,
    UpperA,
    UpperJ,
}

// Evaluated at compile time: an index out of bounds would fail the build, not panic.
#[allow(clippy::indexing_slicing)]
const STOPS: [Stop; 256] = {
    let mut table = [Stop::Pass; 256];
    let mut d = b'0';
    while d <= b'9' {
        table[d as usize] = Stop::Digit;
        d += 1;
    }
    table[b':' as usize] = Stop::Colon;
    table[b'=' as usize] = Stop::Equals;
    table[b'@' as usize] = Stop::At;
    table[b'_' as usize] = Stop::Underscore;
    table[b'-' as usize] = Stop::Dash;
    table[b'A' as usize] = Stop::UpperA;
    table[b'J' as usize] = Stop::UpperJ;
    table
};

/// Every built-in finding in `b`, in no particular order; overlaps are left to the caller.
pub(crate) fn scan(
    b: &[u8],
    private_v4: &[(u32, u32)],
    private_v6: &[(u128, u128)],
    enabled: &impl Fn(Builtin) -> bool,
    out: &mut Vec<Raw>,
) {
    let mut i = 0;
    while let Some(found) = next_stop(b, i) {
        i = found;
        let stop = stop_of(at(b, i));
        // A token found is skipped whole (nothing else starts inside it, and a megabyte of
        // repeated prefixes then costs linear time); an assigned value is not, since a token a
        // more specific detector knows may sit inside it (overlaps are merged later).
        let mut skip_to = None;
        let mut push = |found: Option<Raw>, skip: bool| {
            if let Some(raw) = found.filter(|r| enabled(r.builtin)) {
                if skip {
                    skip_to = Some(raw.end);
                }
                out.push(raw);
            }
        };
        match stop {
            Stop::Digit => {
                let run_end = span_while(b, i, |c| c.is_ascii_digit());
                if !before(b, i).is_ascii_digit()
                    && let Some(found) = numeric_at(b, i, run_end - i, private_v4, enabled)
                {
                    i = found.end;
                    out.push(found);
                    continue;
                }
                // Nothing starts inside the rest of this word: every detector wants a boundary
                // before its first byte (an IBAN's letters are checked from its digits).
                i = span_while(b, run_end, |c| c.is_ascii_alphanumeric());
                continue;
            }
            Stop::Colon => {
                if b.get(i + 1..i + 3) == Some(b"//") {
                    push(database_url(b, i), false);
                    push(slack_webhook(b, i), true);
                } else if let Some(found) =
                    ipv6_at(b, i, private_v6).filter(|_| enabled(Builtin::IpAddress))
                {
                    i = found.end.max(i + 1);
                    out.push(found);
                    continue;
                } else {
                    push(assignment_at(b, i), false);
                }
            }
            Stop::Equals => push(assignment_at(b, i), false),
            Stop::At => push(email(b, i), true),
            Stop::Underscore => push(after_underscore(b, i), true),
            Stop::Dash => push(after_dash(b, i), true),
            Stop::UpperA => push(aws_key_id(b, i).or_else(|| google_key(b, i)), true),
            Stop::UpperJ => {
                if i >= 2 && b.get(i - 2..i) == Some(b"ey") {
                    push(jwt(b, i - 2), true);
                }
            }
            Stop::Pass => {}
        }
        i = skip_to.map_or(i + 1, |end| end.max(i + 1));
    }
}

fn stop_of(c: u8) -> Stop {
    STOPS.get(usize::from(c)).copied().unwrap_or(Stop::Pass)
}

/// The first stop byte at or after `from`. Past the first few bytes (stops come close together
/// in numbers and logs), eight bytes are tested at a time, with one branch: text between stops
/// (words, spaces, most punctuation) is most of the bytes of prose.
fn next_stop(b: &[u8], from: usize) -> Option<usize> {
    const NEAR: usize = 3;
    let mut at = from;
    while at < from + NEAR {
        if stop_of(*b.get(at)?) != Stop::Pass {
            return Some(at);
        }
        at += 1;
    }
    let rest = b.get(at..)?;
    let mut chunks = rest.chunks_exact(8);
    let mut base = at;
    for chunk in chunks.by_ref() {
        if chunk.iter().fold(0, |any, c| any | stop_of(*c) as u8) != 0 {
            return chunk
                .iter()
                .position(|c| stop_of(*c) != Stop::Pass)
                .map(|k| base + k);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|c| stop_of(*c) != Stop::Pass)
        .map(|k| base + k)
}

/// `gh?_` (GitHub classic), `github_pat_`, `sk_live_` and the other Stripe prefixes.
fn after_underscore(b: &[u8], i: usize) -> Option<Raw> {
    let back = |n: usize| i.checked_sub(n).and_then(|s| b.get(s..i));
    if let Some(prefix) = back(3)
        && matches!(prefix, b"ghp" | b"gho" | b"ghu" | b"ghs" | b"ghr")
    {
        return github_classic(b, i - 3);
    }
    if back(6) == Some(b"github") && b.get(i + 1..i + 5) == Some(b"pat_") {
        return github_fine_grained(b, i - 6);
    }
    if matches!(back(2), Some(b"sk" | b"rk"))
        && matches!(b.get(i + 1..i + 6), Some(b"live_" | b"test_"))
    {
        return stripe_key(b, i - 2, i + 6);
    }
    None
}

/// `xox?-` (Slack), `sk-` (OpenAI), `sk-ant-` (Anthropic), `-----BEGIN ` (PEM).
fn after_dash(b: &[u8], i: usize) -> Option<Raw> {
    if i >= 4 && b.get(i - 4..i - 1) == Some(b"xox") {
        return slack_token(b, i - 4);
    }
    if i >= 2 && b.get(i - 2..i) == Some(b"sk") {
        return if b.get(i + 1..i + 5) == Some(b"ant-") {
            anthropic_key(b, i - 2, i + 5)
        } else {
            openai_key(b, i - 2, i + 1)
        };
    }
    if b.get(i..i + 11) == Some(b"-----BEGIN ") && before(b, i) != b'-' {
        return private_key(b, i, i + 11);
    }
    None
}

/// The byte at `i`, or 0 past either end (0 is a boundary for every detector).
fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

/// The byte before `i`, or 0 at the start.
fn before(b: &[u8], i: usize) -> u8 {
    i.checked_sub(1).map_or(0, |j| at(b, j))
}

/// How many bytes before `from` satisfy `ok`.
fn span_back(b: &[u8], from: usize, ok: impl Fn(u8) -> bool) -> usize {
    span_back_max(b, from, usize::MAX, ok)
}

/// [`span_back`], counting at most `max` bytes.
fn span_back_max(b: &[u8], from: usize, max: usize, ok: impl Fn(u8) -> bool) -> usize {
    let mut n = 0;
    while n < from && n < max && ok(at(b, from - n - 1)) {
        n += 1;
    }
    n
}

/// [`span_while`], but at most `max` bytes: detectors whose shapes have a length bound stop there,
/// so crafted input (a megabyte of `sk-sk-sk-…`) costs linear time, not quadratic.
fn span_while_max(b: &[u8], from: usize, max: usize, ok: impl Fn(u8) -> bool) -> usize {
    let end = b.len().min(from.saturating_add(max));
    let mut at_end = from;
    while at_end < end && ok(at(b, at_end)) {
        at_end += 1;
    }
    at_end
}

/// Longest token a token detector reads (real ones are at most about 200 bytes).
const MAX_TOKEN_BYTES: usize = 512;

fn span_while(b: &[u8], from: usize, ok: impl Fn(u8) -> bool) -> usize {
    let mut end = from;
    while end < b.len() && ok(at(b, end)) {
        end += 1;
    }
    end
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

fn raw(builtin: Builtin, start: usize, end: usize) -> Raw {
    Raw {
        builtin,
        start,
        end,
    }
}

fn aws_key_id(b: &[u8], s: usize) -> Option<Raw> {
    // AWS access key ids: a four-letter type prefix and 16 upper-case letters or digits.
    if !matches!(b.get(s..s + 4), Some(b"AKIA" | b"ASIA" | b"ABIA" | b"ACCA")) {
        return None;
    }
    let e = s + 20;
    let body = b.get(s + 4..e)?;
    let ok = !is_word(before(b, s))
        && !is_word(at(b, e))
        && body
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    // AWS's documentation key id ends in EXAMPLE.
    (ok && !body.ends_with(b"EXAMPLE")).then(|| raw(Builtin::AwsAccessKeyId, s, e))
}

fn github_classic(b: &[u8], s: usize) -> Option<Raw> {
    let e = s + 40;
    let body = b.get(s + 4..e)?;
    let ok = !is_word(before(b, s))
        && !is_word(at(b, e))
        && body.iter().all(u8::is_ascii_alphanumeric)
        && github_checksum_valid(body);
    ok.then(|| raw(Builtin::GithubToken, s, e))
}

fn github_fine_grained(b: &[u8], s: usize) -> Option<Raw> {
    // `github_pat_`, 22 base62 characters, `_`, 59 base62 characters.
    let first = s + 11;
    let e = first + 82;
    let body = b.get(first..e)?;
    let ok = !is_word(before(b, s))
        && !is_word(at(b, e))
        && body.iter().enumerate().all(|(k, c)| {
            if k == 22 {
                *c == b'_'
            } else {
                c.is_ascii_alphanumeric()
            }
        });
    ok.then(|| raw(Builtin::GithubToken, s, e))
}

fn slack_token(b: &[u8], s: usize) -> Option<Raw> {
    // xoxb-, xoxp-, xoxa-, xoxr-, xoxs-, xoxo-, xoxe- and xoxe.xoxp- tokens: numeric workspace
    // and user parts, then a random part, joined by dashes.
    if is_word(before(b, s))
        || !matches!(at(b, s + 3), b'a' | b'b' | b'e' | b'o' | b'p' | b'r' | b's')
    {
        return None;
    }
    let mut body = s + 4;
    if b.get(body..body + 6) == Some(b".xoxp-") {
        body += 5;
    }
    if at(b, body) != b'-' {
        return None;
    }
    body += 1;
    let e = span_while_max(b, body, MAX_TOKEN_BYTES, |c| {
        c.is_ascii_alphanumeric() || c == b'-'
    });
    let rest = b.get(body..e)?;
    let mut parts = rest.split(|c| *c == b'-');
    let first_numeric = parts
        .next()
        .is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit));
    let dashes = rest.iter().filter(|c| **c == b'-').count();
    (first_numeric && dashes >= 2 && rest.len() >= 20 && !is_word(at(b, e)))
        .then(|| raw(Builtin::SlackToken, s, e))
}

fn slack_webhook(b: &[u8], colon: usize) -> Option<Raw> {
    // https://hooks.slack.com/services/T…/B…/<secret> (and /workflows/…): the path is the secret.
    const HOST: &[u8] = b"hooks.slack.com/";
    let host = colon + 3;
    if b.get(host..host + HOST.len()) != Some(HOST) {
        return None;
    }
    let end = host + HOST.len();
    let path_end = span_while(b, end, |c| c.is_ascii_alphanumeric() || c == b'/');
    let path = b.get(end..path_end)?;
    let mut segments = path.split(|c| *c == b'/').filter(|p| !p.is_empty());
    let kind = segments.next()?;
    let team = segments.next()?;
    let rest: Vec<&[u8]> = segments.collect();
    let secret = rest.last()?;
    let ok = (kind == b"services" || kind == b"workflows")
        && team.first() == Some(&b'T')
        && !rest.is_empty()
        && secret.len() >= 16;
    let start = colon - span_back(b, colon, |c| c.is_ascii_alphabetic());
    ok.then(|| raw(Builtin::SlackWebhook, start, path_end))
}

fn stripe_key(b: &[u8], s: usize, end: usize) -> Option<Raw> {
    let e = span_while(b, end, |c| c.is_ascii_alphanumeric());
    (!is_word(before(b, s)) && e - end >= 24 && at(b, e) != b'_')
        .then(|| raw(Builtin::StripeKey, s, e))
}

fn google_key(b: &[u8], s: usize) -> Option<Raw> {
    if b.get(s..s + 4) != Some(b"AIza") {
        return None;
    }
    let e = s + 39;
    let body = b.get(s + 4..e)?;
    let ok = !is_b64url(before(b, s)) && !is_b64url(at(b, e)) && body.iter().all(|c| is_b64url(*c));
    ok.then(|| raw(Builtin::GoogleApiKey, s, e))
}

fn openai_key(b: &[u8], s: usize, end: usize) -> Option<Raw> {
    // Every OpenAI secret key (legacy `sk-`, `sk-proj-`, `sk-svcacct-`, `sk-admin-`) carries
    // "T3BlbkFJ", base64 of "OpenAI", in its middle.
    let e = span_while_max(b, end, MAX_TOKEN_BYTES, is_b64url);
    let body = b.get(end..e)?;
    let marked = body.windows(8).any(|w| w == b"T3BlbkFJ");
    (!is_b64url(before(b, s)) && body.len() >= 40 && marked)
        .then(|| raw(Builtin::OpenaiApiKey, s, e))
}

fn anthropic_key(b: &[u8], s: usize, end: usize) -> Option<Raw> {
    // `sk-ant-<kind><version>-<base64url>AA`, e.g. sk-ant-api03-…AA, 108 characters in all.
    let e = span_while_max(b, end, MAX_TOKEN_BYTES, is_b64url);
    let body = b.get(end..e)?;
    let kind_len = span_while(body, 0, |c| c.is_ascii_lowercase());
    let versioned = kind_len > 0
        && at(body, kind_len).is_ascii_digit()
        && at(body, kind_len + 1).is_ascii_digit()
        && at(body, kind_len + 2) == b'-';
    (!is_b64url(before(b, s)) && versioned && body.len() >= 80 && body.ends_with(b"AA"))
        .then(|| raw(Builtin::AnthropicApiKey, s, e))
}

fn jwt(b: &[u8], s: usize) -> Option<Raw> {
    // RFC 7519 §3 / RFC 7515 §7.1 compact serialization: three base64url parts; the header is a
    // JSON object naming its `alg` (RFC 7515 §4.1.1).
    use base64::Engine as _;
    if is_b64url(before(b, s)) {
        return None;
    }
    let header_end = span_while(b, s, is_b64url);
    if at(b, header_end) != b'.' {
        return None;
    }
    let payload_start = header_end + 1;
    let payload_end = span_while(b, payload_start, is_b64url);
    if b.get(payload_start..payload_start + 3) != Some(b"eyJ")
        || payload_end - payload_start < 10
        || at(b, payload_end) != b'.'
    {
        return None;
    }
    let e = span_while(b, payload_end + 1, is_b64url);
    if at(b, e) == b'.' {
        // Five parts is JWE, or not a token at all.
        return None;
    }
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b.get(s..header_end)?)
        .ok()?;
    let names_alg = header.starts_with(b"{") && header.windows(5).any(|w| w == b"\"alg\"");
    names_alg.then(|| raw(Builtin::Jwt, s, e))
}

fn private_key(b: &[u8], s: usize, end: usize) -> Option<Raw> {
    // RFC 7468 §2 encapsulation boundaries: "-----BEGIN <label>-----" … "-----END <label>-----".
    let label_end = span_while(b, end, |c| c.is_ascii_uppercase() || c == b' ');
    let label = b.get(end..label_end)?;
    if !(label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK"))
        || b.get(label_end..label_end + 5) != Some(b"-----")
    {
        return None;
    }
    let rest = b.get(label_end..)?;
    // Up to the end boundary; a key cut short still leaks what it holds, so without one the
    // finding runs to the end of the string.
    let e = rest
        .windows(9)
        .position(|w| w == b"-----END ")
        .and_then(|p| {
            let after = label_end + p + 9;
            let close = b.get(after..)?.windows(5).position(|w| w == b"-----")?;
            Some(after + close + 5)
        })
        .unwrap_or(b.len());
    Some(raw(Builtin::PrivateKey, s, e))
}

const DATABASE_SCHEMES: &[&[u8]] = &[
    b"postgres",
    b"postgresql",
    b"mysql",
    b"mariadb",
    b"mongodb",
    b"mongodb+srv",
    b"redis",
    b"rediss",
    b"amqp",
    b"amqps",
    b"mssql",
    b"sqlserver",
    b"oracle",
    b"cockroachdb",
    b"clickhouse",
    b"couchdb",
    b"neo4j",
    b"neo4j+s",
    b"cassandra",
    b"db2",
];

fn database_url(b: &[u8], sep: usize) -> Option<Raw> {
    // RFC 3986 §3.2.1: userinfo is `user:password` before the last `@` of the authority. Only
    // the password is the finding, so a redacted URL still says where it pointed.
    let mut scheme_start = sep;
    while scheme_start > 0 {
        let c = at(b, scheme_start - 1);
        if c.is_ascii_alphanumeric() || c == b'+' {
            scheme_start -= 1;
        } else {
            break;
        }
    }
    let scheme = b.get(scheme_start..sep)?.to_ascii_lowercase();
    // SQLAlchemy-style `postgresql+psycopg2`: the database is the part before the driver.
    let base = scheme.split(|c| *c == b'+').next().unwrap_or_default();
    if !DATABASE_SCHEMES.contains(&scheme.as_slice()) && !DATABASE_SCHEMES.contains(&base) {
        return None;
    }
    let authority_start = sep + 3;
    let authority_end = span_while(b, authority_start, |c| {
        !matches!(c, b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'`')
            && !c.is_ascii_whitespace()
    });
    let authority = b.get(authority_start..authority_end)?;
    let at_sign = authority.iter().rposition(|c| *c == b'@')?;
    let userinfo = authority.get(..at_sign)?;
    let colon = userinfo.iter().position(|c| *c == b':')?;
    let password = userinfo.get(colon + 1..)?;
    if password.is_empty() || is_placeholder(password) {
        return None;
    }
    let start = authority_start + colon + 1;
    Some(raw(Builtin::DatabaseUrl, start, authority_start + at_sign))
}

/// Top-level domains that are really file extensions: `icon@2x.png` is an image, not an address.
const FILE_EXTENSIONS: &[&[u8]] = &[
    b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"ico", b"js", b"mjs", b"ts", b"css", b"map",
    b"json", b"html", b"txt", b"md", b"py", b"rs", b"go", b"tgz", b"zip", b"lock",
];

fn email(b: &[u8], at_sign: usize) -> Option<Raw> {
    // RFC 5322 §3.4.1 dot-atom addresses as they are written in prose: a local part of atom
    // characters and dots, a domain of at least two labels ending in a letters-only TLD.
    // Non-ASCII bytes count as address characters (RFC 6531 internationalised addresses); the
    // span still ends on ASCII bytes, so it stays a `str` boundary.
    let is_local = |c: u8| c.is_ascii_alphanumeric() || c >= 0x80 || b"._%+-'".contains(&c);
    let mut start = at_sign;
    while start > 0 && is_local(at(b, start - 1)) && at_sign - start < 64 {
        start -= 1;
    }
    // The 64-byte bound may stop inside a multi-byte character: move to the next one.
    while start < at_sign && (at(b, start) & 0xC0 == 0x80 || matches!(at(b, start), b'.' | b'\'')) {
        start += 1;
    }
    // After `//` or `user:` the `@` ends a URL's userinfo (RFC 3986 §3.2.1), not an address;
    // `mailto:` is the exception.
    let userinfo = match before(b, start) {
        b'/' | b'@' => true,
        // `user:password@host` only inside a URL (a `://` earlier in the same token); otherwise
        // `To:jane@…`, `mailto:jane@…`.
        b':' => {
            let token_start = start - span_back_max(b, start, 256, |c| !c.is_ascii_whitespace());
            b.get(token_start..start)
                .is_some_and(|t| t.windows(3).any(|w| w == b"://"))
        }
        _ => false,
    };
    if start == at_sign || before(b, at_sign) == b'.' || userinfo {
        return None;
    }
    let mut e = at_sign + 1;
    let mut labels = 0;
    let mut last_label = (e, e);
    loop {
        let label_end = span_while(b, e, |c| {
            c.is_ascii_alphanumeric() || c >= 0x80 || c == b'-'
        });
        if label_end == e || label_end - e > 63 {
            break;
        }
        labels += 1;
        last_label = (e, label_end);
        if at(b, label_end) == b'.' && at(b, label_end + 1).is_ascii_alphanumeric() {
            e = label_end + 1;
        } else {
            e = label_end;
            break;
        }
    }
    let tld = b.get(last_label.0..last_label.1)?;
    let tld_ok = (2..=24).contains(&tld.len())
        && tld.iter().all(u8::is_ascii_alphabetic)
        && !FILE_EXTENSIONS.contains(&tld.to_ascii_lowercase().as_slice());
    (labels >= 2 && tld_ok && at(b, e) != b'@').then(|| raw(Builtin::Email, start, last_label.1))
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')
}

/// Name endings that say the value is a secret (compared lower-case with `_`, `-` and `.`
/// removed).
const SECRET_NAME_ENDINGS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "secretkey",
    "privatekey",
    "credential",
    "credentials",
    "secretaccesskey",
];

/// Parts of a name that make a secret-like ending mean something else: page cursors and counts.
const NOT_SECRET_NAME_PARTS: &[&str] = &[
    "page",
    "cursor",
    "continuation",
    "next",
    "sync",
    "count",
    "limit",
    "max",
    "min",
    "expire",
    "expires",
    "expiry",
    "expiration",
    "ttl",
    "length",
    "type",
    "url",
    "uri",
    "path",
    "file",
    "hint",
    "prompt",
    "field",
    "label",
];

/// A name's letters and digits, lower-cased and last first, in a fixed buffer (the last 48
/// are enough to judge any name by its ending).
struct NameTail {
    rev: [u8; 48],
    len: usize,
}

impl NameTail {
    fn of(name: &[u8]) -> NameTail {
        let mut tail = NameTail {
            rev: [0; 48],
            len: 0,
        };
        for c in name.iter().rev().filter(|c| c.is_ascii_alphanumeric()) {
            let Some(slot) = tail.rev.get_mut(tail.len) else {
                break;
            };
            *slot = c.to_ascii_lowercase();
            tail.len += 1;
        }
        tail
    }

    fn ends_with(&self, ending: &str) -> bool {
        let rev = self.rev.get(..self.len).unwrap_or_default();
        rev.len() >= ending.len() && ending.bytes().rev().zip(rev).all(|(a, b)| a == *b)
    }

    fn contains(&self, part: &str) -> bool {
        let rev = self.rev.get(..self.len).unwrap_or_default();
        let n = part.len();
        n <= rev.len()
            && rev
                .windows(n)
                .any(|w| w.iter().zip(part.bytes().rev()).all(|(a, b)| *a == b))
    }
}

/// Whether the name ending at `name_end` may end like one of [`SECRET_NAME_ENDINGS`] or
/// `authorization`: its last three letters and digits (lower-cased, `_`, `-` and `.` skipped,
/// as [`NameTail`] reads them) end one of them. Rules out `status=`, `bytes=`, `id:` before
/// the whole name is read.
fn secret_like_ending(b: &[u8], name_end: usize) -> bool {
    let mut last = [0u8; 3];
    let mut taken = 0;
    let mut j = name_end;
    while taken < last.len() && j > 0 && is_ident(at(b, j - 1)) {
        j -= 1;
        let c = at(b, j);
        if c.is_ascii_alphanumeric() {
            taken += 1;
            if let Some(slot) = last.len().checked_sub(taken).and_then(|k| last.get_mut(k)) {
                *slot = c.to_ascii_lowercase();
            }
        }
    }
    taken == last.len()
        && matches!(
            &last,
            b"ord" | b"swd" | b"pwd" | b"ret" | b"ken" | b"key" | b"ial" | b"als" | b"ion"
        )
}

/// Whether a field or variable named `name` holds a secret.
pub(crate) fn secret_name(name: &[u8]) -> bool {
    let tail = NameTail::of(name);
    SECRET_NAME_ENDINGS.iter().any(|e| tail.ends_with(e))
        && !name_segments(name).any(|segment| {
            NOT_SECRET_NAME_PARTS
                .iter()
                .any(|p| segment.eq_ignore_ascii_case(p.as_bytes()))
        })
}

/// A name's words: split at `_`, `-`, `.`, spaces and lower-to-upper case changes
/// (`nextPageToken` → `next`, `Page`, `Token`), so `ADMIN_PASSWORD` is not "min" anything.
fn name_segments(name: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < name.len() {
            let c = at(name, i);
            let boundary = !c.is_ascii_alphanumeric()
                || (c.is_ascii_uppercase() && i > start && before(name, i).is_ascii_lowercase());
            if boundary {
                let segment = name.get(start..i);
                start = if c.is_ascii_alphanumeric() { i } else { i + 1 };
                i += 1;
                if let Some(segment) = segment.filter(|s| !s.is_empty()) {
                    return Some(segment);
                }
                continue;
            }
            i += 1;
        }
        let segment = name.get(start..).filter(|s| !s.is_empty());
        start = name.len();
        segment
    })
}

/// Whether `value`, assigned to a secret-like name, looks like a real secret rather than a
/// placeholder, a flag or a number.
pub(crate) fn secret_value(value: &[u8]) -> bool {
    (8..=1024).contains(&value.len())
        && !value.iter().any(u8::is_ascii_whitespace)
        && !value.iter().all(u8::is_ascii_digit)
        && !is_placeholder(value)
        && entropy_bits(value) >= 3.0
}

/// An AWS secret access key: 40 base64 characters, assigned to a name that says so.
pub(crate) fn aws_secret(name: &[u8], value: &[u8]) -> bool {
    let tail = NameTail::of(name);
    (tail.ends_with("secretaccesskey") || (tail.contains("aws") && tail.contains("secret")))
        && value.len() == 40
        && value
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'/' || *c == b'+')
        && !value.ends_with(b"EXAMPLEKEY")
}

/// A secret assigned to a secret-like name, found from its operator at `op` (`:` or `=`):
/// `NAME=value`, `NAME: value`, `"name": "value"`, `name := value`, `?access_token=value&…`,
/// `scheme://user:value@host`, and `Authorization: <scheme> value` headers.
fn assignment_at(b: &[u8], op: usize) -> Option<Raw> {
    let op_byte = at(b, op);
    let next = at(b, op + 1);
    // `==`, `!=`, `<=`, `>=` compare; `:=` is handled at its `:`.
    if op_byte == b'=' && matches!(before(b, op), b'=' | b'!' | b'<' | b'>' | b':') {
        return None;
    }
    if op_byte == b'=' && next == b'=' {
        return None;
    }
    let mut name_end = op - span_back(b, op, |c| c == b' ' || c == b'\t');
    if matches!(before(b, name_end), b'"' | b'\'') {
        name_end -= 1;
    }
    // Every secret-like ending (and `authorization`) ends in one of these letters: a cheap
    // first test, since most `=` and `:` in text follow other names; then its last three.
    if !matches!(
        before(b, name_end).to_ascii_lowercase(),
        b'd' | b't' | b'n' | b'y' | b'l' | b's'
    ) || !secret_like_ending(b, name_end)
    {
        return None;
    }
    let name_start = name_end - span_back(b, name_end, is_ident);
    let name = b.get(name_start..name_end)?;
    let header = NameTail::of(name).ends_with("authorization");
    if !header && !secret_name(name) {
        return None;
    }
    let mut i = op + 1;
    if matches!(at(b, i), b'=' | b'>') {
        i += 1;
    }
    i = span_while(b, i, |c| c == b' ' || c == b'\t');
    let quote = at(b, i);
    let quoted = matches!(quote, b'"' | b'\'' | b'`');
    if quoted {
        i += 1;
    }
    if header {
        // RFC 9110 §11.4: credentials = auth-scheme [ 1*SP token68 ]; the token is the secret.
        let scheme_end = span_while(b, i, |c| c.is_ascii_alphanumeric() || c == b'-');
        if at(b, scheme_end) == b' ' {
            i = span_while(b, scheme_end, |c| c == b' ');
        }
    }
    // `scheme://name:value@host`: the value is a URL's password and ends at `@` or `/`.
    let in_userinfo = name_start >= 3 && b.get(name_start - 3..name_start) == Some(b"://");
    let value_end = if quoted {
        span_while_max(b, i, 1025, |c| c != quote && c != b'\n')
    } else {
        span_while_max(b, i, 1025, |c| {
            !c.is_ascii_whitespace()
                && !b",;\"'`}{)]&<>".contains(&c)
                && !(in_userinfo && (c == b'@' || c == b'/'))
        })
    };
    let value = b.get(i..value_end)?;
    if aws_secret(name, value) {
        return Some(raw(Builtin::AwsSecretAccessKey, i, value_end));
    }
    secret_value(value).then(|| raw(Builtin::SecretAssignment, i, value_end))
}

/// The digits of a number and the lengths of its groups, without allocating (this runs at
/// every digit run of every string).
struct Grouped {
    /// Index just past the last digit taken.
    end: usize,
    digits: [u8; 24],
    digit_count: usize,
    groups: [usize; 8],
    group_count: usize,
}

impl Grouped {
    fn digits(&self) -> &[u8] {
        self.digits.get(..self.digit_count).unwrap_or_default()
    }

    fn groups(&self) -> &[usize] {
        self.groups.get(..self.group_count).unwrap_or_default()
    }
}

/// Digits starting at `i`, allowing one `sep` between digit groups, up to `max_digits` (one more
/// is taken, so a caller sees the number is too long) and eight groups.
fn grouped_digits(b: &[u8], i: usize, sep: Option<u8>, max_digits: usize) -> Grouped {
    let mut g = Grouped {
        end: i,
        digits: [0; 24],
        digit_count: 0,
        groups: [0; 8],
        group_count: 1,
    };
    let limit = max_digits.min(g.digits.len() - 1);
    let mut j = i;
    loop {
        let c = at(b, j);
        if c.is_ascii_digit() {
            if let Some(slot) = g.digits.get_mut(g.digit_count) {
                *slot = c;
            }
            g.digit_count += 1;
            if let Some(count) = g.groups.get_mut(g.group_count - 1) {
                *count += 1;
            }
            j += 1;
            if g.digit_count > limit {
                break;
            }
        } else if Some(c) == sep && at(b, j + 1).is_ascii_digit() && g.group_count < g.groups.len()
        {
            g.group_count += 1;
            j += 1;
        } else {
            break;
        }
    }
    g.end = j;
    g
}

/// The numeric finding starting at `i`, whose first run of digits is `run` long.
fn numeric_at(
    b: &[u8],
    i: usize,
    run: usize,
    private_v4: &[(u32, u32)],
    enabled: &impl Fn(Builtin) -> bool,
) -> Option<Raw> {
    let prev = before(b, i);
    if prev.is_ascii_alphabetic() {
        let iban_ok = prev.is_ascii_uppercase() && enabled(Builtin::Iban);
        return if iban_ok { iban(b, i) } else { None };
    }
    if matches!(prev, b'.' | b'_' | b',') {
        return None;
    }
    // The first digit run and what follows it already rule out most detectors; only the ones
    // whose shape can start this way run (this is the hot path on digit-heavy text).
    let next = at(b, i + run);
    let may = |builtin: Builtin, shape: bool| shape && enabled(builtin);
    if may(Builtin::IpAddress, run <= 3 && next == b'.')
        && let Some(found) = ipv4(b, i, private_v4)
    {
        return Some(found);
    }
    if may(Builtin::UsSsn, run == 3 && matches!(next, b'-' | b' '))
        && let Some(found) = ssn(b, i)
    {
        return Some(found);
    }
    if may(
        Builtin::PaymentCard,
        (run == 4 && matches!(next, b' ' | b'-')) || (13..=19).contains(&run),
    ) && let Some(found) = card(b, i)
    {
        return Some(found);
    }
    let phone_shape = match prev {
        b'+' => true,
        b'(' => run == 3 && next == b')',
        _ => run == 3 && matches!(next, b'-' | b'.' | b' '),
    };
    if may(Builtin::Phone, phone_shape) {
        return phone(b, i);
    }
    None
}

/// Whether the `n` bytes from `i` are all digits.
fn digits_at(b: &[u8], i: usize, n: usize) -> bool {
    b.get(i..i + n)
        .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
}

/// Whether a number ends at `e`: not followed by a letter, another digit, or a separator and
/// more digits (which would make it part of a longer number).
fn number_ends(b: &[u8], e: usize) -> bool {
    let c = at(b, e);
    let continues = matches!(c, b'.' | b'-' | b',' | b'/') && at(b, e + 1).is_ascii_digit();
    !(c.is_ascii_alphanumeric() || c == b'_' || continues)
}

/// Four dot-separated decimal octets from `i`, as `Ipv4Addr`'s parser takes them (one to three
/// digits, at most 255, no leading zero), read in one pass: most dotted numbers in text
/// (versions, durations, timestamps) fail at their second group.
fn ipv4(b: &[u8], i: usize, private_v4: &[(u32, u32)]) -> Option<Raw> {
    let mut bits = 0u32;
    let mut j = i;
    for octet in 0..4 {
        if octet > 0 {
            if at(b, j) != b'.' {
                return None;
            }
            j += 1;
        }
        let first = at(b, j);
        let len = span_while_max(b, j, 4, |c| c.is_ascii_digit()) - j;
        let value = b
            .get(j..j + len)?
            .iter()
            .fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0'));
        if len == 0 || len > 3 || value > 255 || (first == b'0' && len > 1) {
            return None;
        }
        bits = (bits << 8) | value;
        j += len;
    }
    let e = j;
    if !number_ends(b, e) {
        return None;
    }
    private_v4
        .iter()
        .any(|(net, mask)| bits & mask == *net)
        .then(|| raw(Builtin::IpAddress, i, e))
}

/// An IPv6 address in a private range, found from one of its colons.
fn ipv6_at(b: &[u8], colon: usize, private_v6: &[(u128, u128)]) -> Option<Raw> {
    let is_v6 = |c: u8| c.is_ascii_hexdigit() || c == b':' || c == b'.';
    let (prev, next) = (before(b, colon), at(b, colon + 1));
    if !(prev == b':' || prev.is_ascii_hexdigit() || next == b':')
        || !(next == b':' || next.is_ascii_hexdigit())
    {
        return None;
    }
    // An address is at most 45 characters: look no further (linear time on `1:1:1:…`).
    let start = colon - span_back_max(b, colon, 46, is_v6);
    let mut e = span_while_max(b, colon, 46, is_v6);
    while e > start && at(b, e - 1) == b'.' {
        e -= 1;
    }
    if is_word(before(b, start)) || is_word(at(b, e)) || e - start > 45 {
        return None;
    }
    let text = std::str::from_utf8(b.get(start..e)?).ok()?;
    if text.bytes().filter(|c| *c == b':').count() < 2 {
        return None;
    }
    let bits = u128::from(text.parse::<Ipv6Addr>().ok()?);
    private_v6
        .iter()
        .any(|(net, mask)| bits & mask == *net)
        .then(|| raw(Builtin::IpAddress, start, e))
}

fn ssn(b: &[u8], i: usize) -> Option<Raw> {
    let sep = at(b, i + 3);
    if !matches!(sep, b'-' | b' ') || !digits_at(b, i + 4, 2) || at(b, i + 6) != sep {
        return None;
    }
    let g = grouped_digits(b, i, Some(sep), 9);
    let e = g.end;
    if g.groups() != [3, 2, 4]
        || !number_ends(b, e)
        || (at(b, e) == sep && at(b, e + 1).is_ascii_digit())
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        g.digits()
            .get(r)
            .map(|d| d.iter().fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0')))
    };
    ssn_valid(num(0..3)?, num(3..5)?, num(5..9)?).then(|| raw(Builtin::UsSsn, i, e))
}

fn card(b: &[u8], i: usize) -> Option<Raw> {
    // Every card grouping starts with four digits.
    if !(at(b, i + 1).is_ascii_digit()
        && at(b, i + 2).is_ascii_digit()
        && at(b, i + 3).is_ascii_digit())
    {
        return None;
    }
    let sep = match at(b, i + 4) {
        c @ (b' ' | b'-') => Some(c),
        _ => None,
    };
    // Of 13 or more digits in groups, the second group has at least four (`2026-11-30` is
    // refused here).
    if sep.is_some() && !digits_at(b, i + 5, 4) {
        return None;
    }
    let g = grouped_digits(b, i, sep, 19);
    let (e, digits) = (g.end, g.digits());
    let grouping_ok = match g.groups() {
        [_] => true,
        [4, 6, 5] | [4, 6, 4] => true,
        [rest @ .., last] => rest.iter().all(|g| *g == 4) && (1..=4).contains(last),
        [] => false,
    };
    let ok = (13..=19).contains(&digits.len())
        && grouping_ok
        && number_ends(b, e)
        && !(sep.is_some_and(|s| at(b, e) == s) && at(b, e + 1).is_ascii_digit())
        && card_issuer_known(digits)
        && luhn_valid(digits)
        && !is_test_card(digits);
    ok.then(|| raw(Builtin::PaymentCard, i, e))
}

fn phone(b: &[u8], i: usize) -> Option<Raw> {
    match before(b, i) {
        b'+' => e164(b, i),
        b'(' => {
            // (415) 555-2671
            let area = grouped_digits(b, i, None, 3);
            let area_end = area.end;
            if area.digits().len() != 3
                || at(b, area_end) != b')'
                || !(b'2'..=b'9').contains(&at(b, i))
            {
                return None;
            }
            let next = span_while(b, area_end + 1, |c| c == b' ');
            let rest = nanp_tail(b, next)?;
            Some(raw(Builtin::Phone, i - 1, rest))
        }
        p if p.is_ascii_digit() || matches!(p, b'-' | b'/' | b'#') => None,
        _ => {
            // 415-555-2671, 415.555.2671, 415 555 2671
            let sep = at(b, i + 3);
            if !matches!(sep, b'-' | b'.' | b' ')
                || !(b'2'..=b'9').contains(&at(b, i))
                || !digits_at(b, i + 4, 3)
                || at(b, i + 7) != sep
            {
                return None;
            }
            let g = grouped_digits(b, i, Some(sep), 10);
            let e = g.end;
            let ok = g.groups() == [3, 3, 4]
                && (b'2'..=b'9').contains(&at(b, i + 4))
                && number_ends(b, e)
                && !(at(b, e) == sep && at(b, e + 1).is_ascii_digit());
            ok.then(|| raw(Builtin::Phone, i, e))
        }
    }
}

/// `555-2671` or `555 2671` after a parenthesised area code; returns the end.
fn nanp_tail(b: &[u8], i: usize) -> Option<usize> {
    let sep = at(b, i + 3);
    if !matches!(sep, b'-' | b'.' | b' ')
        || !(b'2'..=b'9').contains(&at(b, i))
        || !digits_at(b, i + 4, 4)
    {
        return None;
    }
    let g = grouped_digits(b, i, Some(sep), 7);
    (g.groups() == [3, 4] && number_ends(b, g.end)).then_some(g.end)
}

fn e164(b: &[u8], i: usize) -> Option<Raw> {
    // ITU-T E.164: a country code (never 0) and at most 15 digits in all, written with spaces,
    // dashes, dots or a parenthesised group.
    if at(b, i) == b'0' || is_word(before(b, i - 1)) {
        return None;
    }
    let mut j = i;
    let mut count = 0;
    loop {
        let c = at(b, j);
        if c.is_ascii_digit() {
            count += 1;
            j += 1;
        } else {
            let separator = matches!(c, b' ' | b'-' | b'.')
                && (at(b, j + 1).is_ascii_digit() || at(b, j + 1) == b'(');
            let open = c == b'(' && at(b, j + 1).is_ascii_digit();
            let close = c == b')' && before(b, j).is_ascii_digit();
            if !(separator || open || close) {
                break;
            }
            j += 1;
        }
        if count > 15 {
            return None;
        }
    }
    ((8..=15).contains(&count) && number_ends(b, j)).then(|| raw(Builtin::Phone, i - 1, j))
}

fn iban(b: &[u8], i: usize) -> Option<Raw> {
    // ISO 13616: country code, two check digits, then the national account number, printed
    // either compact or in groups of four.
    let s = i.checked_sub(2)?;
    let country = [at(b, s), at(b, s + 1)];
    if !country.iter().all(u8::is_ascii_uppercase) || is_word(before(b, s)) {
        return None;
    }
    let len = iban_length(country)?;
    let mut compact = Vec::with_capacity(len);
    let mut j = s;
    while compact.len() < len {
        let c = at(b, j);
        if c.is_ascii_digit() || c.is_ascii_uppercase() {
            compact.push(c);
            j += 1;
        } else if c == b' ' && compact.len() % 4 == 0 && at(b, j + 1).is_ascii_alphanumeric() {
            j += 1;
        } else {
            return None;
        }
    }
    let ok = !is_word(at(b, j))
        && compact
            .get(2..4)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
        && iban_mod97_valid(&compact);
    ok.then(|| raw(Builtin::Iban, s, j))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_name_ending_passes_the_three_letter_test() {
        for ending in SECRET_NAME_ENDINGS.iter().chain(&["authorization"]) {
            for name in [
                ending.to_string(),
                format!("db_{ending}"),
                ending.to_ascii_uppercase(),
            ] {
                assert!(secret_like_ending(name.as_bytes(), name.len()), "{name}");
            }
        }
        assert!(secret_like_ending(b"API_KE-Y", 8));
        for name in ["status", "bytes", "id", "ke", "a ke", "k_e"] {
            assert!(!secret_like_ending(name.as_bytes(), name.len()), "{name}");
        }
    }
}
