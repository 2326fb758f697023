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
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use wharf_shim_proto::ShimServer;
use wharf_shim_proto::control::ControlServer;

pub use service::ShimConfig;

/// How long, once the shim is done, its clients get to close their connections.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

use reaper::Reaper;
use service::{ShimHandler, ShimService};

/// Serves the shim on `listener` until its container is deleted or it is told to stop.
///
/// Must run on a tokio runtime with IO, time and signals enabled, in a process that has
/// started no other child it waits for: it becomes a child subreaper and reaps everything.
///
/// # Errors
/// Setting up the reaper, signal handlers or the listener failed, or the server failed.
pub async fn run(config: ShimConfig, listener: UnixListener) -> anyhow::Result<()> {
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
    let service = Arc::new(ShimService::new(config.clone(), reaper, shutdown.clone()));
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
