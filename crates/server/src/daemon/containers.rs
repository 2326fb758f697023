//! The daemon's containers: each owned by its `wharf-shim`, tracked here by id.
//!
//! A container lives from a successful `CreateContainer` (or its re-attach at start) until
//! its init's exit has been published: then its shim has deleted it and exited, its state
//! directory is gone, and the id is free again. One pump task per container turns the shim's
//! events into `types.API` events, in the shim's order, through the journal.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::DaemonExecutor;
use super::stats::StatsFeed;
use tokio::sync::watch;
use tonic::Status;
use tonic::transport::Channel;
use wharf_api as api;
use wharf_api::v1::JournaledEvent;
use wharf_executor::oci_spec::runtime::Spec;
use wharf_executor::{ContainerId, DeleteMode, Signal};
use wharf_shim_proto as shim;
use wharf_shim_proto::control::{ControlClient, KillRequest};

use super::config::Config;
use super::fault_point;
use super::journal::Journal;
use super::record::{ContainerRecord, Liveness, ProcessIdentity, ProcessRecord};
use super::shim_process::ShimProcess;
use crate::events::EventStream;
use crate::spawn::{ShimOptions, spawn_shim};
use crate::status::from_shim;

/// How long a shim may take to exit once its container is deleted, before it is killed.
pub(crate) const SHIM_EXIT_DEADLINE: Duration = Duration::from_secs(10);

/// The `types.API` event type strings wharf sends.
pub(crate) mod event_type {
    pub(crate) const EXIT: &str = "exit";
    pub(crate) const START_CONTAINER: &str = "start-container";
    pub(crate) const START_PROCESS: &str = "start-process";
    pub(crate) const PAUSE: &str = "pause";
    pub(crate) const RESUME: &str = "resume";
    pub(crate) const OOM: &str = "oom";
    pub(crate) const CHECKPOINT: &str = "checkpoint";
}

/// Exit status reported when how a process ended cannot be known (its pid was reused, or
/// it died while nobody could reap it for us).
pub(crate) const UNKNOWN_EXIT_STATUS: u32 = 255;
/// Exit status of a process the daemon killed because its shim was gone (128 + SIGKILL).
pub(crate) const KILLED_EXIT_STATUS: u32 = 137;

/// Every live container, and the events they produce.
#[derive(Debug)]
pub(crate) struct Daemon<E> {
    pub(crate) config: Config,
    shim_options: ShimOptions,
    /// Runs the runtime from the daemon itself, to clean up after a shim that died.
    pub(crate) janitor: E,
    containers: Mutex<HashMap<ContainerId, Slot>>,
    pub(crate) journal: Journal,
    machine: api::Machine,
    /// Pump tasks still running: a container's last event is out when its pump ends.
    pumps: watch::Sender<usize>,
    /// Set when the daemon stops leaving containers running: a shim connection that ends
    /// then is the daemon going away, not the shim.
    leaving: std::sync::atomic::AtomicBool,
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
    shim_identity: ProcessIdentity,
    pub(crate) init: ProcessRecord,
    inner: Mutex<ContainerInner>,
    /// `GetStats`: the container's sampler, shared by its streams.
    pub(crate) stats: StatsFeed,
}

#[derive(Debug, Default)]
struct ContainerInner {
    paused: bool,
    /// Execs in start order.
    execs: Vec<ProcessRecord>,
    /// Exec pids whose exit was published before `AddProcess` recorded them.
    exited_unrecorded: HashSet<u32>,
}

/// Where `finish` writes down the init's exit status before it lets the shim go.
const EXIT_STATUS_FILE: &str = "exit-status";

fn remember_exit(state_dir: &Path, status: u32) {
    let path = state_dir.join(EXIT_STATUS_FILE);
    let staging = state_dir.join(format!(".{EXIT_STATUS_FILE}"));
    let written = std::fs::write(&staging, status.to_string())
        .and_then(|()| std::fs::rename(&staging, &path));
    if let Err(err) = written {
        tracing::warn!(path = %path.display(), error = %err, "writing down an exit status");
    }
}

fn remembered_exit(state_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(state_dir.join(EXIT_STATUS_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A process of a re-attached container found stopped: its exit happened while no daemon
/// listened, and is settled (published) when the pump starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopped {
    pub(crate) pid: u32,
}

impl Container {
    fn lock(&self) -> MutexGuard<'_, ContainerInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// The checkpoints of the container's bundle.
    pub(crate) fn checkpoints(&self) -> wharf_criu_checkpoint::Store {
        wharf_criu_checkpoint::Store::new(Path::new(&self.bundle))
    }

    /// Whether the container's shim process is alive.
    pub(crate) fn shim_alive(&self) -> bool {
        self.shim_identity.liveness() == Liveness::Alive
    }

    /// The status for a failed call to the container's shim. A shim that cannot be reached
    /// because it is going away (its container exited, or it died) means the container is
    /// gone: `NotFound`, not a transient `Unavailable`; any other answer keeps its code.
    pub(crate) async fn shim_failed(
        &self,
        context: impl std::fmt::Display,
        status: Status,
    ) -> Status {
        /// How long a shim that stopped answering gets to be seen exiting.
        const SHIM_EXIT_GRACE: Duration = Duration::from_secs(2);
        if status.code() == tonic::Code::Unavailable {
            let deadline = tokio::time::Instant::now() + SHIM_EXIT_GRACE;
            while self.shim_alive() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if !self.shim_alive() {
                return Status::not_found(format!(
                    "{context}: container {} has exited (its shim is gone)",
                    self.id
                ));
            }
        }
        from_shim(context, status)
    }

    /// What the container uses now, for its metrics.
    pub(crate) fn usage(&self) -> Option<super::metrics::Usage> {
        self.stats.usage(self.id.as_str(), self.init.pid)
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

    fn record(&self, inner: &ContainerInner) -> ContainerRecord {
        ContainerRecord {
            id: self.id.to_string(),
            bundle: self.bundle.clone(),
            complete: true,
            shim: self.shim_identity,
            init: Some(self.init.clone()),
            execs: inner.execs.clone(),
        }
    }

    /// Rewrites the record (under the lock, so concurrent changes are written in order).
    fn save(&self, inner: &ContainerInner) {
        if let Err(err) = self.record(inner).write(&self.state_dir) {
            tracing::error!(container_id = %self.id, error = %err, "writing the container record");
        }
    }

    /// Records an exec `AddProcess` started, unless its exit has already gone out.
    fn record_exec(&self, record: ProcessRecord) {
        let mut inner = self.lock();
        if !inner.exited_unrecorded.remove(&record.pid) {
            inner.execs.push(record);
            self.save(&inner);
        }
    }

    /// Forgets an exec whose exit is being published.
    fn forget_exec(&self, pid: u32) {
        let mut inner = self.lock();
        let before = inner.execs.len();
        inner.execs.retain(|p| p.pid != pid);
        if inner.execs.len() == before {
            inner.exited_unrecorded.insert(pid);
        } else {
            self.save(&inner);
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
        let killed = self
            .control
            .clone()
            .kill(KillRequest {
                pid,
                signal: u32::from(signal.get()),
                all: false,
            })
            .await;
        if let Err(status) = killed {
            let context = format!("signalling process {pid} of container {}", self.id);
            return Err(self.shim_failed(context, status).await);
        }
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
    /// Restore from this checkpoint of the bundle instead of starting the bundle's process.
    pub(crate) checkpoint: Option<Checkpoint>,
}

/// Restores the container through its shim from checkpoint `checkpoint` of `bundle`, with
/// the flags it was made with; CRIU's work files go to a directory of the container's
/// state, removed after, whose log's errors a failure carries.
async fn restore(
    control: &mut ControlClient<Channel>,
    bundle: &Path,
    state_dir: &Path,
    checkpoint: &Checkpoint,
    create: shim::CreateRequest,
) -> Result<u32, Status> {
    let id = create.id.clone();
    let images = wharf_criu_checkpoint::Store::new(bundle)
        .images(&checkpoint.name)
        .map_err(|err| crate::status::from_checkpoint(&err))?;
    let work = CriuWork::new(state_dir, "restore")?;
    let restored = control
        .restore(shim::control::RestoreRequest {
            id: create.id,
            bundle: create.bundle,
            runtime: create.runtime,
            no_pivot: create.no_pivot,
            terminal: create.terminal,
            stdin: create.stdin,
            stdout: create.stdout,
            stderr: create.stderr,
            image_path: images.display().to_string(),
            work_path: work.dir.display().to_string(),
            options: Some(criu_options(&checkpoint.flags, false)),
        })
        .await;
    match restored {
        Ok(response) => Ok(response.into_inner().pid),
        Err(status) => Err(work.explain(
            from_shim(
                format!(
                    "restoring container {id} from checkpoint {}",
                    checkpoint.name
                ),
                status,
            ),
            "restore.log",
        )),
    }
}

/// A checkpoint of a container's bundle, as recorded.
pub(crate) type Checkpoint = wharf_criu_checkpoint::Checkpoint;

fn criu_options(
    flags: &wharf_criu_checkpoint::Flags,
    leave_running: bool,
) -> shim::control::CriuOptions {
    shim::control::CriuOptions {
        leave_running,
        tcp_established: flags.tcp,
        external_unix_sockets: flags.unix_sockets,
        shell_job: flags.shell,
    }
}

/// CRIU's work directory for one dump or restore, in the container's state directory;
/// removed when dropped.
struct CriuWork {
    dir: PathBuf,
}

impl CriuWork {
    fn new(state_dir: &Path, what: &str) -> Result<Self, Status> {
        let dir = state_dir.join(format!("criu-{what}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir)
            .map_err(|err| Status::internal(format!("creating {}: {err}", dir.display())))?;
        Ok(Self { dir })
    }

    /// `status` with the error lines of CRIU's `log` appended.
    fn explain(&self, status: Status, log: &str) -> Status {
        let lines = wharf_criu_checkpoint::criu_error_lines(&self.dir.join(log), 5);
        if lines.is_empty() {
            return status;
        }
        Status::new(
            status.code(),
            format!("{}; CRIU: {}", status.message(), lines.join("; ")),
        )
    }
}

impl Drop for CriuWork {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
        start_time: ProcessIdentity::of(pid).start_time,
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
    let spec = wharf_executor::support::load_spec(bundle)
        .map_err(|err| crate::status::from_executor(&err))?;
    if spec.process().is_none() {
        return Err(Status::invalid_argument(format!(
            "bundle config {}/config.json has no process",
            bundle.display()
        )));
    }
    Ok(spec)
}

/// Decrements the running-pump count when a pump ends, however it ends.
struct PumpGuard<'a>(&'a watch::Sender<usize>);

impl Drop for PumpGuard<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl<E: DaemonExecutor> Daemon<E> {
    pub(crate) fn new(
        config: Config,
        machine: api::Machine,
        journal: Journal,
        shim_open_files: crate::limits::OpenFilesLimit,
    ) -> Self {
        let shim_options = ShimOptions {
            binary: config.shim.clone(),
            executor: config.executor,
            executor_root: config.executor_root(),
            default_runtime: config.runtime.clone(),
            criu: config.criu_path.clone(),
            debug: config.debug,
            json_logs: config.log_format == crate::logging::LogFormat::Json,
            open_files: Some(shim_open_files),
        };
        Self {
            janitor: E::janitor(&config),
            shim_options,
            config,
            containers: Mutex::default(),
            journal,
            machine,
            pumps: watch::Sender::new(0),
            leaving: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ContainerId, Slot>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn machine(&self) -> api::Machine {
        self.machine.clone()
    }

    pub(crate) fn subscribe(&self) -> EventStream<api::Event> {
        self.journal.subscribe_api()
    }

    pub(crate) fn subscribe_after(&self, after_seq: u64) -> EventStream<JournaledEvent> {
        self.journal.subscribe_after(after_seq)
    }

    fn event(kind: &str, id: &ContainerId, pid: u32, status: u32) -> api::Event {
        api::Event {
            r#type: kind.to_owned(),
            id: id.to_string(),
            status,
            pid,
            ..api::Event::default()
        }
    }

    pub(crate) fn publish(&self, kind: &str, id: &ContainerId, pid: u32, status: u32) {
        self.journal.publish(Self::event(kind, id, pid, status));
    }

    fn start_event(container: &Container, pid: u32) -> api::Event {
        api::Event {
            r#type: event_type::START_CONTAINER.to_owned(),
            id: container.id.to_string(),
            bundle_path: container.bundle.clone(),
            pid,
            ..api::Event::default()
        }
    }

    /// Journals the start of a container taken over from an earlier daemon if that daemon
    /// died after answering its `CreateContainer` but before it journaled the start: every
    /// container a client saw created has its `start-container`.
    pub(crate) fn settle_start(&self, container: &Container) {
        let pid = container.init.pid;
        if !self
            .journal
            .has_event(event_type::START_CONTAINER, container.id.as_str(), pid)
        {
            tracing::info!(container_id = %container.id, pid, "journaling a start an earlier daemon did not");
            self.journal
                .publish_recovered(Self::start_event(container, pid));
        }
    }

    /// Publishes the exit of a process that ended while no daemon listened, unless the
    /// journal shows an earlier daemon published it already.
    fn publish_recovered_exit(&self, id: &ContainerId, pid: u32, status: u32) {
        if self.journal.has_exit(id.as_str(), pid) {
            tracing::debug!(container_id = %id, pid, "exit already journaled by an earlier daemon");
            return;
        }
        tracing::info!(container_id = %id, pid, exit_status = status, "publishing an exit that happened while wharfd was away");
        self.journal
            .publish_recovered(Self::event(event_type::EXIT, id, pid, status));
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
    /// leaves nothing behind: no shim, process, cgroup, socket or state directory. A crash
    /// leaves a state directory without a complete record, which the next start tears down.
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
        let started = std::time::Instant::now();
        match self.launch(request, &spec, terminal).await {
            Ok((container, shim)) => {
                metrics::histogram!(super::metrics::name::CONTAINER_START_DURATION)
                    .record(started.elapsed().as_secs_f64());
                let pid = container.init.pid;
                fault_point("create:recorded");
                self.adopt(container, shim, Vec::new());
                Ok(pid)
            }
            Err(status) => {
                self.lock().remove(&id);
                Err(status)
            }
        }
    }

    /// Makes `container` live and starts its pump.
    pub(crate) fn adopt(
        self: &Arc<Self>,
        container: Arc<Container>,
        shim: ShimProcess,
        stopped: Vec<Stopped>,
    ) {
        self.lock()
            .insert(container.id.clone(), Slot::Live(container.clone()));
        self.pumps.send_modify(|n| *n += 1);
        tokio::spawn(self.clone().pump(container, shim, stopped));
    }

    async fn launch(
        &self,
        request: NewContainer,
        spec: &Spec,
        terminal: bool,
    ) -> Result<(Arc<Container>, ShimProcess), Status> {
        let id = &request.id;
        let state_dir = self.prepare_state_dir(id).await?;
        fault_point("create:state-dir");
        let spawned = match spawn_shim(&self.shim_options, &state_dir) {
            Ok(spawned) => spawned,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&state_dir);
                let context = format!(
                    "starting {} for container {id}",
                    self.shim_options.binary.display()
                );
                return Err(crate::status::from_io(context, &err));
            }
        };
        let socket = spawned.socket;
        let mut shim_process = ShimProcess::spawned(spawned.child);
        let mut record = ContainerRecord {
            id: id.to_string(),
            bundle: request.bundle.display().to_string(),
            complete: false,
            shim: shim_process.identity(),
            init: None,
            execs: Vec::new(),
        };
        if let Err(err) = record.write(&state_dir) {
            self.abandon(id, &socket, &mut shim_process, None, &state_dir)
                .await;
            return Err(Status::internal(format!(
                "writing the record of container {id}: {err}"
            )));
        }
        fault_point("create:spawned");
        // The pump subscribes to the shim's events after Start: the shim keeps what it
        // publishes until a first stream opens, so nothing is missed and no round trip is
        // spent before Create.
        let channel = match shim::channel(&socket).await {
            Ok(channel) => channel,
            Err(err) => {
                self.abandon(id, &socket, &mut shim_process, None, &state_dir)
                    .await;
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
        let create = shim::CreateRequest {
            id: id.to_string(),
            bundle: request.bundle.display().to_string(),
            runtime: String::new(),
            no_pivot: false,
            terminal,
            stdin,
            stdout,
            stderr: request.stderr,
        };
        let restoring = request.checkpoint.is_some();
        let created = match &request.checkpoint {
            None => client
                .create(create)
                .await
                .map(|r| r.into_inner().pid)
                .map_err(|status| from_shim(format!("creating container {id}"), status)),
            Some(checkpoint) => {
                restore(
                    &mut control.clone(),
                    &request.bundle,
                    &state_dir,
                    checkpoint,
                    create,
                )
                .await
            }
        };
        let pid = match created {
            Ok(pid) => pid,
            Err(status) => {
                self.abandon(id, &socket, &mut shim_process, None, &state_dir)
                    .await;
                return Err(status);
            }
        };
        fault_point("create:created");
        if !restoring && let Err(status) = client.start(shim::StartRequest {}).await {
            self.abandon(id, &socket, &mut shim_process, Some(pid), &state_dir)
                .await;
            return Err(from_shim(format!("starting container {id}"), status));
        }
        fault_point("create:started");
        let init = init_record(spec, pid);
        record.complete = true;
        record.init = Some(init.clone());
        if let Err(err) = record.write(&state_dir) {
            self.abandon(id, &socket, &mut shim_process, Some(pid), &state_dir)
                .await;
            return Err(Status::internal(format!(
                "writing the record of container {id}: {err}"
            )));
        }
        let container = Arc::new(Container {
            id: id.clone(),
            bundle: request.bundle.display().to_string(),
            state_dir,
            shim: client,
            control,
            shim_identity: shim_process.identity(),
            init,
            inner: Mutex::default(),
            stats: StatsFeed::default(),
        });
        Ok((container, shim_process))
    }

    /// The container of a dead shim, from its record, to clean up and report.
    pub(crate) fn dead_container(
        &self,
        id: ContainerId,
        record: &ContainerRecord,
        init: ProcessRecord,
        state_dir: PathBuf,
    ) -> Arc<Container> {
        // Never used: the shim is gone. A lazy channel connects only when used.
        let channel = shim::channel_lazy(state_dir.join(shim::SOCKET_NAME));
        Arc::new(Container {
            id,
            bundle: record.bundle.clone(),
            state_dir,
            shim: shim::ShimClient::new(channel.clone()),
            control: ControlClient::new(channel),
            shim_identity: record.shim,
            init,
            inner: Mutex::new(ContainerInner {
                execs: record.execs.clone(),
                ..ContainerInner::default()
            }),
            stats: StatsFeed::default(),
        })
    }

    /// A container taken over from an earlier daemon, from its record and its shim's State.
    pub(crate) fn reattached(
        &self,
        id: ContainerId,
        record: &ContainerRecord,
        init: ProcessRecord,
        state_dir: PathBuf,
        channel: Channel,
        shim_state: &shim::StateResponse,
    ) -> Result<(Arc<Container>, Vec<Stopped>), Status> {
        let known: HashMap<u32, &ProcessRecord> = record.execs.iter().map(|p| (p.pid, p)).collect();
        let mut execs = Vec::new();
        let mut stopped = Vec::new();
        let mut paused = false;
        for process in &shim_state.processes {
            match process.state() {
                shim::State::Stopped => stopped.push(Stopped { pid: process.pid }),
                shim::State::Paused => paused = true,
                _ => {}
            }
            if process.pid != init.pid {
                // Kept until its exit is settled, so State lists it meanwhile.
                execs.push(
                    known
                        .get(&process.pid)
                        .map_or_else(|| ProcessRecord::unknown(process.pid), |p| (*p).clone()),
                );
            }
        }
        // Execs' exits before the init's.
        stopped.sort_by_key(|s| s.pid == init.pid);
        let container = Arc::new(Container {
            id,
            bundle: record.bundle.clone(),
            state_dir,
            shim: shim::ShimClient::new(channel.clone()),
            control: ControlClient::new(channel),
            shim_identity: record.shim,
            init,
            inner: Mutex::new(ContainerInner {
                paused,
                execs,
                exited_unrecorded: HashSet::new(),
            }),
            stats: StatsFeed::default(),
        });
        container.save(&container.lock());
        Ok((container, stopped))
    }

    /// `<state-dir>/containers/<id>/`, new and empty. A leftover directory whose shim still
    /// answers belongs to a live container; one whose shim is gone is stale.
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
        socket: &Path,
        shim_process: &mut ShimProcess,
        init: Option<u32>,
        state_dir: &Path,
    ) {
        if let Some(pid) = init
            && let Ok(mut client) = shim::connect(socket).await
        {
            // Kills the init, deletes the container; the shim then exits.
            let _ = client.delete(shim::DeleteRequest { pid }).await;
        }
        // SIGTERM: a shim deletes any container it still has, then exits.
        shim_process.signal(rustix::process::Signal::TERM);
        self.teardown(id, shim_process, state_dir).await;
    }

    /// After a shim is told to go: waits for it, removes whatever of the container the
    /// runtime still knows, and the state directory.
    pub(crate) async fn teardown(
        &self,
        id: &ContainerId,
        shim_process: &mut ShimProcess,
        state_dir: &Path,
    ) {
        if !shim_process.wait_exit(SHIM_EXIT_DEADLINE).await {
            tracing::warn!(container_id = %id, "shim did not exit in time; killed it");
        }
        if let Err(err) = self.janitor.delete(id, DeleteMode::Force).await {
            tracing::warn!(container_id = %id, error = %err, "deleting what is left of the container");
        }
        if let Err(err) = std::fs::remove_dir_all(state_dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(container_id = %id, path = %state_dir.display(), error = %err, "removing the state directory");
        }
    }

    /// Turns the shim's events into `types.API` events until the container is gone. First,
    /// for a re-attached container, settles the exits that happened while no daemon listened.
    async fn pump(
        self: Arc<Self>,
        container: Arc<Container>,
        mut shim_process: ShimProcess,
        stopped: Vec<Stopped>,
    ) {
        let _running = PumpGuard(&self.pumps);
        let id = container.id.clone();
        let mut events = match container.shim.clone().events(shim::EventsRequest {}).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                tracing::error!(container_id = %id, error = %status.message(), "subscribing to the shim's events");
                self.shim_lost(&container, &mut shim_process, false).await;
                return;
            }
        };
        // Exits published by this pump, so the shim's kept events do not repeat them.
        let mut settled = HashSet::new();
        for process in stopped {
            if process.pid == container.init.pid {
                self.finish(&container, &mut shim_process, None).await;
                return;
            }
            self.settle_exec(&container, process.pid).await;
            settled.insert(process.pid);
        }
        loop {
            let event = match events.message().await {
                Ok(Some(event)) => event,
                Ok(None) | Err(_) if self.leaving.load(std::sync::atomic::Ordering::SeqCst) => {
                    // Our connections close as the daemon exits; the shim lives on and the
                    // next daemon takes it over.
                    return;
                }
                Ok(None) | Err(_) => {
                    self.shim_lost(&container, &mut shim_process, false).await;
                    return;
                }
            };
            match event.r#type() {
                shim::EventType::Create => {}
                // A re-attached container's start may have been journaled already (by the
                // daemon that created it, or by the take-over when that one died first).
                shim::EventType::Start
                    if !self.journal.has_event(
                        event_type::START_CONTAINER,
                        id.as_str(),
                        event.pid,
                    ) =>
                {
                    metrics::counter!(super::metrics::name::CONTAINER_STARTS).increment(1);
                    self.journal
                        .publish(Self::start_event(&container, event.pid));
                }
                shim::EventType::Start => {}
                shim::EventType::ExecAdded => {
                    self.publish(event_type::START_PROCESS, &id, event.pid, 0)
                }
                shim::EventType::Oom => {
                    metrics::counter!(super::metrics::name::CONTAINER_OOMS).increment(1);
                    self.publish(event_type::OOM, &id, 0, 0);
                }
                shim::EventType::Exit if event.pid == container.init.pid => {
                    self.finish(&container, &mut shim_process, Some(event.exit_status))
                        .await;
                    return;
                }
                shim::EventType::Exit if settled.contains(&event.pid) => {}
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

    /// An exec of a re-attached container that exited while no daemon listened: its status
    /// comes from the shim, which kept it.
    async fn settle_exec(&self, container: &Container, pid: u32) {
        match container
            .shim
            .clone()
            .delete(shim::DeleteRequest { pid })
            .await
        {
            Ok(response) => {
                container.forget_exec(pid);
                self.publish_recovered_exit(&container.id, pid, response.into_inner().exit_status);
            }
            Err(status) => {
                tracing::warn!(container_id = %container.id, pid, error = %status.message(), "settling an exit found at re-attach");
            }
        }
    }

    /// The init exited (its execs' exits went out before): delete the container, let the
    /// shim exit, free the id, then tell subscribers. `status` is `None` for an exit found
    /// at re-attach, whose status the shim is asked for (`Control.ExitStatus`), or, from a
    /// shim that cannot say, its `Delete` gives.
    async fn finish(
        &self,
        container: &Container,
        shim_process: &mut ShimProcess,
        status: Option<u32>,
    ) {
        let id = &container.id;
        let recovered = status.is_none();
        // An exit found at re-attach: its status, asked without letting the shim go (a shim
        // of an older wharf may not know the question, a wedged one may not answer: then
        // Delete tells).
        let status = match status {
            Some(status) => Some(status),
            None => {
                let mut control = container.control.clone();
                let asked = control.exit_status(shim::control::ExitStatusRequest {
                    pid: container.init.pid,
                });
                match tokio::time::timeout(Duration::from_secs(2), asked).await {
                    Ok(Ok(response)) => Some(response.into_inner().exit_status),
                    _ => None,
                }
            }
        };
        // Written down before the shim, which holds the status, is let go: a daemon killed
        // from here on finds the status in the state dir, not a dead shim of unknown end.
        if let Some(status) = status {
            remember_exit(&container.state_dir, status);
        }
        let deleted = container
            .shim
            .clone()
            .delete(shim::DeleteRequest {
                pid: container.init.pid,
            })
            .await;
        let exit_status = match (deleted, status) {
            (Ok(response), _) => response.into_inner().exit_status,
            (Err(_), Some(status)) => status,
            (Err(err), None) => {
                tracing::error!(container_id = %id, error = %err.message(), "reading a kept exit status");
                UNKNOWN_EXIT_STATUS
            }
        };
        fault_point("finish:deleted");
        if status.is_none() {
            remember_exit(&container.state_dir, exit_status);
        }
        if !shim_process.wait_exit(SHIM_EXIT_DEADLINE).await {
            tracing::warn!(container_id = %id, "shim did not exit after its container was deleted; killed it");
        }
        self.forget(container);
        tracing::info!(container_id = %id, exit_status, "container exited");
        if recovered {
            self.publish_recovered_exit(id, container.init.pid, exit_status);
        } else {
            self.publish(event_type::EXIT, id, container.init.pid, exit_status);
        }
        Self::remove_state(container);
    }

    /// The shim is gone without reporting the init's exit (killed, or dead while no daemon
    /// ran): kill what is left of the container (its whole cgroup, through the runtime),
    /// free the id and report each process: 137 if it was still running (we killed it),
    /// 255 if its end cannot be known (it died unreaped by us, or its pid was reused).
    pub(crate) async fn shim_lost(
        &self,
        container: &Container,
        shim_process: &mut ShimProcess,
        at_start: bool,
    ) {
        let id = &container.id;
        tracing::error!(container_id = %id, "the shim is gone; killing what is left of the container");
        shim_process.signal(rustix::process::Signal::KILL);
        shim_process.wait_exit(SHIM_EXIT_DEADLINE).await;
        let processes = container.processes();
        // An earlier daemon that learnt the init's status and was killed before it was done
        // wrote it down (see `finish`).
        let remembered = remembered_exit(&container.state_dir);
        let statuses: Vec<(u32, u32)> = processes
            .iter()
            .map(|p| {
                let status = match (
                    p.pid == container.init.pid,
                    remembered,
                    p.identity().liveness(),
                ) {
                    (true, Some(status), _) => status,
                    (_, _, Liveness::Alive) => KILLED_EXIT_STATUS,
                    (_, _, Liveness::Zombie | Liveness::Gone) => UNKNOWN_EXIT_STATUS,
                };
                (p.pid, status)
            })
            .collect();
        if let Err(err) = self.janitor.delete(id, DeleteMode::Force).await {
            tracing::error!(container_id = %id, error = %err, "deleting the container of a dead shim");
        }
        self.forget(container);
        // Execs first, the init last.
        for &(pid, status) in statuses.iter().skip(1).chain(statuses.first()) {
            if at_start {
                self.publish_recovered_exit(id, pid, status);
            } else {
                self.publish(event_type::EXIT, id, pid, status);
            }
        }
        Self::remove_state(container);
    }

    /// The container is over (its init exited, or it was lost with its shim): called once
    /// per container.
    ///
    /// Frees the id; the state directory stays until [`Daemon::remove_state`], called after
    /// the exit is journaled: a daemon killed in between finds the record and the written
    /// down status, and publishes nothing twice (the journal has the exit).
    /// The number of running pumps (one per live container), as it changes.
    pub(crate) fn pumps(&self) -> watch::Receiver<usize> {
        self.pumps.subscribe()
    }

    fn forget(&self, container: &Container) {
        metrics::counter!(super::metrics::name::CONTAINER_EXITS).increment(1);
        container.stats.end();
        let mut containers = self.lock();
        if let Some(Slot::Live(live)) = containers.get(&container.id)
            && std::ptr::eq(live.as_ref(), container)
        {
            containers.remove(&container.id);
        }
    }

    /// Removes a forgotten container's state directory, its exit journaled.
    fn remove_state(container: &Container) {
        if let Err(err) = std::fs::remove_dir_all(&container.state_dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(container_id = %container.id, error = %err, "removing the state directory");
        }
    }

    /// Dumps `container` into a new checkpoint of its bundle; publishes a `checkpoint`
    /// event once it is whole. A failed dump leaves no checkpoint directory.
    pub(crate) async fn checkpoint(
        &self,
        container: &Container,
        request: api::Checkpoint,
    ) -> Result<(), Status> {
        let flags = wharf_criu_checkpoint::Flags {
            exit: request.exit,
            tcp: request.tcp,
            unix_sockets: request.unix_sockets,
            shell: request.shell,
        };
        let store = container.checkpoints();
        let pending = store
            .begin(&request.name, flags)
            .map_err(|err| crate::status::from_checkpoint(&err))?
            .dumped_by(self.config.executor.as_str());
        let work = CriuWork::new(&container.state_dir, "dump")?;
        let dumped = container
            .control
            .clone()
            .checkpoint(shim::control::CheckpointRequest {
                image_path: pending.image_dir().display().to_string(),
                work_path: work.dir.display().to_string(),
                options: Some(criu_options(&flags, !request.exit)),
            })
            .await;
        if let Err(status) = dumped {
            let context = format!(
                "checkpointing container {} as {}",
                container.id, request.name
            );
            let status = container.shim_failed(context, status).await;
            return Err(work.explain(status, "dump.log"));
        }
        let made = pending
            .commit()
            .map_err(|err| crate::status::from_checkpoint(&err))?;
        tracing::info!(container_id = %container.id, checkpoint = %made.name, exit = flags.exit, "checkpointed");
        self.journal.publish(api::Event {
            r#type: event_type::CHECKPOINT.to_owned(),
            id: container.id.to_string(),
            checkpoint: Some(request),
            ..api::Event::default()
        });
        Ok(())
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
        let started = container
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
            .await;
        let pid = match started {
            Ok(response) => response.into_inner().pid,
            Err(status) => {
                let context = format!("starting a process in container {}", container.id);
                return Err(container.shim_failed(context, status).await);
            }
        };
        container.record_exec(ProcessRecord {
            pid,
            start_time: ProcessIdentity::of(pid).start_time,
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
        if let Err(status) = result {
            let context = format!("{verb} container {}", container.id);
            return Err(container.shim_failed(context, status).await);
        }
        container.lock().paused = paused;
        self.publish(kind, &container.id, 0, 0);
        Ok(())
    }

    /// The daemon is about to exit, leaving its containers to their shims: from now on a
    /// shim connection that ends is no sign that the shim died.
    pub(crate) fn leave(&self) {
        self.leaving
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops every container: SIGTERM to each init, SIGKILL to what still runs after
    /// `timeout`, then waits until every exit is journaled (their pumps have ended).
    pub(crate) async fn stop_all(&self, timeout: Duration) {
        let containers = self.containers();
        tracing::info!(count = containers.len(), "stopping every container");
        for container in &containers {
            let _ = container.signal(container.init.pid, Signal::TERM).await;
        }
        let mut pumps = self.pumps.subscribe();
        if tokio::time::timeout(timeout, pumps.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            for container in self.containers() {
                tracing::warn!(container_id = %container.id, "still running after SIGTERM; SIGKILL");
                let _ = container.signal(container.init.pid, Signal::KILL).await;
            }
            if tokio::time::timeout(SHIM_EXIT_DEADLINE, pumps.wait_for(|n| *n == 0))
                .await
                .is_err()
            {
                tracing::error!("containers still running after SIGKILL; exiting anyway");
            }
        }
    }
}

/// A signal number from the wire: 1 to 64.
pub(crate) fn parse_signal(signal: u32) -> Result<Signal, Status> {
    Signal::try_from(signal).map_err(|err| Status::invalid_argument(err.to_string()))
}
