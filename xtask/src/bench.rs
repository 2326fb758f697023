//! `cargo xtask bench <name>`: benchmarks, each with its baseline measured side by side in
//! the same run. They live in `tests/benches/` (package `wharf-tests`), built in release.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::{cargo, run};

pub(crate) fn run_bench(root: &Path, name: &str, args: &[String]) -> Result<()> {
    run(Command::new(cargo())
        .args([
            "bench",
            "--quiet",
            "--package",
            "wharf-tests",
            "--bench",
            name,
            "--",
        ])
        .args(args)
        .current_dir(root))
}
