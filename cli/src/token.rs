//! `behavry token ...`: agent access tokens, minted offline with the authz-sidecar's own config
//! and key file (the sidecar does not need to be running).
//!
//! The key is never generated here: the sidecar owns it (it creates it at first start). A CLI that
//! made its own key from a mistyped path would mint tokens that Envoy can never verify.
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use behavry_authz::{Config, EnvSource, ProcessEnv, SigningKey, mint_token};

/// Mint a token for `agent` with the key and issuer of the authz-sidecar config at `config`.
/// The `BEHAVRY_AUTHZ_*` environment overrides apply, as they do for the sidecar.
pub fn mint(agent: &str, config: &Path, ttl: Option<u64>) -> anyhow::Result<ExitCode> {
    let token = mint_with_env(agent, config, ttl, &ProcessEnv)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{token}").context("cannot write the token to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn mint_with_env(
    agent: &str,
    config_path: &Path,
    ttl: Option<u64>,
    env: &dyn EnvSource,
) -> anyhow::Result<String> {
    let config = Config::load(config_path, env)?;
    let key = SigningKey::load(&config.key_file)?;
    let token = mint_token(&config, &key, agent, ttl)?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use super::*;

    const TEST_KEY_PEM: &str = include_str!("../../authz-sidecar/testdata/test-signing-key.pem");

    /// A fresh folder under the system temp dir, removed on drop.
    struct ScratchDir(PathBuf);

    impl ScratchDir {
        fn new(name: &str) -> ScratchDir {
            let path = std::env::temp_dir()
                .join(format!("behavry-cli-token-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            ScratchDir(path)
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write_config(dir: &Path) -> PathBuf {
        let config = dir.join("authz.toml");
        std::fs::write(
            &config,
            "key_file = \"keys/signing.pem\"\n[[agents]]\nid = \"demo-agent\"\n",
        )
        .unwrap();
        config
    }

    /// The JWT payload, decoded without verification (RFC 4648 §5 base64url, no padding; the
    /// cli crate has no base64 dependency and the authz crate's own tests verify signatures).
    fn claims(token: &str) -> serde_json::Value {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let payload = token.split('.').nth(1).unwrap();
        let mut bits: u32 = 0;
        let mut bit_count = 0;
        let mut bytes = Vec::new();
        for c in payload.bytes() {
            let value = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
            bits = (bits << 6) | value;
            bit_count += 6;
            if bit_count >= 8 {
                bit_count -= 8;
                bytes.push((bits >> bit_count) as u8);
                bits &= (1 << bit_count) - 1;
            }
        }
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn mints_with_the_config_key_relative_to_the_config_file() {
        let dir = ScratchDir::new("ok");
        let config = write_config(&dir.0);
        std::fs::create_dir_all(dir.0.join("keys")).unwrap();
        std::fs::write(dir.0.join("keys/signing.pem"), TEST_KEY_PEM).unwrap();

        let token = mint_with_env("demo-agent", &config, Some(60), &HashMap::new()).unwrap();
        assert_eq!(token.split('.').count(), 3);
        let claims = claims(&token);
        assert_eq!(claims["sub"], "demo-agent");
        assert_eq!(claims["iss"], "behavry-authz");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            60
        );
    }

    #[test]
    fn missing_key_is_not_generated() {
        let dir = ScratchDir::new("nokey");
        let config = write_config(&dir.0);
        let err = mint_with_env("demo-agent", &config, None, &HashMap::new()).unwrap_err();
        assert!(
            format!("{err:#}").contains("start the authz-sidecar once"),
            "{err:#}"
        );
        assert!(!dir.0.join("keys/signing.pem").exists());
    }

    #[test]
    fn unknown_agent_is_refused() {
        let dir = ScratchDir::new("unknown");
        let config = write_config(&dir.0);
        std::fs::create_dir_all(dir.0.join("keys")).unwrap();
        std::fs::write(dir.0.join("keys/signing.pem"), TEST_KEY_PEM).unwrap();
        let err = mint_with_env("intruder", &config, None, &HashMap::new()).unwrap_err();
        assert!(format!("{err:#}").contains("not enrolled"), "{err:#}");
    }
}
