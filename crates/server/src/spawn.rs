//! Starting a `wharf-shim` for a container.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

use wharf_shim_proto::SOCKET_NAME;

use crate::daemon::config::ExecutorKind;

/// How to start shims.
#[derive(Debug, Clone)]
pub struct ShimOptions {
    /// The `wharf-shim` binary.
    pub binary: PathBuf,
    /// Which executor the shims run containers with.
    pub executor: ExecutorKind,
    /// The executor's state directory, shared by all shims.
    pub executor_root: PathBuf,
    /// The runtime binary for containers whose `Create` names none (runc executor).
    pub default_runtime: PathBuf,
    /// The CRIU binary for checkpoints and restores.
    pub criu: PathBuf,
    /// Log at debug level.
    pub debug: bool,
    /// Log as JSON lines.
    pub json_logs: bool,
    /// The open-file limit shims get, when not this process's: the one the daemon started
    /// with, before it raised its own.
    pub open_files: Option<crate::limits::OpenFilesLimit>,
}

/// A shim just started.
#[derive(Debug)]
pub struct SpawnedShim {
    /// Its socket, `<state_dir>/shim.sock`, already accepting connections.
    pub socket: PathBuf,
    /// The shim process: wait on it (`child.wait().await`) to reap it when it exits.
    pub child: Child,
}

/// This process's `PATH` with `dir` first (`None` if `dir` is `None` or cannot be joined).
fn path_with_first(dir: Option<&Path>) -> Option<std::ffi::OsString> {
    let dir = dir.filter(|dir| !dir.as_os_str().is_empty())?;
    let rest = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&rest));
    std::env::join_paths(dirs).ok()
}

/// Starts a shim for the container whose state directory `state_dir` the caller created.
///
/// The socket is bound here and handed to the shim as its stdin, so the caller can connect
/// at once, without waiting for the shim to start. The shim runs in `state_dir`, in its own
/// process group, and logs to `state_dir/shim.log`.
///
/// # Errors
/// The socket cannot be bound (e.g. a shim already serves there) or the shim not started.
pub fn spawn_shim(options: &ShimOptions, state_dir: &Path) -> io::Result<SpawnedShim> {
    let socket = state_dir.join(SOCKET_NAME);
    let listener = wharf_shim_proto::bind(&socket)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join("shim.log"))?;
    let mut command = Command::new(&options.binary);
    command
        .arg("--socket-from-stdin")
        .args(["--executor", options.executor.as_str()])
        .arg("--executor-root")
        .arg(&options.executor_root)
        .arg("--runtime")
        .arg(&options.default_runtime)
        .arg("--criu")
        .arg(&options.criu)
        .current_dir(state_dir)
        .process_group(0)
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(listener)))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    // libcontainer dumps with the `criu` PATH finds: make it the configured one.
    if let Some(path) = path_with_first(options.criu.parent()) {
        command.env("PATH", path);
    }
    if options.debug {
        command.arg("--debug");
    }
    if options.json_logs {
        command.args(["--log-format", "json"]);
    }
    if let Some(limit) = options.open_files {
        // SAFETY: between fork and exec the closure makes one system call (setrlimit) and
        // touches no lock or allocator.
        unsafe {
            command.pre_exec(move || limit.apply());
        }
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            let _ = std::fs::remove_file(&socket);
            return Err(err);
        }
    };
    Ok(SpawnedShim { socket, child })
}
