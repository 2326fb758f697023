//! `wharfd`: the wharf daemon. Serves containerd's December-2015 `types.API` on a unix
//! socket; every container runs under its own `wharf-shim` and survives the daemon.
#![allow(clippy::print_stdout)] // --print-config prints

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use wharf_server::daemon::{self, config::Config, config::ConfigFlags};
use wharf_server::logging;

/// The wharf container daemon: containerd's 2015 API on real containers, through shims.
///
/// SIGTERM or SIGINT stop serving and exit 0, leaving every container running under its
/// shim.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    flags: ConfigFlags,
    /// Print the effective configuration (defaults, file, flags) as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(&args.flags) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("wharfd: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    if args.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    logging::init(config.log_format, config.debug);
    let served = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(daemon::run(config)));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("wharfd: {err:#}");
            ExitCode::FAILURE
        }
    }
}
