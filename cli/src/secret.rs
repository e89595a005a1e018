//! `behavry secret ...`: the encrypted local secrets file that `secret` upstreams read their
//! static API keys from (`[secrets.file]` of the authz-sidecar config, see docs/secrets.md).
//!
//! Values are read from standard input only, never from the command line (argv is visible to
//! other local users in `ps` and lands in shell history), and never printed: `list` shows
//! references. The key file is made with `init-key` (64 hex digits, mode 0600).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use behavry_secrets::{EncryptedFileStore, FileStoreKey, SecretRef, SecretValue};
use clap::{Args, Subcommand};

/// Largest value `put` reads from stdin: API keys are short; anything bigger is a mistake.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Where the secrets file and its key are.
#[derive(Debug, Args)]
pub struct StoreLocation {
    /// The encrypted secrets file (created by the first `put`).
    #[arg(long, global = true, env = "BEHAVRY_SECRETS_FILE")]
    file: Option<PathBuf>,
    /// The key file (64 hex digits, mode 0600).
    #[arg(long, global = true, env = "BEHAVRY_SECRETS_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// Name of an environment variable holding the key instead of a key file.
    #[arg(long, global = true, conflicts_with = "key_file")]
    key_env: Option<String>,
}

/// `behavry secret` subcommands.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Generate a new random key and write it to --key-file (mode 0600; never overwrites).
    InitKey,
    /// Store the value read from stdin under REF (a `file:` reference, e.g.
    /// `file:upstream/github#token`). A single trailing newline is dropped.
    Put {
        /// The secret reference.
        reference: String,
    },
    /// List the references in the file (never the values).
    List,
    /// Remove the secret REF.
    Rm {
        /// The secret reference.
        reference: String,
    },
}

/// Run one `behavry secret` command.
pub fn run(location: &StoreLocation, command: SecretCommand) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match command {
        SecretCommand::InitKey => {
            let path = location
                .key_file
                .as_deref()
                .context("--key-file is required")?;
            init_key(path)?;
            writeln!(stdout, "wrote a new key to {}", path.display())?;
        }
        SecretCommand::Put { reference } => {
            let reference = parse_reference(&reference)?;
            let store = open_or_create(location)?;
            put(&store, &reference, std::io::stdin().lock())?;
            writeln!(stdout, "stored {reference} in {}", store.path().display())?;
        }
        SecretCommand::List => {
            for reference in open(location)?.list()? {
                writeln!(stdout, "{reference}")?;
            }
        }
        SecretCommand::Rm { reference } => {
            let reference = parse_reference(&reference)?;
            if open(location)?.remove(&reference)? {
                writeln!(stdout, "removed {reference}")?;
            } else {
                bail!("no secret {reference} in the file");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Write a new random key to `path` (0600, refuses to overwrite).
pub fn init_key(path: &Path) -> anyhow::Result<()> {
    FileStoreKey::generate()?.write_key_file(path)?;
    Ok(())
}

fn parse_reference(text: &str) -> anyhow::Result<SecretRef> {
    let reference = SecretRef::parse(text)?;
    if reference.backend() != behavry_secrets::SecretBackend::File {
        bail!(
            "{reference} is not a `file:` reference (Vault secrets are managed with Vault's own tools)"
        );
    }
    Ok(reference)
}

fn key(location: &StoreLocation) -> anyhow::Result<FileStoreKey> {
    match (&location.key_file, &location.key_env) {
        (Some(path), _) => Ok(FileStoreKey::from_key_file(path)?),
        (None, Some(var)) => Ok(FileStoreKey::from_env(var, &behavry_secrets::process_env)?),
        (None, None) => {
            bail!("give the key with --key-file (or BEHAVRY_SECRETS_KEY_FILE) or --key-env")
        }
    }
}

fn file(location: &StoreLocation) -> anyhow::Result<&Path> {
    location
        .file
        .as_deref()
        .context("--file (or BEHAVRY_SECRETS_FILE) is required")
}

/// Open the existing file (a wrong key fails here).
fn open(location: &StoreLocation) -> anyhow::Result<EncryptedFileStore> {
    Ok(EncryptedFileStore::open(file(location)?, key(location)?)?)
}

/// Open the file, or create it empty when it does not exist yet.
fn open_or_create(location: &StoreLocation) -> anyhow::Result<EncryptedFileStore> {
    let path = file(location)?;
    let key = key(location)?;
    if path.exists() {
        Ok(EncryptedFileStore::open(path, key)?)
    } else {
        Ok(EncryptedFileStore::create(path, key)?)
    }
}

/// Store the value read from `input` under `reference`.
pub fn put(
    store: &EncryptedFileStore,
    reference: &SecretRef,
    input: impl Read,
) -> anyhow::Result<()> {
    let mut text = String::new();
    input
        .take(MAX_SECRET_BYTES + 1)
        .read_to_string(&mut text)
        .context("cannot read the secret from stdin (it must be UTF-8)")?;
    // Wrapped at once, so the value is wiped when dropped whatever happens next.
    let mut value = SecretValue::new(text);
    if value.len() as u64 > MAX_SECRET_BYTES {
        bail!("the secret is longer than {MAX_SECRET_BYTES} bytes");
    }
    // `echo key | behavry secret put ...` adds a newline that is not part of the key.
    let exposed = value.expose();
    let trimmed = exposed
        .strip_suffix('\n')
        .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
        .unwrap_or(exposed);
    if trimmed.len() != exposed.len() {
        value = SecretValue::new(trimmed.to_owned());
    }
    if value.is_empty() {
        bail!("the secret read from stdin is empty");
    }
    store.put(reference, &value)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAINTEXT: &str = "ghp_plaintext_api_key_0123456789";

    fn location(dir: &Path) -> StoreLocation {
        StoreLocation {
            file: Some(dir.join("secrets.bin")),
            key_file: Some(dir.join("secrets.key")),
            key_env: None,
        }
    }

    #[test]
    fn put_then_list_shows_the_reference_and_the_file_holds_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let location = location(dir.path());
        init_key(location.key_file.as_deref().unwrap()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(location.key_file.as_deref().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let reference = parse_reference("file:upstream/github#token").unwrap();
        let store = open_or_create(&location).unwrap();
        put(&store, &reference, format!("{PLAINTEXT}\n").as_bytes()).unwrap();

        let listed = open(&location).unwrap().list().unwrap();
        assert_eq!(listed, std::slice::from_ref(&reference));
        let bytes = std::fs::read(location.file.as_deref().unwrap()).unwrap();
        assert!(
            !bytes
                .windows(PLAINTEXT.len())
                .any(|window| window == PLAINTEXT.as_bytes())
        );
        // The trailing newline was dropped, the value kept exactly.
        let value = open(&location).unwrap().read(&reference).unwrap();
        assert_eq!(value.expose(), PLAINTEXT);

        assert!(open(&location).unwrap().remove(&reference).unwrap());
        assert!(open(&location).unwrap().list().unwrap().is_empty());
    }

    #[test]
    fn refuses_empty_values_vault_references_and_a_second_key() {
        let dir = tempfile::tempdir().unwrap();
        let location = location(dir.path());
        init_key(location.key_file.as_deref().unwrap()).unwrap();
        assert!(init_key(location.key_file.as_deref().unwrap()).is_err());
        let store = open_or_create(&location).unwrap();
        let reference = parse_reference("file:a#b").unwrap();
        let err = put(&store, &reference, "\n".as_bytes()).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let err = parse_reference("vault:kv/a#b").unwrap_err();
        assert!(err.to_string().contains("not a `file:` reference"), "{err}");
        let too_long = "x".repeat(MAX_SECRET_BYTES as usize + 1);
        assert!(put(&store, &reference, too_long.as_bytes()).is_err());
    }

    #[test]
    fn a_wrong_key_fails_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let location = location(dir.path());
        init_key(location.key_file.as_deref().unwrap()).unwrap();
        open_or_create(&location).unwrap();
        let other = StoreLocation {
            key_file: Some(dir.path().join("other.key")),
            ..location
        };
        init_key(other.key_file.as_deref().unwrap()).unwrap();
        let err = open(&other).unwrap_err().to_string();
        assert!(err.contains("cannot decrypt"), "{err}");
    }
}
