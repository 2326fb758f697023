//! 300 create/start/exec/kill/delete cycles through `wharfd` with the libcontainer executor,
//! while another task keeps running execs in a long-lived container. Every step has a
//! deadline (a hang fails the test, naming the step); at the end nothing is left.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use wharf_api::{
    AddProcessRequest, ApiClient, CreateContainerRequest, Event, SignalRequest, StateRequest,
};
use wharf_tests::ExecutorKind;
use wharf_tests::bundle::Bundle;
use wharf_tests::daemon::DaemonFixture;
use wharf_tests::require_containers;
use wharf_tests::shim::DEADLINE;

const WORKERS: usize = 3;
const CYCLES_PER_WORKER: usize = 100;

/// Runs `step` under the deadline; a hang fails the test naming the step.
async fn step<T>(what: impl std::fmt::Display, step: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, step).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {DEADLINE:?}"),
    }
}

/// Waits for the `exit` event of (`id`, `pid`) on a copy of the daemon's events.
async fn exit_status(events: &mut broadcast::Receiver<Event>, id: &str, pid: u32) -> u32 {
    loop {
        match events.recv().await {
            Ok(e) if e.r#type == "exit" && e.id == id && e.pid == pid => return e.status,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => {
                panic!("the test fell {n} events behind the daemon")
            }
            Err(broadcast::error::RecvError::Closed) => panic!("the events stream ended"),
        }
    }
}

async fn exec(client: &mut ApiClient<Channel>, id: &str, args: &[&str]) -> u32 {
    client
        .add_process(AddProcessRequest {
            id: id.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("AddProcess in {id}: {status}"))
        .into_inner()
        .pid
}

async fn kill(client: &mut ApiClient<Channel>, id: &str, pid: u32) {
    client
        .signal(SignalRequest {
            id: id.into(),
            pid,
            signal: 9,
        })
        .await
        .unwrap_or_else(|status| panic!("Signal to {id}: {status}"));
}

async fn start(client: &mut ApiClient<Channel>, id: &str, bundle: &Bundle) -> u32 {
    client
        .create_container(CreateContainerRequest {
            id: id.into(),
            bundle_path: bundle.path_string(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("CreateContainer {id}: {status}"))
        .into_inner()
        .pid
}

async fn listed(client: &mut ApiClient<Channel>, id: &str) -> bool {
    client
        .state(StateRequest {})
        .await
        .expect("State")
        .into_inner()
        .containers
        .iter()
        .any(|c| c.id == id)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// One worker's cycles: create and start, exec and wait for it, SIGKILL the init, wait
/// until the container is deleted.
async fn cycles(
    worker: usize,
    mut client: ApiClient<Channel>,
    mut events: broadcast::Receiver<Event>,
) {
    for cycle in 0..CYCLES_PER_WORKER {
        let id = format!("stress-{worker}-{cycle}");
        let bundle = Bundle::new(&id, &["sleep", "1000"]);
        let init = step(
            format!("create+start of {id}"),
            start(&mut client, &id, &bundle),
        )
        .await;
        let echo = step(format!("exec in {id}"), exec(&mut client, &id, &["true"])).await;
        let status = step(
            format!("exit of the exec in {id}"),
            exit_status(&mut events, &id, echo),
        )
        .await;
        assert_eq!(status, 0, "exec in {id}");
        step(format!("SIGKILL to {id}"), kill(&mut client, &id, init)).await;
        let status = step(format!("exit of {id}"), exit_status(&mut events, &id, init)).await;
        assert_eq!(status, 137, "init of {id}");
        step(format!("deletion of {id}"), async {
            while listed(&mut client, &id).await {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_cycles_with_concurrent_execs_hang_nowhere_and_leave_nothing() {
    require_containers!();
    let mut daemon = DaemonFixture::start_quiet(ExecutorKind::Libcontainer).await;
    let daemon_fds = open_fds(daemon.pid());
    for worker in 0..WORKERS {
        for cycle in 0..CYCLES_PER_WORKER {
            daemon.track(&format!("stress-{worker}-{cycle}"));
        }
    }
    daemon.track("stress-traffic");
    let (tx, _) = broadcast::channel(1 << 16);
    let mut stream = daemon.events().await.into_inner();
    let forward = tokio::spawn({
        let tx = tx.clone();
        async move {
            while let Some(Ok(event)) = stream.next().await {
                let _ = tx.send(event);
            }
        }
    });

    // The exec traffic: a container that keeps getting short execs until the cycles end.
    let mut client = daemon.client();
    let traffic = Bundle::new("stress-traffic", &["sleep", "1000"]);
    let traffic_init = step(
        "starting the traffic container",
        start(&mut client, "stress-traffic", &traffic),
    )
    .await;
    let done = Arc::new(AtomicBool::new(false));
    let execs = Arc::new(AtomicUsize::new(0));
    let exec_traffic = tokio::spawn({
        let (mut client, mut events) = (daemon.client(), tx.subscribe());
        let (done, execs) = (done.clone(), execs.clone());
        async move {
            while !done.load(Ordering::Relaxed) {
                let pid = step(
                    "a traffic exec",
                    exec(&mut client, "stress-traffic", &["true"]),
                )
                .await;
                let status = step(
                    "a traffic exec's exit",
                    exit_status(&mut events, "stress-traffic", pid),
                )
                .await;
                assert_eq!(status, 0, "traffic exec");
                execs.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| tokio::spawn(cycles(worker, daemon.client(), tx.subscribe())))
        .collect();
    for worker in workers {
        worker.await.expect("a worker failed");
    }
    done.store(true, Ordering::Relaxed);
    exec_traffic.await.expect("the exec traffic failed");
    let mut events = tx.subscribe();
    step(
        "SIGKILL to the traffic container",
        kill(&mut client, "stress-traffic", traffic_init),
    )
    .await;
    assert_eq!(
        step(
            "the traffic container's exit",
            exit_status(&mut events, "stress-traffic", traffic_init)
        )
        .await,
        137
    );
    eprintln!(
        "{} cycles done alongside {} execs in the traffic container",
        WORKERS * CYCLES_PER_WORKER,
        execs.load(Ordering::Relaxed)
    );
    assert!(execs.load(Ordering::Relaxed) > 0, "the exec traffic ran");

    daemon.assert_nothing_left().await;
    let fds_after = open_fds(daemon.pid());
    assert!(
        fds_after <= daemon_fds + 4,
        "the daemon holds {fds_after} fds after the run, {daemon_fds} before"
    );
    forward.abort();
    daemon.stop().await;
}
