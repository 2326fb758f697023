//! The shim's reaper: the only code in the shim that waits for children.
//!
//! The shim is a child subreaper, so the container's init and execs (whose parent, the
//! runtime, exits) are re-parented to it, as are orphans from inside the container. On every
//! `SIGCHLD` the reaper collects every exited child with `wait(-1, WNOHANG)`. A child
//! started through [`Reaper::spawn`] (a runtime command) has its status handed to its
//! spawner; every other exit goes to the shim's process table.
//!
//! Signals to container processes also go through here ([`Reaper::signal`]): a pid is only
//! signalled while the reaper has not collected it, so a recycled pid is never hit.

use std::collections::{HashMap, HashSet};
use std::io;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::process::WaitOptions;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use wharf_executor::{ExitStatus, MonitoredChild, Pid, ProcessMonitor, Signal};

/// An exited child that no spawner waits for: a container process or an orphan.
pub(crate) type Exit = (Pid, ExitStatus);

#[derive(Debug)]
pub(crate) struct Reaper {
    /// Held while spawning, reaping and signalling: no child is reaped before its spawner
    /// registered for its status, and none is signalled after it was reaped.
    state: Mutex<ReaperState>,
    exits: mpsc::UnboundedSender<Exit>,
}

#[derive(Debug, Default)]
struct ReaperState {
    /// Runtime commands whose spawner waits for their status.
    waiters: HashMap<Pid, oneshot::Sender<ExitStatus>>,
    /// Pids reaped and sent to the process table, until it confirms ([`Reaper::forget`]).
    reaped: HashSet<Pid>,
}

/// Why [`Reaper::signal`] did not signal.
#[derive(Debug)]
pub(crate) enum SignalError {
    /// The process has been reaped: its pid may belong to someone else now.
    Reaped,
    /// `kill(2)` failed.
    Kill(io::Error),
}

impl Reaper {
    /// A reaper sending unclaimed exits to the returned receiver. Start [`Reaper::listen`]
    /// before spawning anything.
    pub(crate) fn new() -> (Self, mpsc::UnboundedReceiver<Exit>) {
        let (exits, rx) = mpsc::unbounded_channel();
        let reaper = Self {
            state: Mutex::default(),
            exits,
        };
        (reaper, rx)
    }

    fn lock(&self) -> MutexGuard<'_, ReaperState> {
        // Each critical section leaves the maps consistent: a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
        let mut state = self.lock();
        loop {
            // `wait` is waitpid(-1): any child, whatever its process group (rustix's
            // `waitpid(None)` would be pid 0: only our own process group).
            match rustix::process::wait(WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => {
                    let (Some(pid), Some(status)) = (
                        Pid::from_raw(pid.as_raw_nonzero().get()),
                        ExitStatus::from_wait_status(status.as_raw()),
                    ) else {
                        continue;
                    };
                    tracing::debug!(pid = pid.get(), %status, "reaped");
                    match state.waiters.remove(&pid) {
                        Some(waiter) => {
                            let _ = waiter.send(status);
                        }
                        None => {
                            state.reaped.insert(pid);
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

    /// The process table has recorded `pid`'s exit (or ignored it as an orphan).
    pub(crate) fn forget(&self, pid: Pid) {
        self.lock().reaped.remove(&pid);
    }

    /// Sends `signal` to `pid` unless the reaper has collected it.
    pub(crate) fn signal(&self, pid: Pid, signal: Signal) -> Result<(), SignalError> {
        let state = self.lock();
        if state.reaped.contains(&pid) {
            return Err(SignalError::Reaped);
        }
        signal.send_to(pid).map_err(SignalError::Kill)
    }
}

impl ProcessMonitor for Reaper {
    fn spawn(&self, mut command: Command) -> io::Result<MonitoredChild> {
        let mut state = self.lock();
        let mut child = command.spawn()?;
        let pid =
            Pid::new(child.id()).ok_or_else(|| io::Error::other("spawned child has no pid"))?;
        let (tx, rx) = oneshot::channel();
        state.waiters.insert(pid, tx);
        // `child` is dropped without waiting: the reaper owns waiting.
        Ok(MonitoredChild::new(pid, &mut child, rx))
    }
}
