//! `behavry key rotate`: rotate the authz-sidecar's signing key ring offline (the files of
//! `key_file`, see `behavry_authz::KeyRing`). The next key, already published in the JWKS,
//! becomes the active one; the active one is retired but stays published until every token it
//! signed has expired; a new next key is made. Restart the sidecar to sign with the new key.
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use behavry_authz::{Config, EnvSource, KeyRing, ProcessEnv, Rotation};

/// Rotate the key ring of the authz-sidecar config at `config` and say what changed.
pub fn rotate(config: &Path) -> anyhow::Result<ExitCode> {
    let rotation = rotate_with_env(config, &ProcessEnv)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "retired {} (published until its tokens expire)\nactive  {}\nnext    {}",
        rotation.retired_kid, rotation.active_kid, rotation.next_kid
    )
    .context("cannot write to stdout")?;
    for path in &rotation.removed {
        writeln!(stdout, "removed {}", path.display()).context("cannot write to stdout")?;
    }
    writeln!(
        stdout,
        "restart the authz-sidecar to sign with the new active key"
    )
    .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn rotate_with_env(config_path: &Path, env: &dyn EnvSource) -> anyhow::Result<Rotation> {
    let config = Config::load(config_path, env)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    let rotation = KeyRing::rotate(&config.key_file, now).with_context(|| {
        format!(
            "cannot rotate the key ring of {}",
            config.key_file.display()
        )
    })?;
    Ok(rotation)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const TEST_KEY_PEM: &str = include_str!("../../authz-sidecar/testdata/test-signing-key.pem");

    #[test]
    fn rotation_needs_a_ring_the_sidecar_made() {
        let dir = std::env::temp_dir().join(format!("behavry-cli-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("authz.toml");
        std::fs::write(&config, "key_file = \"signing.pem\"\n").unwrap();
        std::fs::write(dir.join("signing.pem"), TEST_KEY_PEM).unwrap();
        // Only the active key: the sidecar has not published a next key yet.
        let err = rotate_with_env(&config, &HashMap::new()).unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
        let (ring, _) = KeyRing::load_or_init(&dir.join("signing.pem"), 1).unwrap();
        let rotation = rotate_with_env(&config, &HashMap::new()).unwrap();
        assert_eq!(rotation.active_kid, ring.next().kid());
        assert_eq!(rotation.retired_kid, ring.active().kid());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
