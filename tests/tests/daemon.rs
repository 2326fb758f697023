//! `wharfd` on real containers, through real shims, driven with a tonic client.

use wharf_api::{CreateContainerRequest, StateRequest};
use wharf_tests::bundle::Bundle;
use wharf_tests::daemon::DaemonFixture;
use wharf_tests::fifo::OutputFifo;
use wharf_tests::require_containers;

#[tokio::test]
async fn create_runs_the_container_and_its_exit_frees_the_id() {
    require_containers!();
    let mut daemon = DaemonFixture::start().await;
    let id = "d-smoke";
    daemon.track(id);
    let bundle = Bundle::new(id, &["sh", "-c", "echo hello; exit 3"]);
    let stdout = OutputFifo::create(&daemon.scratch(), "stdout");
    let mut events = daemon.events().await;
    let mut client = daemon.client();
    let pid = client
        .create_container(CreateContainerRequest {
            id: id.into(),
            bundle_path: bundle.path_string(),
            stdout: stdout.path_string(),
            ..Default::default()
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .pid;
    let seen = events.of_container_until_exit(id, pid).await;
    assert_eq!(
        seen,
        [("start-container".into(), pid, 0), ("exit".into(), pid, 3)]
    );
    assert_eq!(stdout.text_now(), "hello\n");
    let state = client.state(StateRequest {}).await.unwrap().into_inner();
    assert!(
        state.containers.iter().all(|c| c.id != id),
        "gone from State after its exit"
    );
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}
