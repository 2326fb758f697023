//! `wharf-shim`: owns one container. Started by `wharfd` (or any client) with the container's
//! state directory as its working directory; serves `containerd.shim.v1.Shim` on `shim.sock`.

use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use wharf_libcontainer_executor::LibcontainerExecutor;
use wharf_runc_executor::RuncExecutor;
use wharf_server::daemon::config::ExecutorKind;
use wharf_server::logging::{self, LogFormat};
use wharf_server::shim::{self, ShimConfig};

/// Owns one container: runs it with the runtime, reaps its processes, copies its stdio and
/// keeps their exit statuses, serving `containerd.shim.v1.Shim` on `./shim.sock`.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Which executor runs the container.
    #[arg(long, value_enum, default_value_t = ExecutorKind::Libcontainer)]
    executor: ExecutorKind,
    /// The executor's state directory (runc's `--root`, libcontainer's root), shared by
    /// every shim of a daemon [default: /run/wharf/<executor>].
    #[arg(long, alias = "runtime-root")]
    executor_root: Option<PathBuf>,
    /// The runtime binary for a Create that names none (runc executor).
    #[arg(long, default_value = "runc")]
    runtime: PathBuf,
    /// The CRIU binary for checkpoints and restores.
    #[arg(long, default_value = wharf_server::daemon::config::DEFAULT_CRIU_PATH)]
    criu: PathBuf,
    /// Serve on the listening socket passed as stdin (as `wharfd` does) instead of binding
    /// `./shim.sock`.
    #[arg(long)]
    socket_from_stdin: bool,
    /// Deadline of each runtime command, in seconds.
    #[arg(long, default_value_t = 60)]
    command_timeout: u64,
    /// Log at debug level.
    #[arg(long)]
    debug: bool,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    // Ignored signals inherited from whoever started the daemon (and glibc's spawn) would be
    // inherited by every container; start clean, keeping Rust's ignored SIGPIPE.
    let _ = wharf_executor::signals::reset_dispositions(&[libc::SIGPIPE]);
    let args = Args::parse();
    // Container processes are cloned from the shim (libcontainer) and log until they exec.
    logging::init_on_private_stderr(args.log_format, args.debug);
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: Args) -> anyhow::Result<()> {
    let state_dir = std::env::current_dir().context("reading the working directory")?;
    let listener = if args.socket_from_stdin {
        let fd = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .context("taking the listening socket from stdin")?;
        UnixListener::from(fd)
    } else {
        bind_here().context("binding ./shim.sock")?
    };
    let executor_root = args
        .executor_root
        .unwrap_or_else(|| PathBuf::from("/run/wharf").join(args.executor.as_str()));
    let config = ShimConfig {
        executor_root,
        default_runtime: args.runtime,
        state_dir,
        command_timeout: Duration::from_secs(args.command_timeout),
        criu: args.criu,
        exit_flush_timeout: Duration::from_secs(10),
    };
    // One thread: the shim is small, and a single-threaded process is what forking
    // in-process runtimes (libcontainer) require.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match args.executor {
        ExecutorKind::Runc => runtime.block_on(shim::run::<RuncExecutor>(config, listener)),
        ExecutorKind::Libcontainer => {
            runtime.block_on(shim::run::<LibcontainerExecutor>(config, listener))
        }
    }
}

/// Binds `shim.sock` in the working directory (a relative path: any directory length works),
/// replacing a stale socket but refusing one a live shim serves.
fn bind_here() -> anyhow::Result<UnixListener> {
    let name = wharf_shim_proto::SOCKET_NAME;
    if std::os::unix::net::UnixStream::connect(name).is_ok() {
        anyhow::bail!("another shim already serves {name} in this directory");
    }
    match std::fs::remove_file(name) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).context("removing a stale socket"),
    }
    Ok(wharf_shim_proto::bind(name)?)
}
