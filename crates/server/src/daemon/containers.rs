//! The daemon's containers: each owned by its `wharf-shim`, tracked here by id.
//!
//! A container lives from a successful `CreateContainer` until its init's exit has been
//! published: then its shim has deleted it and exited, its state directory is gone, and the
//! id is free again. One pump task per container turns the shim's events into `types.API`
//! events, in the shim's order.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tonic::Status;
use tonic::transport::Channel;
use wharf_api as api;
use wharf_executor::oci_spec::runtime::Spec;
use wharf_executor::{ContainerId, DeleteMode, Executor, Signal};
use wharf_runc_executor::RuncExecutor;
use wharf_shim_proto as shim;
use wharf_shim_proto::control::{ControlClient, KillRequest};

use super::config::Config;
use crate::events::{EventHub, EventStream};
use crate::spawn::{ShimOptions, SpawnedShim, spawn_shim};
use crate::status::from_shim;

/// How long a shim may take to exit once its container is deleted, before it is killed.
const SHIM_EXIT_DEADLINE: Duration = Duration::from_secs(10);

/// The `types.API` event type strings wharf sends.
pub(crate) mod event_type {
    pub(crate) const EXIT: &str = "exit";
    pub(crate) const START_CONTAINER: &str = "start-container";
    pub(crate) const START_PROCESS: &str = "start-process";
    pub(crate) const PAUSE: &str = "pause";
    pub(crate) const RESUME: &str = "resume";
}

/// Every live container, and the events they produce.
#[derive(Debug)]
pub(crate) struct Daemon {
    config: Config,
    shim_options: ShimOptions,
    /// Runs the runtime from the daemon itself, only to clean up after a shim that died.
    janitor: RuncExecutor,
    containers: Mutex<HashMap<ContainerId, Slot>>,
    events: EventHub<api::Event>,
    machine: api::Machine,
}

#[derive(Debug)]
enum Slot {
    /// A CreateContainer in progress holds the id.
    Creating,
    Live(Arc<Container>),
}

/// A live container.
#[derive(Debug)]
pub(crate) struct Container {
    pub(crate) id: ContainerId,
    pub(crate) bundle: String,
    state_dir: PathBuf,
    shim: shim::ShimClient<Channel>,
    control: ControlClient<Channel>,
    pub(crate) init: ProcessRecord,
    inner: Mutex<ContainerInner>,
}

#[derive(Debug, Default)]
struct ContainerInner {
    paused: bool,
    /// Execs in start order.
    execs: Vec<ProcessRecord>,
    /// Exec pids whose exit was published before `AddProcess` recorded them.
    exited_unrecorded: HashSet<u32>,
}

/// What `State` reports of a process: how it was started.
#[derive(Debug, Clone)]
pub(crate) struct ProcessRecord {
    pub(crate) pid: u32,
    pub(crate) terminal: bool,
    pub(crate) user: api::User,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<String>,
    pub(crate) cwd: String,
}

impl ProcessRecord {
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

impl Container {
    fn lock(&self) -> MutexGuard<'_, ContainerInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// The init, then the execs in start order.
    pub(crate) fn processes(&self) -> Vec<ProcessRecord> {
        let inner = self.lock();
        std::iter::once(self.init.clone())
            .chain(inner.execs.iter().cloned())
            .collect()
    }

    fn has_process(&self, pid: u32) -> bool {
        pid == self.init.pid || self.lock().execs.iter().any(|p| p.pid == pid)
    }

    pub(crate) fn to_api(&self) -> api::Container {
        api::Container {
            id: self.id.to_string(),
            name: String::new(),
            bundle_path: self.bundle.clone(),
            processes: self.processes().iter().map(ProcessRecord::to_api).collect(),
            status: if self.is_paused() {
                "paused"
            } else {
                "running"
            }
            .to_owned(),
        }
    }

    /// Records an exec `AddProcess` started, unless its exit has already gone out.
    fn record_exec(&self, record: ProcessRecord) {
        let mut inner = self.lock();
        if !inner.exited_unrecorded.remove(&record.pid) {
            inner.execs.push(record);
        }
    }

    /// Forgets an exec whose exit is being published.
    fn forget_exec(&self, pid: u32) {
        let mut inner = self.lock();
        let before = inner.execs.len();
        inner.execs.retain(|p| p.pid != pid);
        if inner.execs.len() == before {
            inner.exited_unrecorded.insert(pid);
        }
    }

    /// Signals one of the container's processes through its shim (pid-safe: the shim is
    /// their reaper).
    pub(crate) async fn signal(&self, pid: u32, signal: Signal) -> Result<(), Status> {
        if !self.has_process(pid) {
            return Err(Status::not_found(format!(
                "process {pid} is not a process of container {}",
                self.id
            )));
        }
        self.control
            .clone()
            .kill(KillRequest {
                pid,
                signal: u32::from(signal.get()),
                all: false,
            })
            .await
            .map_err(|status| {
                from_shim(
                    format!("signalling process {pid} of container {}", self.id),
                    status,
                )
            })?;
        if signal == Signal::KILL {
            // The shim thaws a paused container so a killed process can die; its exit
            // follows (no `resume` event: it would race with that exit).
            self.lock().paused = false;
        }
        Ok(())
    }
}

/// The request fields of a `CreateContainer`, validated.
#[derive(Debug)]
pub(crate) struct NewContainer {
    pub(crate) id: ContainerId,
    pub(crate) bundle: PathBuf,
    pub(crate) stdin: String,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) console: String,
}

/// The request fields of an `AddProcess`, validated.
#[derive(Debug)]
pub(crate) struct NewProcess {
    pub(crate) terminal: bool,
    pub(crate) user: api::User,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<String>,
    pub(crate) cwd: String,
    pub(crate) stdin: String,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) console: String,
}

/// The bundle's process, as `State` reports the init.
fn init_record(spec: &Spec, pid: u32) -> ProcessRecord {
    let process = spec.process().clone().unwrap_or_default();
    let user = process.user();
    ProcessRecord {
        pid,
        terminal: process.terminal().unwrap_or(false),
        user: api::User {
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
        },
        args: process.args().clone().unwrap_or_default(),
        env: process.env().clone().unwrap_or_default(),
        cwd: process.cwd().display().to_string(),
    }
}

/// Loads and checks `config.json`.
fn load_spec(bundle: &Path) -> Result<Spec, Status> {
    let path = bundle.join("config.json");
    if !path.is_file() {
        return Err(Status::invalid_argument(format!(
            "bundle {} has no config.json",
            bundle.display()
        )));
    }
    let spec = Spec::load(&path).map_err(|err| {
        Status::invalid_argument(format!("bundle config {}: {err}", path.display()))
    })?;
    if spec.process().is_none() {
        return Err(Status::invalid_argument(format!(
            "bundle config {} has no process",
            path.display()
        )));
    }
    Ok(spec)
}

impl Daemon {
    pub(crate) fn new(config: Config, machine: api::Machine) -> Self {
        let shim_options = ShimOptions {
            binary: config.shim.clone(),
            runtime_root: config.runtime_root(),
            default_runtime: config.runtime.clone(),
            debug: config.debug,
            json_logs: config.log_format == crate::logging::LogFormat::Json,
        };
        let mut janitor_config = wharf_runc_executor::Config::new(config.runtime_root());
        janitor_config.runtime.clone_from(&config.runtime);
        janitor_config.scratch_dir = config.state_dir.clone();
        Self {
            janitor: RuncExecutor::new(janitor_config),
            shim_options,
            config,
            containers: Mutex::default(),
            events: EventHub::new(0),
            machine,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ContainerId, Slot>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn machine(&self) -> api::Machine {
        self.machine.clone()
    }

    pub(crate) fn subscribe(&self) -> EventStream<api::Event> {
        self.events.subscribe()
    }

    /// Ends every Events stream (the daemon is stopping).
    pub(crate) fn close_events(&self) {
        self.events.close();
    }

    pub(crate) fn publish(&self, kind: &str, id: &ContainerId, pid: u32, status: u32) {
        self.events.publish(api::Event {
            r#type: kind.to_owned(),
            id: id.to_string(),
            status,
            pid,
            ..api::Event::default()
        });
    }

    /// The live container `id`.
    pub(crate) fn container(&self, id: &str) -> Result<Arc<Container>, Status> {
        let id = ContainerId::new(id).map_err(|err| Status::invalid_argument(err.to_string()))?;
        match self.lock().get(&id) {
            Some(Slot::Live(container)) => Ok(container.clone()),
            Some(Slot::Creating) | None => {
                Err(Status::not_found(format!("container {id} not found")))
            }
        }
    }

    /// Every live container, by id.
    pub(crate) fn containers(&self) -> Vec<Arc<Container>> {
        let mut live: Vec<_> = self
            .lock()
            .values()
            .filter_map(|slot| match slot {
                Slot::Live(container) => Some(container.clone()),
                Slot::Creating => None,
            })
            .collect();
        live.sort_by(|a, b| a.id.cmp(&b.id));
        live
    }

    /// Creates and starts a container through a new shim; returns the init's pid. A failure
    /// leaves nothing behind: no shim, process, cgroup, socket or state directory.
    pub(crate) async fn create(self: &Arc<Self>, request: NewContainer) -> Result<u32, Status> {
        let spec = load_spec(&request.bundle)?;
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        if !request.console.is_empty() && !terminal {
            return Err(Status::invalid_argument(format!(
                "a console was given but process.terminal is false in {}/config.json",
                request.bundle.display()
            )));
        }
        {
            let mut containers = self.lock();
            if containers.contains_key(&request.id) {
                return Err(Status::already_exists(format!(
                    "container {} already exists",
                    request.id
                )));
            }
            containers.insert(request.id.clone(), Slot::Creating);
        }
        let id = request.id.clone();
        match self.launch(request, &spec, terminal).await {
            Ok((container, shim)) => {
                let pid = container.init.pid;
                self.lock().insert(id, Slot::Live(container.clone()));
                tokio::spawn(self.clone().pump(container, shim));
                Ok(pid)
            }
            Err(status) => {
                self.lock().remove(&id);
                Err(status)
            }
        }
    }

    async fn launch(
        &self,
        request: NewContainer,
        spec: &Spec,
        terminal: bool,
    ) -> Result<(Arc<Container>, SpawnedShim), Status> {
        let id = &request.id;
        let state_dir = self.prepare_state_dir(id).await?;
        let mut spawned = match spawn_shim(&self.shim_options, &state_dir) {
            Ok(spawned) => spawned,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&state_dir);
                return Err(Status::internal(format!(
                    "starting {} for container {id}: {err}",
                    self.shim_options.binary.display()
                )));
            }
        };
        // The pump subscribes to the shim's events after Start: the shim keeps what it
        // publishes until a first stream opens, so nothing is missed and no round trip is
        // spent before Create.
        let channel = match shim::channel(&spawned.socket).await {
            Ok(channel) => channel,
            Err(err) => {
                self.abandon(id, &mut spawned, None, &state_dir).await;
                return Err(Status::internal(format!(
                    "connecting to the shim of container {id}: {err}"
                )));
            }
        };
        let mut client = shim::ShimClient::new(channel.clone());
        let control = ControlClient::new(channel);
        let (stdin, stdout) = if request.console.is_empty() {
            (request.stdin, request.stdout)
        } else {
            (request.console.clone(), request.console)
        };
        let created = client
            .create(shim::CreateRequest {
                id: id.to_string(),
                bundle: request.bundle.display().to_string(),
                runtime: String::new(),
                no_pivot: false,
                terminal,
                stdin,
                stdout,
                stderr: request.stderr,
            })
            .await;
        let pid = match created {
            Ok(response) => response.into_inner().pid,
            Err(status) => {
                self.abandon(id, &mut spawned, None, &state_dir).await;
                return Err(from_shim(format!("creating container {id}"), status));
            }
        };
        if let Err(status) = client.start(shim::StartRequest {}).await {
            self.abandon(id, &mut spawned, Some(pid), &state_dir).await;
            return Err(from_shim(format!("starting container {id}"), status));
        }
        let container = Arc::new(Container {
            id: id.clone(),
            bundle: request.bundle.display().to_string(),
            state_dir,
            shim: client,
            control,
            init: init_record(spec, pid),
            inner: Mutex::default(),
        });
        Ok((container, spawned))
    }

    /// `<state-dir>/containers/<id>/`, new and empty. A leftover directory whose shim still
    /// answers belongs to a container from an earlier daemon; one whose shim is gone is stale.
    async fn prepare_state_dir(&self, id: &ContainerId) -> Result<PathBuf, Status> {
        let containers = self.config.containers_dir();
        let state_dir = containers.join(id.as_str());
        if state_dir.exists() {
            let socket = state_dir.join(shim::SOCKET_NAME);
            if shim::channel(&socket).await.is_ok() {
                return Err(Status::already_exists(format!(
                    "container {id} already exists (its shim serves {})",
                    socket.display()
                )));
            }
            tracing::warn!(container_id = %id, path = %state_dir.display(), "removing a stale state directory");
            std::fs::remove_dir_all(&state_dir).map_err(|err| {
                Status::internal(format!(
                    "removing stale state directory {}: {err}",
                    state_dir.display()
                ))
            })?;
        }
        std::fs::create_dir_all(&containers)
            .and_then(|()| {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new().mode(0o700).create(&state_dir)
            })
            .map_err(|err| {
                Status::internal(format!(
                    "creating state directory {}: {err}",
                    state_dir.display()
                ))
            })?;
        Ok(state_dir)
    }

    /// Undoes a failed create: deletes the container if the shim made one, makes the shim
    /// exit (then kills it if it will not), cleans up after it, removes the state directory.
    async fn abandon(
        &self,
        id: &ContainerId,
        spawned: &mut SpawnedShim,
        init: Option<u32>,
        state_dir: &Path,
    ) {
        if let Some(pid) = init
            && let Ok(mut client) = shim::connect(&spawned.socket).await
        {
            // Kills the init, deletes the container; the shim then exits.
            let _ = client.delete(shim::DeleteRequest { pid }).await;
        }
        // SIGTERM: a shim deletes any container it still has, then exits.
        if let Some(pid) = spawned
            .child
            .id()
            .and_then(|pid| rustix::process::Pid::from_raw(pid as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        self.reap_shim(id, spawned).await;
        if let Err(err) = self.janitor.delete(id, DeleteMode::Force).await {
            tracing::warn!(container_id = %id, error = %err, "deleting what a failed create left");
        }
        if let Err(err) = std::fs::remove_dir_all(state_dir) {
            tracing::warn!(container_id = %id, path = %state_dir.display(), error = %err, "removing the state directory");
        }
    }

    /// Waits for a shim to exit, killing it after [`SHIM_EXIT_DEADLINE`].
    async fn reap_shim(&self, id: &ContainerId, spawned: &mut SpawnedShim) {
        match tokio::time::timeout(SHIM_EXIT_DEADLINE, spawned.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => {
                tracing::warn!(container_id = %id, %status, "shim exited with a failure")
            }
            Ok(Err(err)) => {
                tracing::warn!(container_id = %id, error = %err, "waiting for the shim")
            }
            Err(_) => {
                tracing::warn!(container_id = %id, "shim did not exit in time; killing it");
                let _ = spawned.child.kill().await;
            }
        }
    }

    /// Turns the shim's events into `types.API` events until the container is gone.
    async fn pump(self: Arc<Self>, container: Arc<Container>, mut spawned: SpawnedShim) {
        let id = container.id.clone();
        let mut events = match container.shim.clone().events(shim::EventsRequest {}).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                tracing::error!(container_id = %id, error = %status.message(), "subscribing to the shim's events");
                self.shim_lost(&container, &mut spawned).await;
                return;
            }
        };
        loop {
            let event = match events.message().await {
                Ok(Some(event)) => event,
                Ok(None) | Err(_) => {
                    self.shim_lost(&container, &mut spawned).await;
                    return;
                }
            };
            match event.r#type() {
                shim::EventType::Create => {}
                shim::EventType::Start => {
                    self.events.publish(api::Event {
                        r#type: event_type::START_CONTAINER.to_owned(),
                        id: id.to_string(),
                        bundle_path: container.bundle.clone(),
                        pid: event.pid,
                        ..api::Event::default()
                    });
                }
                shim::EventType::ExecAdded => {
                    self.publish(event_type::START_PROCESS, &id, event.pid, 0)
                }
                shim::EventType::Oom => self.publish("oom", &id, 0, 0),
                shim::EventType::Exit if event.pid == container.init.pid => {
                    self.finish(&container, &mut spawned, event.exit_status)
                        .await;
                    return;
                }
                shim::EventType::Exit => {
                    container.forget_exec(event.pid);
                    self.publish(event_type::EXIT, &id, event.pid, event.exit_status);
                    // The shim keeps the status until asked; it is published, so let go.
                    let _ = container
                        .shim
                        .clone()
                        .delete(shim::DeleteRequest { pid: event.pid })
                        .await;
                }
            }
        }
    }

    /// The init exited (its execs' exits went out before): delete the container, let the
    /// shim exit, free the id, then tell subscribers.
    async fn finish(&self, container: &Container, spawned: &mut SpawnedShim, status: u32) {
        let id = &container.id;
        let deleted = container
            .shim
            .clone()
            .delete(shim::DeleteRequest {
                pid: container.init.pid,
            })
            .await;
        if let Err(status) = deleted {
            tracing::warn!(container_id = %id, error = %status.message(), "shim Delete of the init failed");
        }
        self.reap_shim(id, spawned).await;
        self.forget(container);
        tracing::info!(container_id = %id, exit_status = status, "container exited");
        self.publish(event_type::EXIT, id, container.init.pid, status);
    }

    /// The shim went away without reporting the init's exit (it was killed): kill what is
    /// left of the container, free the id, report the init as killed (137).
    async fn shim_lost(&self, container: &Container, spawned: &mut SpawnedShim) {
        let id = &container.id;
        tracing::error!(container_id = %id, "the shim went away; killing what is left of the container");
        self.reap_shim(id, spawned).await;
        if let Err(err) = self.janitor.delete(id, DeleteMode::Force).await {
            tracing::error!(container_id = %id, error = %err, "deleting the container of a dead shim");
        }
        self.forget(container);
        for exec in container.processes().iter().skip(1) {
            self.publish(event_type::EXIT, id, exec.pid, 137);
        }
        self.publish(event_type::EXIT, id, container.init.pid, 137);
    }

    fn forget(&self, container: &Container) {
        if let Err(err) = std::fs::remove_dir_all(&container.state_dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(container_id = %container.id, error = %err, "removing the state directory");
        }
        self.lock().remove(&container.id);
    }

    /// Starts an extra process in a running container; returns its pid.
    pub(crate) async fn add_process(
        &self,
        container: &Container,
        process: NewProcess,
    ) -> Result<u32, Status> {
        if container.is_paused() {
            return Err(Status::failed_precondition(format!(
                "container {} is paused",
                container.id
            )));
        }
        let (stdin, stdout) = if process.console.is_empty() {
            (process.stdin, process.stdout)
        } else {
            (process.console.clone(), process.console)
        };
        let env = if process.env.is_empty() {
            container.init.env.clone()
        } else {
            process.env
        };
        let pid = container
            .shim
            .clone()
            .exec(shim::ExecRequest {
                terminal: process.terminal,
                stdin,
                stdout,
                stderr: process.stderr,
                user: Some(shim::User {
                    uid: process.user.uid,
                    gid: process.user.gid,
                    additional_gids: process.user.additional_gids.clone(),
                }),
                args: process.args.clone(),
                env: env.clone(),
                cwd: process.cwd.clone(),
                ..shim::ExecRequest::default()
            })
            .await
            .map_err(|status| {
                from_shim(
                    format!("starting a process in container {}", container.id),
                    status,
                )
            })?
            .into_inner()
            .pid;
        container.record_exec(ProcessRecord {
            pid,
            terminal: process.terminal,
            user: process.user,
            args: process.args,
            env,
            cwd: process.cwd,
        });
        Ok(pid)
    }

    /// Freezes (`paused`) or thaws (`running`) a container and tells subscribers.
    pub(crate) async fn set_paused(
        &self,
        container: &Container,
        paused: bool,
    ) -> Result<(), Status> {
        let mut client = container.shim.clone();
        let (result, kind, verb) = if paused {
            (
                client.pause(shim::PauseRequest {}).await,
                event_type::PAUSE,
                "pausing",
            )
        } else {
            (
                client.resume(shim::ResumeRequest {}).await,
                event_type::RESUME,
                "resuming",
            )
        };
        result.map_err(|status| from_shim(format!("{verb} container {}", container.id), status))?;
        container.lock().paused = paused;
        self.publish(kind, &container.id, 0, 0);
        Ok(())
    }
}

/// A signal number from the wire: 1 to 64.
pub(crate) fn parse_signal(signal: u32) -> Result<Signal, Status> {
    Signal::try_from(signal).map_err(|err| Status::invalid_argument(err.to_string()))
}
