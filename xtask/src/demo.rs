//! `cargo xtask demo`: sets the machine up, then runs a container through `wharf-shim`,
//! showing its events and output.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::{cargo, run, setup};

pub(crate) fn run_demo(root: &Path) -> Result<()> {
    setup::run_setup(root, setup::Extras::default())?;
    run(Command::new(cargo())
        .args([
            "run",
            "--quiet",
            "--release",
            "--package",
            "wharf-tests",
            "--bin",
            "wharf-demo",
        ])
        .current_dir(root))
}
