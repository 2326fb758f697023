//! [`Sampler`]: one container's cgroup manager and init, read on demand.

use std::path::{Path, PathBuf};

use libcgroups::common::{AnyCgroupManager, CgroupConfig, CgroupManager};

use crate::sample::{Interface, Sample};

/// Coarse class of an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The process or its cgroup is gone (the container exited).
    Gone,
    /// Anything else: an unreadable or malformed file.
    Internal,
}

/// A sampling failure, naming the cgroup or process.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The cgroup could not be read.
    #[error("reading cgroup {path}: {message}")]
    Cgroup {
        /// The cgroup, relative to the hierarchy roots.
        path: PathBuf,
        /// What failed.
        message: String,
        /// Whether the cgroup is gone.
        gone: bool,
    },
    /// A process's `/proc` entry could not be read.
    #[error("reading /proc/{pid}/{file}: {source}")]
    Process {
        /// The process.
        pid: u32,
        /// The file, e.g. `net/dev`.
        file: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The class of the failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Cgroup { gone: true, .. } => ErrorKind::Gone,
            Error::Cgroup { .. } => ErrorKind::Internal,
            Error::Process { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::Gone
            }
            Error::Process { .. } => ErrorKind::Internal,
        }
    }
}

/// Samples one container: its cgroup manager is made once and kept.
pub struct Sampler {
    cgroup: AnyCgroupManager,
    cgroup_path: PathBuf,
    init: Option<u32>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("cgroup_path", &self.cgroup_path)
            .field("init", &self.init)
            .finish_non_exhaustive()
    }
}

impl Sampler {
    /// A sampler of cgroup `cgroup_path` (relative to the hierarchy roots, as in
    /// `linux.cgroupsPath`) on this host's cgroup setup (v1, hybrid or v2), and of the network
    /// interfaces of `init`, if given.
    ///
    /// # Errors
    /// The cgroup setup cannot be detected.
    pub fn new(cgroup_path: &Path, init: Option<u32>) -> Result<Self, Error> {
        let cgroup = libcgroups::common::create_cgroup_manager(CgroupConfig {
            cgroup_path: cgroup_path.to_path_buf(),
            systemd_cgroup: false,
            container_name: String::new(),
        })
        .map_err(|err| cgroup_error(cgroup_path, &err))?;
        Ok(Self {
            cgroup,
            cgroup_path: cgroup_path.to_path_buf(),
            init,
        })
    }

    /// A sampler of cgroup `cgroup_path` in the cgroup v2 tree mounted at `root` (a copy of
    /// one, in tests), and of the network interfaces of `init`, if given.
    ///
    /// # Errors
    /// `cgroup_path` leaves `root`.
    pub fn unified(root: &Path, cgroup_path: &Path, init: Option<u32>) -> Result<Self, Error> {
        let manager =
            libcgroups::v2::manager::Manager::new(root.to_path_buf(), cgroup_path.to_path_buf())
                .map_err(|err| cgroup_error(cgroup_path, &err))?;
        Ok(Self {
            cgroup: manager.any(),
            cgroup_path: cgroup_path.to_path_buf(),
            init,
        })
    }

    /// The cgroup sampled.
    pub fn cgroup_path(&self) -> &Path {
        &self.cgroup_path
    }

    /// Reads the cgroup's counters and the init's interfaces now.
    ///
    /// # Errors
    /// [`ErrorKind::Gone`] once the container has exited; `Internal` for unreadable files.
    pub fn sample(&self) -> Result<Sample, Error> {
        let stats = self
            .cgroup
            .stats()
            .map_err(|err| cgroup_error(&self.cgroup_path, &err))?;
        let mut sample = Sample::from(stats);
        if !matches!(self.cgroup, AnyCgroupManager::V1(_)) {
            // cgroup v2 counts CPU time in microseconds (`cpu.stat`), v1 in nanoseconds.
            let cpu = &mut sample.cpu;
            for value in [
                &mut cpu.total_ns,
                &mut cpu.user_ns,
                &mut cpu.kernel_ns,
                &mut cpu.throttling.throttled_ns,
            ] {
                *value = value.saturating_mul(1000);
            }
        }
        if let Some(pid) = self.init {
            sample.networks = interfaces(pid)?;
        }
        Ok(sample)
    }
}

/// The network interfaces in `pid`'s network namespace, by name.
fn interfaces(pid: u32) -> Result<Vec<Interface>, Error> {
    let process_error = |source: std::io::Error| Error::Process {
        pid,
        file: "net/dev",
        source,
    };
    let process = i32::try_from(pid)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::NotFound))
        .and_then(|raw| procfs::process::Process::new(raw).map_err(proc_error))
        .map_err(process_error)?;
    let devices = process
        .dev_status()
        .map_err(|err| process_error(proc_error(err)))?;
    let mut interfaces: Vec<Interface> = devices.values().map(Interface::from).collect();
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(interfaces)
}

fn proc_error(err: procfs::ProcError) -> std::io::Error {
    match err {
        procfs::ProcError::NotFound(_) => std::io::Error::from(std::io::ErrorKind::NotFound),
        procfs::ProcError::Io(err, _) => err,
        other => std::io::Error::other(other.to_string()),
    }
}

fn cgroup_error(path: &Path, err: &(dyn std::error::Error + 'static)) -> Error {
    let mut message = err.to_string();
    let mut gone = false;
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            gone |= io.kind() == std::io::ErrorKind::NotFound;
        }
        source = cause.source();
    }
    // libcgroups wraps its I/O errors in types of its own; ENOENT shows in their text.
    gone |= message.contains("(os error 2)");
    Error::Cgroup {
        path: path.to_path_buf(),
        message,
        gone,
    }
}

/// The cgroup of process `pid`, relative to the hierarchy roots, from `/proc/<pid>/cgroup`:
/// on v1 or hybrid hosts the memory controller's, on v2 the unified one.
///
/// # Errors
/// The file cannot be read (the process is gone) or names no such cgroup.
pub fn cgroup_of(pid: u32) -> Result<PathBuf, Error> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|source| {
        Error::Process {
            pid,
            file: "cgroup",
            source,
        }
    })?;
    cgroup_in(&text).ok_or_else(|| Error::Process {
        pid,
        file: "cgroup",
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "names neither a memory nor a unified cgroup",
        ),
    })
}

/// The cgroup path in a `/proc/<pid>/cgroup` text (see [`cgroup_of`]).
fn cgroup_in(text: &str) -> Option<PathBuf> {
    let mut unified = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            return Some(PathBuf::from(path));
        }
        if controllers.is_empty() {
            unified = Some(PathBuf::from(path));
        }
    }
    unified
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_controller_names_the_cgroup_on_v1_and_the_unified_line_on_v2() {
        let hybrid = "9:name=systemd:/\n4:memory:/wharf/web\n1:cpu,cpuacct:/wharf/web\n0::/\n";
        assert_eq!(cgroup_in(hybrid), Some(PathBuf::from("/wharf/web")));
        let unified = "0::/wharf/web\n";
        assert_eq!(cgroup_in(unified), Some(PathBuf::from("/wharf/web")));
        assert_eq!(cgroup_in("garbage"), None);
    }

    const PRESSURE: &str = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";

    /// A cgroup v2 directory as the kernel showed it for a container that had run a busy
    /// loop, written 64 MiB and read from a disk.
    fn captured_v2_tree() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("wharf/web");
        std::fs::create_dir_all(&dir).unwrap();
        let files = [
            (
                "cpu.stat",
                "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 10\nnr_throttled 2\nthrottled_usec 30000\n",
            ),
            ("cpu.max", "max 100000\n"),
            ("memory.current", "69206016\n"),
            ("memory.max", "max\n"),
            ("memory.swap.current", "0\n"),
            ("memory.swap.max", "max\n"),
            ("memory.swap.events", "high 0\nmax 0\nfail 0\n"),
            ("memory.peak", "70254592\n"),
            (
                "memory.stat",
                "anon 67108864\nfile 1048576\nkernel_stack 16384\nslab 200000\n",
            ),
            ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"),
            ("pids.current", "3\n"),
            ("pids.max", "max\n"),
            (
                "io.stat",
                "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
            ),
            ("cgroup.controllers", "cpu io memory pids\n"),
            ("cpu.pressure", PRESSURE),
            ("memory.pressure", PRESSURE),
            ("io.pressure", PRESSURE),
        ];
        for (name, contents) in files {
            std::fs::write(dir.join(name), contents).unwrap();
        }
        // libcgroups reads one set of hugetlb files per page size this host supports.
        for entry in std::fs::read_dir("/sys/kernel/mm/hugepages")
            .into_iter()
            .flatten()
        {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let kb: u64 = name
                .trim_start_matches("hugepages-")
                .trim_end_matches("kB")
                .parse()
                .unwrap();
            let size = match kb {
                kb if kb >= 1 << 20 => format!("{}GB", kb >> 20),
                kb if kb >= 1 << 10 => format!("{}MB", kb >> 10),
                kb => format!("{kb}KB"),
            };
            for (suffix, contents) in [("events", "max 0\n"), ("current", "0\n"), ("max", "max\n")]
            {
                std::fs::write(dir.join(format!("hugetlb.{size}.{suffix}")), contents).unwrap();
            }
        }
        root
    }

    #[test]
    fn a_captured_v2_cgroup_reads_into_a_sample() {
        let root = captured_v2_tree();
        let sampler = Sampler::unified(root.path(), Path::new("wharf/web"), None).unwrap();
        let sample = sampler.sample().unwrap();
        assert_eq!(sample.cpu.total_ns, 2_500_000_000);
        assert_eq!(sample.cpu.user_ns, 2_000_000_000);
        assert_eq!(sample.cpu.kernel_ns, 500_000_000);
        assert_eq!(sample.cpu.throttling.throttled_periods, 2);
        assert_eq!(sample.cpu.throttling.throttled_ns, 30_000_000);
        assert_eq!(sample.memory.usage.usage, 69_206_016);
        assert_eq!(sample.memory.stat.get("anon"), Some(&67_108_864));
        assert_eq!(sample.pids.current, 3);
        let read = sample
            .blkio
            .service_bytes
            .iter()
            .find(|e| e.op == "read")
            .unwrap();
        assert_eq!((read.major, read.minor, read.value), (8, 0, 4096));
        assert!(sample.networks.is_empty());
    }

    #[test]
    fn a_removed_cgroup_is_gone() {
        let root = captured_v2_tree();
        let sampler = Sampler::unified(root.path(), Path::new("wharf/web"), None).unwrap();
        std::fs::remove_dir_all(root.path().join("wharf/web")).unwrap();
        let err = sampler.sample().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Gone, "{err}");
        assert!(err.to_string().contains("wharf/web"), "{err}");
    }

    #[test]
    fn this_process_has_interfaces_and_a_cgroup() {
        let me = std::process::id();
        assert!(cgroup_of(me).is_ok());
        let mine = interfaces(me).unwrap();
        assert!(mine.iter().any(|i| i.name == "lo"), "{mine:?}");
        let gone = interfaces(u32::MAX >> 1).unwrap_err();
        assert_eq!(gone.kind(), ErrorKind::Gone);
    }
}
