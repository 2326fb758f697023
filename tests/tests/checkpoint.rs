//! Checkpoint and restore with CRIU through wharfd: a counter dumped with `exit` continues
//! where it stopped once restored, and is then monitored like any started container.

use std::time::Duration;

use rstest::rstest;
use rstest_reuse::apply;
use wharf_api::{
    AddProcessRequest, Checkpoint, CreateCheckpointRequest, CreateContainerRequest,
    DeleteCheckpointRequest, ListCheckpointRequest, SignalRequest, StatsRequest,
    UpdateContainerRequest,
};
use wharf_tests::bundle::{Bundle, test_cgroup};
use wharf_tests::daemon::DaemonFixture;
use wharf_tests::fifo::OutputFifo;
use wharf_tests::require_containers;
use wharf_tests::shim::DEADLINE;
use wharf_tests::system::{skip_or_fail, wait_until};
use wharf_tests::{ExecutorKind, executors};

const CRIU: &str = wharf_server::daemon::config::DEFAULT_CRIU_PATH;

/// Returns from the test unless CRIU 4 is installed where wharf looks (fails under CI).
macro_rules! require_criu {
    () => {
        let works = std::process::Command::new(CRIU)
            .arg("--version")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("Version: 4."));
        if !works {
            skip_or_fail(
                module_path!(),
                &format!("needs CRIU 4 at {CRIU} (cargo xtask setup builds it)"),
            );
            return;
        }
    };
}

fn counted(output: &OutputFifo) -> Vec<u64> {
    output
        .text_now()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A shell loop printing 0, 1, 2... every 50 ms.
fn counter_bundle(id: &str) -> Bundle {
    Bundle::new(
        id,
        &[
            "sh",
            "-c",
            "i=0; while true; do echo $i; i=$((i+1)); sleep 0.05; done",
        ],
    )
}

/// `CreateContainer` of `bundle` as `id`, stdout to `stdout`, restored from `checkpoint`
/// unless it is empty.
fn create_request(
    id: &str,
    bundle: &Bundle,
    stdout: &OutputFifo,
    checkpoint: &str,
) -> CreateContainerRequest {
    CreateContainerRequest {
        id: id.into(),
        bundle_path: bundle.path_string(),
        stdout: stdout.path_string(),
        checkpoint: checkpoint.into(),
        ..Default::default()
    }
}

/// Starts the counter as `request` says and waits until it printed 5 lines to `output`;
/// returns its init's pid.
async fn start_counter(
    client: &mut wharf_api::ApiClient<tonic::transport::Channel>,
    request: CreateContainerRequest,
    output: &OutputFifo,
) -> u32 {
    let pid = client
        .create_container(request)
        .await
        .expect("CreateContainer")
        .into_inner()
        .pid;
    wait_until("the counter to reach 5", Duration::from_secs(10), || {
        counted(output).len() >= 5
    })
    .await;
    pid
}

fn checkpoint(name: &str, exit: bool) -> Option<Checkpoint> {
    Some(Checkpoint {
        name: name.into(),
        exit,
        ..Checkpoint::default()
    })
}

#[apply(executors)]
#[tokio::test]
async fn a_counter_checkpointed_with_exit_continues_where_it_stopped_when_restored(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    require_criu!();
    let mut daemon = DaemonFixture::start(executor).await;
    let id = "cp-counter";
    daemon.track(id);
    let bundle = counter_bundle(id);
    // Fifos, as containerd's clients give: the shim pipes them, and CRIU dumps pipes (not
    // files outside the container's mounts).
    let before = OutputFifo::create(&daemon.scratch(), "before");
    let after = OutputFifo::create(&daemon.scratch(), "after");
    let mut events = daemon.events().await;
    let mut client = daemon.client();
    let start =
        |stdout: &OutputFifo, checkpoint: &str| create_request(id, &bundle, stdout, checkpoint);
    let first = start_counter(&mut client, start(&before, ""), &before).await;

    // Leave-running: it keeps counting.
    client
        .create_checkpoint(CreateCheckpointRequest {
            id: id.into(),
            checkpoint: checkpoint("running", false),
        })
        .await
        .expect("CreateCheckpoint leave-running");
    let seen = counted(&before).len();
    wait_until(
        "the counter to go on after a leave-running checkpoint",
        Duration::from_secs(10),
        || counted(&before).len() > seen + 2,
    )
    .await;

    // Every error case.
    let code = |r: Result<tonic::Response<wharf_api::CreateCheckpointResponse>, tonic::Status>| {
        r.expect_err("an error").code()
    };
    assert_eq!(
        code(
            client
                .create_checkpoint(CreateCheckpointRequest {
                    id: id.into(),
                    checkpoint: None
                })
                .await
        ),
        tonic::Code::InvalidArgument
    );
    for bad in ["", "../x", "a/b", ".."] {
        assert_eq!(
            code(
                client
                    .create_checkpoint(CreateCheckpointRequest {
                        id: id.into(),
                        checkpoint: checkpoint(bad, false)
                    })
                    .await
            ),
            tonic::Code::InvalidArgument,
            "{bad:?}"
        );
    }
    assert_eq!(
        code(
            client
                .create_checkpoint(CreateCheckpointRequest {
                    id: id.into(),
                    checkpoint: checkpoint("running", false)
                })
                .await
        ),
        tonic::Code::AlreadyExists
    );
    assert_eq!(
        code(
            client
                .create_checkpoint(CreateCheckpointRequest {
                    id: "nope".into(),
                    checkpoint: checkpoint("x", false)
                })
                .await
        ),
        tonic::Code::NotFound
    );
    let missing = client
        .delete_checkpoint(DeleteCheckpointRequest {
            id: id.into(),
            name: "never".into(),
        })
        .await
        .expect_err("deleting a missing checkpoint");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // With exit: the dump stops the container, whose exit follows.
    client
        .create_checkpoint(CreateCheckpointRequest {
            id: id.into(),
            checkpoint: Some(Checkpoint {
                name: "stopped".into(),
                exit: true,
                tcp: true,
                unix_sockets: false,
                shell: false,
            }),
        })
        .await
        .expect("CreateCheckpoint with exit");
    let events_seen = events.of_container_until_exit(id, first).await;
    let kinds: Vec<&str> = events_seen.iter().map(|(k, _, _)| k.as_str()).collect();
    assert!(
        kinds.contains(&"checkpoint"),
        "a checkpoint event: {kinds:?}"
    );
    let stopped_at = *counted(&before).last().expect("counted before the dump");

    let restored = client
        .create_container(start(&after, "stopped"))
        .await
        .expect("CreateContainer from checkpoint stopped")
        .into_inner()
        .pid;
    wait_until(
        "the restored counter to print",
        Duration::from_secs(10),
        || counted(&after).len() >= 3,
    )
    .await;
    let continued = counted(&after);
    assert_eq!(
        continued[0],
        stopped_at + 1,
        "the restored counter continues from {stopped_at}: {continued:?}"
    );
    let listed = client
        .list_checkpoint(ListCheckpointRequest { id: id.into() })
        .await
        .expect("ListCheckpoint")
        .into_inner()
        .checkpoints;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0].name, "running");
    assert!(!listed[0].exit);
    assert!(
        listed[1].exit && listed[1].tcp && !listed[1].unix_sockets,
        "{listed:?}"
    );
    client
        .delete_checkpoint(DeleteCheckpointRequest {
            id: id.into(),
            name: "running".into(),
        })
        .await
        .expect("DeleteCheckpoint");
    assert!(!bundle.path().join("checkpoints/running").exists());

    // Owned like a started container: in its cgroup, and exec, pause, stats work.
    let cgroups = std::fs::read_to_string(format!("/proc/{restored}/cgroup"))
        .expect("reading the restored init's cgroups");
    assert!(
        cgroups.contains(&test_cgroup(id)),
        "the restored init is in the container's cgroup: {cgroups}"
    );
    let exec_out = OutputFifo::create(&daemon.scratch(), "exec");
    let exec_pid = client
        .add_process(AddProcessRequest {
            id: id.into(),
            args: vec!["echo".into(), "exec-ok".into()],
            stdout: exec_out.path_string(),
            ..Default::default()
        })
        .await
        .expect("AddProcess into the restored container")
        .into_inner()
        .pid;
    assert_eq!(events.exit_status(id, exec_pid).await, 0);
    exec_out.wait_eof(Duration::from_secs(10)).await;
    assert_eq!(exec_out.text_now().trim(), "exec-ok");
    let update = |status: &str| UpdateContainerRequest {
        id: id.into(),
        status: status.into(),
        signal: 0,
    };
    client
        .update_container(update("paused"))
        .await
        .expect("pausing the restored container");
    client
        .update_container(update("running"))
        .await
        .expect("resuming the restored container");
    let sample = client
        .get_stats(StatsRequest { id: id.into() })
        .await
        .expect("GetStats of the restored container")
        .into_inner()
        .message()
        .await
        .expect("a stats sample")
        .expect("a stats sample");
    let memory = sample
        .cgroup_stats
        .and_then(|c| c.memory_stats)
        .and_then(|m| m.usage)
        .map_or(0, |u| u.usage);
    assert!(memory > 0, "the restored container's cgroup is sampled");

    // Monitored like a started container: its exit is reported.
    client
        .signal(SignalRequest {
            id: id.into(),
            pid: 0,
            signal: 9,
        })
        .await
        .expect("Signal the restored init");
    assert_eq!(events.exit_status(id, restored).await, 137);
    let unknown = client
        .create_container(start(&after, "never-made"))
        .await
        .expect_err("restoring a missing checkpoint");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

/// The checkpoint outlives the daemon: dumped with `exit`, the daemon SIGKILLed and started
/// again, the restore continues the count. A daemon running the other executor refuses the
/// checkpoint (`FailedPrecondition`, naming the executor that made it) and starts nothing.
#[rstest]
#[case::runc(ExecutorKind::Runc, ExecutorKind::Runc)]
#[case::libcontainer(ExecutorKind::Libcontainer, ExecutorKind::Libcontainer)]
#[case::runc_refused_by_libcontainer(ExecutorKind::Runc, ExecutorKind::Libcontainer)]
#[case::libcontainer_refused_by_runc(ExecutorKind::Libcontainer, ExecutorKind::Runc)]
#[tokio::test]
async fn a_checkpoint_restores_after_the_daemon_restarts(
    #[case] dumped_by: ExecutorKind,
    #[case] restarted_with: ExecutorKind,
) {
    require_containers!();
    require_criu!();
    let mut daemon = DaemonFixture::start(dumped_by).await;
    let id = "cp-restart";
    daemon.track(id);
    let bundle = counter_bundle(id);
    let before = OutputFifo::create(&daemon.scratch(), "before");
    let after = OutputFifo::create(&daemon.scratch(), "after");
    let start =
        |stdout: &OutputFifo, checkpoint: &str| create_request(id, &bundle, stdout, checkpoint);
    let mut events = daemon.events().await;
    let mut client = daemon.client();
    let first = start_counter(&mut client, start(&before, ""), &before).await;
    client
        .create_checkpoint(CreateCheckpointRequest {
            id: id.into(),
            checkpoint: checkpoint("kept", true),
        })
        .await
        .expect("CreateCheckpoint with exit");
    assert_eq!(events.exit_status(id, first).await, 137);
    let stopped_at = *counted(&before).last().expect("counted before the dump");

    daemon.kill9().await;
    daemon.executor = restarted_with;
    daemon.restart().await;
    if restarted_with != dumped_by {
        // The other executor's images: refused up front, nothing started.
        let refused = daemon
            .client()
            .create_container(start(&after, "kept"))
            .await
            .expect_err("restoring another executor's checkpoint");
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "{refused:?}"
        );
        assert!(
            refused.message().contains(dumped_by.as_str()),
            "names the executor that made it: {refused:?}"
        );
        daemon.kill9().await;
        daemon.executor = dumped_by;
        daemon.restart().await;
    }
    let mut events = daemon.events().await;
    let mut client = daemon.client();
    let restored = client
        .create_container(start(&after, "kept"))
        .await
        .expect("CreateContainer from checkpoint kept after the restart")
        .into_inner()
        .pid;
    wait_until(
        "the restored counter to print",
        Duration::from_secs(10),
        || !counted(&after).is_empty(),
    )
    .await;
    assert_eq!(
        counted(&after)[0],
        stopped_at + 1,
        "the restored counter continues from {stopped_at}"
    );
    let listed = client
        .list_checkpoint(ListCheckpointRequest { id: id.into() })
        .await
        .expect("ListCheckpoint of the restored container")
        .into_inner()
        .checkpoints;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].exit, "{listed:?}");
    client
        .signal(SignalRequest {
            id: id.into(),
            pid: 0,
            signal: 9,
        })
        .await
        .expect("Signal the restored init");
    assert_eq!(events.exit_status(id, restored).await, 137);
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

/// A dump CRIU cannot do (stdout is a regular file outside the container's mounts) fails
/// with CRIU's own error lines, leaves no checkpoint and no work directory, and leaves the
/// container running as it was.
#[apply(executors)]
#[tokio::test]
async fn a_failed_dump_leaves_nothing_and_the_container_running(#[case] executor: ExecutorKind) {
    require_containers!();
    require_criu!();
    let mut daemon = DaemonFixture::start(executor).await;
    let id = "cp-fails";
    daemon.track(id);
    let bundle = counter_bundle(id);
    let log = daemon.scratch().join("counter.log");
    std::fs::write(&log, "").expect("creating the stdout file");
    let mut events = daemon.events().await;
    let mut client = daemon.client();
    let pid = client
        .create_container(CreateContainerRequest {
            id: id.into(),
            bundle_path: bundle.path_string(),
            stdout: log.display().to_string(),
            ..Default::default()
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .pid;
    let failed = client
        .create_checkpoint(CreateCheckpointRequest {
            id: id.into(),
            checkpoint: checkpoint("doomed", true),
        })
        .await
        .expect_err("CRIU cannot dump a file outside the container's mounts");
    assert_eq!(failed.code(), tonic::Code::Internal, "{failed:?}");
    assert!(
        failed.message().contains("CRIU: Error ("),
        "carries CRIU's error lines: {failed:?}"
    );
    let partial: Vec<_> = std::fs::read_dir(bundle.path().join("checkpoints"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(partial.is_empty(), "no partial checkpoint: {partial:?}");
    let container_dir = daemon.state_dir.join("containers").join(id);
    let work: Vec<_> = std::fs::read_dir(&container_dir)
        .expect("the container's state dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("criu-"))
        .collect();
    assert!(work.is_empty(), "no CRIU work dir left: {work:?}");
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    wait_until(
        "the counter to go on after the failed dump",
        Duration::from_secs(10),
        || std::fs::read_to_string(&log).unwrap_or_default().len() > before + 4,
    )
    .await;
    client
        .signal(SignalRequest {
            id: id.into(),
            pid: 0,
            signal: 9,
        })
        .await
        .expect("Signal");
    assert_eq!(events.exit_status(id, pid).await, 137);
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

/// CRIU freezes the cgroup and then seizes each task; a task stopped by SIGSTOP in a frozen
/// cgroup cannot be seized until someone thaws it, so the dump would hang with the container
/// frozen. The shim refuses instead, also when the container is paused, and a SIGCONT makes
/// the container checkpointable again.
#[apply(executors)]
#[tokio::test]
async fn a_container_with_a_stopped_process_is_refused_not_frozen_forever(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    require_criu!();
    let mut daemon = DaemonFixture::start(executor).await;
    let id = "cp-stopped";
    daemon.track(id);
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let mut events = daemon.events().await;
    let mut client = daemon.client();
    let pid = client
        .create_container(CreateContainerRequest {
            id: id.into(),
            bundle_path: bundle.path_string(),
            ..Default::default()
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .pid;
    let signal = |signal: u32| SignalRequest {
        id: id.into(),
        pid: 0,
        signal,
    };
    client.signal(signal(19)).await.expect("SIGSTOP");
    let update = |status: &str| wharf_api::UpdateContainerRequest {
        id: id.into(),
        signal: 0,
        status: status.into(),
    };
    for paused in [false, true] {
        if paused {
            client
                .update_container(update("paused"))
                .await
                .expect("pause");
        }
        let refused = tokio::time::timeout(
            DEADLINE,
            client.create_checkpoint(CreateCheckpointRequest {
                id: id.into(),
                checkpoint: checkpoint("stopped", false),
            }),
        )
        .await
        .expect("the checkpoint answers instead of hanging")
        .expect_err("a stopped process cannot be dumped");
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "{refused:?}"
        );
        assert!(
            refused.message().contains(id) && refused.message().contains(&pid.to_string()),
            "names the container and the process: {refused:?}"
        );
    }
    let state = client
        .state(wharf_api::StateRequest {})
        .await
        .expect("State")
        .into_inner();
    assert_eq!(state.containers[0].status, "paused", "left as it was");
    client
        .update_container(update("running"))
        .await
        .expect("resume");
    client.signal(signal(18)).await.expect("SIGCONT");
    client
        .create_checkpoint(CreateCheckpointRequest {
            id: id.into(),
            checkpoint: checkpoint("continued", false),
        })
        .await
        .expect("a continued container is checkpointed");
    client.signal(signal(9)).await.expect("SIGKILL");
    assert_eq!(events.exit_status(id, pid).await, 137);
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}
