//! The `Executor` trait and the values it takes and returns.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use crate::{ContainerId, Error, ExecId, Pid, Signal};

/// Where a new process's standard streams go.
#[derive(Debug)]
pub enum Stdio {
    /// The process gets these descriptors as its fds 0, 1 and 2.
    Fds(StdioFds),
    /// The executor allocates a pseudo-terminal for the process and returns its master in
    /// [`NewProcess::console`].
    Terminal,
}

/// The three descriptors of a process without a terminal.
#[derive(Debug)]
pub struct StdioFds {
    /// Read end of the process's stdin.
    pub stdin: OwnedFd,
    /// Write end of the process's stdout.
    pub stdout: OwnedFd,
    /// Write end of the process's stderr.
    pub stderr: OwnedFd,
}

/// What [`Executor::create`] needs.
#[derive(Debug)]
pub struct CreateRequest {
    /// The new container's id.
    pub id: ContainerId,
    /// Absolute path of the OCI bundle (the directory holding `config.json`).
    pub bundle: PathBuf,
    /// The init's stdio. [`Stdio::Terminal`] requires `process.terminal` in `config.json`.
    pub stdio: Stdio,
    /// Use `chroot` instead of `pivot_root` (for a rootfs on a ramdisk).
    pub no_pivot: bool,
}

/// How CRIU dumps or restores a container (the flags of `types.Checkpoint`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CriuOptions {
    /// Keep the container running after the dump (checkpoint only).
    pub leave_running: bool,
    /// Allow established TCP connections.
    pub tcp_established: bool,
    /// Allow unix sockets connected outside the container.
    pub external_unix_sockets: bool,
    /// Allow a process attached to a terminal session (a shell job).
    pub shell_job: bool,
}

/// What [`Executor::checkpoint`] needs.
#[derive(Debug, Clone)]
pub struct CheckpointRequest {
    /// The container to dump.
    pub id: ContainerId,
    /// An existing, empty directory for the images.
    pub image_dir: PathBuf,
    /// An existing directory for CRIU's log (`dump.log`) and work files.
    pub work_dir: PathBuf,
    /// How to dump.
    pub options: CriuOptions,
}

/// What [`Executor::restore`] needs: a create whose init comes from images.
#[derive(Debug)]
pub struct RestoreRequest {
    /// The container to make, as for [`Executor::create`] (the bundle it was dumped from).
    pub create: CreateRequest,
    /// The images a [`Executor::checkpoint`] wrote.
    pub image_dir: PathBuf,
    /// An existing directory for CRIU's log (`restore.log`) and work files.
    pub work_dir: PathBuf,
    /// How to restore (the flags given at the dump; `leave_running` is ignored).
    pub options: CriuOptions,
}

/// What [`Executor::exec`] needs.
#[derive(Debug)]
pub struct ExecRequest {
    /// The container to run the process in.
    pub id: ContainerId,
    /// A name for the process, unique within the container.
    pub exec_id: ExecId,
    /// The process to run. Its `terminal` field is set by the executor from `stdio`.
    pub process: oci_spec::runtime::Process,
    /// The process's stdio.
    pub stdio: Stdio,
}

/// A process the executor created: the container's init, or an exec.
#[derive(Debug)]
pub struct NewProcess {
    /// Host pid of the process.
    pub pid: Pid,
    /// The master side of its pseudo-terminal, for [`Stdio::Terminal`].
    pub console: Option<OwnedFd>,
}

/// Which processes [`Executor::kill`] signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillScope {
    /// The container's init only.
    Init,
    /// Every process in the container (its cgroup); works on a stopped container too.
    All,
}

/// How [`Executor::delete`] treats a container that is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// Refuse unless the container has stopped.
    IfStopped,
    /// Kill whatever still runs, then delete. Succeeds if the container does not exist, so a
    /// retry after a crash is harmless.
    Force,
}

/// The lifecycle state of a container, as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerStatus {
    /// Being created.
    Creating,
    /// Created, init waiting to be started.
    Created,
    /// Init running.
    Running,
    /// Being frozen.
    Pausing,
    /// Frozen.
    Paused,
    /// Init has exited.
    Stopped,
}

/// What [`Executor::state`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// The container's id.
    pub id: ContainerId,
    /// Host pid of the init, while it runs.
    pub pid: Option<Pid>,
    /// The lifecycle state.
    pub status: ContainerStatus,
    /// The bundle the container was created from.
    pub bundle: PathBuf,
}

/// Runs containers. Implemented by `wharf-runc-executor` (a runc-compatible CLI) and
/// `wharf-libcontainer-executor` (youki's libcontainer, in-process).
///
/// **Reaping.** The executor does not wait for the container's processes: their exit is
/// seen by whoever reaps them, normally the caller, which should be a child subreaper
/// (`PR_SET_CHILD_SUBREAPER`) so that inits and execs are re-parented to it. Helper commands
/// an executor runs are started through the caller's [`ProcessMonitor`](crate::ProcessMonitor).
///
/// Every method names the container in its errors; see [`Error::kind`] for the classes.
pub trait Executor: Send + Sync + 'static {
    /// Creates the container: namespaces, cgroup, rootfs, and an init that waits for
    /// [`Executor::start`] before it runs the bundle's process.
    ///
    /// # Errors
    /// [`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists) if the id is taken;
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a bad bundle or a
    /// missing executable. A failed create leaves nothing behind.
    fn create(&self, req: CreateRequest) -> impl Future<Output = Result<NewProcess, Error>> + Send;

    /// Lets the created init run the bundle's process.
    ///
    /// # Errors
    /// `NotFound`; `FailedPrecondition` if it is not in the created state.
    fn start(&self, id: &ContainerId) -> impl Future<Output = Result<(), Error>> + Send;

    /// Runs an extra process in the running container and returns once it has started.
    ///
    /// # Errors
    /// `NotFound`; `FailedPrecondition` if the container is not running;
    /// `InvalidArgument` for a missing executable.
    fn exec(&self, req: ExecRequest) -> impl Future<Output = Result<NewProcess, Error>> + Send;

    /// Sends `signal` to the init, or to every process of the container.
    ///
    /// # Errors
    /// `NotFound`; `FailedPrecondition` if the init is not running ([`KillScope::Init`]).
    ///
    /// # Cancel safety
    /// Not cancel safe: the signal may have been delivered when the future is dropped.
    fn kill(
        &self,
        id: &ContainerId,
        signal: Signal,
        scope: KillScope,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Freezes every process of the container.
    ///
    /// # Errors
    /// `NotFound`; `FailedPrecondition` if it is not running.
    fn pause(&self, id: &ContainerId) -> impl Future<Output = Result<(), Error>> + Send;

    /// Thaws a paused container.
    ///
    /// # Errors
    /// `NotFound`; `FailedPrecondition` if it is not paused.
    fn resume(&self, id: &ContainerId) -> impl Future<Output = Result<(), Error>> + Send;

    /// Deletes the container: its cgroup, mounts and runtime state.
    ///
    /// # Errors
    /// `NotFound` ([`DeleteMode::IfStopped`] only); `FailedPrecondition` if it still runs and
    /// `mode` is [`DeleteMode::IfStopped`].
    fn delete(
        &self,
        id: &ContainerId,
        mode: DeleteMode,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The container's state as the runtime sees it.
    ///
    /// # Errors
    /// `NotFound`.
    fn state(&self, id: &ContainerId)
    -> impl Future<Output = Result<ContainerState, Error>> + Send;

    /// Host pids of every process in the container.
    ///
    /// # Errors
    /// `NotFound`.
    fn processes(&self, id: &ContainerId) -> impl Future<Output = Result<Vec<Pid>, Error>> + Send;

    /// Dumps the container's processes with CRIU into `req.image_dir`; unless
    /// `leave_running`, they are killed after the dump (their exits are seen by their reaper
    /// as usual).
    ///
    /// # Errors
    /// `NotFound`; `FailedPrecondition` if it is not running; `Internal` with CRIU's error
    /// lines when the dump fails; `Unsupported` (the default) where the executor cannot.
    fn checkpoint(&self, req: CheckpointRequest) -> impl Future<Output = Result<(), Error>> + Send {
        async move {
            Err(Error::Unsupported {
                message: format!("this executor cannot checkpoint container {}", req.id),
            })
        }
    }

    /// Creates the container from `req.create` with its processes restored from images,
    /// running (no [`Executor::start`]). The init is the caller's child or is re-parented to
    /// it (a subreaper), like a created one.
    ///
    /// # Errors
    /// As [`Executor::create`]; `Internal` with CRIU's error lines when the restore fails;
    /// `Unsupported` (the default) where the executor cannot.
    fn restore(
        &self,
        req: RestoreRequest,
    ) -> impl Future<Output = Result<NewProcess, Error>> + Send {
        async move {
            Err(Error::Unsupported {
                message: format!("this executor cannot restore container {}", req.create.id),
            })
        }
    }
}
