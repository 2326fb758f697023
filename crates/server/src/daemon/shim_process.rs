//! A container's shim as the daemon holds it: a child it spawned (and reaps), or a shim
//! it adopted at start, whose parent was an earlier daemon (watched through a pidfd).

use std::time::Duration;

use tokio::io::Interest;

use super::record::{Liveness, ProcessIdentity};
use crate::fdio::AsyncOwnedFd;

#[derive(Debug)]
pub(crate) enum ShimProcess {
    /// Spawned by this daemon.
    Child {
        child: tokio::process::Child,
        identity: ProcessIdentity,
    },
    /// Spawned by an earlier daemon: not our child, told apart from a recycled pid by its
    /// start time.
    Adopted(ProcessIdentity),
}

impl ShimProcess {
    pub(crate) fn spawned(child: tokio::process::Child) -> Self {
        let identity = ProcessIdentity::of(child.id().unwrap_or(0));
        Self::Child { child, identity }
    }

    pub(crate) fn identity(&self) -> ProcessIdentity {
        match self {
            Self::Child { identity, .. } | Self::Adopted(identity) => *identity,
        }
    }

    /// Sends `signal` if the shim is still the recorded process.
    pub(crate) fn signal(&self, signal: rustix::process::Signal) {
        let identity = self.identity();
        if identity.liveness() == Liveness::Alive
            && let Some(pid) = i32::try_from(identity.pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }

    /// Waits up to `limit` for the shim to exit, then kills it. Returns whether it exited
    /// by itself.
    pub(crate) async fn wait_exit(&mut self, limit: Duration) -> bool {
        match self {
            Self::Child { child, .. } => match tokio::time::timeout(limit, child.wait()).await {
                Ok(_) => true,
                Err(_) => {
                    let _ = child.kill().await;
                    false
                }
            },
            Self::Adopted(identity) => {
                let identity = *identity;
                if tokio::time::timeout(limit, exited(identity)).await.is_ok() {
                    return true;
                }
                self.signal(rustix::process::Signal::KILL);
                let _ = tokio::time::timeout(Duration::from_secs(5), exited(identity)).await;
                false
            }
        }
    }
}

/// Resolves once the process has exited (a zombie counts): through a pidfd, which becomes
/// readable at exit, or by polling if pidfds are unavailable.
async fn exited(identity: ProcessIdentity) {
    let pidfd = i32::try_from(identity.pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .and_then(|pid| {
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK).ok()
        });
    // Checked after opening the pidfd: it then refers to the recorded process, or to none.
    if identity.liveness() != Liveness::Alive {
        return;
    }
    match pidfd.and_then(|fd| AsyncOwnedFd::new(fd, Interest::READABLE).ok()) {
        Some(pidfd) => {
            let _ = pidfd.readable().await;
        }
        None => {
            while identity.liveness() == Liveness::Alive {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_adopted_process_is_seen_exiting_through_its_pidfd() {
        // A process that is not our child: a grandchild started through sh.
        let out = std::process::Command::new("sh")
            .args(["-c", "sleep 0.3 >/dev/null 2>&1 & echo $!"])
            .output()
            .unwrap();
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let identity = ProcessIdentity::of(pid);
        assert_eq!(identity.liveness(), Liveness::Alive);
        let mut shim = ShimProcess::Adopted(identity);
        assert!(
            shim.wait_exit(Duration::from_secs(10)).await,
            "it exits by itself"
        );
        assert_ne!(identity.liveness(), Liveness::Alive);
    }
}
