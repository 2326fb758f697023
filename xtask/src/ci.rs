//! `cargo xtask ci`: every check and test CI runs, in order, stopping at the first failure.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::{cargo, codegen, run, setup};

pub(crate) fn run_ci(root: &Path) -> Result<()> {
    setup::run_setup(root)?;
    step("cargo fmt --check");
    run(Command::new(cargo())
        .args(["fmt", "--all", "--", "--check"])
        .current_dir(root))?;
    step("cargo clippy");
    run(Command::new(cargo())
        .args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .current_dir(root))?;
    step("cargo deny");
    run(Command::new(cargo())
        .args(["deny", "check", "bans", "licenses", "sources"])
        .current_dir(root))?;
    step("codegen --check");
    codegen::run(root, true)?;
    step("cargo nextest");
    // CI=1: a test that cannot run here (no root, no runc) fails instead of skipping.
    run(Command::new(cargo())
        .args([
            "nextest",
            "run",
            "--workspace",
            "--profile",
            "ci",
            "--no-tests",
            "fail",
        ])
        .env("CI", "1")
        .current_dir(root))?;
    step("doc tests");
    run(Command::new(cargo())
        .args(["test", "--workspace", "--doc"])
        .current_dir(root))?;
    eprintln!("ci: all checks passed");
    Ok(())
}

fn step(name: &str) {
    eprintln!("\n=== ci: {name}");
}
