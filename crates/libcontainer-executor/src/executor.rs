//! [`LibcontainerExecutor`]: the [`Executor`] trait over youki's `libcontainer`.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use libcgroups::common::{AnyCgroupManager, CgroupConfig, CgroupManager, FreezerState};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus as LcStatus, State};
use libcontainer::error::LibcontainerError;
use libcontainer::oci_spec::runtime::Spec;
use libcontainer::syscall::syscall::SyscallType;
use wharf_executor::console::ConsoleSocket;
use wharf_executor::support;
use wharf_executor::{CheckpointRequest, RestoreRequest};
use wharf_executor::{
    ContainerId, ContainerState, ContainerStatus, CreateRequest, DeleteMode, Error, ErrorKind,
    ExecRequest, Executor, KillScope, NewProcess, Pid, Signal, Stdio,
};

use crate::error::from_libcontainer;
use crate::workload::ContainerWorkload;
use crate::{bundle, criu, loopback};

/// How long a created process's terminal may take to arrive once libcontainer returned.
/// It is sent before the process reports ready, so it is normally queued already.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the executor keeps its state.
#[derive(Debug, Clone)]
pub struct Config {
    /// libcontainer's state directory: `<root>/<id>/` per container, and
    /// `<root>/<id>+bundle/` for a bundle given an explicit cgroup path. Private to wharf.
    pub root: PathBuf,
    /// The cgroup (relative to each hierarchy's root) under which a container whose bundle
    /// names no `linux.cgroupsPath` gets `<cgroup_parent>/<id>`.
    pub cgroup_parent: PathBuf,
    /// Where each operation's transient files go (console socket, exec process spec), in a
    /// fresh directory removed when it is done.
    pub scratch_dir: PathBuf,
    /// The CRIU binary restores run. Dumps go through libcontainer, which runs the `criu`
    /// found in `PATH`; with a path set here, a dump is refused unless `PATH` finds the
    /// same file. `None`: `criu` from `PATH` for both.
    pub criu: Option<PathBuf>,
}

impl Config {
    /// State under `root`, cgroups under `/wharf`, scratch files in the system temporary
    /// directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            cgroup_parent: PathBuf::from("/wharf"),
            scratch_dir: std::env::temp_dir(),
            criu: None,
        }
    }
}

/// Runs containers in-process with youki's `libcontainer`.
///
/// `create` and `exec` clone the container's processes from the calling process, which must
/// be single-threaded (see the crate documentation); every operation runs synchronously on
/// the calling thread, within the returned future's first poll.
#[derive(Debug, Clone)]
pub struct LibcontainerExecutor {
    config: Arc<Config>,
}

impl LibcontainerExecutor {
    /// An executor keeping its state as `config` says.
    pub fn new(config: Config) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn container_dir(&self, id: &ContainerId) -> PathBuf {
        self.config.root.join(id.as_str())
    }

    /// `<root>/<id>+bundle`: ids never contain `+`, so this never names a container.
    fn shadow_bundle_dir(&self, id: &ContainerId) -> PathBuf {
        self.config.root.join(format!("{id}+bundle"))
    }

    /// The container, its status refreshed from its init.
    fn load(&self, id: &ContainerId, operation: &str) -> Result<Container, Error> {
        let dir = self.container_dir(id);
        if !State::file_path(&dir).exists() {
            return Err(Error::NotFound { id: id.clone() });
        }
        Container::load(dir).map_err(|err| from_libcontainer(id, operation, err))
    }

    fn scratch(&self, id: &ContainerId) -> Result<tempfile::TempDir, Error> {
        support::scratch_dir(&self.config.scratch_dir, ".wharf-libcontainer-", id)
    }

    /// A builder for container `id` with `workload` and `stdio`; for a terminal, the socket
    /// its master will arrive on.
    fn builder(
        &self,
        id: &ContainerId,
        operation: &str,
        workload: ContainerWorkload,
        stdio: Stdio,
        scratch: &Path,
    ) -> Result<(ContainerBuilder, Option<ConsoleSocket>), Error> {
        let builder = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_executor(workload)
            .with_root_path(&self.config.root)
            .map_err(|err| from_libcontainer(id, operation, err))?;
        Ok(match stdio {
            Stdio::Fds(fds) => (
                builder
                    .with_stdin(fds.stdin)
                    .with_stdout(fds.stdout)
                    .with_stderr(fds.stderr),
                None,
            ),
            Stdio::Terminal => {
                let console = ConsoleSocket::bind(scratch).map_err(|err| {
                    Error::io(
                        format!("creating the console socket for container {id}"),
                        err,
                    )
                })?;
                (
                    builder.with_console_socket(Some(console.path())),
                    Some(console),
                )
            }
        })
    }

    /// Removes whatever a container left, even half made: its processes and cgroup (through
    /// libcontainer when its state is readable), its state and shadow bundle directories.
    fn remove(&self, id: &ContainerId, mode: DeleteMode) -> Result<(), Error> {
        let dir = self.container_dir(id);
        if State::file_path(&dir).exists() {
            match Container::load(dir.clone()) {
                Ok(mut container) => container
                    .delete(mode == DeleteMode::Force)
                    .map_err(|err| from_libcontainer(id, "delete", err))?,
                // libcontainer rewrites `state.json` in place (truncate, then write): a process
                // killed in between leaves it empty or torn. Forced, the container goes anyway.
                Err(err) if mode == DeleteMode::Force => {
                    tracing::warn!(error = %err, "the container's state is unreadable; removing it by its cgroup");
                    self.remove_by_cgroup(id, &dir)?;
                }
                Err(err) => return Err(from_libcontainer(id, "delete", err)),
            }
        } else if mode == DeleteMode::IfStopped {
            return Err(Error::NotFound { id: id.clone() });
        } else if dir.exists() {
            // A create that failed before libcontainer saved the state: only its own
            // files, no cgroup yet.
            std::fs::remove_dir_all(&dir)
                .map_err(|err| Error::io(format!("removing {}", dir.display()), err))?;
        }
        let shadow = self.shadow_bundle_dir(id);
        match std::fs::remove_dir_all(&shadow) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                Err(Error::io(format!("removing {}", shadow.display()), err))
            }
            _ => Ok(()),
        }
    }

    /// Removes a container whose libcontainer state cannot be read: kills every process of
    /// its cgroup (named by the config libcontainer wrote at create, or else by the shadow
    /// bundle), removes the cgroup, then its state directory.
    fn remove_by_cgroup(&self, id: &ContainerId, dir: &Path) -> Result<(), Error> {
        let cgroup_path = libcontainer::config::YoukiConfig::load(dir)
            .map(|config| config.cgroup_path)
            .ok()
            .or_else(|| {
                Spec::load(self.shadow_bundle_dir(id).join("config.json"))
                    .ok()?
                    .linux()
                    .as_ref()?
                    .cgroups_path()
                    .clone()
            });
        if let Some(cgroup_path) = cgroup_path {
            let cgroup = libcgroups::common::create_cgroup_manager(CgroupConfig {
                cgroup_path,
                systemd_cgroup: false,
                container_name: id.to_string(),
            })
            .map_err(|err| from_libcontainer(id, "delete", LibcontainerError::from(err)))?;
            kill_cgroup(id, &cgroup)?;
            cgroup
                .remove()
                .map_err(|err| from_libcontainer(id, "delete", err.into()))?;
        }
        std::fs::remove_dir_all(dir)
            .map_err(|err| Error::io(format!("removing {}", dir.display()), err))
    }

    /// The container's cgroup manager, from the cgroup path it was created with.
    fn cgroup(&self, id: &ContainerId, container: &Container) -> Result<AnyCgroupManager, Error> {
        let cgroup_path = container
            .spec()
            .map_err(|err| from_libcontainer(id, "cgroup", err))?
            .cgroup_path;
        libcgroups::common::create_cgroup_manager(CgroupConfig {
            cgroup_path,
            systemd_cgroup: false,
            container_name: id.to_string(),
        })
        .map_err(|err| from_libcontainer(id, "cgroup", LibcontainerError::from(err)))
    }

    /// Refuses a dump whose `criu` (libcontainer's: the one `PATH` finds) is not the
    /// configured one.
    fn check_dump_criu(&self, id: &ContainerId) -> Result<(), Error> {
        let Some(configured) = &self.config.criu else {
            return Ok(());
        };
        let on_path = std::env::var_os("PATH")
            .and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join("criu"))
                    .find(|candidate| candidate.is_file())
            })
            .and_then(|found| found.canonicalize().ok());
        if on_path.is_some() && on_path == configured.canonicalize().ok() {
            return Ok(());
        }
        Err(Error::Runtime {
            id: id.clone(),
            command: "libcontainer checkpoint".to_owned(),
            message: format!(
                "libcontainer dumps with the criu found in PATH ({}), not the configured {}; \
                 put {} first in PATH",
                on_path.map_or_else(|| "none".to_owned(), |p| p.display().to_string()),
                configured.display(),
                configured.parent().unwrap_or(Path::new("/")).display()
            ),
            kind: ErrorKind::FailedPrecondition,
        })
    }

    /// Builds the init and returns it with its terminal, after `create` checks.
    fn build_init(
        &self,
        req: CreateRequest,
        bundle: &Path,
        scratch: &Path,
    ) -> Result<(Pid, Option<ConsoleSocket>), Error> {
        let id = &req.id;
        let (builder, console) =
            self.builder(id, "create", ContainerWorkload::init(), req.stdio, scratch)?;
        let container = builder
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .with_no_pivot(req.no_pivot)
            .build()
            .map_err(|err| from_libcontainer(id, "create", err))?;
        let pid = container
            .pid()
            .and_then(|pid| Pid::from_raw(pid.as_raw()))
            .ok_or_else(|| Error::Runtime {
                id: id.clone(),
                command: "libcontainer create".to_owned(),
                message: "created a container without an init pid".to_owned(),
                kind: ErrorKind::Internal,
            })?;
        Ok((pid, console))
    }
}

/// Refuses to clone from a process with more than one thread (panics in debug builds): the
/// child runs Rust code, and a lock (the allocator's, a logger's) held by another thread at
/// the clone would never be released in it.
fn ensure_single_threaded(id: &ContainerId, operation: &str) -> Result<(), Error> {
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, Iterator::count);
    debug_assert_eq!(
        threads, 1,
        "libcontainer {operation} called from a process with {threads} threads"
    );
    if threads == 1 {
        Ok(())
    } else {
        Err(Error::Runtime {
            id: id.clone(),
            command: format!("libcontainer {operation}"),
            message: format!(
                "refusing to clone from a process with {threads} threads; \
                 the libcontainer executor must run in a single-threaded process"
            ),
            kind: ErrorKind::FailedPrecondition,
        })
    }
}

/// Receives the terminal master libcontainer had the new process send.
async fn receive_console(
    id: &ContainerId,
    console: Option<ConsoleSocket>,
) -> Result<Option<OwnedFd>, Error> {
    let Some(console) = console else {
        return Ok(None);
    };
    let received = tokio::time::timeout(CONSOLE_TIMEOUT, console.receive_master())
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no terminal received",
            ))
        });
    received
        .map(Some)
        .map_err(|err| Error::io(format!("receiving the terminal of container {id}"), err))
}

fn status_of(status: LcStatus) -> ContainerStatus {
    match status {
        LcStatus::Creating => ContainerStatus::Creating,
        LcStatus::Created => ContainerStatus::Created,
        LcStatus::Running => ContainerStatus::Running,
        LcStatus::Paused => ContainerStatus::Paused,
        LcStatus::Stopped => ContainerStatus::Stopped,
    }
}

/// `FailedPrecondition` for an operation the container's status does not allow.
fn refuse(id: &ContainerId, operation: &str, status: LcStatus) -> Error {
    from_libcontainer(id, operation, LibcontainerError::IncorrectStatus(status))
}

impl Executor for LibcontainerExecutor {
    #[tracing::instrument(skip_all, fields(container_id = %req.id, bundle = %req.bundle.display()))]
    async fn create(&self, req: CreateRequest) -> Result<NewProcess, Error> {
        let id = req.id.clone();
        if self.container_dir(&id).exists() {
            return Err(Error::AlreadyExists { id });
        }
        ensure_single_threaded(&id, "create")?;
        std::fs::create_dir_all(&self.config.root)
            .map_err(|err| Error::io(format!("creating {}", self.config.root.display()), err))?;
        let shadow = self.shadow_bundle_dir(&id);
        let scratch = self.scratch(&id)?;
        let built = bundle::prepare(&req.bundle, &id, &self.config.cgroup_parent, &shadow)
            .and_then(|bundle| {
                let (pid, console) = self.build_init(req, &bundle.dir, scratch.path())?;
                if bundle.own_network {
                    loopback::bring_up(pid).map_err(|err| {
                        Error::io(
                            format!("bringing up the loopback interface of container {id}"),
                            err,
                        )
                    })?;
                }
                Ok((pid, console))
            });
        let created = match built {
            Ok((pid, console)) => receive_console(&id, console)
                .await
                .map(|console| NewProcess { pid, console }),
            Err(err) => Err(err),
        };
        match created {
            Ok(process) => {
                tracing::info!(pid = process.pid.get(), "container created");
                Ok(process)
            }
            Err(err) => {
                if let Err(cleanup) = self.remove(&id, DeleteMode::Force) {
                    tracing::warn!(error = %cleanup, "cleaning up after a failed create");
                }
                Err(err)
            }
        }
    }

    #[tracing::instrument(skip_all, fields(container_id = %id))]
    async fn start(&self, id: &ContainerId) -> Result<(), Error> {
        let mut container = self.load(id, "start")?;
        container
            .start()
            .map_err(|err| from_libcontainer(id, "start", err))?;
        tracing::info!("container started");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(container_id = %req.id, exec_id = %req.exec_id))]
    async fn exec(&self, req: ExecRequest) -> Result<NewProcess, Error> {
        let id = req.id.clone();
        let container = self.load(&id, "exec")?;
        if container.status() != LcStatus::Running {
            return Err(refuse(&id, "exec", container.status()));
        }
        ensure_single_threaded(&id, "exec")?;
        let scratch = self.scratch(&id)?;
        let mut process = req.process;
        process.set_terminal(Some(matches!(req.stdio, Stdio::Terminal)));
        let process_file = scratch.path().join("process.json");
        let json = serde_json::to_vec(&process).map_err(|err| {
            Error::invalid_argument(format!(
                "exec {} of container {id} has an unencodable process: {err}",
                req.exec_id
            ))
        })?;
        std::fs::write(&process_file, json)
            .map_err(|err| Error::io(format!("writing {}", process_file.display()), err))?;
        let seccomp = Spec::load(container.bundle().join("config.json"))
            .map_err(|err| from_libcontainer(&id, "exec", err.into()))?
            .linux()
            .as_ref()
            .and_then(|linux| linux.seccomp().clone());
        let (pid, console) = {
            let workload = ContainerWorkload::exec(seccomp);
            let (builder, console) =
                self.builder(&id, "exec", workload, req.stdio, scratch.path())?;
            let pid = builder
                .as_tenant()
                .with_process(Some(&process_file))
                .with_detach(true)
                .build()
                .map_err(|err| from_libcontainer(&id, "exec", err))?;
            let pid = Pid::from_raw(pid.as_raw()).ok_or_else(|| Error::Runtime {
                id: id.clone(),
                command: "libcontainer exec".to_owned(),
                message: format!("started a process with pid {pid}"),
                kind: ErrorKind::Internal,
            })?;
            (pid, console)
        };
        let console = receive_console(&id, console).await?;
        tracing::info!(pid = pid.get(), "exec process started");
        Ok(NewProcess { pid, console })
    }

    #[tracing::instrument(skip_all, fields(container_id = %id, signal = signal.get(), ?scope))]
    async fn kill(&self, id: &ContainerId, signal: Signal, scope: KillScope) -> Result<(), Error> {
        // Not `Container::kill`: it records the container as stopped after any signal.
        let container = self.load(id, "kill")?;
        let paused = container.status() == LcStatus::Paused;
        match scope {
            KillScope::Init => {
                let pid = container
                    .pid()
                    .and_then(|pid| Pid::from_raw(pid.as_raw()))
                    .filter(|_| container.can_kill())
                    .ok_or_else(|| refuse(id, "kill", container.status()))?;
                match signal.send_to(pid) {
                    Err(err) if err.raw_os_error() != Some(libc::ESRCH) => {
                        return Err(Error::io(
                            format!("sending signal {signal} to the init of container {id}"),
                            err,
                        ));
                    }
                    _ => {}
                }
                // A frozen process dies only once thawed.
                if paused && signal == Signal::KILL {
                    self.cgroup(id, &container)?
                        .freeze(FreezerState::Thawed)
                        .map_err(|err| from_libcontainer(id, "kill", err.into()))?;
                }
            }
            KillScope::All => {
                // Frozen, nothing forks while we list and signal.
                let cgroup = self.cgroup(id, &container)?;
                if let Err(err) = cgroup.freeze(FreezerState::Frozen) {
                    tracing::warn!(error = %err, "freezing before signalling every process");
                }
                let pids = cgroup
                    .get_all_pids()
                    .map_err(|err| from_libcontainer(id, "kill", err.into()))?;
                for pid in pids.into_iter().filter_map(|p| Pid::from_raw(p.as_raw())) {
                    if let Err(err) = signal.send_to(pid)
                        && err.raw_os_error() != Some(libc::ESRCH)
                    {
                        tracing::warn!(pid = pid.get(), error = %err, "signalling a process");
                    }
                }
                // A paused container stays paused, unless it is to die.
                if !paused || signal == Signal::KILL {
                    cgroup
                        .freeze(FreezerState::Thawed)
                        .map_err(|err| from_libcontainer(id, "kill", err.into()))?;
                }
            }
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(container_id = %id))]
    async fn pause(&self, id: &ContainerId) -> Result<(), Error> {
        self.load(id, "pause")?
            .pause()
            .map_err(|err| from_libcontainer(id, "pause", err))?;
        tracing::info!("container paused");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(container_id = %id))]
    async fn resume(&self, id: &ContainerId) -> Result<(), Error> {
        self.load(id, "resume")?
            .resume()
            .map_err(|err| from_libcontainer(id, "resume", err))?;
        tracing::info!("container resumed");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(container_id = %id, ?mode))]
    async fn delete(&self, id: &ContainerId, mode: DeleteMode) -> Result<(), Error> {
        self.remove(id, mode)?;
        tracing::info!("container deleted");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(container_id = %id))]
    async fn state(&self, id: &ContainerId) -> Result<ContainerState, Error> {
        let container = self.load(id, "state")?;
        let status = status_of(container.status());
        Ok(ContainerState {
            id: id.clone(),
            pid: container
                .pid()
                .and_then(|pid| Pid::from_raw(pid.as_raw()))
                .filter(|_| status != ContainerStatus::Stopped),
            status,
            bundle: bundle::origin(container.bundle()),
        })
    }

    #[tracing::instrument(skip_all, fields(container_id = %req.id))]
    async fn checkpoint(&self, req: CheckpointRequest) -> Result<(), Error> {
        let mut container = self.load(&req.id, "checkpoint")?;
        self.check_dump_criu(&req.id)?;
        criu::checkpoint(&mut container, &req)?;
        tracing::info!(
            leave_running = req.options.leave_running,
            "container checkpointed"
        );
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(container_id = %req.create.id))]
    async fn restore(&self, req: RestoreRequest) -> Result<NewProcess, Error> {
        let create = req.create;
        let id = create.id.clone();
        if self.container_dir(&id).exists() {
            return Err(Error::AlreadyExists { id });
        }
        let Stdio::Fds(stdio) = create.stdio else {
            return Err(Error::Unsupported {
                message: format!(
                    "the libcontainer executor cannot restore container {id} with a terminal"
                ),
            });
        };
        std::fs::create_dir_all(&self.config.root)
            .map_err(|err| Error::io(format!("creating {}", self.config.root.display()), err))?;
        let shadow = self.shadow_bundle_dir(&id);
        let criu_path = self
            .config
            .criu
            .clone()
            .unwrap_or_else(|| PathBuf::from("criu"));
        let restored = bundle::prepare(&create.bundle, &id, &self.config.cgroup_parent, &shadow)
            .and_then(|bundle| {
                criu::restore(criu::Restore {
                    id: &id,
                    criu: &criu_path,
                    bundle: &bundle.dir,
                    container_dir: &self.container_dir(&id),
                    stdio,
                    image_dir: &req.image_dir,
                    work_dir: &req.work_dir,
                    options: req.options,
                })
            });
        match restored {
            Ok(pid) => {
                tracing::info!(pid = pid.get(), "container restored");
                Ok(NewProcess { pid, console: None })
            }
            Err(err) => {
                if let Err(cleanup) = self.remove(&id, DeleteMode::Force) {
                    tracing::warn!(error = %cleanup, "cleaning up after a failed restore");
                }
                Err(err)
            }
        }
    }

    #[tracing::instrument(skip_all, fields(container_id = %id))]
    async fn processes(&self, id: &ContainerId) -> Result<Vec<Pid>, Error> {
        let container = self.load(id, "ps")?;
        let pids = self
            .cgroup(id, &container)?
            .get_all_pids()
            .map_err(|err| from_libcontainer(id, "ps", err.into()))?;
        Ok(pids
            .into_iter()
            .filter_map(|pid| Pid::from_raw(pid.as_raw()))
            .collect())
    }
}

/// SIGKILLs every process of `cgroup` (frozen meanwhile, so nothing forks) and waits, up to
/// a deadline, until none is left in it.
fn kill_cgroup(id: &ContainerId, cgroup: &AnyCgroupManager) -> Result<(), Error> {
    const DEADLINE: Duration = Duration::from_secs(5);
    if let Err(err) = cgroup.freeze(FreezerState::Frozen) {
        tracing::warn!(error = %err, "freezing before killing every process");
    }
    let pids = cgroup
        .get_all_pids()
        .map_err(|err| from_libcontainer(id, "delete", err.into()))?;
    for pid in pids.into_iter().filter_map(|p| Pid::from_raw(p.as_raw())) {
        if let Err(err) = Signal::KILL.send_to(pid)
            && err.raw_os_error() != Some(libc::ESRCH)
        {
            tracing::warn!(pid = pid.get(), error = %err, "killing a process");
        }
    }
    cgroup
        .freeze(FreezerState::Thawed)
        .map_err(|err| from_libcontainer(id, "delete", err.into()))?;
    let started = std::time::Instant::now();
    while !cgroup.get_all_pids().unwrap_or_default().is_empty() {
        if started.elapsed() > DEADLINE {
            return Err(Error::Runtime {
                id: id.clone(),
                command: "libcontainer delete".into(),
                message: format!("processes still in the cgroup {DEADLINE:?} after SIGKILL"),
                kind: wharf_executor::ErrorKind::Internal,
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test harness runs tests on their own threads: this process has several.
    #[test]
    fn a_multi_threaded_caller_is_refused() {
        let _other = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(2)));
        let id = ContainerId::new("web").unwrap();
        let checked = std::panic::catch_unwind(|| ensure_single_threaded(&id, "create"));
        match checked {
            // Debug builds assert.
            Err(_) => {}
            Ok(result) => {
                let err = result.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
                assert!(err.to_string().contains("single-threaded"), "{err}");
            }
        }
    }
}
