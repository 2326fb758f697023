//! [`RuncExecutor`]: the [`Executor`] trait over a runc-compatible command line.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio as ProcessStdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use wharf_executor::{
    CheckpointRequest, ContainerId, ContainerState, CreateRequest, DeleteMode, Error, ErrorKind,
    ExecRequest, Executor, ExitStatus, KillScope, NewProcess, Pid, ProcessMonitor, RestoreRequest,
    Signal, Stdio, StdioFds, TokioMonitor,
};

use crate::command::{self, Subcommand};
use crate::output;
use wharf_executor::console::ConsoleSocket;
use wharf_executor::{signals, support};

/// How to run the runtime.
#[derive(Debug, Clone)]
pub struct Config {
    /// The runtime binary: a name looked up in `PATH` (`runc`, `crun`) or a path.
    pub runtime: PathBuf,
    /// The runtime's state directory (`--root`), private to wharf so that containers made by
    /// other tools never mix with ours.
    pub root: PathBuf,
    /// Where each command's transient files go (its log, pid file, process spec, console
    /// socket), in a fresh directory removed when the command is done.
    pub scratch_dir: PathBuf,
    /// Deadline of every runtime command; a command still running then is killed.
    pub command_timeout: Duration,
    /// The CRIU binary `checkpoint` and `restore` use (runc's `--criu`); `None`: the
    /// runtime's default (`criu` in `PATH`).
    pub criu: Option<PathBuf>,
}

impl Config {
    /// `runc` with state under `root`, scratch files in the system temporary directory and a
    /// 60 s deadline per command.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            runtime: PathBuf::from("runc"),
            root: root.into(),
            scratch_dir: std::env::temp_dir(),
            command_timeout: Duration::from_secs(60),
            criu: None,
        }
    }
}

/// Runs containers with a runc-compatible CLI (`runc`, `crun`).
///
/// Each operation is one runtime command with a deadline; the command is killed if the
/// deadline passes or the future is dropped. A failure carries the command and the runtime's
/// own message, read from its JSON log.
#[derive(Debug, Clone)]
pub struct RuncExecutor {
    config: Arc<Config>,
    /// `runc` in messages: the file name of the configured binary.
    runtime_name: Arc<str>,
    monitor: Arc<dyn ProcessMonitor>,
}

/// Where a command's stdio goes.
enum CommandStdio {
    /// Our pipes: stdout is returned, stderr used for errors.
    Captured,
    /// A container process's stdio, handed through the runtime.
    Process(StdioFds),
    /// Nothing (the process gets a terminal through the console socket).
    Null,
}

impl RuncExecutor {
    /// An executor that waits on its commands itself ([`TokioMonitor`]). Use
    /// [`RuncExecutor::with_monitor`] in a process that reaps every child.
    pub fn new(config: Config) -> Self {
        Self::with_monitor(config, Arc::new(TokioMonitor))
    }

    /// An executor that starts its commands through `monitor`.
    pub fn with_monitor(config: Config, monitor: Arc<dyn ProcessMonitor>) -> Self {
        let runtime_name = config
            .runtime
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| config.runtime.display().to_string());
        Self {
            config: Arc::new(config),
            runtime_name: runtime_name.into(),
            monitor,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn command_name(&self, sub: &Subcommand) -> String {
        format!("{} {}", self.runtime_name, sub.name)
    }

    /// A fresh directory for one command's files.
    fn scratch(&self, id: &ContainerId) -> Result<tempfile::TempDir, Error> {
        support::scratch_dir(&self.config.scratch_dir, ".wharf-runc-", id)
    }

    /// Runs one runtime command to completion under the deadline; returns its stdout.
    async fn run(
        &self,
        id: &ContainerId,
        sub: Subcommand,
        scratch: &Path,
        stdio: CommandStdio,
    ) -> Result<Vec<u8>, Error> {
        let command_name = self.command_name(&sub);
        let log = scratch.join("log.json");
        let mut command = std::process::Command::new(&self.config.runtime);
        command.args(command::global_args(&self.config.root, &log));
        if matches!(sub.name, "checkpoint" | "restore")
            && let Some(criu) = &self.config.criu
        {
            command.arg("--criu").arg(criu);
        }
        command.args(&sub.args);
        // glibc's posix_spawn would leave its signals 32 and 33 ignored in the runtime, and
        // so in the container's processes.
        // SAFETY: the hook only makes system calls, which is allowed between fork and exec.
        unsafe { command.pre_exec(|| signals::reset_dispositions(&[])) };
        match stdio {
            CommandStdio::Captured => {
                command
                    .stdin(ProcessStdio::null())
                    .stdout(ProcessStdio::piped())
                    .stderr(ProcessStdio::piped());
            }
            CommandStdio::Process(fds) => {
                command
                    .stdin(ProcessStdio::from(fds.stdin))
                    .stdout(ProcessStdio::from(fds.stdout))
                    .stderr(ProcessStdio::from(fds.stderr));
            }
            CommandStdio::Null => {
                command
                    .stdin(ProcessStdio::null())
                    .stdout(ProcessStdio::null())
                    .stderr(ProcessStdio::null());
            }
        }
        tracing::debug!(command = %command_name, args = ?sub.args, "running runtime");
        let mut child = self.monitor.spawn(command).map_err(|err| {
            Error::io(format!("spawning `{command_name}` for container {id}"), err)
        })?;
        // The command's own copy of the process's stdio is closed in `command` when it drops
        // here, so the process alone holds it.

        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let finished = async {
            let (stdout, stderr, status) =
                tokio::join!(read_all(stdout), read_all(stderr), child.wait());
            Ok::<_, io::Error>((stdout?, stderr?, status?))
        };
        let (stdout, stderr, status) =
            match tokio::time::timeout(self.config.command_timeout, finished).await {
                Ok(result) => result.map_err(|err| {
                    Error::io(format!("running `{command_name}` for container {id}"), err)
                })?,
                Err(_) => {
                    return Err(Error::Timeout {
                        id: id.clone(),
                        command: command_name,
                        timeout: self.config.command_timeout,
                    });
                }
            };
        if status == ExitStatus::Exited(0) {
            return Ok(stdout);
        }
        let logged = std::fs::read_to_string(&log)
            .ok()
            .and_then(|log| output::error_from_log(&log));
        let message = logged
            .or_else(|| {
                let stderr = String::from_utf8_lossy(&stderr).trim().to_owned();
                (!stderr.is_empty()).then_some(stderr)
            })
            .unwrap_or_else(|| format!("exited with {status}"));
        let message =
            output::strip_command_prefix(&message, &self.runtime_name, sub.name).to_owned();
        let kind = output::classify(&message);
        tracing::debug!(command = %command_name, %status, %message, "runtime failed");
        Err(Error::Runtime {
            id: id.clone(),
            command: command_name,
            message,
            kind,
        })
    }

    /// Runs a command that starts a process (create, exec) and returns the process's pid and,
    /// for a terminal, its master.
    async fn run_for_process(
        &self,
        id: &ContainerId,
        scratch: &Path,
        stdio: Stdio,
        build: impl FnOnce(&Path, Option<&Path>) -> Subcommand,
    ) -> Result<NewProcess, Error> {
        let pid_file = scratch.join("pid");
        let (console, command_stdio) = match stdio {
            Stdio::Fds(fds) => (None, CommandStdio::Process(fds)),
            Stdio::Terminal => {
                let console = ConsoleSocket::bind(scratch).map_err(|err| {
                    Error::io(
                        format!("creating the console socket for container {id}"),
                        err,
                    )
                })?;
                (Some(console), CommandStdio::Null)
            }
        };
        let sub = build(&pid_file, console.as_ref().map(ConsoleSocket::path));
        let command_name = self.command_name(&sub);
        let master = match &console {
            None => {
                self.run(id, sub, scratch, command_stdio).await?;
                None
            }
            Some(console) => {
                let run = self.run(id, sub, scratch, command_stdio);
                let receive = console.receive_master();
                tokio::pin!(run, receive);
                let mut master = None;
                loop {
                    tokio::select! {
                        received = &mut receive, if master.is_none() => {
                            master = Some(received.map_err(|err| {
                                Error::io(format!("receiving the terminal of `{command_name}` for container {id}"), err)
                            })?);
                        }
                        result = &mut run => {
                            result?;
                            break;
                        }
                    }
                }
                // The runtime sends the master before it exits successfully; it is queued.
                match master {
                    Some(master) => Some(master),
                    None => Some(
                        tokio::time::timeout(Duration::from_secs(5), receive)
                            .await
                            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no terminal received"))
                            .and_then(|received| received)
                            .map_err(|err| {
                                Error::io(format!("receiving the terminal of `{command_name}` for container {id}"), err)
                            })?,
                    ),
                }
            }
        };
        let pid = read_pid_file(&pid_file).map_err(|err| {
            Error::io(
                format!("reading pid file of `{command_name}` for container {id}"),
                err,
            )
        })?;
        Ok(NewProcess {
            pid,
            console: master,
        })
    }
}

async fn read_all(fd: Option<OwnedFd>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    if let Some(fd) = fd {
        pipe::Receiver::from_owned_fd(fd)?
            .read_to_end(&mut out)
            .await?;
    }
    Ok(out)
}

fn read_pid_file(path: &Path) -> io::Result<Pid> {
    let text = std::fs::read_to_string(path)?;
    text.trim()
        .parse::<i32>()
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a pid: {:?}", text.trim()),
            )
        })
}

impl Executor for RuncExecutor {
    #[tracing::instrument(skip_all, fields(container_id = %req.id, bundle = %req.bundle.display()))]
    async fn create(&self, req: CreateRequest) -> Result<NewProcess, Error> {
        support::bundle_config(&req.bundle)?;
        let scratch = self.scratch(&req.id)?;
        let (id, bundle, no_pivot) = (req.id, req.bundle, req.no_pivot);
        let result = self
            .run_for_process(&id, scratch.path(), req.stdio, |pid_file, console| {
                command::create(&id, &bundle, pid_file, console, no_pivot)
            })
            .await;
        match result {
            Ok(process) => {
                tracing::info!(pid = process.pid.get(), "container created");
                Ok(process)
            }
            Err(err) => {
                // A failed or killed create may leave a half-made container; never touch one
                // that already existed under this id.
                if err.kind() != ErrorKind::AlreadyExists
                    && let Err(cleanup) = self.delete(&id, DeleteMode::Force).await
                {
                    tracing::warn!(error = %cleanup, "cleaning up after a failed create");
                }
                Err(err)
            }
        }
    }

    #[tracing::instrument(skip_all, fields(container_id = %id))]
    async fn start(&self, id: &ContainerId) -> Result<(), Error> {
        let scratch = self.scratch(id)?;
        self.run(
            id,
            command::start(id),
            scratch.path(),
            CommandStdio::Captured,
        )
        .await?;
        tracing::info!("container started");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(container_id = %req.id, exec_id = %req.exec_id))]
    async fn exec(&self, req: ExecRequest) -> Result<NewProcess, Error> {
        let scratch = self.scratch(&req.id)?;
        let mut process = req.process;
        process.set_terminal(Some(matches!(req.stdio, Stdio::Terminal)));
        let process_file = scratch.path().join("process.json");
        let json = serde_json::to_vec(&process).map_err(|err| {
            Error::invalid_argument(format!(
                "exec {} has an unencodable process: {err}",
                req.exec_id
            ))
        })?;
        std::fs::write(&process_file, json)
            .map_err(|err| Error::io(format!("writing {}", process_file.display()), err))?;
        let id = req.id;
        let new = self
            .run_for_process(&id, scratch.path(), req.stdio, |pid_file, console| {
                command::exec(&id, &process_file, pid_file, console)
            })
            .await?;
        tracing::info!(pid = new.pid.get(), "exec process started");
        Ok(new)
    }

    #[tracing::instrument(skip_all, fields(container_id = %id, signal = signal.get(), ?scope))]
    async fn kill(&self, id: &ContainerId, signal: Signal, scope: KillScope) -> Result<(), Error> {
        let scratch = self.scratch(id)?;
        self.run(
            id,
            command::kill(id, signal, scope),
            scratch.path(),
            CommandStdio::Captured,
        )
        .await
        .map(drop)
    }

    #[tracing::instrument(skip_all, fields(container_id = %id))]
    async fn pause(&self, id: &ContainerId) -> Result<(), Error> {
        let scratch = self.scratch(id)?;
        self.run(
            id,
            command::pause(id),
            scratch.path(),
            CommandStdio::Captured,
        )
        .await?;
        tracing::info!("container paused");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(container_id = %id))]
    async fn resume(&self, id: &ContainerId) -> Result<(), Error> {
        let scratch = self.scratch(id)?;
        self.run(
            id,
            command::resume(id),
            scratch.path(),
            CommandStdio::Captured,
        )
        .await?;
        tracing::info!("container resumed");
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(container_id = %id, ?mode))]
    async fn delete(&self, id: &ContainerId, mode: DeleteMode) -> Result<(), Error> {
        let scratch = self.scratch(id)?;
        match self
            .run(
                id,
                command::delete(id, mode),
                scratch.path(),
                CommandStdio::Captured,
            )
            .await
        {
            Err(err) if mode == DeleteMode::Force && err.kind() == ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err),
            Ok(_) => {
                tracing::info!("container deleted");
                Ok(())
            }
        }
    }

    #[tracing::instrument(skip_all, fields(container_id = %id))]
    async fn state(&self, id: &ContainerId) -> Result<ContainerState, Error> {
        let scratch = self.scratch(id)?;
        let sub = command::state(id);
        let command = self.command_name(&sub);
        let json = self
            .run(id, sub, scratch.path(), CommandStdio::Captured)
            .await?;
        output::parse_state(&json).map_err(|message| Error::Runtime {
            id: id.clone(),
            command,
            message,
            kind: ErrorKind::Internal,
        })
    }

    #[tracing::instrument(skip_all, fields(container_id = %id))]
    async fn processes(&self, id: &ContainerId) -> Result<Vec<Pid>, Error> {
        let scratch = self.scratch(id)?;
        let sub = command::ps(id);
        let command = self.command_name(&sub);
        let json = self
            .run(id, sub, scratch.path(), CommandStdio::Captured)
            .await?;
        output::parse_ps(&json).map_err(|message| Error::Runtime {
            id: id.clone(),
            command,
            message,
            kind: ErrorKind::Internal,
        })
    }

    #[tracing::instrument(skip_all, fields(container_id = %req.id))]
    async fn checkpoint(&self, req: CheckpointRequest) -> Result<(), Error> {
        let scratch = self.scratch(&req.id)?;
        let sub = command::checkpoint(&req.id, &req.image_dir, &req.work_dir, &req.options);
        self.run(&req.id, sub, scratch.path(), CommandStdio::Captured)
            .await?;
        tracing::info!(
            leave_running = req.options.leave_running,
            "container checkpointed"
        );
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(container_id = %req.create.id))]
    async fn restore(&self, req: RestoreRequest) -> Result<NewProcess, Error> {
        let create = req.create;
        support::bundle_config(&create.bundle)?;
        let scratch = self.scratch(&create.id)?;
        let (id, bundle, no_pivot) = (create.id, create.bundle, create.no_pivot);
        let (image_dir, work_dir, options) = (req.image_dir, req.work_dir, req.options);
        let result = self
            .run_for_process(&id, scratch.path(), create.stdio, |pid_file, console| {
                command::restore(
                    &id, &bundle, pid_file, console, no_pivot, &image_dir, &work_dir, &options,
                )
            })
            .await;
        match result {
            Ok(process) => {
                tracing::info!(pid = process.pid.get(), "container restored");
                Ok(process)
            }
            Err(err) => {
                if err.kind() != ErrorKind::AlreadyExists
                    && let Err(cleanup) = self.delete(&id, DeleteMode::Force).await
                {
                    tracing::warn!(error = %cleanup, "cleaning up after a failed restore");
                }
                Err(err)
            }
        }
    }
}
