//! [`OomWatch`]: out-of-memory kills in a cgroup, as a counter and a descriptor to wait on.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcgroups::common::CgroupSetup;

use crate::Error;

/// Watches a cgroup for OOM kills.
///
/// [`OomWatch::kills`] reads the kernel's count of OOM kills in the cgroup;
/// [`OomWatch::notification`] becomes readable when it may have changed (cgroup v1: an
/// eventfd registered on `memory.oom_control`; v2: inotify on `memory.events`). A waiter
/// calls [`OomWatch::acknowledge`], then reads the count, and reports the kills it had not
/// seen. Reading the count never waits, so an exit path can read it first, to report a
/// kill before the exit it caused.
#[derive(Debug)]
pub struct OomWatch {
    /// `memory.oom_control` (v1) or `memory.events` (v2), whose `oom_kill` line counts.
    counter: PathBuf,
    notify: OwnedFd,
    /// v1: the open `memory.oom_control` the eventfd is registered on.
    _oom_control: Option<File>,
}

impl OomWatch {
    /// Watches the cgroup `cgroup_path` (relative to the hierarchy roots) of this host.
    ///
    /// # Errors
    /// The memory controller's files of the cgroup cannot be opened or watched.
    pub fn new(cgroup_path: &Path) -> Result<Self, Error> {
        let relative = cgroup_path.strip_prefix("/").unwrap_or(cgroup_path);
        let setup = libcgroups::common::get_cgroup_setup().map_err(|err| Error::Cgroup {
            path: cgroup_path.to_path_buf(),
            message: format!("detecting the cgroup setup: {err}"),
            gone: false,
        })?;
        let io_error = |what: &str, err: std::io::Error| Error::Cgroup {
            path: cgroup_path.to_path_buf(),
            message: format!("{what}: {err}"),
            gone: err.kind() == std::io::ErrorKind::NotFound,
        };
        match setup {
            CgroupSetup::Unified => {
                let dir = Path::new("/sys/fs/cgroup").join(relative);
                let counter = dir.join("memory.events");
                let notify = rustix::fs::inotify::init(
                    rustix::fs::inotify::CreateFlags::CLOEXEC
                        | rustix::fs::inotify::CreateFlags::NONBLOCK,
                )
                .map_err(|err| io_error("creating an inotify", err.into()))?;
                rustix::fs::inotify::add_watch(
                    &notify,
                    &counter,
                    rustix::fs::inotify::WatchFlags::MODIFY,
                )
                .map_err(|err| io_error("watching memory.events", err.into()))?;
                Ok(Self {
                    counter,
                    notify,
                    _oom_control: None,
                })
            }
            CgroupSetup::Legacy | CgroupSetup::Hybrid => {
                let memory = libcgroups::v1::util::get_subsystem_mount_point(
                    &libcgroups::v1::ControllerType::Memory,
                )
                .map_err(|err| Error::Cgroup {
                    path: cgroup_path.to_path_buf(),
                    message: format!("finding the memory controller: {err}"),
                    gone: false,
                })?;
                let dir = memory.join(relative);
                let counter = dir.join("memory.oom_control");
                let oom_control = File::open(&counter)
                    .map_err(|err| io_error("opening memory.oom_control", err))?;
                let notify = rustix::event::eventfd(
                    0,
                    rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
                )
                .map_err(|err| io_error("creating an eventfd", err.into()))?;
                let registration = format!("{} {}", notify.as_raw_fd(), oom_control.as_raw_fd());
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("cgroup.event_control"))
                    .and_then(|mut control| control.write_all(registration.as_bytes()))
                    .map_err(|err| io_error("registering on cgroup.event_control", err))?;
                Ok(Self {
                    counter,
                    notify,
                    _oom_control: Some(oom_control),
                })
            }
        }
    }

    /// OOM kills in the cgroup so far.
    ///
    /// # Errors
    /// The counter cannot be read (the cgroup is gone: [`crate::ErrorKind::Gone`]).
    pub fn kills(&self) -> Result<u64, Error> {
        let text = std::fs::read_to_string(&self.counter).map_err(|err| Error::Cgroup {
            path: self.counter.clone(),
            message: err.to_string(),
            gone: err.kind() == std::io::ErrorKind::NotFound,
        })?;
        Ok(oom_kills(&text))
    }

    /// Readable when the count may have changed (non-blocking).
    pub fn notification(&self) -> BorrowedFd<'_> {
        self.notify.as_fd()
    }

    /// Consumes what made [`OomWatch::notification`] readable.
    pub fn acknowledge(&self) {
        let mut buffer = [0u8; 4096];
        while matches!(rustix::io::read(&self.notify, &mut buffer), Ok(n) if n > 0) {}
    }
}

/// The `oom_kill` line of `memory.oom_control` or `memory.events`.
fn oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oom_kill_line_counts_in_both_versions() {
        assert_eq!(
            oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            3
        );
        assert_eq!(
            oom_kills("low 0\nhigh 0\nmax 2\noom 2\noom_kill 2\noom_group_kill 0\n"),
            2
        );
        assert_eq!(oom_kills("oom_kill_disable 0\n"), 0);
    }
}
