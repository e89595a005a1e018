//! Signed checkpoints of the audit log: a C2SP `tlog-checkpoint` body (origin, tree size, root
//! hash) signed as a C2SP `signed-note` with Ed25519, so standard transparency-log tooling can
//! read and check them.
//!
//! - Checkpoint body: `<origin>\n<size in decimal>\n<base64 of the 32-byte root hash>\n`
//!   (C2SP tlog-checkpoint; extension lines, if any, follow and are kept as they are).
//! - Note: the body, a blank line, then one line per signature:
//!   `— <key name> <base64(key id || signature)>\n` (U+2014 and a space). The signature covers
//!   the body with its final newline. Key id: the first 4 bytes of
//!   `SHA-256(<key name> || 0x0A || 0x01 || <32-byte Ed25519 public key>)` (0x01: Ed25519).
//! - A verifier key (what a verifier is given) is `<key name>+<hex key id>+<base64(0x01 || public
//!   key)>`.
//!
//! Opening a note checks its signature by the verifier's key (name and key id); signatures by
//! other keys are ignored, a bad one by the verifier's key refuses the note.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use behavry_core::merkle::Hash;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest as _, Sha256};

/// The signature-type byte of Ed25519 in key ids and verifier keys (C2SP signed-note).
const ED25519: u8 = 0x01;
/// The prefix of a signature line: U+2014 EM DASH and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// Most signature lines read from one note (the Go reference implementation's bound).
const MAX_SIGNATURES: usize = 100;

/// What went wrong reading or checking a checkpoint or note.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    #[error("malformed checkpoint: {0}")]
    Checkpoint(&'static str),
    #[error("malformed verifier key: {0}")]
    VerifierKey(&'static str),
    #[error("invalid key name: {0}")]
    KeyName(&'static str),
    #[error("the note has no signature by key {0}")]
    NotSigned(String),
    #[error("the signature by key {0} does not verify")]
    BadSignature(String),
}

/// A log's state at one size: its origin line, its size and the RFC 9162 tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Names the log (`behavry.example/audit`); unique per log.
    pub origin: String,
    /// The number of records.
    pub size: u64,
    /// The Merkle tree head over the records' leaf hashes.
    pub root: Hash,
}

impl Checkpoint {
    /// The C2SP tlog-checkpoint body.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// Reads a checkpoint body (extension lines after the third are allowed and ignored).
    pub fn parse(body: &str) -> Result<Checkpoint, NoteError> {
        let text = body
            .strip_suffix('\n')
            .ok_or(NoteError::Checkpoint("the body must end with a newline"))?;
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(NoteError::Checkpoint("no origin line"))?;
        let size = lines
            .next()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .filter(|s| s.len() == 1 || !s.starts_with('0'))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(NoteError::Checkpoint("the size must be a decimal number"))?;
        let root: Hash = lines
            .next()
            .and_then(|r| STANDARD.decode(r).ok())
            .and_then(|r| r.try_into().ok())
            .ok_or(NoteError::Checkpoint(
                "the root hash must be 32 bytes in base64",
            ))?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// A key name: non-empty, without spaces or `+` (C2SP signed-note).
fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() {
        return Err(NoteError::KeyName("empty"));
    }
    if name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(NoteError::KeyName("spaces and `+` are not allowed"));
    }
    Ok(())
}

/// The key id of an Ed25519 key under `name`.
fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', ED25519]);
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    let mut id = [0; 4];
    id.copy_from_slice(digest.get(..4).unwrap_or(&[0; 4]));
    id
}

/// Signs notes under one key name.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    id: [u8; 4],
}

// By hand: the private key never reaches a log.
impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    pub fn new(name: &str, key: SigningKey) -> Result<NoteSigner, NoteError> {
        check_name(name)?;
        let id = key_id(name, &key.verifying_key());
        Ok(NoteSigner {
            name: name.to_owned(),
            key,
            id,
        })
    }

    /// `body` signed: the note text. `body` must end with a newline and hold no blank line.
    pub fn sign(&self, body: &str) -> Result<String, NoteError> {
        if !body.ends_with('\n') || body.contains("\n\n") || body.starts_with('\n') {
            return Err(NoteError::Malformed(
                "the text must end with a newline and hold no blank line",
            ));
        }
        let signature = self.key.sign(body.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&self.id);
        blob.extend_from_slice(&signature.to_bytes());
        Ok(format!(
            "{body}\n{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(blob)
        ))
    }

    /// The signer named `name` with the Ed25519 private key in the PKCS#8 PEM file `path`
    /// (`openssl genpkey -algorithm ed25519`); the error says which of the two is wrong.
    pub fn from_pem_file(name: &str, path: &std::path::Path) -> Result<NoteSigner, String> {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        let pem = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        let key = SigningKey::from_pkcs8_pem(&pem)
            .map_err(|err| format!("{} is not an Ed25519 PKCS#8 key: {err}", path.display()))?;
        NoteSigner::new(name, key).map_err(|err| format!("--origin: {err}"))
    }

    /// The verifier key of this signer, for whoever checks its notes.
    pub fn verifier_key(&self) -> String {
        let mut key = vec![ED25519];
        key.extend_from_slice(self.key.verifying_key().as_bytes());
        format!("{}+{}+{}", self.name, hex(&self.id), STANDARD.encode(key))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks notes signed under one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Reads a verifier key `<name>+<hex id>+<base64(0x01 || key)>`; the id must be the key's.
    pub fn parse(vkey: &str) -> Result<NoteVerifier, NoteError> {
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::VerifierKey("expected <name>+<key id>+<key>"));
        };
        check_name(name)?;
        let key = STANDARD
            .decode(key)
            .map_err(|_| NoteError::VerifierKey("the key is not base64"))?;
        let (Some(&ED25519), Some(raw)) = (key.first(), key.get(1..)) else {
            return Err(NoteError::VerifierKey("not an Ed25519 key"));
        };
        let raw: [u8; 32] = raw
            .try_into()
            .map_err(|_| NoteError::VerifierKey("an Ed25519 key is 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&raw)
            .map_err(|_| NoteError::VerifierKey("not a valid Ed25519 point"))?;
        let expected = key_id(name, &key);
        if id != hex(&expected) {
            return Err(NoteError::VerifierKey("the key id is not the key's"));
        }
        Ok(NoteVerifier {
            name: name.to_owned(),
            id: expected,
            key,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signed text of `note` once its signature by this key verifies.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let (text, signatures) = split_note(note)?;
        let mut mine = None;
        for (count, line) in signatures.split('\n').enumerate() {
            if count >= MAX_SIGNATURES {
                return Err(NoteError::Malformed("too many signatures"));
            }
            let rest = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or(NoteError::Malformed(
                    "a signature line must start with an em dash",
                ))?;
            let (name, blob) = rest.split_once(' ').ok_or(NoteError::Malformed(
                "a signature line is `— <name> <signature>`",
            ))?;
            check_name(name)?;
            let blob = STANDARD
                .decode(blob)
                .map_err(|_| NoteError::Malformed("a signature is not base64"))?;
            if blob.len() < 5 {
                return Err(NoteError::Malformed("a signature is too short"));
            }
            if mine.is_none() && name == self.name && blob.get(..4) == Some(&self.id[..]) {
                mine = Some(blob);
            }
        }
        let blob = mine.ok_or_else(|| NoteError::NotSigned(self.name.clone()))?;
        let signature = blob
            .get(4..)
            .and_then(|s| Signature::from_slice(s).ok())
            .ok_or_else(|| NoteError::BadSignature(self.name.clone()))?;
        self.key
            .verify(text.as_bytes(), &signature)
            .map_err(|_| NoteError::BadSignature(self.name.clone()))?;
        Ok(text)
    }

    /// The checkpoint in `note` once its signature by this key verifies.
    pub fn open_checkpoint(&self, note: &str) -> Result<Checkpoint, NoteError> {
        Checkpoint::parse(self.open(note)?)
    }
}

/// A note's signed text (ending in a newline) and its signature lines (without the last
/// newline).
fn split_note(note: &str) -> Result<(&str, &str), NoteError> {
    let split = note
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    let (text, signatures) = (
        note.get(..=split).unwrap_or_default(),
        note.get(split + 2..).unwrap_or_default(),
    );
    let signatures = signatures
        .strip_suffix('\n')
        .ok_or(NoteError::Malformed("the note must end with a newline"))?;
    Ok((text, signatures))
}

/// The checkpoint a note says, **without checking any signature**: for a verifier that was
/// given no key, which can still hold the log to what its checkpoints claim.
pub fn unverified_checkpoint(note: &str) -> Result<Checkpoint, NoteError> {
    Checkpoint::parse(split_note(note)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(seed: u8, name: &str) -> NoteSigner {
        NoteSigner::new(name, SigningKey::from_bytes(&[seed; 32])).unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "behavry.test/audit".into(),
            size: 8,
            root: behavry_core::merkle::leaf_hash(b"root"),
        }
    }

    #[test]
    fn a_signed_checkpoint_opens_with_its_verifier_key_only() {
        let log = signer(1, "behavry.test/audit");
        let note = log.sign(&checkpoint().body()).unwrap();
        // The layout: body, blank line, one signature line.
        let (body, signature) = note.split_once("\n\n").unwrap();
        assert_eq!(format!("{body}\n"), checkpoint().body());
        assert!(signature.starts_with("\u{2014} behavry.test/audit "));
        assert!(log.verifier_key().starts_with("behavry.test/audit+"));
        let verifier = NoteVerifier::parse(&log.verifier_key()).unwrap();
        assert_eq!(verifier.open_checkpoint(&note).unwrap(), checkpoint());

        // Another key, even under the same name, did not sign it.
        let other = NoteVerifier::parse(&signer(2, "behavry.test/audit").verifier_key()).unwrap();
        assert_eq!(
            other.open(&note),
            Err(NoteError::NotSigned("behavry.test/audit".into()))
        );
        // A changed size or root breaks the signature.
        let forged = note.replacen("\n8\n", "\n9\n", 1);
        assert_eq!(
            verifier.open(&forged),
            Err(NoteError::BadSignature("behavry.test/audit".into()))
        );
        // Another signer's line is ignored; the log's still decides.
        let witness = signer(3, "witness.example");
        let cosigned = format!(
            "{note}{}",
            witness
                .sign(&checkpoint().body())
                .unwrap()
                .split_once("\n\n")
                .unwrap()
                .1
        );
        assert_eq!(verifier.open_checkpoint(&cosigned).unwrap(), checkpoint());
        let w = NoteVerifier::parse(&witness.verifier_key()).unwrap();
        assert_eq!(w.open_checkpoint(&cosigned).unwrap(), checkpoint());
    }

    /// The example key and note of the Go reference implementation (golang.org/x/mod/sumdb/note).
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_SKEY_SEED: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const GO_SIGNATURE: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn notes_are_byte_for_byte_those_of_the_reference_implementation() {
        let seed = STANDARD.decode(GO_SKEY_SEED).unwrap();
        assert_eq!(seed[0], ED25519);
        let key = SigningKey::from_bytes(&seed[1..].try_into().unwrap());
        let signer = NoteSigner::new("PeterNeumann", key).unwrap();
        assert_eq!(signer.verifier_key(), GO_VKEY);
        let note = signer.sign(GO_TEXT).unwrap();
        assert_eq!(note, format!("{GO_TEXT}\n{GO_SIGNATURE}"));
        let verifier = NoteVerifier::parse(GO_VKEY).unwrap();
        assert_eq!(verifier.open(&note).unwrap(), GO_TEXT);
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        assert!(NoteSigner::new("two words", SigningKey::from_bytes(&[1; 32])).is_err());
        assert!(NoteSigner::new("a+b", SigningKey::from_bytes(&[1; 32])).is_err());
        let log = signer(1, "log");
        assert!(log.sign("no newline").is_err());
        assert!(log.sign("a\n\nb\n").is_err());
        let vkey = log.verifier_key();
        for bad in ["", "log", "log+00000000+AQ==", &vkey.replacen("+", "+0", 1)] {
            assert!(NoteVerifier::parse(bad).is_err(), "{bad}");
        }
        let verifier = NoteVerifier::parse(&vkey).unwrap();
        for bad in [
            "",
            "text\n",
            "text\n\n",
            "text\n\n-- log AAAA\n",
            "text\n\n\u{2014} log !!!\n",
        ] {
            assert!(verifier.open(bad).is_err(), "{bad:?}");
        }
        for body in [
            "",
            "origin\n",
            "origin\n01\nAA==\n",
            "origin\n5\nAA==\n",
            "origin\nx\n",
        ] {
            assert!(Checkpoint::parse(body).is_err(), "{body:?}");
        }
        // Extension lines after the root are allowed.
        let mut body = checkpoint().body();
        body.push_str("extension\n");
        assert_eq!(Checkpoint::parse(&body).unwrap(), checkpoint());
    }
}
