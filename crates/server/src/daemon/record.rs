//! What the daemon writes down about a container, so a new daemon can take it over:
//! `<state-dir>/containers/<id>/container.json`, always replaced atomically (write to a
//! staging file, rename). A create writes a first record (`complete: false`) once the shim runs, and the
//! complete one last, after the container started: a directory without a complete record
//! is a create a crash interrupted, torn down at the next start.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wharf_api as api;

/// File name of the record in a container's state directory.
pub(crate) const RECORD_FILE: &str = "container.json";

/// A process, told apart from a later one with the same pid by its start time (clock ticks
/// after boot, field 22 of `/proc/<pid>/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessIdentity {
    pub(crate) pid: u32,
    pub(crate) start_time: Option<u64>,
}

/// Whether a recorded process is still the one that was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Running (or stopped by a signal), with the recorded start time.
    Alive,
    /// Exited, not yet reaped by its parent: its status is not ours to read.
    Zombie,
    /// No such process, or the pid now belongs to another one.
    Gone,
}

impl ProcessIdentity {
    /// `pid`, with its start time read now.
    pub(crate) fn of(pid: u32) -> Self {
        Self {
            pid,
            start_time: stat(pid).map(|(start, _)| start),
        }
    }

    /// Whether the process is still the recorded one.
    pub(crate) fn liveness(&self) -> Liveness {
        match (stat(self.pid), self.start_time) {
            (Some((start, zombie)), Some(recorded)) if start == recorded => {
                if zombie {
                    Liveness::Zombie
                } else {
                    Liveness::Alive
                }
            }
            _ => Liveness::Gone,
        }
    }
}

/// The start time of `pid` and whether it is a zombie.
fn stat(pid: u32) -> Option<(u64, bool)> {
    let stat = procfs::process::Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .stat()
        .ok()?;
    Some((stat.starttime, stat.state == 'Z'))
}

/// How a process was started, as `State` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ProcessRecord {
    pub(crate) pid: u32,
    #[serde(default)]
    pub(crate) start_time: Option<u64>,
    pub(crate) terminal: bool,
    pub(crate) user: api::User,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<String>,
    pub(crate) cwd: String,
}

impl ProcessRecord {
    pub(crate) fn identity(&self) -> ProcessIdentity {
        ProcessIdentity {
            pid: self.pid,
            start_time: self.start_time,
        }
    }

    /// A process the shim has and no record describes (a crash lost its record).
    pub(crate) fn unknown(pid: u32) -> Self {
        Self {
            pid,
            start_time: ProcessIdentity::of(pid).start_time,
            terminal: false,
            user: api::User::default(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: String::new(),
        }
    }

    pub(crate) fn to_api(&self) -> api::Process {
        api::Process {
            pid: self.pid,
            terminal: self.terminal,
            user: Some(self.user.clone()),
            args: self.args.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
        }
    }
}

/// Everything a new daemon needs to take a container over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ContainerRecord {
    pub(crate) id: String,
    pub(crate) bundle: String,
    /// False until the container has started and this record says so.
    pub(crate) complete: bool,
    pub(crate) shim: ProcessIdentity,
    #[serde(default)]
    pub(crate) init: Option<ProcessRecord>,
    #[serde(default)]
    pub(crate) execs: Vec<ProcessRecord>,
}

impl ContainerRecord {
    pub(crate) fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(RECORD_FILE)
    }

    /// Reads the record of the container whose state directory is `state_dir`.
    ///
    /// # Errors
    /// Missing, unreadable or unparsable (all mean: no usable record).
    pub(crate) fn read(state_dir: &Path) -> io::Result<Self> {
        let bytes = std::fs::read(Self::path(state_dir))?;
        serde_json::from_slice(&bytes)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
    }

    /// Replaces the record atomically: a reader sees the old one or the new one.
    ///
    /// Not synced to disk: a record must outlive the daemon (a crash, a SIGKILL), which the
    /// page cache gives, not the machine, which its container does not outlive either (and
    /// the default state directory, under `/run`, is a tmpfs). A sync cost ~4 ms per write on
    /// a disk-backed state directory, twice per create.
    ///
    /// # Errors
    /// Writing or renaming failed.
    pub(crate) fn write(&self, state_dir: &Path) -> io::Result<()> {
        let staging = state_dir.join(".container.json.new");
        let mut file = std::fs::File::create(&staging)?;
        serde_json::to_writer(&mut file, self).map_err(io::Error::other)?;
        std::fs::rename(&staging, Self::path(state_dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = ContainerRecord {
            id: "web".into(),
            bundle: "/b".into(),
            complete: false,
            shim: ProcessIdentity::of(std::process::id()),
            init: None,
            execs: Vec::new(),
        };
        record.write(dir.path()).unwrap();
        assert_eq!(ContainerRecord::read(dir.path()).unwrap(), record);
        record.complete = true;
        record.init = Some(ProcessRecord::unknown(std::process::id()));
        record.write(dir.path()).unwrap();
        assert_eq!(ContainerRecord::read(dir.path()).unwrap(), record);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [RECORD_FILE], "no staging file left");
    }

    #[test]
    fn a_truncated_record_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(ContainerRecord::path(dir.path()), b"{\"id\":\"x\",").unwrap();
        assert!(ContainerRecord::read(dir.path()).is_err());
    }

    #[test]
    fn liveness_tells_the_same_process_from_a_recycled_pid() {
        let me = ProcessIdentity::of(std::process::id());
        assert!(me.start_time.is_some());
        assert_eq!(me.liveness(), Liveness::Alive);
        let recycled = ProcessIdentity {
            start_time: me.start_time.map(|t| t + 1),
            ..me
        };
        assert_eq!(recycled.liveness(), Liveness::Gone);
        let unknown_start = ProcessIdentity {
            start_time: None,
            ..me
        };
        assert_eq!(
            unknown_start.liveness(),
            Liveness::Gone,
            "without a start time, no claim"
        );
        assert_eq!(ProcessIdentity::of(u32::MAX).liveness(), Liveness::Gone);
    }
}
