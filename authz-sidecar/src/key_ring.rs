//! Signing key rotation with overlap: the active key, the next key and the retired keys.
//!
//! Files, all next to `key_file` and all PKCS#8 PEM with mode 0600:
//! - `<key_file>`: the active key, which signs every new token;
//! - `<key_file>.next`: the next key, published in the JWKS from the moment it exists, so every
//!   verifier (Envoy's `jwt_authn` caches the JWKS for its `cache_duration`) already holds it
//!   when it starts signing;
//! - `<key_file>.retired-<unix seconds>`: a former active key, published until every token it
//!   signed has expired (retired time + [`MAX_TOKEN_TTL_SECS`] + [`RETIRED_KEY_GRACE_SECS`]),
//!   then no longer published and removed at the next rotation.
//!
//! `behavry key rotate` (offline, like `behavry token mint`) turns the next key into the active
//! one, retires the active one and generates a new next key; the sidecar picks the new ring up
//! when it restarts. RFC 7517 §5 allows a JWK Set to hold several keys; RFC 7515 §4.1.4 `kid`
//! lets the verifier pick the one a token names.

use std::path::{Path, PathBuf};

use crate::config::MAX_TOKEN_TTL_SECS;
use crate::signing_key::{JwkSet, KeyError, KeyOrigin, SigningKey};

/// Extra time a retired key stays published after its last token can have expired: covers clock
/// skew between the sidecar and verifiers.
pub const RETIRED_KEY_GRACE_SECS: u64 = 60;

/// The keys of one token service.
#[derive(Debug, Clone)]
pub struct KeyRing {
    active: SigningKey,
    next: SigningKey,
    /// Retired keys still published, with their retirement time.
    retired: Vec<(u64, SigningKey)>,
}

/// What [`KeyRing::rotate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The key that was active and is now retired.
    pub retired_kid: String,
    /// The key that signs from now on (the former next key).
    pub active_kid: String,
    /// The new next key.
    pub next_kid: String,
    /// Retired keys removed because every token they signed has expired.
    pub removed: Vec<PathBuf>,
}

impl KeyRing {
    /// Load the ring of `key_file` as of `now` (seconds since the epoch), generating the active
    /// and the next key when missing (first start). Retired keys whose tokens have all expired
    /// are left out.
    pub fn load_or_init(key_file: &Path, now: u64) -> Result<(KeyRing, KeyOrigin), KeyError> {
        let (active, origin) = SigningKey::load_or_generate(key_file)?;
        let (next, _) = SigningKey::load_or_generate(&next_path(key_file))?;
        let mut retired = Vec::new();
        for (retired_at, path) in retired_files(key_file)? {
            if is_published(retired_at, now) {
                retired.push((retired_at, SigningKey::load(&path)?));
            }
        }
        retired.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        Ok((
            KeyRing {
                active,
                next,
                retired,
            },
            origin,
        ))
    }

    /// The key that signs new tokens.
    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    /// The key that signs after the next rotation.
    pub fn next(&self) -> &SigningKey {
        &self.next
    }

    /// Retired keys still published, newest first.
    pub fn retired(&self) -> impl Iterator<Item = &SigningKey> {
        self.retired.iter().map(|(_, key)| key)
    }

    /// Every published key: active, next, then the retired ones.
    pub fn jwks(&self) -> JwkSet {
        let mut keys = vec![
            self.active.public_jwk().clone(),
            self.next.public_jwk().clone(),
        ];
        keys.extend(self.retired().map(|key| key.public_jwk().clone()));
        JwkSet { keys }
    }

    /// The published key with id `kid` (to verify a token of this issuer).
    pub fn key(&self, kid: &str) -> Option<&SigningKey> {
        std::iter::once(&self.active)
            .chain(std::iter::once(&self.next))
            .chain(self.retired())
            .find(|key| key.kid() == kid)
    }

    /// Rotate the ring of `key_file` at `now`: the active key is retired, the next key becomes
    /// active, a new next key is generated; retired keys past their publication are removed.
    ///
    /// Every step is a hard link, a rename or a create-new in the same folder, in an order that
    /// keeps an active key file present throughout: a crash between steps leaves a ring that
    /// loads (at worst with a next key generated at the following start).
    pub fn rotate(key_file: &Path, now: u64) -> Result<Rotation, KeyError> {
        let next_file = next_path(key_file);
        let active = SigningKey::load(key_file)?;
        let next = SigningKey::load(&next_file)?;
        let retired_file = retired_path(key_file, now);
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| KeyError::Write { path, source }
        };
        // 1. Keep a copy of the active key under its retired name (hard link: same bytes).
        std::fs::hard_link(key_file, &retired_file).map_err(io_err(&retired_file))?;
        // 2. The next key replaces the active one in a single rename: readers see the old or the
        //    new active key, never none.
        std::fs::rename(&next_file, key_file).map_err(io_err(key_file))?;
        // 3. A new next key (create-new: a concurrent rotation fails here instead of clobbering).
        let (new_next, _) = SigningKey::load_or_generate(&next_file)?;
        let mut removed = Vec::new();
        for (retired_at, path) in retired_files(key_file)? {
            if !is_published(retired_at, now) {
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                removed.push(path);
            }
        }
        Ok(Rotation {
            retired_kid: active.kid().to_owned(),
            active_kid: next.kid().to_owned(),
            next_kid: new_next.kid().to_owned(),
            removed,
        })
    }
}

/// Whether a key retired at `retired_at` is still published at `now`: until every token it can
/// have signed (lifetime at most [`MAX_TOKEN_TTL_SECS`]) has expired, plus the grace.
fn is_published(retired_at: u64, now: u64) -> bool {
    now < retired_at
        .saturating_add(MAX_TOKEN_TTL_SECS)
        .saturating_add(RETIRED_KEY_GRACE_SECS)
}

/// `<key_file>.next`.
pub fn next_path(key_file: &Path) -> PathBuf {
    with_suffix(key_file, ".next")
}

fn retired_path(key_file: &Path, retired_at: u64) -> PathBuf {
    with_suffix(key_file, &format!(".retired-{retired_at}"))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The retired key files of `key_file`, with their retirement times.
fn retired_files(key_file: &Path) -> Result<Vec<(u64, PathBuf)>, KeyError> {
    let Some(file_name) = key_file.file_name().and_then(|name| name.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{file_name}.retired-");
    let folder = match key_file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let entries = std::fs::read_dir(&folder).map_err(|source| KeyError::Read {
        path: folder.clone(),
        source,
    })?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| KeyError::Read {
            path: folder.clone(),
            source,
        })?;
        let name = entry.file_name();
        let Some(seconds) = name
            .to_str()
            .and_then(|name| name.strip_prefix(&prefix))
            .and_then(|rest| rest.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((seconds, entry.path()));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing_key::tests::TEST_KEY_PEM;

    const NOW: u64 = 1_800_000_000;

    fn ring_dir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("signing.pem");
        std::fs::write(&key_file, TEST_KEY_PEM).unwrap();
        (dir, key_file)
    }

    fn kids(set: &JwkSet) -> Vec<String> {
        set.keys.iter().map(|key| key.kid.clone()).collect()
    }

    #[test]
    fn first_start_publishes_the_active_and_the_next_key() {
        let (_dir, key_file) = ring_dir();
        let (ring, origin) = KeyRing::load_or_init(&key_file, NOW).unwrap();
        assert_eq!(origin, KeyOrigin::Loaded);
        assert!(next_path(&key_file).exists());
        assert_ne!(ring.active().kid(), ring.next().kid());
        assert_eq!(
            kids(&ring.jwks()),
            vec![ring.active().kid().to_owned(), ring.next().kid().to_owned()]
        );
        // Loading again gives the same ring (the next key is not regenerated).
        let (again, _) = KeyRing::load_or_init(&key_file, NOW).unwrap();
        assert_eq!(kids(&again.jwks()), kids(&ring.jwks()));
    }

    #[test]
    fn rotation_keeps_the_retired_key_published_until_its_tokens_expire() {
        let (_dir, key_file) = ring_dir();
        let (before, _) = KeyRing::load_or_init(&key_file, NOW).unwrap();
        let rotation = KeyRing::rotate(&key_file, NOW).unwrap();
        assert_eq!(rotation.retired_kid, before.active().kid());
        assert_eq!(rotation.active_kid, before.next().kid());
        assert!(rotation.removed.is_empty());

        let (after, _) = KeyRing::load_or_init(&key_file, NOW + 1).unwrap();
        // The former next key signs now: verifiers already had it.
        assert_eq!(after.active().kid(), before.next().kid());
        assert_eq!(after.next().kid(), rotation.next_kid);
        // The former active key still verifies its tokens.
        assert!(after.key(before.active().kid()).is_some());
        assert_eq!(after.jwks().keys.len(), 3);

        // Once its last token has expired (max lifetime + grace), it is no longer published...
        let last = NOW + MAX_TOKEN_TTL_SECS + RETIRED_KEY_GRACE_SECS;
        let (late, _) = KeyRing::load_or_init(&key_file, last - 1).unwrap();
        assert!(late.key(before.active().kid()).is_some());
        let (expired, _) = KeyRing::load_or_init(&key_file, last).unwrap();
        assert!(expired.key(before.active().kid()).is_none());
        assert_eq!(expired.jwks().keys.len(), 2);
        // ...and the next rotation removes its file.
        let second = KeyRing::rotate(&key_file, last).unwrap();
        assert_eq!(second.removed, vec![retired_path(&key_file, NOW)]);
        assert!(!retired_path(&key_file, NOW).exists());
    }

    #[test]
    fn rotation_without_a_ring_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = KeyRing::rotate(&dir.path().join("absent.pem"), NOW).unwrap_err();
        assert!(matches!(err, KeyError::Missing { .. }), "{err}");
    }

    #[test]
    fn unrelated_files_next_to_the_key_are_ignored() {
        let (dir, key_file) = ring_dir();
        std::fs::write(dir.path().join("signing.pem.retired-soon"), "x").unwrap();
        std::fs::write(dir.path().join("other.pem.retired-1"), "x").unwrap();
        let (ring, _) = KeyRing::load_or_init(&key_file, NOW).unwrap();
        assert_eq!(ring.jwks().keys.len(), 2);
    }
}
