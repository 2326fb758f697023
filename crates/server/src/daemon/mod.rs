//! `wharfd`: serves `types.API` on a unix socket and runs each container through its own
//! `wharf-shim`. See ARCHITECTURE.md.

mod access;
pub mod config;
mod containers;
pub(crate) mod front;
mod journal;
mod listener;
mod memory;
pub(crate) mod metrics;
mod record;
mod recovery;
mod service;
mod shim_process;
mod stats;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use wharf_api as api;
use wharf_executor::Executor;
use wharf_libcontainer_executor::LibcontainerExecutor;
use wharf_runc_executor::RuncExecutor;

use config::Config;
use containers::Daemon;
use front::AuthorityFront;
use journal::Journal;
use service::{ApiHandler, EventsHandler};

/// How long, after SIGTERM/SIGINT, clients get to finish before the daemon exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// An executor the daemon runs containers with, chosen once at startup. Its shims run it;
/// the daemon itself only cleans up with it after a shim that died (`delete`, which clones
/// nothing, so the multi-threaded daemon may call it).
pub(crate) trait DaemonExecutor: Executor + std::fmt::Debug {
    /// The executor the daemon cleans up with.
    fn janitor(config: &Config) -> Self;
}

impl DaemonExecutor for RuncExecutor {
    fn janitor(config: &Config) -> Self {
        let mut janitor = wharf_runc_executor::Config::new(config.executor_root());
        janitor.runtime.clone_from(&config.runtime);
        janitor.scratch_dir.clone_from(&config.state_dir);
        RuncExecutor::new(janitor)
    }
}

impl DaemonExecutor for LibcontainerExecutor {
    fn janitor(config: &Config) -> Self {
        let mut janitor = wharf_libcontainer_executor::Config::new(config.executor_root());
        janitor.scratch_dir.clone_from(&config.state_dir);
        LibcontainerExecutor::new(janitor)
    }
}

/// Serves until SIGTERM or SIGINT, then exits leaving every container running (each is
/// owned by its shim).
///
/// # Errors
/// The state directory or the socket cannot be set up, or serving fails.
pub async fn run(config: Config) -> Result<()> {
    match config.executor {
        config::ExecutorKind::Runc => serve::<RuncExecutor>(config).await,
        config::ExecutorKind::Libcontainer => serve::<LibcontainerExecutor>(config).await,
    }
}

async fn serve<E: DaemonExecutor>(config: Config) -> Result<()> {
    for dir in [
        config.state_dir.clone(),
        config.containers_dir(),
        config.executor_root(),
    ] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let metrics_listener = match config.metrics_address {
        Some(address) => Some(metrics::bind(address).await?),
        None => None,
    };
    let access = Arc::new(access::AccessPolicy::new(
        &config.allowed_uids,
        &config.allowed_gids,
    ));
    let socket_mode = if access.opens_the_socket() {
        listener::SocketMode::EveryLocalUser
    } else {
        listener::SocketMode::OwnerOnly
    };
    let listener = listener::bind(&config.listen, socket_mode)?;
    listener
        .set_nonblocking(true)
        .context("configuring the listening socket")?;
    let listener =
        tokio::net::UnixListener::from_std(listener).context("registering the listening socket")?;
    let incoming = UnixListenerStream::new(listener).map(|stream| stream.map(AuthorityFront::new));

    let machine = machine(&config.id);
    let (journal, report) =
        Journal::open(&config.state_dir, config.event_retention).with_context(|| {
            format!(
                "opening the event journal in {}",
                config.state_dir.display()
            )
        })?;
    if report.torn_tail || report.corrupt_lines > 0 {
        tracing::warn!(
            torn_tail = report.torn_tail,
            corrupt_lines = report.corrupt_lines,
            "the event journal had damage; skipped it"
        );
    }
    journal.open_replay_window(Duration::from_secs(config.replay_window_secs));
    let listen = config.listen.clone();
    // Before the first container is taken over, so its counters count.
    let metrics_handle = metrics_listener
        .is_some()
        .then(metrics::install)
        .transpose()?;
    let (stop_containers, stop_timeout) = (
        config.stop_containers_on_exit,
        Duration::from_secs(config.stop_timeout_secs),
    );
    // A connection and event files per container: a thousand containers need more than
    // the usual 1024. Shims get the limit back (`ShimOptions::open_files`).
    let open_files = crate::limits::raise_open_files();
    tracing::info!(
        soft = open_files.after.soft,
        hard = open_files.after.hard,
        was = open_files.before.soft,
        "open-file limit"
    );
    let daemon = Arc::new(Daemon::<E>::new(
        config,
        machine,
        journal,
        open_files.before,
    ));
    tokio::spawn(memory::trim_after_containers_go(daemon.pumps()));
    // Every container of an earlier daemon is taken over before a client can ask.
    recovery::recover(&daemon).await;
    tracing::info!(socket = %listen.display(), "wharfd serving");
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<api::ApiServer<ApiHandler<E>>>().await;

    let stopping = tokio_util::sync::CancellationToken::new();
    if let (Some(listener), Some(handle)) = (metrics_listener, metrics_handle) {
        tokio::spawn(metrics::serve(
            listener,
            handle,
            daemon.clone(),
            stopping.clone(),
        ));
    }
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn({
        let (stopping, daemon) = (stopping.clone(), daemon.clone());
        async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            if stop_containers {
                tracing::info!("stopping every container, then wharfd");
                daemon.stop_all(stop_timeout).await;
            } else {
                tracing::info!("stopping; containers keep running under their shims");
            }
            daemon.leave();
            // Open Events streams would hold graceful shutdown forever: end them.
            daemon.journal.close();
            stopping.cancel();
        }
    });
    let server = tonic::transport::Server::builder()
        .layer(metrics::RpcMetricsLayer)
        .layer(access::AccessLayer(access))
        .add_service(health_service)
        .add_service(api::ApiServer::new(ApiHandler(daemon.clone())))
        .add_service(api::v1::EventsServer::new(EventsHandler(daemon)))
        .serve_with_incoming_shutdown(incoming, stopping.clone().cancelled_owned());
    let grace_over = async {
        stopping.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let served = tokio::select! {
        served = server => served.context("serving types.API"),
        () = grace_over => Ok(()),
    };
    let _ = std::fs::remove_file(&listen);
    served
}

/// Aborts the daemon at a named step when the test-only environment variable
/// `WHARF_TEST_FAULT` names it: how the tests crash a daemon in the middle of a request.
pub(crate) fn fault_point(step: &str) {
    static FAULT: OnceLock<Option<String>> = OnceLock::new();
    if FAULT
        .get_or_init(|| std::env::var("WHARF_TEST_FAULT").ok())
        .as_deref()
        == Some(step)
    {
        tracing::error!(step, "WHARF_TEST_FAULT: aborting");
        std::process::abort();
    }
}

/// What `State` says of this machine: its id, CPU count and memory in bytes.
fn machine(id: &str) -> api::Machine {
    use procfs::{Current, CurrentSI};
    let cpus = procfs::KernelStats::current()
        .map(|stats| stats.cpu_time.len())
        .unwrap_or_else(|_| std::thread::available_parallelism().map_or(1, usize::from));
    let memory = procfs::Meminfo::current().map_or(0, |info| info.mem_total);
    api::Machine {
        id: id.to_owned(),
        cpus: u32::try_from(cpus).unwrap_or(u32::MAX),
        memory,
    }
}
