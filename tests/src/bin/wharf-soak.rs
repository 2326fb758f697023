//! `cargo xtask soak`: containers churned through a real `wharfd` while it is SIGKILLed and
//! restarted at random moments; exits 1 unless nothing was lost, leaked or hung. See
//! `wharf_tests::soak`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use wharf_tests::ExecutorKind;
use wharf_tests::soak::{SoakConfig, run};
use wharf_tests::system::missing_prerequisite;

/// Soak wharfd with faults: churn containers while killing the daemon and shims.
#[derive(Debug, Parser)]
struct Args {
    /// Executors to soak, one after the other.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["libcontainer", "runc"])]
    executor: Vec<ExecutorKind>,
    /// Seconds of churn per executor (the chaos goes on until `--min-kills`).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Client tasks churning containers.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Daemon kills to make at least, per executor.
    #[arg(long, default_value_t = 20)]
    min_kills: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(reason) = missing_prerequisite() {
        eprintln!("soak: {reason}");
        return ExitCode::FAILURE;
    }
    let mut passed = true;
    for executor in args.executor {
        println!(
            "soak ({} executor): {} clients, {} s, at least {} daemon kills",
            executor.as_str(),
            args.clients,
            args.seconds,
            args.min_kills
        );
        let report = run(SoakConfig {
            executor,
            clients: args.clients,
            duration: Duration::from_secs(args.seconds),
            min_kills: args.min_kills,
        })
        .await;
        print!("{}", report.render());
        let enough_kills = report.daemon_kills >= args.min_kills;
        if report.passed() && enough_kills {
            println!("soak ({}): passed\n", executor.as_str());
        } else {
            println!("soak ({}): FAILED\n", executor.as_str());
            passed = false;
        }
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
