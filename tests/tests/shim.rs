//! `wharf-shim` driven over its socket with a tonic client, on real runc containers.

use wharf_shim_proto::{
    CreateRequest, DeleteRequest, EventType, StartRequest, State, StateRequest,
};
use wharf_tests::bundle::Bundle;
use wharf_tests::fifo::OutputFifo;
use wharf_tests::require_containers;
use wharf_tests::shim::ShimFixture;

fn create_request(id: &str, bundle: &Bundle) -> CreateRequest {
    CreateRequest {
        id: id.into(),
        bundle: bundle.path_string(),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_state_start_running_delete() {
    require_containers!();
    let id = "lifecycle";
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let mut shim = ShimFixture::start(id).await;
    let mut client = shim.client();
    let mut events = shim.events().await;

    let pid = client
        .create(create_request(id, &bundle))
        .await
        .unwrap()
        .into_inner()
        .pid;
    shim.track(pid);
    assert_eq!(events.next().await.r#type(), EventType::Create);
    let state = client.state(StateRequest {}).await.unwrap().into_inner();
    assert_eq!(state.id, id);
    assert_eq!(state.init_pid, pid);
    assert_eq!(state.bundle, bundle.path_string());
    assert_eq!(state.processes.len(), 1);
    assert_eq!(state.processes[0].state(), State::Created);

    client.start(StartRequest {}).await.unwrap();
    assert_eq!(events.next().await.r#type(), EventType::Start);
    let state = client.state(StateRequest {}).await.unwrap().into_inner();
    assert_eq!(state.processes[0].state(), State::Running);

    let deleted = client
        .delete(DeleteRequest { pid })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        deleted.exit_status, 137,
        "a running init is killed by Delete"
    );
    assert_eq!(events.exit_status(pid).await, 137);
    shim.assert_clean_exit().await;
}

#[tokio::test]
async fn stdout_of_ls_arrives_before_exit() {
    require_containers!();
    let id = "ls-slash";
    let bundle = Bundle::new(id, &["ls", "/"]);
    let io = tempfile::tempdir().unwrap();
    let stdout = OutputFifo::create(io.path(), "stdout");
    let mut shim = ShimFixture::start(id).await;
    let mut client = shim.client();
    let mut events = shim.events().await;
    let pid = client
        .create(CreateRequest {
            stdout: stdout.path_string(),
            ..create_request(id, &bundle)
        })
        .await
        .unwrap()
        .into_inner()
        .pid;
    shim.track(pid);
    client.start(StartRequest {}).await.unwrap();
    assert_eq!(events.exit_status(pid).await, 0);
    let listing = stdout.text_now();
    let mut expected: Vec<String> = std::fs::read_dir(wharf_tests::bundle::rootfs())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    expected.sort();
    assert_eq!(listing.lines().collect::<Vec<_>>(), expected);
    let deleted = client
        .delete(DeleteRequest { pid })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.exit_status, 0);
    shim.assert_clean_exit().await;
}
