//! `wharf-shim`: the process that owns one container.
//!
//! It is a child subreaper and the only reaper of the container's processes; it keeps each
//! exit status until `Delete`, copies stdio, and serves `containerd.shim.v1.Shim` on
//! `shim.sock` in the container's state directory. It survives its spawner: a daemon can die
//! and come back without losing the container. See ARCHITECTURE.md.

mod reaper;
mod service;
mod stdio;

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use wharf_executor::{Executor, ProcessMonitor};
use wharf_libcontainer_executor::LibcontainerExecutor;
use wharf_runc_executor::RuncExecutor;
use wharf_shim_proto::ShimServer;
use wharf_shim_proto::control::ControlServer;

pub use service::ShimConfig;

/// How long, once the shim is done, its clients get to close their connections.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

use reaper::Reaper;
use service::{ShimHandler, ShimService};

/// An executor a shim can run its container with, made for each `Create`.
pub trait ShimExecutor: Executor + std::fmt::Debug + Sized {
    /// The executor for a container whose `Create` named `runtime` (empty: the configured
    /// default), starting its helper commands through `monitor` (the shim's reaper).
    ///
    /// # Errors
    /// `InvalidArgument` for a `runtime` this executor cannot use.
    fn for_container(
        config: &ShimConfig,
        runtime: &str,
        monitor: Arc<dyn ProcessMonitor>,
    ) -> Result<Self, Status>;
}

impl ShimExecutor for RuncExecutor {
    fn for_container(
        config: &ShimConfig,
        runtime: &str,
        monitor: Arc<dyn ProcessMonitor>,
    ) -> Result<Self, Status> {
        let runtime = if runtime.is_empty() {
            config.default_runtime.clone()
        } else {
            PathBuf::from(runtime)
        };
        Ok(RuncExecutor::with_monitor(
            wharf_runc_executor::Config {
                runtime,
                root: config.executor_root.clone(),
                scratch_dir: config.state_dir.clone(),
                command_timeout: config.command_timeout,
                criu: Some(config.criu.clone()),
            },
            monitor,
        ))
    }
}

/// In-process: the shim runs on one thread, as libcontainer requires, and its container's
/// init is the shim's own child.
impl ShimExecutor for LibcontainerExecutor {
    fn for_container(
        config: &ShimConfig,
        runtime: &str,
        _monitor: Arc<dyn ProcessMonitor>,
    ) -> Result<Self, Status> {
        if !runtime.is_empty() {
            return Err(Status::invalid_argument(format!(
                "runtime {runtime:?} given, but this shim runs containers with the libcontainer \
                 executor, which uses no runtime binary"
            )));
        }
        let mut executor_config =
            wharf_libcontainer_executor::Config::new(config.executor_root.clone());
        executor_config.scratch_dir.clone_from(&config.state_dir);
        executor_config.criu = Some(config.criu.clone());
        Ok(LibcontainerExecutor::new(executor_config))
    }
}

/// Serves the shim on `listener` until its container is deleted or it is told to stop,
/// running the container with executor `E`.
///
/// Must run on a tokio runtime with IO, time and signals enabled, in a process that has
/// started no other child it waits for: it becomes a child subreaper and reaps everything.
/// With [`LibcontainerExecutor`], the runtime must be a `current_thread` one and the process
/// must have no other thread.
///
/// # Errors
/// Setting up the reaper, signal handlers or the listener failed, or the server failed.
pub async fn run<E: ShimExecutor>(
    config: ShimConfig,
    listener: UnixListener,
) -> anyhow::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .context("becoming a child subreaper")?;
    let (reaper, mut exits) = Reaper::new();
    let reaper = Arc::new(reaper);
    tokio::spawn(
        reaper
            .clone()
            .listen()
            .context("installing the SIGCHLD handler")?,
    );

    let shutdown = CancellationToken::new();
    let service = Arc::new(ShimService::<E>::new(
        config.clone(),
        reaper,
        shutdown.clone(),
    ));
    tokio::spawn({
        let service = service.clone();
        async move {
            while let Some((pid, status)) = exits.recv().await {
                service.on_exit(pid, status);
            }
        }
    });

    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    // The shim outlives terminals and sessions: a hangup must not kill it.
    let hangup = signal(SignalKind::hangup()).context("ignoring SIGHUP")?;
    tokio::spawn({
        let service = service.clone();
        async move {
            let _hangup = hangup;
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            service.terminate().await;
        }
    });

    listener
        .set_nonblocking(true)
        .context("configuring the listening socket")?;
    let listener =
        tokio::net::UnixListener::from_std(listener).context("registering the listening socket")?;
    tracing::info!(state_dir = %config.state_dir.display(), "shim serving");
    let server = tonic::transport::Server::builder()
        .add_service(ShimServer::new(ShimHandler(service.clone())))
        .add_service(ControlServer::new(ShimHandler(service)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown.cancelled());
    // Graceful shutdown waits for clients to finish their calls and read the GOAWAY; one
    // that never reads must not keep a shim with nothing left to own alive.
    let grace_over = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let served = tokio::select! {
        served = server => served,
        () = grace_over => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "clients still connected after shutdown; exiting anyway");
            Ok(())
        }
    };
    let socket = config.state_dir.join(wharf_shim_proto::SOCKET_NAME);
    if let Err(err) = std::fs::remove_file(&socket)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %socket.display(), error = %err, "removing the shim socket");
    }
    served.context("serving the shim API")
}
