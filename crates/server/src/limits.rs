//! The open-file limit: the daemon raises its own, since it holds a connection (and event
//! files) per container, and gives the one it started with back to the shims it spawns, so
//! containers do not inherit a limit meant for a daemon.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The hard limit a privileged process raises a lower one to (capped at `fs.nr_open`):
/// systemd's default hard limit.
const PRIVILEGED_TARGET: u64 = 1 << 19;

/// A process's `RLIMIT_NOFILE`: soft (what `open` is held to) and hard (the ceiling an
/// unprivileged process may raise its soft limit to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFilesLimit {
    /// The soft limit.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

impl OpenFilesLimit {
    /// This process's limit now.
    #[must_use]
    pub fn current() -> Self {
        let limit = getrlimit(Resource::Nofile);
        Self {
            soft: limit.current.unwrap_or(u64::MAX),
            hard: limit.maximum.unwrap_or(u64::MAX),
        }
    }

    /// Makes this the calling process's limit. A plain system call: safe between `fork` and
    /// `exec`.
    ///
    /// # Errors
    /// The kernel refuses (e.g. `EPERM` raising the hard limit unprivileged).
    pub fn apply(self) -> std::io::Result<()> {
        let finite = |n: u64| (n != u64::MAX).then_some(n);
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: finite(self.soft),
                maximum: finite(self.hard),
            },
        )
        .map_err(std::io::Error::from)
    }
}

/// How a raise went: the limit before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// The limit the process started with: give it back to children.
    pub before: OpenFilesLimit,
    /// The limit now.
    pub after: OpenFilesLimit,
}

/// Raises this process's open-file limit as far as it may: both limits to 524,288 (capped
/// at `fs.nr_open`) when the hard limit is lower and the process is privileged, otherwise
/// the soft limit to the hard one. Never lowers anything.
#[must_use]
pub fn raise_open_files() -> Raised {
    let before = OpenFilesLimit::current();
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(PRIVILEGED_TARGET);
    let target = PRIVILEGED_TARGET.min(nr_open);
    if before.hard < target {
        let _ = OpenFilesLimit {
            soft: target,
            hard: target,
        }
        .apply();
    }
    let now = OpenFilesLimit::current();
    if now.soft < now.hard {
        let _ = OpenFilesLimit {
            soft: now.hard,
            hard: now.hard,
        }
        .apply();
    }
    Raised {
        before,
        after: OpenFilesLimit::current(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_never_lowers_and_reaches_the_hard_limit() {
        // Runs in its own process under nextest; under `cargo test` it raises the soft
        // limit of the test binary, which harms nothing.
        let raised = raise_open_files();
        assert!(raised.after.soft >= raised.before.soft, "{raised:?}");
        assert!(raised.after.hard >= raised.before.hard, "{raised:?}");
        assert_eq!(raised.after.soft, raised.after.hard, "{raised:?}");
        assert_eq!(raised.after, OpenFilesLimit::current());
    }
}
