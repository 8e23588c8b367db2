//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly
#![allow(dead_code)]

pub mod simrack;
pub mod sshd;

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `kiln` with a clean environment: no colour, no inventory from the
/// caller's shell, a known BMC password variable.
pub fn kiln() -> Command {
    let mut cmd = Command::cargo_bin("kiln").expect("kiln binary");
    cmd.env_remove("KILN_INVENTORY")
        .env_remove("KILN_STATE_DIR")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .env("HOME", "/nonexistent-home")
        .env("KILN_BMC_PASSWORD", "test")
        .env("KILN_TEST_BMC_PASSWORD", "test")
        .env("KILN_DEMO_BMC_PASSWORD", "test")
        .current_dir(root());
    cmd
}

/// Runs kiln and returns (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("running kiln");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Checks inventory text with the built-in profiles, as the CLI would.
pub fn check(text: &str) -> kiln::inventory::Checked {
    let catalog = kiln::profiles::Catalog::builtin().expect("built-in profiles");
    kiln::inventory::check_str("site.yaml", text, Path::new("/nonexistent"), catalog)
}
