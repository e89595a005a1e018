//! `behavry policy test [DIR]`: run a policy bundle's tests — its Rego `test_` rules and the YAML
//! decision cases of `<DIR>/tests/*.yaml` (`behavry_authz::policy_cases`) — and print what
//! failed and why. Exit status 0 when everything passed, 1 when a test failed.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use behavry_authz::blast_radius::BlastRadiusConfig;
use behavry_authz::config::AgentEnrollment;
use behavry_authz::policy::run_rego_tests;
use behavry_authz::policy_cases::{case_files, read_case_file, run_case_file};

/// Totals of one run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Rego `test_` rules that passed / failed.
    pub rego: (usize, usize),
    /// YAML cases that passed / failed.
    pub cases: (usize, usize),
}

/// Run every test of the bundle in `dir`, with blast-radius `windows` (labels; the sidecar's
/// default windows when empty), printing to `out`.
pub fn test(
    dir: &Path,
    windows: &[String],
    verbose: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Summary> {
    let windows: Vec<String> = if windows.is_empty() {
        BlastRadiusConfig::default().windows.into_keys().collect()
    } else {
        windows.to_vec()
    };
    let files = case_files(dir)?;
    // The Rego tests see the agents of every case file (the first enrollment of an id wins).
    let mut agents: Vec<AgentEnrollment> = Vec::new();
    for file in &files {
        for agent in read_case_file(file)?.agents {
            if !agents.iter().any(|known| known.id == agent.id) {
                agents.push(agent);
            }
        }
    }
    let mut summary = Summary::default();
    for outcome in run_rego_tests(dir, &agents)? {
        if outcome.passed {
            summary.rego.0 += 1;
            if verbose {
                writeln!(out, "PASS {}", outcome.rule)?;
            }
        } else {
            summary.rego.1 += 1;
            writeln!(
                out,
                "FAIL {}\n    {}",
                outcome.rule,
                outcome.detail.unwrap_or_default()
            )?;
        }
    }
    for file in &files {
        for outcome in run_case_file(dir, file, &windows)? {
            if outcome.passed() {
                summary.cases.0 += 1;
                if verbose {
                    writeln!(out, "PASS {}", outcome.name)?;
                }
            } else {
                summary.cases.1 += 1;
                writeln!(out, "FAIL {}", outcome.name)?;
                for mismatch in &outcome.mismatches {
                    writeln!(out, "    {mismatch}")?;
                }
            }
        }
    }
    writeln!(
        out,
        "{}: Rego tests {} passed, {} failed; cases {} passed, {} failed",
        dir.display(),
        summary.rego.0,
        summary.rego.1,
        summary.cases.0,
        summary.cases.1
    )?;
    Ok(summary)
}

/// `behavry policy test`: exit 0 when all passed, 1 when a test failed.
pub fn run_test(dir: &Path, windows: &[String], verbose: bool) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    let summary = test(dir, windows, verbose, &mut stdout)
        .with_context(|| format!("cannot test the policy bundle in {}", dir.display()))?;
    if summary.rego.0 + summary.cases.0 + summary.rego.1 + summary.cases.1 == 0 {
        anyhow::bail!(
            "{} holds no Rego test and no case file (tests/*.yaml)",
            dir.display()
        );
    }
    Ok(if summary.rego.1 + summary.cases.1 == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
    }

    #[test]
    fn the_shipped_bundle_passes_its_tests() {
        let mut out = Vec::new();
        let summary = test(&shipped(), &[], false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(summary.rego.1 + summary.cases.1, 0, "{text}");
        assert!(summary.cases.0 >= 40, "{text}");
        assert!(text.contains("failed; cases"), "{text}");
    }

    #[test]
    fn a_failing_case_is_printed_with_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(shipped()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        std::fs::create_dir(dir.path().join("tests")).unwrap();
        std::fs::write(
            dir.path().join("tests/mine.yaml"),
            "agents: [{id: dev, roles: [developer]}]\ncases:\n  - name: echo is denied\n    input:\n      agent: {id: dev, scopes: [mcp]}\n      request: {server: everything, method: tools/call, tool: echo}\n    expect: {allow: false}\n",
        )
        .unwrap();
        let mut out = Vec::new();
        let summary = test(dir.path(), &[], false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(summary.cases, (0, 1), "{text}");
        assert!(text.contains("FAIL mine.yaml: echo is denied"), "{text}");
        assert!(text.contains("allow: expected false, got true"), "{text}");
    }
}
