//! Project automation for wharf: `cargo xtask <command>`.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line tool: printing is its job

mod bench;
mod ci;
mod codegen;
mod criu;
mod demo;
mod setup;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "wharf project automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Regenerate the gRPC code in crates/api and crates/shim-proto from proto/.
    Codegen {
        /// Fail if the checked-in code differs from what would be generated; write nothing.
        #[arg(long)]
        check: bool,
    },
    /// Install what wharf needs on Debian 12 (runc, crun, busybox-static, libseccomp-dev,
    /// cargo-deny, cargo-nextest), let crun 1.8 run on a hybrid cgroup host, and build the
    /// busybox rootfs. Idempotent; needs root.
    Setup {
        /// Also install the daemons the benchmarks compare with: Debian's containerd 1.6
        /// (for `bench scale`).
        #[arg(long)]
        peers: bool,
    },
    /// Run every check and test, as CI does: setup, fmt, clippy, deny, codegen, nextest.
    Ci,
    /// Run a benchmark: `shim`, `start`, `stats`, `checkpoint`, `scale` (each with its
    /// baseline side by side), `restart`.
    Bench {
        /// Which benchmark.
        name: String,
        /// Passed to the benchmark (e.g. `--iterations 50`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run a container through wharf and show what happens.
    Demo,
    /// Churn containers through wharfd while SIGKILLing it (and now and then a shim) at
    /// random moments; fails unless nothing was lost, leaked or hung. CI runs a bounded one.
    Soak {
        /// Passed to the soak (`--seconds 60`, `--clients 4`, `--min-kills 20`,
        /// `--executor libcontainer,runc`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Task::Codegen { check } => codegen::run(&root, check),
        Task::Setup { peers } => setup::run_setup(&root, setup::Extras { peers }),
        Task::Ci => ci::run_ci(&root),
        Task::Bench { name, args } => bench::run_bench(&root, &name, &args),
        Task::Demo => demo::run_demo(&root),
        Task::Soak { args } => soak(&root, &args),
    }
}

/// Runs the soak binary of the test harness (debug build, as the tests use).
fn soak(root: &Path, args: &[String]) -> Result<()> {
    run(Command::new(cargo())
        .args([
            "run",
            "--quiet",
            "--package",
            "wharf-tests",
            "--bin",
            "wharf-soak",
            "--",
        ])
        .args(args)
        .current_dir(root))
}

/// The workspace root: xtask lives one level below it.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is a member one level below the workspace root")
        .to_path_buf()
}

/// The cargo that runs us.
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Runs `command`, failing with its command line if it fails.
fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
