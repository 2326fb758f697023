//! Starting helper commands when someone else may be reaping children.
//!
//! A process that reaps every child with `waitpid(-1)` (a subreaper such as `wharf-shim`)
//! races with any library that waits on its own children: whoever calls `waitpid` first gets
//! the status, the other gets `ECHILD`. Executors therefore start their helper commands (a
//! runtime binary, `criu`) through a [`ProcessMonitor`] given by the host process, which hands
//! each exit status to the one who spawned the child. [`TokioMonitor`] is the monitor for
//! processes that do not reap globally.

use std::io;
use std::os::fd::OwnedFd;
use std::process::Command;

use tokio::sync::oneshot;

use crate::{ExitStatus, Pid};

/// Starts commands and reports each one's exit status to its spawner.
pub trait ProcessMonitor: Send + Sync + std::fmt::Debug + 'static {
    /// Spawns `command` (its stdio as configured on it) and returns a handle that resolves
    /// with its exit status once it is reaped.
    ///
    /// # Errors
    /// The error of `fork`/`exec`.
    fn spawn(&self, command: Command) -> io::Result<MonitoredChild>;
}

/// A child started by a [`ProcessMonitor`]. Dropped before its exit was seen, it is killed
/// with `SIGKILL`, so an abandoned (timed out, cancelled) command never lingers.
#[derive(Debug)]
pub struct MonitoredChild {
    pid: Pid,
    /// The child's stdin, if the command asked for a pipe.
    pub stdin: Option<OwnedFd>,
    /// The child's stdout, if the command asked for a pipe.
    pub stdout: Option<OwnedFd>,
    /// The child's stderr, if the command asked for a pipe.
    pub stderr: Option<OwnedFd>,
    exit: oneshot::Receiver<ExitStatus>,
    exited: bool,
}

impl MonitoredChild {
    /// A handle for the child `pid` whose status will arrive on `exit`. For implementors of
    /// [`ProcessMonitor`]; the pipes are taken from the spawned [`std::process::Child`].
    pub fn new(
        pid: Pid,
        child: &mut std::process::Child,
        exit: oneshot::Receiver<ExitStatus>,
    ) -> Self {
        Self {
            pid,
            stdin: child.stdin.take().map(OwnedFd::from),
            stdout: child.stdout.take().map(OwnedFd::from),
            stderr: child.stderr.take().map(OwnedFd::from),
            exit,
            exited: false,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits for the child to exit.
    ///
    /// # Errors
    /// [`io::ErrorKind::BrokenPipe`] if the monitor stopped before the child was reaped.
    ///
    /// # Cancel safety
    /// Cancel safe: the status is kept for the next call.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = (&mut self.exit)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "process monitor stopped"))?;
        self.exited = true;
        Ok(status)
    }
}

impl Drop for MonitoredChild {
    fn drop(&mut self) {
        if self.exited || self.exit.try_recv().is_ok() {
            return;
        }
        // Not reaped yet, so the pid cannot have been reused: killing it is safe.
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid.as_raw()) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// A [`ProcessMonitor`] that waits on each child with `tokio::process`. Use it unless this
/// process reaps children globally. Must be used inside a tokio runtime.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioMonitor;

impl ProcessMonitor for TokioMonitor {
    fn spawn(&self, command: Command) -> io::Result<MonitoredChild> {
        let mut command = tokio::process::Command::from(command);
        command.kill_on_drop(true);
        let mut child = command.spawn()?;
        let pid = child
            .id()
            .and_then(Pid::new)
            .ok_or_else(|| io::Error::other("spawned child has no pid"))?;
        let (tx, rx) = oneshot::channel();
        let handle = MonitoredChild {
            pid,
            stdin: child.stdin.take().map(|p| p.into_owned_fd()).transpose()?,
            stdout: child.stdout.take().map(|p| p.into_owned_fd()).transpose()?,
            stderr: child.stderr.take().map(|p| p.into_owned_fd()).transpose()?,
            exit: rx,
            exited: false,
        };
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await {
                let _ = tx.send(ExitStatus::from(status));
            }
        });
        Ok(handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokio_monitor_reports_exit_codes() {
        let mut command = Command::new("sh");
        command.args(["-c", "exit 7"]);
        let mut child = TokioMonitor.spawn(command).unwrap();
        assert_eq!(child.wait().await.unwrap(), ExitStatus::Exited(7));
    }

    #[tokio::test]
    async fn dropping_an_unreaped_child_kills_it() {
        let mut command = Command::new("sleep");
        command.arg("1000");
        let child = TokioMonitor.spawn(command).unwrap();
        let pid = child.pid();
        drop(child);
        let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
        // tokio reaps it once it is dead; wait (bounded) for /proc/<pid> to disappear.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while proc_dir.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "child {pid} still alive after drop"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
