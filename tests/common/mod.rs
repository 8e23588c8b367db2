//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly
#![allow(dead_code)]
#![allow(clippy::print_stderr)] // a skipped test says why on the test output

pub mod simrack;
pub mod sshd;

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// The one switch for interop tests (tests that need a program kiln does
/// not ship: sshd, Chromium, slurmctld, xorriso, sushy-tools, the Redfish
/// validator). `missing` is `None` when the program is there, else how to
/// install it. Returns true, saying why on stderr, when the test should
/// skip: `KILN_SKIP_INTEROP` is set, or the program is missing. With
/// `KILN_REQUIRE_INTEROP` set (as CI does) a missing program fails the
/// test instead.
pub fn skip_interop(what: &str, missing: Option<&str>) -> bool {
    if std::env::var_os("KILN_SKIP_INTEROP").is_some() {
        eprintln!("KILN_SKIP_INTEROP is set: not running {what}");
        return true;
    }
    let Some(install) = missing else {
        return false;
    };
    assert!(
        std::env::var_os("KILN_REQUIRE_INTEROP").is_none(),
        "KILN_REQUIRE_INTEROP is set but {what} is missing: {install}"
    );
    eprintln!("{what} not found ({install}): skipping");
    true
}

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
