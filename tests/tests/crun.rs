//! The runc executor with `crun` as its runtime binary (`wharfd --runtime crun`): a
//! container's whole life through the daemon. Needs crun to run on the host: Debian 12's
//! crun 1.8 refuses a hybrid cgroup layout whose v2 tree holds a controller, which
//! `cargo xtask setup` moves to v1 (see the README).

use tonic::Code;
use wharf_api::{
    AddProcessRequest, ApiClient, CreateContainerRequest, SignalRequest, StateRequest,
    UpdateContainerRequest,
};
use wharf_tests::ExecutorKind;
use wharf_tests::bundle::Bundle;
use wharf_tests::daemon::DaemonFixture;
use wharf_tests::fifo::OutputFifo;
use wharf_tests::require_containers;
use wharf_tests::shim::DEADLINE;
use wharf_tests::system::{freezer_state, skip_or_fail, wait_until};

fn crun_missing() -> Option<String> {
    let works = std::process::Command::new("crun")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    (!works).then(|| "needs crun (cargo xtask setup installs it)".to_owned())
}

async fn status_of(client: &mut ApiClient<tonic::transport::Channel>, id: &str) -> String {
    client
        .state(StateRequest {})
        .await
        .expect("State")
        .into_inner()
        .containers
        .into_iter()
        .find(|c| c.id == id)
        .map(|c| c.status)
        .unwrap_or_default()
}

#[tokio::test]
async fn crun_runs_a_container_through_its_whole_life() {
    require_containers!();
    if let Some(reason) = crun_missing() {
        skip_or_fail(module_path!(), &reason);
        return;
    }
    let mut daemon = DaemonFixture::start_with(ExecutorKind::Runc, &["--runtime", "crun"]).await;
    let id = "crun-life";
    daemon.track(id);
    let mut client = daemon.client();
    let mut events = daemon.events().await;
    let bundle = Bundle::new(
        id,
        &[
            "sh",
            "-c",
            "trap 'exit 3' TERM; while true; do sleep 0.05; done",
        ],
    );
    let init = client
        .create_container(CreateContainerRequest {
            id: id.into(),
            bundle_path: bundle.path_string(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("CreateContainer with crun: {status}"))
        .into_inner()
        .pid;

    let out = OutputFifo::create(&daemon.scratch(), "exec");
    let exec = client
        .add_process(AddProcessRequest {
            id: id.into(),
            args: vec!["sh".into(), "-c".into(), "echo from crun; exit 4".into()],
            stdout: out.path_string(),
            ..Default::default()
        })
        .await
        .expect("AddProcess")
        .into_inner()
        .pid;
    assert_eq!(events.exit_status(id, exec).await, 4);
    assert_eq!(out.text_now(), "from crun\n");

    let update = |status: &str| UpdateContainerRequest {
        id: id.into(),
        status: status.into(),
        signal: 0,
    };
    client
        .update_container(update("paused"))
        .await
        .expect("pause");
    assert_eq!(status_of(&mut client, id).await, "paused");
    assert_eq!(
        freezer_state(&wharf_tests::bundle::test_cgroup(id)).as_deref(),
        Some("FROZEN")
    );
    let again = client.update_container(update("paused")).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    client
        .update_container(update("running"))
        .await
        .expect("resume");
    wait_until("the container to run again", DEADLINE, || {
        freezer_state(&wharf_tests::bundle::test_cgroup(id)).as_deref() == Some("THAWED")
    })
    .await;

    client
        .signal(SignalRequest {
            id: id.into(),
            pid: init,
            signal: 15,
        })
        .await
        .expect("Signal");
    assert_eq!(events.exit_status(id, init).await, 3, "the trap ran");
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}
