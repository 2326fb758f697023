//! `cargo xtask ci`: every check and test CI runs, in order, stopping at the first failure.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::{cargo, codegen, run, setup};

pub(crate) fn run_ci(root: &Path) -> Result<()> {
    // A CI build is never rebuilt incrementally; its incremental caches only cost
    // disk (2 GB of a fresh build). Every cargo below inherits this.
    // SAFETY: single-threaded here, before any child process or thread starts.
    unsafe { std::env::set_var("CARGO_INCREMENTAL", "0") };
    report_free_disk(root);
    setup::run_setup(root, setup::Extras::default())?;
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
    step("soak (bounded): 30 s per executor, at least 20 daemon kills each");
    crate::soak(
        root,
        &[
            "--seconds".into(),
            "30".into(),
            "--min-kills".into(),
            "20".into(),
        ],
    )?;
    step("doc tests");
    run(Command::new(cargo())
        .args(["test", "--workspace", "--doc"])
        .current_dir(root))?;
    eprintln!("ci: all checks passed");
    Ok(())
}

/// A full CI build takes a few GB under `target/`; say how much room there is so a
/// "No space left on device" from rustc is explained at the top of the log.
fn report_free_disk(root: &Path) {
    match rustix::fs::statvfs(root) {
        Ok(fs) => {
            let free_gib = (fs.f_bavail * fs.f_frsize) as f64 / f64::from(1u32 << 30);
            eprintln!(
                "ci: {free_gib:.1} GiB free on the disk holding {}",
                root.display()
            );
            if free_gib < 6.0 {
                eprintln!("ci: warning: a full build needs about 6 GiB; it may run out of space");
            }
        }
        Err(err) => eprintln!("ci: cannot tell free disk space: {err}"),
    }
}

fn step(name: &str) {
    eprintln!("\n=== ci: {name}");
}
