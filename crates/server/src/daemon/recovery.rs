//! At start, before serving: take over every container an earlier daemon left.
//!
//! For each `<state-dir>/containers/<id>/`:
//! - no complete record: a create a crash interrupted. Its shim, if it answers, is told to
//!   shut down (it deletes its container and exits); then whatever the runtime still knows
//!   of the id is deleted and the directory removed. Nothing of it remains.
//! - a complete record and a shim that answers: the container is re-attached with the same
//!   pids; processes that exited meanwhile are settled by its pump (execs first, the init
//!   last) and their exits published.
//! - a complete record and a dead shim: the container is killed (its cgroup, through the
//!   runtime) and each process reported 137 (killed by us) or 255 (unknown).
//!
//! Containers are taken over concurrently.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use wharf_executor::ContainerId;
use wharf_shim_proto as shim;
use wharf_shim_proto::control::ControlClient;

use super::DaemonExecutor;
use super::containers::Daemon;
use super::record::{ContainerRecord, ProcessIdentity};
use super::shim_process::ShimProcess;

/// What the take-over found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Recovered {
    pub(crate) reattached: usize,
    pub(crate) dead_shims: usize,
    pub(crate) torn_down: usize,
}

enum Outcome {
    Reattached,
    DeadShim,
    TornDown,
}

/// Takes over every container found in the state directory.
pub(crate) async fn recover<E: DaemonExecutor>(daemon: &Arc<Daemon<E>>) -> Recovered {
    let started = Instant::now();
    let dir = daemon.config.containers_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) => {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::error!(path = %dir.display(), error = %err, "reading the containers directory");
            }
            return Recovered::default();
        }
    };
    let mut tasks = JoinSet::new();
    for entry in entries.filter_map(Result::ok) {
        let state_dir = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let daemon = daemon.clone();
        tasks.spawn(async move { take_over(&daemon, &name, state_dir).await });
    }
    let mut recovered = Recovered::default();
    while let Some(outcome) = tasks.join_next().await {
        match outcome {
            Ok(Outcome::Reattached) => recovered.reattached += 1,
            Ok(Outcome::DeadShim) => recovered.dead_shims += 1,
            Ok(Outcome::TornDown) => recovered.torn_down += 1,
            Err(err) => tracing::error!(error = %err, "a take-over task failed"),
        }
    }
    tracing::info!(
        reattached = recovered.reattached,
        dead_shims = recovered.dead_shims,
        torn_down = recovered.torn_down,
        elapsed = ?started.elapsed(),
        "took over the containers of an earlier daemon"
    );
    recovered
}

async fn take_over<E: DaemonExecutor>(
    daemon: &Arc<Daemon<E>>,
    name: &str,
    state_dir: PathBuf,
) -> Outcome {
    let Ok(id) = ContainerId::new(name) else {
        tracing::warn!(path = %state_dir.display(), "removing a state directory that no container id names");
        let _ = std::fs::remove_dir_all(&state_dir);
        return Outcome::TornDown;
    };
    let record = ContainerRecord::read(&state_dir);
    let complete = match &record {
        Ok(record) if record.complete && record.id == name => {
            record.init.clone().map(|init| (record, init))
        }
        _ => None,
    };
    let socket = state_dir.join(shim::SOCKET_NAME);
    let Some((record, init)) = complete else {
        tracing::warn!(container_id = %id, "tearing down a create that a crash interrupted");
        if let Ok(channel) = shim::channel(&socket).await {
            // A shim busy with the interrupted create may not answer: the teardown below
            // kills it after its deadline anyway; the take-over must not wait on it forever.
            let mut control = ControlClient::new(channel);
            let _ = tokio::time::timeout(Duration::from_secs(2), control.shutdown(())).await;
        }
        match record {
            Ok(record) => {
                daemon
                    .teardown(&id, &mut ShimProcess::Adopted(record.shim), &state_dir)
                    .await
            }
            Err(_) => {
                // No record, so no pid to wait on: the shim removes its socket as it exits.
                let deadline = Instant::now() + Duration::from_secs(10);
                while shim::channel(&socket).await.is_ok() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                daemon
                    .teardown(&id, &mut ShimProcess::Adopted(unknown_shim()), &state_dir)
                    .await;
            }
        }
        return Outcome::TornDown;
    };
    let attached = match shim::channel(&socket).await {
        Ok(channel) => {
            let state = shim::ShimClient::new(channel.clone())
                .state(shim::StateRequest {})
                .await;
            state.ok().map(|state| (channel, state.into_inner()))
        }
        Err(_) => None,
    };
    let mut shim_process = ShimProcess::Adopted(record.shim);
    let Some((channel, state)) = attached else {
        let container = daemon.dead_container(id, record, init, state_dir);
        daemon.settle_start(&container);
        daemon.shim_lost(&container, &mut shim_process, true).await;
        return Outcome::DeadShim;
    };
    match daemon.reattached(id.clone(), record, init, state_dir.clone(), channel, &state) {
        Ok((container, stopped)) => {
            tracing::info!(container_id = %id, processes = state.processes.len(), "re-attached");
            daemon.settle_start(&container);
            daemon.adopt(container, shim_process, stopped);
            Outcome::Reattached
        }
        Err(status) => {
            tracing::error!(container_id = %id, error = %status.message(), "cannot re-attach; tearing down");
            daemon.teardown(&id, &mut shim_process, &state_dir).await;
            Outcome::TornDown
        }
    }
}

/// A shim nobody recorded: nothing to wait on or signal.
fn unknown_shim() -> ProcessIdentity {
    ProcessIdentity {
        pid: 0,
        start_time: None,
    }
}
