//! The shim's reaper: the only code in the shim that waits for children.
//!
//! The shim is a child subreaper, so the container's init and execs (whose parent, the
//! runtime, exits) are re-parented to it, as are orphans from inside the container. On every
//! `SIGCHLD` the reaper collects every exited child with `waitpid(-1, WNOHANG)`. A child
//! started through [`Reaper::spawn`] (a runtime command) has its status handed to its
//! spawner; every other exit goes to the shim's process table.

use std::collections::HashMap;
use std::io;
use std::process::Command;
use std::sync::{Arc, Mutex};

use rustix::process::WaitOptions;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use wharf_executor::{ExitStatus, MonitoredChild, Pid, ProcessMonitor};

/// An exited child that no spawner waits for: a container process or an orphan.
pub(crate) type Exit = (Pid, ExitStatus);

#[derive(Debug)]
pub(crate) struct Reaper {
    /// Held while spawning and while reaping, so no child can be reaped before its spawner
    /// has registered for its status.
    waiters: Mutex<HashMap<Pid, oneshot::Sender<ExitStatus>>>,
    exits: mpsc::UnboundedSender<Exit>,
}

impl Reaper {
    /// A reaper sending unclaimed exits to the returned receiver. Call [`Reaper::run`] before
    /// spawning anything.
    pub(crate) fn new() -> (Self, mpsc::UnboundedReceiver<Exit>) {
        let (exits, rx) = mpsc::unbounded_channel();
        (
            Self {
                waiters: Mutex::default(),
                exits,
            },
            rx,
        )
    }

    /// Registers for `SIGCHLD`, then reaps on every signal until the process ends.
    ///
    /// # Errors
    /// The signal handler cannot be installed.
    pub(crate) fn listen(self: Arc<Self>) -> io::Result<impl Future<Output = ()> + Send + 'static> {
        let mut sigchld = signal(SignalKind::child())?;
        Ok(async move {
            loop {
                self.reap();
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        })
    }

    /// Collects every exited child.
    pub(crate) fn reap(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // `wait` is waitpid(-1): any child, whatever its process group (`waitpid(None)` is pid 0).
            match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => {
                    let (Some(pid), Some(status)) = (
                        Pid::from_raw(pid.as_raw_nonzero().get()),
                        ExitStatus::from_wait_status(status.as_raw()),
                    ) else {
                        continue;
                    };
                    tracing::debug!(pid = pid.get(), %status, "reaped");
                    match waiters.remove(&pid) {
                        Some(waiter) => {
                            let _ = waiter.send(status);
                        }
                        None => {
                            let _ = self.exits.send((pid, status));
                        }
                    }
                }
                Ok(None) => return,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::CHILD) => return,
                Err(err) => {
                    tracing::error!(error = %err, "waitpid failed");
                    return;
                }
            }
        }
    }
}

impl ProcessMonitor for Reaper {
    fn spawn(&self, mut command: Command) -> io::Result<MonitoredChild> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let mut child = command.spawn()?;
        let pid =
            Pid::new(child.id()).ok_or_else(|| io::Error::other("spawned child has no pid"))?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid, tx);
        // `child` is dropped without waiting: the reaper owns waiting.
        Ok(MonitoredChild::new(pid, &mut child, rx))
    }
}
