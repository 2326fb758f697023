//! `containerd.shim.v1.Shim` for one container: its process table, lifecycle and events.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use wharf_executor::oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxNamespaceType, PosixRlimitBuilder, PosixRlimitType,
    Process, User,
};
use wharf_executor::{
    ContainerId, CreateRequest as ExecutorCreate, DeleteMode, ExecId, ExecRequest as ExecutorExec,
    ExitStatus, KillScope, Pid, Signal,
};
use wharf_shim_proto as proto;
use wharf_shim_proto::control::{self, KillRequest};
use wharf_stats_collector::OomWatch;

use super::ShimExecutor;
use super::reaper::{Reaper, SignalError};
use super::stdio::{PreparedIo, ProcessIo, StdioPaths};
use crate::events::{EventHub, EventStream};
use crate::fdio::AsyncOwnedFd;
use crate::status::from_executor;

/// Events kept for the next stream while none is open.
const EVENT_BACKLOG: usize = 4096;

/// How the shim runs its container.
#[derive(Debug, Clone)]
pub struct ShimConfig {
    /// The executor's state directory (runc's `--root`, libcontainer's root), shared by
    /// every shim of a daemon.
    pub executor_root: PathBuf,
    /// The runtime binary used when a `Create` names none (runc executor).
    pub default_runtime: PathBuf,
    /// The container's state directory (the shim's working directory), absolute.
    pub state_dir: PathBuf,
    /// Deadline of each runtime command.
    pub command_timeout: Duration,
    /// The CRIU binary for checkpoints and restores.
    pub criu: PathBuf,
    /// How long an exited process's output may take to be written out before its exit is
    /// published anyway (a reader that never reads).
    pub exit_flush_timeout: Duration,
}

/// The shim's gRPC service.
#[derive(Debug)]
pub(crate) struct ShimService<E> {
    config: ShimConfig,
    reaper: Arc<Reaper>,
    events: EventHub<proto::Event>,
    state: Mutex<State<E>>,
    shutdown: CancellationToken,
    /// True while a `Start` runs: the init may exit before `runc start` returns, and its
    /// exit must not be published before the `START` event.
    starting: watch::Sender<bool>,
}

#[derive(Debug)]
struct State<E> {
    phase: Phase<E>,
    processes: BTreeMap<Pid, ProcessEntry>,
    started: bool,
    paused: bool,
    /// Creates/execs in flight: while any runs, exits of unknown pids are kept, since the
    /// new process may exit before its pid is registered.
    registering: usize,
    unclaimed_exits: HashMap<Pid, ExitStatus>,
    next_exec: u64,
}

#[derive(Debug)]
enum Phase<E> {
    Empty,
    Creating,
    Created(Arc<Container<E>>),
    Deleted,
}

#[derive(Debug)]
struct Container<E> {
    id: ContainerId,
    bundle: PathBuf,
    executor: E,
    init_pid: Pid,
    /// The bundle's process, the template for execs.
    template: Process,
    /// With its own pid namespace, every process dies with the init.
    own_pid_namespace: bool,
    /// OOM kills in the container's cgroup, watched from before the init runs.
    oom: Option<Arc<OomReporter>>,
}

/// The container's OOM watch and how many kills were published.
#[derive(Debug)]
struct OomReporter {
    watch: OomWatch,
    published: Mutex<u64>,
}

#[derive(Debug)]
struct ProcessEntry {
    is_init: bool,
    /// Set when reaped.
    reaped: Option<ExitStatus>,
    /// Set once the exit event has been published.
    published: watch::Sender<Option<ExitStatus>>,
    /// Pumps, taken by the exit handler to flush.
    io: Option<ProcessIo>,
}

impl<E> Default for State<E> {
    fn default() -> Self {
        Self {
            phase: Phase::Empty,
            processes: BTreeMap::new(),
            started: false,
            paused: false,
            registering: 0,
            unclaimed_exits: HashMap::new(),
            next_exec: 0,
        }
    }
}

impl<E> State<E> {
    /// Whether the init has been reaped (or is no longer in the table).
    fn init_exited(&self, init: Pid) -> bool {
        self.processes.get(&init).is_none_or(|e| e.reaped.is_some())
    }
}

impl<E> Container<E> {
    /// `FailedPrecondition`: "container <id> <why>".
    fn refuse(&self, why: &str) -> Status {
        Status::failed_precondition(format!("container {} {why}", self.id))
    }
}

/// Counts a create/exec in flight; see [`State::registering`].
struct Registration<'a, E>(&'a ShimService<E>);

impl<'a, E> Registration<'a, E> {
    fn new(shim: &'a ShimService<E>) -> Self {
        shim.lock().registering += 1;
        Self(shim)
    }
}

impl<E> Drop for Registration<'_, E> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.registering -= 1;
        if state.registering == 0 {
            state.unclaimed_exits.clear();
        }
    }
}

impl<E> ShimService<E> {
    fn lock(&self) -> MutexGuard<'_, State<E>> {
        // Every critical section leaves the state consistent, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<E: ShimExecutor> ShimService<E> {
    pub(crate) fn new(
        config: ShimConfig,
        reaper: Arc<Reaper>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            config,
            reaper,
            events: EventHub::new(EVENT_BACKLOG),
            state: Mutex::default(),
            shutdown,
            starting: watch::Sender::new(false),
        }
    }

    fn container(&self) -> Result<Arc<Container<E>>, Status> {
        match &self.lock().phase {
            Phase::Created(container) => Ok(container.clone()),
            Phase::Empty => Err(Status::failed_precondition(
                "no container has been created in this shim",
            )),
            Phase::Creating => Err(Status::failed_precondition(
                "the container is still being created",
            )),
            Phase::Deleted => Err(Status::failed_precondition(
                "the container has been deleted",
            )),
        }
    }

    fn publish(
        &self,
        container: &ContainerId,
        kind: proto::EventType,
        pid: Pid,
        status: Option<ExitStatus>,
    ) {
        self.events.publish(proto::Event {
            id: container.to_string(),
            r#type: kind.into(),
            pid: pid.get(),
            exit_status: status.map_or(0, ExitStatus::code),
        });
    }

    /// Called for every child the reaper collected that no spawner waits for.
    pub(crate) fn on_exit(self: &Arc<Self>, pid: Pid, status: ExitStatus) {
        let mut state = self.lock();
        if state.processes.contains_key(&pid) {
            self.process_exited(&mut state, pid, status);
        } else if state.registering > 0 {
            state.unclaimed_exits.insert(pid, status);
        } else {
            tracing::debug!(pid = pid.get(), %status, "reaped an orphan");
        }
        // The table now knows the pid is gone; the reaper need not remember it.
        self.reaper.forget(pid);
    }

    /// Records a container process's exit and publishes it once its output is out.
    fn process_exited(self: &Arc<Self>, state: &mut State<E>, pid: Pid, status: ExitStatus) {
        let Some(entry) = state.processes.get_mut(&pid) else {
            return;
        };
        if entry.reaped.is_some() {
            return;
        }
        entry.reaped = Some(status);
        let io = entry.io.take();
        let is_init = entry.is_init;
        tracing::info!(
            pid = pid.get(),
            exit_status = status.code(),
            init = is_init,
            "process exited"
        );
        let this = self.clone();
        tokio::spawn(async move { this.publish_exit(pid, status, is_init, io).await });
    }

    async fn publish_exit(
        self: Arc<Self>,
        pid: Pid,
        status: ExitStatus,
        is_init: bool,
        io: Option<ProcessIo>,
    ) {
        if let Some(mut io) = io
            && !io.flush(self.config.exit_flush_timeout).await
        {
            tracing::warn!(
                pid = pid.get(),
                "output not written out in time; publishing the exit anyway"
            );
        }
        let Ok(container) = self.container() else {
            return;
        };
        if is_init {
            let _ = self
                .starting
                .subscribe()
                .wait_for(|starting| !starting)
                .await;
            self.finish_container(&container).await;
        }
        // A kill that caused this exit goes out before it, notified or not yet.
        self.publish_ooms(&container);
        self.publish(&container.id, proto::EventType::Exit, pid, Some(status));
        if let Some(entry) = self.lock().processes.get(&pid) {
            entry.published.send_replace(Some(status));
        }
    }

    /// Publishes an `OOM` event for each kill in the container not published yet.
    fn publish_ooms(&self, container: &Container<E>) {
        let Some(oom) = &container.oom else {
            return;
        };
        let kills = match oom.watch.kills() {
            Ok(kills) => kills,
            Err(err) => {
                tracing::debug!(error = %err, "reading the OOM kill count");
                return;
            }
        };
        let mut published = oom.published.lock().unwrap_or_else(|p| p.into_inner());
        while *published < kills {
            *published += 1;
            tracing::warn!(kills = *published, "OOM kill in the container");
            self.publish(
                &container.id,
                proto::EventType::Oom,
                container.init_pid,
                None,
            );
        }
    }

    /// Publishes OOM kills as the kernel notifies them, until the shim stops or the
    /// container's cgroup is gone.
    async fn watch_ooms(self: Arc<Self>, container: Arc<Container<E>>, oom: Arc<OomReporter>) {
        let notification = match oom
            .watch
            .notification()
            .try_clone_to_owned()
            .and_then(|fd| AsyncOwnedFd::new(fd, tokio::io::Interest::READABLE))
        {
            Ok(notification) => notification,
            Err(err) => {
                tracing::warn!(error = %err, "cannot wait for OOM notifications");
                return;
            }
        };
        loop {
            tokio::select! {
                ready = notification.readable() => if ready.is_err() {
                    return;
                },
                () = self.shutdown.cancelled() => return,
            }
            oom.watch.acknowledge();
            if matches!(self.lock().phase, Phase::Deleted) || oom.watch.kills().is_err() {
                return;
            }
            self.publish_ooms(&container);
        }
    }

    /// After the init exited: kill what is left and let the execs' exits go out first, so
    /// the init's exit is the container's last event.
    async fn finish_container(&self, container: &Container<E>) {
        let (exec_watches, execs_running) = {
            let state = self.lock();
            let execs = state.processes.values().filter(|e| !e.is_init);
            let watches: Vec<_> = execs.clone().map(|e| e.published.subscribe()).collect();
            (watches, execs.clone().any(|e| e.reaped.is_none()))
        };
        if (execs_running || !container.own_pid_namespace)
            && let Err(err) = container
                .executor
                .kill(&container.id, Signal::KILL, KillScope::All)
                .await
        {
            tracing::debug!(error = %err, "killing the rest of the container after its init exited");
        }
        let all_published = async {
            for mut watch in exec_watches {
                let _ = watch.wait_for(Option::is_some).await;
            }
        };
        if tokio::time::timeout(self.config.exit_flush_timeout, all_published)
            .await
            .is_err()
        {
            tracing::warn!("exec processes still running after their container's init exited");
        }
    }

    /// Adds a process created by the executor; handles an exit that came before this.
    fn register(self: &Arc<Self>, state: &mut State<E>, pid: Pid, is_init: bool, io: ProcessIo) {
        state.processes.insert(
            pid,
            ProcessEntry {
                is_init,
                reaped: None,
                published: watch::Sender::new(None),
                io: Some(io),
            },
        );
        if let Some(status) = state.unclaimed_exits.remove(&pid) {
            self.process_exited(state, pid, status);
        }
    }

    /// Waits until `pid`'s exit has been published; returns its status.
    async fn wait_published(&self, pid: Pid) -> Result<ExitStatus, Status> {
        let mut watch = self
            .lock()
            .processes
            .get(&pid)
            .map(|e| e.published.subscribe())
            .ok_or_else(|| Status::not_found(format!("process {pid} not found")))?;
        let status = watch.wait_for(Option::is_some).await.map_err(|_| {
            Status::aborted(format!(
                "process {pid} was removed while waiting for its exit"
            ))
        })?;
        Ok(status.unwrap_or(ExitStatus::Exited(u8::MAX)))
    }

    /// Runs `work` in its own task, so a client that goes away mid-request cannot leave a
    /// half-done create or delete behind.
    async fn detached<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl Future<Output = Result<T, Status>> + Send + 'static,
    ) -> Result<T, Status> {
        tokio::spawn(work)
            .await
            .unwrap_or_else(|err| Err(Status::internal(format!("shim task failed: {err}"))))
    }

    async fn create(
        self: Arc<Self>,
        req: proto::CreateRequest,
        restore: Option<FromImages>,
    ) -> Result<proto::CreateResponse, Status> {
        let id = ContainerId::new(req.id.as_str())
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        let bundle = PathBuf::from(&req.bundle);
        if !bundle.is_absolute() {
            return Err(Status::invalid_argument(format!(
                "bundle path {:?} is not absolute",
                req.bundle
            )));
        }
        {
            let mut state = self.lock();
            match state.phase {
                Phase::Empty => state.phase = Phase::Creating,
                Phase::Creating => {
                    return Err(Status::failed_precondition(
                        "a create is already in progress",
                    ));
                }
                Phase::Created(_) | Phase::Deleted => {
                    return Err(Status::failed_precondition(
                        "this shim has already created its container",
                    ));
                }
            }
        }
        let result = self.create_container(id, bundle, req, restore).await;
        if result.is_err() {
            self.lock().phase = Phase::Empty;
        }
        result
    }

    async fn create_container(
        self: &Arc<Self>,
        id: ContainerId,
        bundle: PathBuf,
        req: proto::CreateRequest,
        restore: Option<FromImages>,
    ) -> Result<proto::CreateResponse, Status> {
        let config_path = bundle.join("config.json");
        let spec = wharf_executor::support::load_spec(&bundle)
            .map_err(|err| crate::status::from_executor(&err))?;
        let template = spec.process().clone().unwrap_or_default();
        if template.terminal().unwrap_or(false) != req.terminal {
            return Err(Status::invalid_argument(format!(
                "terminal is {} in the request but {} in {}",
                req.terminal,
                template.terminal().unwrap_or(false),
                config_path.display()
            )));
        }
        let own_pid_namespace = spec
            .linux()
            .as_ref()
            .and_then(|linux| linux.namespaces().as_ref())
            .is_some_and(|namespaces| {
                namespaces
                    .iter()
                    .any(|ns| ns.typ() == LinuxNamespaceType::Pid && ns.path().is_none())
            });
        let executor = E::for_container(&self.config, &req.runtime, self.reaper.clone())?;
        let paths = StdioPaths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        let (stdio, prepared) = PreparedIo::open(&paths)?;

        let registration = Registration::new(self);
        let create = ExecutorCreate {
            id: id.clone(),
            bundle: bundle.clone(),
            stdio,
            no_pivot: req.no_pivot,
        };
        let restored = restore.is_some();
        let created = match restore {
            None => executor.create(create).await,
            Some(images) => {
                executor
                    .restore(wharf_executor::RestoreRequest {
                        create,
                        image_dir: images.image_dir,
                        work_dir: images.work_dir,
                        options: images.options,
                    })
                    .await
            }
        }
        .map_err(|err| from_executor(&err))?;
        let pid = created.pid;
        let io = match prepared.start(created.console) {
            Ok(io) => io,
            Err(err) => {
                if let Err(cleanup) = executor.delete(&id, DeleteMode::Force).await {
                    tracing::warn!(error = %cleanup, "deleting a container whose stdio failed");
                }
                return Err(Status::internal(format!(
                    "starting stdio of container {id}: {err}"
                )));
            }
        };
        // Watched now, before Start lets the init run: a short-lived container's kills too.
        let oom = match wharf_stats_collector::cgroup_of(pid.get())
            .and_then(|cgroup| OomWatch::new(&cgroup))
        {
            Ok(watch) => Some(Arc::new(OomReporter {
                watch,
                published: Mutex::new(0),
            })),
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch the container for OOM kills");
                None
            }
        };
        let container = Arc::new(Container {
            id: id.clone(),
            bundle,
            executor,
            init_pid: pid,
            template,
            own_pid_namespace,
            oom: oom.clone(),
        });
        if let Some(oom) = oom {
            tokio::spawn(self.clone().watch_ooms(container.clone(), oom));
        }
        {
            let mut state = self.lock();
            state.phase = Phase::Created(container);
            self.publish(&id, proto::EventType::Create, pid, None);
            if restored {
                // Restored processes run already: the container is started.
                state.started = true;
                self.publish(&id, proto::EventType::Start, pid, None);
            }
            self.register(&mut state, pid, true, io);
        }
        drop(registration);
        Ok(proto::CreateResponse { pid: pid.get() })
    }

    /// Dumps the running container with CRIU.
    async fn checkpoint(self: Arc<Self>, req: control::CheckpointRequest) -> Result<(), Status> {
        let container = self.container()?;
        {
            let state = self.lock();
            if !state.started {
                return Err(container.refuse("is not started"));
            }
            if state.init_exited(container.init_pid) {
                return Err(container.refuse("has exited"));
            }
        }
        let (image_dir, work_dir) = criu_dirs(&req.image_path, &req.work_path)?;
        // CRIU freezes the cgroup, then seizes each task; seizing a task stopped by SIGSTOP
        // inside a frozen cgroup waits in the kernel until someone thaws it: the dump would
        // hang, holding the container frozen.
        let pids = container
            .executor
            .processes(&container.id)
            .await
            .map_err(|err| from_executor(&err))?;
        if let Some(pid) = pids.into_iter().find(|pid| is_job_control_stopped(*pid)) {
            return Err(container.refuse(&format!(
                "has a process stopped by a signal (pid {pid}); CRIU cannot dump it: send it \
                 SIGCONT first"
            )));
        }
        container
            .executor
            .checkpoint(wharf_executor::CheckpointRequest {
                id: container.id.clone(),
                image_dir,
                work_dir,
                options: criu_options(req.options.as_ref()),
            })
            .await
            .map_err(|err| from_executor(&err))
    }

    async fn start(self: Arc<Self>) -> Result<(), Status> {
        let container = self.container()?;
        {
            let state = self.lock();
            if state.started {
                return Err(container.refuse("is already started"));
            }
            if state.init_exited(container.init_pid) {
                return Err(container.refuse("has exited"));
            }
            // Checked and set under the state lock, so two Starts cannot both run.
            if self.starting.send_replace(true) {
                return Err(container.refuse("is already being started"));
            }
        }
        let started = container.executor.start(&container.id).await;
        if started.is_ok() {
            self.lock().started = true;
            self.publish(
                &container.id,
                proto::EventType::Start,
                container.init_pid,
                None,
            );
        }
        self.starting.send_replace(false);
        started.map_err(|err| from_executor(&err))
    }

    async fn exec(self: Arc<Self>, req: proto::ExecRequest) -> Result<proto::ExecResponse, Status> {
        let container = self.container()?;
        let exec_id = {
            let mut state = self.lock();
            if !state.started {
                return Err(container.refuse("is not started"));
            }
            if state.init_exited(container.init_pid) {
                return Err(container.refuse("has exited"));
            }
            state.next_exec += 1;
            ExecId::new(format!("exec-{}", state.next_exec))
                .map_err(|err| Status::internal(err.to_string()))?
        };
        let process = exec_process(&container.template, &req)?;
        let paths = StdioPaths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        let (stdio, prepared) = PreparedIo::open(&paths)?;
        let registration = Registration::new(&self);
        let started = container
            .executor
            .exec(ExecutorExec {
                id: container.id.clone(),
                exec_id,
                process,
                stdio,
            })
            .await
            .map_err(|err| from_executor(&err))?;
        let pid = started.pid;
        let (io, failure) = match prepared.start(started.console) {
            Ok(io) => (io, None),
            Err(err) => {
                // Registered all the same, so its exit is collected and it can be deleted.
                let _ = self.reaper.signal(pid, Signal::KILL);
                (ProcessIo::default(), Some(err))
            }
        };
        {
            let mut state = self.lock();
            self.publish(&container.id, proto::EventType::ExecAdded, pid, None);
            self.register(&mut state, pid, false, io);
        }
        drop(registration);
        match failure {
            None => Ok(proto::ExecResponse { pid: pid.get() }),
            Some(err) => Err(Status::internal(format!(
                "starting stdio of exec process {pid} in container {}: {err}; the process was killed",
                container.id
            ))),
        }
    }

    async fn delete(
        self: Arc<Self>,
        req: proto::DeleteRequest,
    ) -> Result<proto::DeleteResponse, Status> {
        let container = self.container()?;
        let pid =
            Pid::new(req.pid).ok_or_else(|| Status::invalid_argument("pid must be positive"))?;
        let (is_init, running) = {
            let state = self.lock();
            let entry = state.processes.get(&pid).ok_or_else(|| {
                Status::not_found(format!(
                    "process {pid} not found in container {}",
                    container.id
                ))
            })?;
            (entry.is_init, entry.reaped.is_none())
        };
        if running {
            if is_init {
                // Kills the init and everything else in the container, thawing it if paused.
                container
                    .executor
                    .kill(&container.id, Signal::KILL, KillScope::All)
                    .await
                    .map_err(|err| from_executor(&err))?;
            } else {
                let _ = self.reaper.signal(pid, Signal::KILL);
            }
        }
        let status = self.wait_published(pid).await?;
        if !is_init {
            self.lock().processes.remove(&pid);
            return Ok(proto::DeleteResponse {
                exit_status: status.code(),
            });
        }
        container
            .executor
            .delete(&container.id, DeleteMode::Force)
            .await
            .map_err(|err| from_executor(&err))?;
        {
            let mut state = self.lock();
            state.processes.clear();
            state.phase = Phase::Deleted;
        }
        tracing::info!(container_id = %container.id, exit_status = status.code(), "container deleted; shim exiting");
        self.events.close();
        self.shutdown.cancel();
        Ok(proto::DeleteResponse {
            exit_status: status.code(),
        })
    }

    /// On SIGTERM/SIGINT or `Control.Shutdown`: nothing may outlive the shim unowned, so
    /// kill and delete the container if there is one, then stop serving.
    pub(crate) async fn terminate(self: &Arc<Self>) {
        if let Ok(container) = self.container() {
            tracing::warn!(container_id = %container.id, "terminating: killing and deleting the container");
            let _ = container
                .executor
                .kill(&container.id, Signal::KILL, KillScope::All)
                .await;
            let _ = tokio::time::timeout(
                self.config.exit_flush_timeout,
                self.wait_published(container.init_pid),
            )
            .await;
            if let Err(err) = container
                .executor
                .delete(&container.id, DeleteMode::Force)
                .await
            {
                tracing::error!(error = %err, "deleting the container on termination");
            }
            self.lock().phase = Phase::Deleted;
        }
        self.events.close();
        self.shutdown.cancel();
    }

    fn state_response(&self) -> Result<proto::StateResponse, Status> {
        let container = self.container()?;
        let state = self.lock();
        let processes = state
            .processes
            .iter()
            .map(|(pid, entry)| {
                let process_state =
                    match (entry.reaped, entry.is_init && !state.started, state.paused) {
                        (Some(_), _, _) => proto::State::Stopped,
                        (None, true, _) => proto::State::Created,
                        (None, false, true) => proto::State::Paused,
                        (None, false, false) => proto::State::Running,
                    };
                proto::Process {
                    pid: pid.get(),
                    state: process_state.into(),
                }
            })
            .collect();
        Ok(proto::StateResponse {
            id: container.id.to_string(),
            bundle: container.bundle.display().to_string(),
            init_pid: container.init_pid.get(),
            processes,
        })
    }

    /// The kept exit status of `pid`, which stays kept (see `Control.ExitStatus`).
    fn exit_status(&self, pid: u32) -> Result<u32, Status> {
        let container = self.container()?;
        let state = self.lock();
        let entry = Pid::new(pid)
            .and_then(|pid| state.processes.get(&pid))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "process {pid} not found in container {}",
                    container.id
                ))
            })?;
        entry.reaped.map(ExitStatus::code).ok_or_else(|| {
            Status::failed_precondition(format!(
                "process {pid} of container {} is still running",
                container.id
            ))
        })
    }

    async fn kill(self: Arc<Self>, req: KillRequest) -> Result<(), Status> {
        let container = self.container()?;
        let signal = Signal::try_from(req.signal)
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        if req.all {
            container
                .executor
                .kill(&container.id, signal, KillScope::All)
                .await
                .map_err(|err| from_executor(&err))?;
        } else {
            let pid = Pid::new(req.pid)
                .ok_or_else(|| Status::invalid_argument("pid must be positive"))?;
            self.signal_process(&container, pid, signal)?;
        }
        if signal == Signal::KILL {
            self.thaw_after_kill(&container).await;
        }
        Ok(())
    }

    fn signal_process(
        &self,
        container: &Container<E>,
        pid: Pid,
        signal: Signal,
    ) -> Result<(), Status> {
        let exited = || {
            Status::failed_precondition(format!(
                "process {pid} of container {} has exited",
                container.id
            ))
        };
        {
            let state = self.lock();
            let entry = state.processes.get(&pid).ok_or_else(|| {
                Status::not_found(format!(
                    "process {pid} is not a process of container {}",
                    container.id
                ))
            })?;
            if entry.reaped.is_some() {
                return Err(exited());
            }
        }
        match self.reaper.signal(pid, signal) {
            Ok(()) => Ok(()),
            Err(SignalError::Reaped) => Err(exited()),
            Err(SignalError::Kill(err)) => Err(Status::internal(format!(
                "sending signal {signal} to process {pid} of container {}: {err}",
                container.id
            ))),
        }
    }

    /// A frozen process does not die of SIGKILL until it is thawed (cgroup v1 freezer): a
    /// kill of a paused container thaws it, as `runc kill --all` does.
    async fn thaw_after_kill(&self, container: &Container<E>) {
        if !self.lock().paused {
            return;
        }
        match container.executor.resume(&container.id).await {
            Ok(()) => {
                tracing::info!(container_id = %container.id, "thawed the paused container to let SIGKILL act")
            }
            // `kill --all` thaws by itself; the container may also be gone already.
            Err(err) => {
                tracing::debug!(container_id = %container.id, error = %err, "thawing after SIGKILL")
            }
        }
        self.lock().paused = false;
    }

    async fn pause(self: Arc<Self>) -> Result<(), Status> {
        let container = self.container()?;
        // Not every runtime refuses to pause twice (crun does not): the answer must not
        // depend on it.
        if self.lock().paused {
            return Err(container.refuse("is already paused"));
        }
        container
            .executor
            .pause(&container.id)
            .await
            .map_err(|err| from_executor(&err))?;
        self.lock().paused = true;
        Ok(())
    }

    async fn resume(self: Arc<Self>) -> Result<(), Status> {
        let container = self.container()?;
        container
            .executor
            .resume(&container.id)
            .await
            .map_err(|err| from_executor(&err))?;
        self.lock().paused = false;
        Ok(())
    }

    fn resize(&self, req: &proto::PtyRequest) -> Result<(), Status> {
        let container = self.container()?;
        let pid =
            Pid::new(req.pid).ok_or_else(|| Status::invalid_argument("pid must be positive"))?;
        let (Ok(width), Ok(height)) = (u16::try_from(req.width), u16::try_from(req.height)) else {
            return Err(Status::invalid_argument(
                "terminal width and height must be at most 65535",
            ));
        };
        let state = self.lock();
        let entry = state.processes.get(&pid).ok_or_else(|| {
            Status::not_found(format!(
                "process {pid} not found in container {}",
                container.id
            ))
        })?;
        let console = entry
            .io
            .as_ref()
            .and_then(ProcessIo::console)
            .ok_or_else(|| {
                Status::failed_precondition(format!("process {pid} has no terminal or has exited"))
            })?;
        let size = rustix::termios::Winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(console, size).map_err(|err| {
            Status::internal(format!("resizing the terminal of process {pid}: {err}"))
        })
    }
}

/// The process of an `Exec`: the request's fields over the bundle's process.
fn exec_process(template: &Process, req: &proto::ExecRequest) -> Result<Process, Status> {
    wharf_executor::support::check_process(&req.args, &req.env, &req.cwd)
        .map_err(|err| from_executor(&err))?;
    let mut process = template.clone();
    process.set_args(Some(req.args.clone()));
    if !req.env.is_empty() {
        process.set_env(Some(req.env.clone()));
    }
    if !req.cwd.is_empty() {
        if !req.cwd.starts_with('/') {
            return Err(Status::invalid_argument(format!(
                "exec cwd {:?} is not absolute",
                req.cwd
            )));
        }
        process.set_cwd(PathBuf::from(&req.cwd));
    }
    let mut user = User::default();
    if let Some(requested) = &req.user {
        user.set_uid(requested.uid);
        user.set_gid(requested.gid);
        if !requested.additional_gids.is_empty() {
            user.set_additional_gids(Some(requested.additional_gids.clone()));
        }
    }
    process.set_user(user);
    if !req.capabilities.is_empty() {
        let capabilities = req
            .capabilities
            .iter()
            .map(|name| {
                serde_json::from_value::<Capability>(serde_json::Value::String(name.clone()))
                    .map_err(|_| Status::invalid_argument(format!("unknown capability {name:?}")))
            })
            .collect::<Result<std::collections::HashSet<_>, _>>()?;
        let mut set = LinuxCapabilities::default();
        set.set_bounding(Some(capabilities.clone()));
        set.set_effective(Some(capabilities.clone()));
        set.set_permitted(Some(capabilities.clone()));
        set.set_inheritable(None);
        set.set_ambient(None);
        process.set_capabilities(Some(set));
    }
    if !req.rlimits.is_empty() {
        let rlimits = req
            .rlimits
            .iter()
            .map(|limit| {
                let typ: PosixRlimitType = limit.r#type.parse().map_err(|_| {
                    Status::invalid_argument(format!("unknown rlimit {:?}", limit.r#type))
                })?;
                PosixRlimitBuilder::default()
                    .typ(typ)
                    .hard(limit.hard)
                    .soft(limit.soft)
                    .build()
                    .map_err(|err| {
                        Status::invalid_argument(format!("rlimit {:?}: {err}", limit.r#type))
                    })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        process.set_rlimits(Some(rlimits));
    }
    if req.no_new_privileges {
        process.set_no_new_privileges(Some(true));
    }
    if !req.apparmor_profile.is_empty() {
        process.set_apparmor_profile(Some(req.apparmor_profile.clone()));
    }
    if !req.selinux_label.is_empty() {
        process.set_selinux_label(Some(req.selinux_label.clone()));
    }
    Ok(process)
}

/// The gRPC face of a [`ShimService`]: each mutating request runs in its own task.
#[derive(Debug, Clone)]
pub(crate) struct ShimHandler<E>(pub(crate) Arc<ShimService<E>>);

impl<E> std::ops::Deref for ShimHandler<E> {
    type Target = Arc<ShimService<E>>;
    fn deref(&self) -> &Arc<ShimService<E>> {
        &self.0
    }
}

#[tonic::async_trait]
impl<E: ShimExecutor> proto::Shim for ShimHandler<E> {
    async fn create(
        &self,
        request: Request<proto::CreateRequest>,
    ) -> Result<Response<proto::CreateResponse>, Status> {
        let this = self.0.clone();
        self.detached(this.create(request.into_inner(), None))
            .await
            .map(Response::new)
    }

    async fn start(&self, _request: Request<proto::StartRequest>) -> Result<Response<()>, Status> {
        let this = self.0.clone();
        self.detached(this.start()).await.map(Response::new)
    }

    async fn delete(
        &self,
        request: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        let this = self.0.clone();
        self.detached(this.delete(request.into_inner()))
            .await
            .map(Response::new)
    }

    async fn exec(
        &self,
        request: Request<proto::ExecRequest>,
    ) -> Result<Response<proto::ExecResponse>, Status> {
        let this = self.0.clone();
        self.detached(this.exec(request.into_inner()))
            .await
            .map(Response::new)
    }

    async fn pty(&self, request: Request<proto::PtyRequest>) -> Result<Response<()>, Status> {
        self.resize(request.get_ref()).map(Response::new)
    }

    type EventsStream = EventStream<proto::Event>;

    async fn events(
        &self,
        _request: Request<proto::EventsRequest>,
    ) -> Result<Response<EventStream<proto::Event>>, Status> {
        Ok(Response::new(self.events.subscribe()))
    }

    async fn state(
        &self,
        _request: Request<proto::StateRequest>,
    ) -> Result<Response<proto::StateResponse>, Status> {
        self.state_response().map(Response::new)
    }

    async fn pause(&self, _request: Request<proto::PauseRequest>) -> Result<Response<()>, Status> {
        let this = self.0.clone();
        self.detached(this.pause()).await.map(Response::new)
    }

    async fn resume(
        &self,
        _request: Request<proto::ResumeRequest>,
    ) -> Result<Response<()>, Status> {
        let this = self.0.clone();
        self.detached(this.resume()).await.map(Response::new)
    }
}

/// Where a restored container's images are, and how to restore them.
#[derive(Debug)]
struct FromImages {
    image_dir: PathBuf,
    work_dir: PathBuf,
    options: wharf_executor::CriuOptions,
}

/// Whether `pid` is in a job-control stop (SIGSTOP, SIGTSTP, ...) or a ptrace stop, also
/// when its cgroup is frozen (then `/proc` says `D`, and only its wait channel tells).
fn is_job_control_stopped(pid: Pid) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    matches!(state, Some('T' | 't'))
        || std::fs::read_to_string(format!("/proc/{pid}/wchan"))
            .is_ok_and(|wchan| wchan.trim() == "do_signal_stop")
}

/// The image and work directories of a dump or restore, which must be absolute.
fn criu_dirs(image_path: &str, work_path: &str) -> Result<(PathBuf, PathBuf), Status> {
    let (image_dir, work_dir) = (PathBuf::from(image_path), PathBuf::from(work_path));
    if !image_dir.is_absolute()
        || !work_dir.is_absolute()
        || image_path.contains('\0')
        || work_path.contains('\0')
    {
        return Err(Status::invalid_argument(format!(
            "image path {image_path:?} and work path {work_path:?} must be absolute, without \
             NUL bytes"
        )));
    }
    Ok((image_dir, work_dir))
}

fn criu_options(options: Option<&control::CriuOptions>) -> wharf_executor::CriuOptions {
    let options = options.copied().unwrap_or_default();
    wharf_executor::CriuOptions {
        leave_running: options.leave_running,
        tcp_established: options.tcp_established,
        external_unix_sockets: options.external_unix_sockets,
        shell_job: options.shell_job,
    }
}

#[tonic::async_trait]
impl<E: ShimExecutor> control::Control for ShimHandler<E> {
    async fn restore(
        &self,
        request: Request<control::RestoreRequest>,
    ) -> Result<Response<control::RestoreResponse>, Status> {
        let req = request.into_inner();
        let (image_dir, work_dir) = criu_dirs(&req.image_path, &req.work_path)?;
        let images = FromImages {
            image_dir,
            work_dir,
            options: criu_options(req.options.as_ref()),
        };
        let create = proto::CreateRequest {
            id: req.id,
            bundle: req.bundle,
            runtime: req.runtime,
            no_pivot: req.no_pivot,
            terminal: req.terminal,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        };
        let this = self.0.clone();
        self.detached(this.create(create, Some(images)))
            .await
            .map(|created| Response::new(control::RestoreResponse { pid: created.pid }))
    }

    async fn checkpoint(
        &self,
        request: Request<control::CheckpointRequest>,
    ) -> Result<Response<()>, Status> {
        let this = self.0.clone();
        self.detached(this.checkpoint(request.into_inner()))
            .await
            .map(Response::new)
    }

    async fn kill(&self, request: Request<KillRequest>) -> Result<Response<()>, Status> {
        let this = self.0.clone();
        self.detached(this.kill(request.into_inner()))
            .await
            .map(Response::new)
    }

    async fn exit_status(
        &self,
        request: Request<control::ExitStatusRequest>,
    ) -> Result<Response<control::ExitStatusResponse>, Status> {
        self.0
            .exit_status(request.into_inner().pid)
            .map(|exit_status| Response::new(control::ExitStatusResponse { exit_status }))
    }

    async fn shutdown(&self, _request: Request<()>) -> Result<Response<()>, Status> {
        let this = self.0.clone();
        self.detached(async move {
            this.terminate().await;
            Ok(())
        })
        .await
        .map(Response::new)
    }
}
