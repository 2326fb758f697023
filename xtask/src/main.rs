//! Project automation for wharf: `cargo xtask <command>`.
#![allow(clippy::print_stdout)] // a command-line tool: printing is its job

mod codegen;

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "wharf project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Regenerate the gRPC code in crates/api and crates/shim-proto from proto/.
    Codegen {
        /// Fail if the checked-in code differs from what would be generated; write nothing.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Command::Codegen { check } => codegen::run(&root, check),
    }
}

/// The workspace root: xtask lives one level below it.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is a member one level below the workspace root")
        .to_path_buf()
}
