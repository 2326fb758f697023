//! `types.API`: request validation and the answers; the work is in `containers.rs`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use wharf_api as api;
use wharf_executor::ContainerId;

use super::DaemonExecutor;
use super::containers::{Daemon, NewContainer, NewProcess, parse_signal};
use crate::events::EventStream;

/// `wharf.v1.Events`: the journal, replayed after a sequence number, then live.
#[derive(Debug, Clone)]
pub(crate) struct EventsHandler<E>(pub(crate) Arc<Daemon<E>>);

#[tonic::async_trait]
impl<E: DaemonExecutor> api::v1::Events for EventsHandler<E> {
    type SubscribeStream = EventStream<api::v1::JournaledEvent>;

    async fn subscribe(
        &self,
        request: Request<api::v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Ok(Response::new(
            self.0.subscribe_after(request.get_ref().after_seq),
        ))
    }
}

/// The gRPC face of the [`Daemon`].
#[derive(Debug, Clone)]
pub(crate) struct ApiHandler<E>(pub(crate) Arc<Daemon<E>>);

fn container_id(id: &str) -> Result<ContainerId, Status> {
    ContainerId::new(id).map_err(|err| Status::invalid_argument(err.to_string()))
}

fn absolute_path(what: &str, path: &str) -> Result<PathBuf, Status> {
    if path.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{what} must not be empty"
        )));
    }
    if path.contains('\0') {
        return Err(Status::invalid_argument(format!(
            "{what} {path:?} contains a NUL byte"
        )));
    }
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        return Err(Status::invalid_argument(format!(
            "{what} {} is not absolute",
            path.display()
        )));
    }
    Ok(path)
}

/// Checks a checkpoint name: it becomes a directory under the bundle.
fn checkpoint_name(name: &str) -> Result<(), Status> {
    wharf_criu_checkpoint::validate_name(name).map_err(|err| crate::status::from_checkpoint(&err))
}

/// Runs `work` in its own task: a client that goes away mid-request cannot leave a
/// half-made container behind.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, Status>> + Send + 'static,
) -> Result<T, Status> {
    tokio::spawn(work)
        .await
        .unwrap_or_else(|err| Err(Status::internal(format!("request task failed: {err}"))))
}

/// Refuses a checkpoint the other executor dumped: runc and libcontainer lay out a
/// container's cgroup v1 mounts differently, and CRIU restores only the mount layout it
/// dumped (see the README).
fn restorable_here(
    checkpoint: &wharf_criu_checkpoint::Checkpoint,
    executor: crate::daemon::config::ExecutorKind,
    id: &ContainerId,
) -> Result<(), Status> {
    match &checkpoint.dumped_by {
        Some(dumper) if dumper != executor.as_str() => Err(Status::failed_precondition(format!(
            "checkpoint {} of container {id} was made by the {dumper} executor and this \
             daemon runs the {executor} executor; restore it with wharfd --executor {dumper}",
            checkpoint.name,
            executor = executor.as_str(),
        ))),
        _ => Ok(()),
    }
}

#[tonic::async_trait]
impl<E: DaemonExecutor> api::Api for ApiHandler<E> {
    async fn create_container(
        &self,
        request: Request<api::CreateContainerRequest>,
    ) -> Result<Response<api::CreateContainerResponse>, Status> {
        let req = request.into_inner();
        let id = container_id(&req.id)?;
        let bundle = absolute_path("bundlePath", &req.bundle_path)?;
        let checkpoint = if req.checkpoint.is_empty() {
            None
        } else {
            // The bundle first, as a start would check it: its checkpoints come second.
            wharf_executor::support::bundle_config(&bundle)
                .map_err(|err| crate::status::from_executor(&err))?;
            let found = wharf_criu_checkpoint::Store::new(&bundle)
                .get(&req.checkpoint)
                .map_err(|err| crate::status::from_checkpoint(&err))?;
            restorable_here(&found, self.0.config.executor, &id)?;
            Some(found)
        };
        let daemon = self.0.clone();
        let new = NewContainer {
            id,
            bundle,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            console: req.console,
            checkpoint,
        };
        let pid = detached(async move { daemon.create(new).await }).await?;
        Ok(Response::new(api::CreateContainerResponse { pid }))
    }

    async fn update_container(
        &self,
        request: Request<api::UpdateContainerRequest>,
    ) -> Result<Response<api::UpdateContainerResponse>, Status> {
        let req = request.into_inner();
        let pause = match req.status.as_str() {
            "" => None,
            "paused" => Some(true),
            "running" => Some(false),
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown status {other:?}: expected \"paused\" or \"running\""
                )));
            }
        };
        let signal = match req.signal {
            0 => None,
            n => Some(parse_signal(n)?),
        };
        let container = self.0.container(&req.id)?;
        let daemon = self.0.clone();
        detached(async move {
            if let Some(paused) = pause {
                daemon.set_paused(&container, paused).await?;
            }
            if let Some(signal) = signal {
                container.signal(container.init.pid, signal).await?;
            }
            Ok(())
        })
        .await?;
        Ok(Response::new(api::UpdateContainerResponse {}))
    }

    async fn signal(
        &self,
        request: Request<api::SignalRequest>,
    ) -> Result<Response<api::SignalResponse>, Status> {
        let req = request.into_inner();
        let signal = parse_signal(req.signal)?;
        let container = self.0.container(&req.id)?;
        let pid = if req.pid == 0 {
            container.init.pid
        } else {
            req.pid
        };
        container.signal(pid, signal).await?;
        Ok(Response::new(api::SignalResponse {}))
    }

    async fn add_process(
        &self,
        request: Request<api::AddProcessRequest>,
    ) -> Result<Response<api::AddProcessResponse>, Status> {
        let req = request.into_inner();
        let container = self.0.container(&req.id)?;
        wharf_executor::support::check_process(&req.args, &req.env, &req.cwd)
            .map_err(|err| crate::status::from_executor(&err))?;
        let cwd = if req.cwd.is_empty() {
            "/".to_owned()
        } else {
            absolute_path("cwd", &req.cwd)?;
            req.cwd
        };
        let process = NewProcess {
            terminal: req.terminal,
            user: req.user.unwrap_or_default(),
            args: req.args,
            env: req.env,
            cwd,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            console: req.console,
        };
        let daemon = self.0.clone();
        let pid = detached(async move { daemon.add_process(&container, process).await }).await?;
        Ok(Response::new(api::AddProcessResponse { pid }))
    }

    async fn create_checkpoint(
        &self,
        request: Request<api::CreateCheckpointRequest>,
    ) -> Result<Response<api::CreateCheckpointResponse>, Status> {
        let req = request.into_inner();
        container_id(&req.id)?;
        let checkpoint = req
            .checkpoint
            .ok_or_else(|| Status::invalid_argument("checkpoint must be given"))?;
        checkpoint_name(&checkpoint.name)?;
        let container = self.0.container(&req.id)?;
        let daemon = self.0.clone();
        detached(async move { daemon.checkpoint(&container, checkpoint).await }).await?;
        Ok(Response::new(api::CreateCheckpointResponse {}))
    }

    async fn delete_checkpoint(
        &self,
        request: Request<api::DeleteCheckpointRequest>,
    ) -> Result<Response<api::DeleteCheckpointResponse>, Status> {
        let req = request.into_inner();
        container_id(&req.id)?;
        checkpoint_name(&req.name)?;
        let container = self.0.container(&req.id)?;
        container
            .checkpoints()
            .delete(&req.name)
            .map_err(|err| crate::status::from_checkpoint(&err))?;
        Ok(Response::new(api::DeleteCheckpointResponse {}))
    }

    async fn list_checkpoint(
        &self,
        request: Request<api::ListCheckpointRequest>,
    ) -> Result<Response<api::ListCheckpointResponse>, Status> {
        let container = self.0.container(&request.get_ref().id)?;
        let checkpoints = container
            .checkpoints()
            .list()
            .map_err(|err| crate::status::from_checkpoint(&err))?
            .into_iter()
            .map(|c| api::Checkpoint {
                name: c.name,
                exit: c.flags.exit,
                tcp: c.flags.tcp,
                unix_sockets: c.flags.unix_sockets,
                shell: c.flags.shell,
            })
            .collect();
        Ok(Response::new(api::ListCheckpointResponse { checkpoints }))
    }

    async fn state(
        &self,
        _request: Request<api::StateRequest>,
    ) -> Result<Response<api::StateResponse>, Status> {
        let containers = self.0.containers().iter().map(|c| c.to_api()).collect();
        Ok(Response::new(api::StateResponse {
            containers,
            machine: Some(self.0.machine()),
        }))
    }

    type EventsStream = EventStream<api::Event>;

    async fn events(
        &self,
        _request: Request<api::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        Ok(Response::new(self.0.subscribe()))
    }

    type GetStatsStream = tonic::codegen::BoxStream<api::Stats>;

    async fn get_stats(
        &self,
        request: Request<api::StatsRequest>,
    ) -> Result<Response<Self::GetStatsStream>, Status> {
        let container = self.0.container(&request.get_ref().id)?;
        let interval = Duration::from_millis(self.0.config.stats_interval_ms.max(1));
        Ok(Response::new(container.stats.subscribe(
            container.id.as_str(),
            container.init.pid,
            interval,
        )))
    }
}
