//! The encrypted local secrets file: the default store, for a single host or a Kubernetes
//! Secret mounted as a file.
//!
//! # Format (version 1)
//!
//! ```text
//! offset  size  field
//! 0       8     magic "BHVRYSEC"
//! 8       1     format version (1)
//! 9       1     algorithm (1 = XChaCha20-Poly1305)
//! 10      24    nonce, random for every write
//! 34      ..    ciphertext followed by the 16-byte Poly1305 tag
//! ```
//!
//! The 34 header bytes are the AEAD's associated data, so changing the version, algorithm or
//! nonce fails authentication like changing the ciphertext does (RFC 8439 §2.8: the tag covers
//! the AAD and the ciphertext). The plaintext is JSON, `{"secrets": {"<path>": {"<field>":
//! "<value>"}}}`; only this module ever sees it.
//!
//! # Why XChaCha20-Poly1305
//!
//! Every write draws a fresh random nonce. XChaCha20's 192-bit nonce makes random nonces safe
//! for any number of writes under one key, where AES-GCM's 96-bit nonce caps a key at about
//! 2^32 random nonces (NIST SP 800-38D §8.3) and a repeat breaks both confidentiality and
//! authenticity. It is also constant-time in plain software, on machines without AES-NI.
//! (draft-irtf-cfrg-xchacha defines XChaCha20; RFC 8439 defines ChaCha20-Poly1305.)
//!
//! # Key
//!
//! 256 bits, written as 64 hex digits, from a key file (which must be readable by its owner
//! only: mode 0600 or stricter) or from an environment variable. [`FileStoreKey::generate`]
//! makes one.
//!
//! # Writes
//!
//! A write encrypts the whole file anew into a temporary file in the same folder, syncs it,
//! and renames it over the old one, so readers see the old or the new file, never half of one.
//! Writers in one process are serialized; two processes writing at once can lose one update
//! (the management CLI is the only writer).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::reference::{SecretBackend, SecretRef};
use crate::value::SecretValue;
use crate::{SecretError, SecretFuture, SecretStore};

/// First bytes of every secrets file.
pub const MAGIC: &[u8; 8] = b"BHVRYSEC";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Algorithm id for XChaCha20-Poly1305, the only one defined.
pub const ALGORITHM_XCHACHA20_POLY1305: u8 = 1;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = MAGIC.len() + 2 + NONCE_LEN;
const TAG_LEN: usize = 16;
/// Length of the key in bytes (256 bits).
pub const KEY_LEN: usize = 32;

/// Why the secrets file or its key could not be used. Messages name files and variables,
/// never key material or secret values.
#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "key file {path} has mode {mode:o}: it must be readable by its owner only (chmod 600 {path})",
        path = .path.display()
    )]
    KeyFileTooOpen { path: PathBuf, mode: u32 },
    #[error("key in {origin} is not valid: {reason}")]
    InvalidKey {
        origin: String,
        reason: &'static str,
    },
    #[error("environment variable {var} holding the secrets key is not set")]
    KeyEnvMissing { var: String },
    #[error("{} is not a Behavry secrets file (bad magic or too short)", .path.display())]
    NotASecretsFile { path: PathBuf },
    #[error(
        "{} uses format version {version}; this build reads version {FORMAT_VERSION}",
        .path.display()
    )]
    UnsupportedFormatVersion { path: PathBuf, version: u8 },
    #[error("{} uses unknown algorithm id {algorithm}", .path.display())]
    UnsupportedAlgorithm { path: PathBuf, algorithm: u8 },
    #[error(
        "cannot decrypt {}: wrong key, or the file was modified (authentication failed)",
        .path.display()
    )]
    Decrypt { path: PathBuf },
    // Only the position: serde_json's own message can quote the (decrypted) input.
    #[error(
        "decrypted contents of {} are not valid secrets JSON (line {line}, column {column})",
        .path.display()
    )]
    Contents {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("{} already exists; refusing to overwrite it", .path.display())]
    AlreadyExists { path: PathBuf },
    #[error("{reference} is not a `file:` reference without a version")]
    NotAFileReference { reference: Box<SecretRef> },
    #[error("the system random source failed: {0}")]
    Random(String),
    #[error("encryption failed")]
    Encrypt,
    #[error("the background read of the secrets file did not finish: {0}")]
    ReadTask(String),
}

/// The 256-bit key of a secrets file. `Debug` shows nothing; wiped on drop.
#[derive(Clone)]
pub struct FileStoreKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for FileStoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileStoreKey([REDACTED])")
    }
}

impl FileStoreKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<Self, FileStoreError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(key.as_mut_slice()).map_err(|e| FileStoreError::Random(e.to_string()))?;
        Ok(Self(key))
    }

    /// Parses 64 hex digits (surrounding whitespace ignored). `origin` names where the text
    /// came from, for the error message.
    pub fn from_hex(text: &str, origin: &str) -> Result<Self, FileStoreError> {
        let invalid = |reason| FileStoreError::InvalidKey {
            origin: origin.to_owned(),
            reason,
        };
        let text = text.trim();
        if text.len() != KEY_LEN * 2 {
            return Err(invalid("expected 64 hex digits (256 bits)"));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(text, key.as_mut_slice())
            .map_err(|_| invalid("expected 64 hex digits (256 bits)"))?;
        Ok(Self(key))
    }

    /// Reads the key from `path`, refusing a file that group or others can access.
    pub fn from_key_file(path: &Path) -> Result<Self, FileStoreError> {
        let io_error = |source| FileStoreError::Io {
            action: "read key file",
            path: path.to_owned(),
            source,
        };
        let metadata = fs::metadata(path).map_err(io_error)?;
        check_owner_only(path, &metadata)?;
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io_error)?);
        Self::from_hex(&text, &format!("key file {}", path.display()))
    }

    /// Reads the key from the environment variable `var` through `env` (pass
    /// [`crate::process_env`] in production; tests pass their own lookup).
    pub fn from_env(
        var: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, FileStoreError> {
        let text = Zeroizing::new(env(var).ok_or_else(|| FileStoreError::KeyEnvMissing {
            var: var.to_owned(),
        })?);
        Self::from_hex(&text, &format!("environment variable {var}"))
    }

    /// Writes the key as hex to a new file `path` with mode 0600. Refuses to overwrite.
    pub fn write_key_file(&self, path: &Path) -> Result<(), FileStoreError> {
        let io_error = |source: io::Error| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                FileStoreError::AlreadyExists {
                    path: path.to_owned(),
                }
            } else {
                FileStoreError::Io {
                    action: "write key file",
                    path: path.to_owned(),
                    source,
                }
            }
        };
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io_error)?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(self.0.as_slice())));
        file.write_all(text.as_bytes()).map_err(io_error)?;
        file.sync_all().map_err(io_error)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.0.as_slice().into())
    }
}

#[cfg(unix)]
fn check_owner_only(path: &Path, metadata: &fs::Metadata) -> Result<(), FileStoreError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    // Any group or other bit means someone besides the owner may read (or replace) the key.
    if mode & 0o077 != 0 {
        return Err(FileStoreError::KeyFileTooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner_only(_path: &Path, _metadata: &fs::Metadata) -> Result<(), FileStoreError> {
    // No POSIX modes to check; rely on the platform's ACLs.
    Ok(())
}

/// The plaintext inside the file. Private: nothing outside this module sees secret values
/// in bulk, and `Zeroizing` wipes every value when the map is dropped.
#[derive(Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Contents {
    secrets: BTreeMap<String, BTreeMap<String, Zeroizing<String>>>,
}

#[derive(Debug)]
struct StoreFile {
    path: PathBuf,
    key: FileStoreKey,
    /// Serializes read-modify-write cycles within this process.
    write_lock: Mutex<()>,
}

/// The encrypted local secrets file. Cheap to clone (shared inside). Every read decrypts the
/// file again, so changes made by the management CLI are seen without a restart, and no
/// decrypted copy of the whole file stays in memory.
#[derive(Debug, Clone)]
pub struct EncryptedFileStore {
    file: Arc<StoreFile>,
}

impl EncryptedFileStore {
    /// Creates a new, empty secrets file at `path` (mode 0600). Refuses to overwrite one.
    pub fn create(path: impl Into<PathBuf>, key: FileStoreKey) -> Result<Self, FileStoreError> {
        let path = path.into();
        if path.exists() {
            return Err(FileStoreError::AlreadyExists { path });
        }
        let store = Self::with_key(path, key);
        store.file.write(&Contents::default())?;
        Ok(store)
    }

    /// Opens an existing secrets file, decrypting it once so that a wrong key or a damaged
    /// file is reported now rather than at the first request.
    pub fn open(path: impl Into<PathBuf>, key: FileStoreKey) -> Result<Self, FileStoreError> {
        let store = Self::with_key(path.into(), key);
        store.file.read()?;
        Ok(store)
    }

    fn with_key(path: PathBuf, key: FileStoreKey) -> Self {
        Self {
            file: Arc::new(StoreFile {
                path,
                key,
                write_lock: Mutex::new(()),
            }),
        }
    }

    /// The file's location.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Adds the secret named by `reference` (a `file:` reference), or replaces its value.
    pub fn put(&self, reference: &SecretRef, value: &SecretValue) -> Result<(), FileStoreError> {
        check_file_reference(reference)?;
        self.file.update(|contents| {
            contents
                .secrets
                .entry(reference.path().to_owned())
                .or_default()
                .insert(
                    reference.field().to_owned(),
                    Zeroizing::new(value.expose().to_owned()),
                );
            true
        })?;
        Ok(())
    }

    /// Removes the secret named by `reference`; `Ok(false)` if there was none.
    pub fn remove(&self, reference: &SecretRef) -> Result<bool, FileStoreError> {
        check_file_reference(reference)?;
        self.file.update(|contents| {
            let Some(fields) = contents.secrets.get_mut(reference.path()) else {
                return false;
            };
            let removed = fields.remove(reference.field()).is_some();
            if fields.is_empty() {
                contents.secrets.remove(reference.path());
            }
            removed
        })
    }

    /// The references of all secrets in the file, sorted. Values are not returned.
    pub fn list(&self) -> Result<Vec<SecretRef>, FileStoreError> {
        let contents = self.file.read()?;
        let mut names = Vec::new();
        for (path, fields) in &contents.secrets {
            for field in fields.keys() {
                // Entries are only ever added through `put`, which validated them; a name
                // that no longer parses (hand-edited plaintext) is skipped rather than listed.
                if let Ok(reference) = SecretRef::from_parts(SecretBackend::File, path, field, None)
                {
                    names.push(reference);
                }
            }
        }
        Ok(names)
    }

    /// Reads one secret synchronously (the async [`SecretStore::get`] runs this on the
    /// blocking pool).
    pub fn read(&self, reference: &SecretRef) -> Result<SecretValue, SecretError> {
        let file_error = |source| SecretError::File {
            reference: reference.clone(),
            source: Box::new(source),
        };
        check_file_reference(reference).map_err(file_error)?;
        let contents = self.file.read().map_err(file_error)?;
        contents
            .secrets
            .get(reference.path())
            .and_then(|fields| fields.get(reference.field()))
            .map(|value| SecretValue::new(value.as_str().to_owned()))
            .ok_or_else(|| SecretError::NotFound {
                reference: reference.clone(),
            })
    }
}

impl SecretStore for EncryptedFileStore {
    fn get<'a>(&'a self, reference: &'a SecretRef) -> SecretFuture<'a> {
        Box::pin(async move {
            let store = self.clone();
            let owned = reference.clone();
            tokio::task::spawn_blocking(move || store.read(&owned))
                .await
                .map_err(|err| SecretError::File {
                    reference: reference.clone(),
                    source: Box::new(FileStoreError::ReadTask(err.to_string())),
                })?
        })
    }
}

fn check_file_reference(reference: &SecretRef) -> Result<(), FileStoreError> {
    if reference.backend() != SecretBackend::File || reference.version().is_some() {
        return Err(FileStoreError::NotAFileReference {
            reference: Box::new(reference.clone()),
        });
    }
    Ok(())
}

impl StoreFile {
    fn read(&self) -> Result<Contents, FileStoreError> {
        let bytes = fs::read(&self.path).map_err(|source| FileStoreError::Io {
            action: "read secrets file",
            path: self.path.clone(),
            source,
        })?;
        self.decrypt(&bytes)
    }

    fn decrypt(&self, bytes: &[u8]) -> Result<Contents, FileStoreError> {
        let path = || self.path.clone();
        if bytes.len() < HEADER_LEN + TAG_LEN || !bytes.starts_with(MAGIC) {
            return Err(FileStoreError::NotASecretsFile { path: path() });
        }
        let (header, ciphertext) = bytes.split_at(HEADER_LEN);
        let (fixed, nonce) = header.split_at(MAGIC.len() + 2);
        // `fixed` is MAGIC, version, algorithm: length checked above.
        let (version, algorithm) = match fixed {
            [.., version, algorithm] => (*version, *algorithm),
            _ => return Err(FileStoreError::NotASecretsFile { path: path() }),
        };
        if version != FORMAT_VERSION {
            return Err(FileStoreError::UnsupportedFormatVersion {
                path: path(),
                version,
            });
        }
        if algorithm != ALGORITHM_XCHACHA20_POLY1305 {
            return Err(FileStoreError::UnsupportedAlgorithm {
                path: path(),
                algorithm,
            });
        }
        let plaintext = Zeroizing::new(
            self.key
                .cipher()
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ciphertext,
                        aad: header,
                    },
                )
                .map_err(|_| FileStoreError::Decrypt { path: path() })?,
        );
        serde_json::from_slice(&plaintext).map_err(|err| FileStoreError::Contents {
            path: path(),
            line: err.line(),
            column: err.column(),
        })
    }

    fn encrypt(&self, contents: &Contents) -> Result<Vec<u8>, FileStoreError> {
        let plaintext =
            Zeroizing::new(serde_json::to_vec(contents).map_err(|_| FileStoreError::Encrypt)?);
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| FileStoreError::Random(e.to_string()))?;
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.push(ALGORITHM_XCHACHA20_POLY1305);
        out.extend_from_slice(&nonce);
        let ciphertext = self
            .key
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: &out,
                },
            )
            .map_err(|_| FileStoreError::Encrypt)?;
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Read, change, write back — under the in-process write lock. `change` returns whether it
    /// changed anything; nothing is written otherwise.
    fn update(&self, change: impl FnOnce(&mut Contents) -> bool) -> Result<bool, FileStoreError> {
        // A poisoned lock only records that another writer panicked; the file on disk is whole
        // (the rename is atomic), so carrying on is safe.
        let _guard = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut contents = self.read()?;
        if !change(&mut contents) {
            return Ok(false);
        }
        self.write(&contents)?;
        Ok(true)
    }

    /// Atomic replace: temp file in the same folder (same filesystem, so rename is atomic),
    /// mode 0600, fsync, rename, fsync the folder so the rename itself survives a crash.
    fn write(&self, contents: &Contents) -> Result<(), FileStoreError> {
        let bytes = self.encrypt(contents)?;
        let io_error = |action, source| FileStoreError::Io {
            action,
            path: self.path.clone(),
            source,
        };
        let folder = match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        // tempfile creates the file with mode 0600 on unix.
        let mut temp = tempfile::Builder::new()
            .prefix(".behavry-secrets-")
            .tempfile_in(&folder)
            .map_err(|e| io_error("create a temporary file next to", e))?;
        temp.write_all(&bytes)
            .map_err(|e| io_error("write a temporary file next to", e))?;
        temp.as_file()
            .sync_all()
            .map_err(|e| io_error("sync a temporary file next to", e))?;
        temp.persist(&self.path)
            .map_err(|e| io_error("replace", e.error))?;
        #[cfg(unix)]
        fs::File::open(&folder)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_error("sync the folder of", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FileStoreKey {
        FileStoreKey::from_hex(&"ab".repeat(32), "test").unwrap()
    }

    fn reference(text: &str) -> SecretRef {
        SecretRef::parse(text).unwrap()
    }

    fn secret(text: &str) -> SecretValue {
        SecretValue::new(text.to_owned())
    }

    #[tokio::test]
    async fn round_trip_put_get_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.bin");
        let store = EncryptedFileStore::create(&path, key()).unwrap();
        let github = reference("file:upstream/github#token");
        let slack = reference("file:upstream/slack#bot_token");
        store.put(&github, &secret("ghp_first")).unwrap();
        store.put(&slack, &secret("xoxb-1")).unwrap();
        store.put(&github, &secret("ghp_second")).unwrap();

        // A second handle on the same file sees the writes (nothing cached in memory).
        let reopened = EncryptedFileStore::open(&path, key()).unwrap();
        assert_eq!(reopened.get(&github).await.unwrap().expose(), "ghp_second");
        assert_eq!(reopened.get(&slack).await.unwrap().expose(), "xoxb-1");
        assert_eq!(
            reopened.list().unwrap(),
            vec![github.clone(), slack.clone()]
        );

        // The value is not stored in clear.
        let raw = fs::read(&path).unwrap();
        assert!(raw.starts_with(MAGIC));
        assert!(!raw.windows(10).any(|w| w == b"ghp_second"));

        assert!(store.remove(&github).unwrap());
        assert!(!store.remove(&github).unwrap());
        assert_eq!(store.list().unwrap(), vec![slack]);
        let err = store.get(&github).await.unwrap_err();
        assert!(matches!(err, SecretError::NotFound { .. }));
    }

    #[test]
    fn every_write_uses_a_fresh_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.bin");
        let store = EncryptedFileStore::create(&path, key()).unwrap();
        let name = reference("file:a#b");
        store.put(&name, &secret("same")).unwrap();
        let first = fs::read(&path).unwrap();
        store.put(&name, &secret("same")).unwrap();
        let second = fs::read(&path).unwrap();
        assert_ne!(first.get(10..HEADER_LEN), second.get(10..HEADER_LEN));
    }

    #[tokio::test]
    async fn missing_name_is_not_found_and_names_only_the_reference() {
        let dir = tempfile::tempdir().unwrap();
        let store = EncryptedFileStore::create(dir.path().join("s.bin"), key()).unwrap();
        store
            .put(
                &reference("file:upstream/github#token"),
                &secret("ghp_hidden"),
            )
            .unwrap();
        let missing = reference("file:upstream/github#other");
        let err = store.get(&missing).await.unwrap_err();
        assert!(matches!(err, SecretError::NotFound { .. }));
        assert_eq!(
            err.to_string(),
            "secret file:upstream/github#other not found"
        );
    }

    #[test]
    fn wrong_key_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.bin");
        EncryptedFileStore::create(&path, key()).unwrap();
        let other = FileStoreKey::from_hex(&"cd".repeat(32), "test").unwrap();
        let err = EncryptedFileStore::open(&path, other).unwrap_err();
        assert!(matches!(err, FileStoreError::Decrypt { .. }));
        assert!(
            err.to_string()
                .contains("wrong key, or the file was modified")
        );
    }

    #[test]
    fn any_tampering_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.bin");
        let store = EncryptedFileStore::create(&path, key()).unwrap();
        store.put(&reference("file:a#b"), &secret("value")).unwrap();
        let original = fs::read(&path).unwrap();
        // Flip one bit in every byte position in turn: header (AAD), nonce, ciphertext, tag.
        for index in 0..original.len() {
            let mut tampered = original.clone();
            tampered[index] ^= 0x01;
            fs::write(&path, &tampered).unwrap();
            let err = EncryptedFileStore::open(&path, key()).unwrap_err();
            let expected = match index {
                0..8 => matches!(err, FileStoreError::NotASecretsFile { .. }),
                8 => matches!(
                    err,
                    FileStoreError::UnsupportedFormatVersion { version: 0, .. }
                ),
                9 => matches!(err, FileStoreError::UnsupportedAlgorithm { .. }),
                _ => matches!(err, FileStoreError::Decrypt { .. }),
            };
            assert!(expected, "byte {index}: unexpected {err:?}");
        }
        // Truncated file.
        fs::write(&path, original.get(..HEADER_LEN).unwrap()).unwrap();
        let err = EncryptedFileStore::open(&path, key()).unwrap_err();
        assert!(matches!(err, FileStoreError::NotASecretsFile { .. }));
    }

    #[test]
    fn create_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.bin");
        EncryptedFileStore::create(&path, key()).unwrap();
        let err = EncryptedFileStore::create(&path, key()).unwrap_err();
        assert!(matches!(err, FileStoreError::AlreadyExists { .. }));
    }

    #[test]
    fn put_refuses_vault_and_versioned_references() {
        let dir = tempfile::tempdir().unwrap();
        let store = EncryptedFileStore::create(dir.path().join("s.bin"), key()).unwrap();
        let err = store
            .put(&reference("vault:kv/a#b"), &secret("x"))
            .unwrap_err();
        assert!(matches!(err, FileStoreError::NotAFileReference { .. }));
    }

    #[cfg(unix)]
    #[test]
    fn key_file_must_be_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("secrets.key");
        let generated = FileStoreKey::generate().unwrap();
        generated.write_key_file(&key_path).unwrap();
        let mode = fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // The generated key file opens a store created with the same key.
        let store_path = dir.path().join("s.bin");
        EncryptedFileStore::create(&store_path, generated).unwrap();
        let loaded = FileStoreKey::from_key_file(&key_path).unwrap();
        EncryptedFileStore::open(&store_path, loaded).unwrap();

        for open_mode in [0o644, 0o640, 0o604, 0o660] {
            fs::set_permissions(&key_path, fs::Permissions::from_mode(open_mode)).unwrap();
            let err = FileStoreKey::from_key_file(&key_path).unwrap_err();
            assert!(matches!(err, FileStoreError::KeyFileTooOpen { .. }));
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o400)).unwrap();
        FileStoreKey::from_key_file(&key_path).unwrap();

        let err = generated_key_overwrite(&key_path);
        assert!(matches!(err, FileStoreError::AlreadyExists { .. }));
    }

    fn generated_key_overwrite(path: &Path) -> FileStoreError {
        FileStoreKey::generate()
            .unwrap()
            .write_key_file(path)
            .unwrap_err()
    }

    #[test]
    fn malformed_keys_are_refused_without_echoing_them() {
        for text in ["", "abcd", &"zz".repeat(32), &"ab".repeat(33)] {
            let err = FileStoreKey::from_hex(text, "key file k").unwrap_err();
            assert!(matches!(err, FileStoreError::InvalidKey { .. }));
            if !text.is_empty() {
                assert!(!err.to_string().contains(text));
            }
        }
        let env = |var: &str| (var == "KEY").then(|| format!(" {}\n", "01".repeat(32)));
        FileStoreKey::from_env("KEY", &env).unwrap();
        let err = FileStoreKey::from_env("OTHER", &env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable OTHER holding the secrets key is not set"
        );
        assert_eq!(format!("{:?}", key()), "FileStoreKey([REDACTED])");
    }
}
