//! Checkpoint and restore with CRIU through wharfd: a counter dumped with `exit` continues
//! where it stopped once restored, and is then monitored like any started container.

use std::time::Duration;

use wharf_api::{
    Checkpoint, CreateCheckpointRequest, CreateContainerRequest, DeleteCheckpointRequest,
    ListCheckpointRequest, SignalRequest,
};
use wharf_tests::ExecutorKind;
use wharf_tests::bundle::Bundle;
use wharf_tests::daemon::DaemonFixture;
use wharf_tests::fifo::OutputFifo;
use wharf_tests::require_containers;
use wharf_tests::system::{skip_or_fail, wait_until};

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

fn checkpoint(name: &str, exit: bool) -> Option<Checkpoint> {
    Some(Checkpoint {
        name: name.into(),
        exit,
        ..Checkpoint::default()
    })
}

#[tokio::test]
async fn a_counter_checkpointed_with_exit_continues_where_it_stopped_when_restored() {
    require_containers!();
    require_criu!();
    let mut daemon = DaemonFixture::start(ExecutorKind::Runc).await;
    let id = "cp-counter";
    daemon.track(id);
    let bundle = Bundle::new(
        id,
        &[
            "sh",
            "-c",
            "i=0; while true; do echo $i; i=$((i+1)); sleep 0.05; done",
        ],
    );
    // Fifos, as containerd's clients give: the shim pipes them, and CRIU dumps pipes (not
    // files outside the container's mounts).
    let before = OutputFifo::create(&daemon.scratch(), "before");
    let after = OutputFifo::create(&daemon.scratch(), "after");
    let mut events = daemon.events().await;
    let mut client = daemon.client();
    let start = |stdout: &OutputFifo, checkpoint: &str| CreateContainerRequest {
        id: id.into(),
        bundle_path: bundle.path_string(),
        stdout: stdout.path_string(),
        checkpoint: checkpoint.into(),
        ..Default::default()
    };
    let first = client
        .create_container(start(&before, ""))
        .await
        .expect("CreateContainer")
        .into_inner()
        .pid;
    wait_until("the counter to reach 5", Duration::from_secs(10), || {
        counted(&before).len() >= 5
    })
    .await;

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

#[tokio::test]
async fn the_libcontainer_executor_says_it_cannot_checkpoint_and_leaves_nothing() {
    require_containers!();
    let mut daemon = DaemonFixture::start(ExecutorKind::Libcontainer).await;
    let id = "cp-libcontainer";
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
    let refused = client
        .create_checkpoint(CreateCheckpointRequest {
            id: id.into(),
            checkpoint: checkpoint("x", true),
        })
        .await
        .expect_err("checkpoint under libcontainer");
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
    assert!(refused.message().contains(id), "{refused:?}");
    let left: Vec<_> = std::fs::read_dir(bundle.path().join("checkpoints"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "no partial checkpoint: {left:?}");
    client
        .signal(SignalRequest {
            id: id.into(),
            pid: 0,
            signal: 9,
        })
        .await
        .expect("the container still runs");
    assert_eq!(events.exit_status(id, pid).await, 137);
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}
