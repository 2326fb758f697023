//! The open-file limit: `wharfd` holds a connection (and event files) per container, so it
//! raises its own `RLIMIT_NOFILE`; the shims it spawns get back the limit it started with,
//! so containers do not inherit a daemon's.
//!
//! Each test here lowers the soft limit of its own process (nextest runs every test in a
//! process of its own), which the daemon then inherits.

use std::time::Duration;

use rstest::rstest;
use rstest_reuse::apply;
use wharf_server::limits::OpenFilesLimit;
use wharf_tests::bundle::Bundle;
use wharf_tests::daemon::DaemonFixture;
use wharf_tests::require_containers;
use wharf_tests::system::fd_count;
use wharf_tests::{ExecutorKind, executors};

/// The soft limit the daemon starts with: below what it needs for the containers below.
const START_SOFT: u64 = 48;
/// At least one daemon fd each, on top of the daemon's own: more than `START_SOFT` fds.
const CONTAINERS: usize = 40;

/// The (soft, hard) open-file limit of `pid`, from `/proc/<pid>/limits`.
fn open_files_of(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_else(|err| panic!("reading the limits of {pid}: {err}"));
    let line = text
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a Max open files line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[apply(executors)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_started_with_few_files_raises_its_limit_and_shims_get_the_old_one(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let ours = OpenFilesLimit::current();
    OpenFilesLimit {
        soft: START_SOFT,
        hard: ours.hard,
    }
    .apply()
    .expect("lowering this test's soft open-file limit");
    let mut daemon = DaemonFixture::start(executor).await;
    ours.apply().expect("restoring this test's open-file limit");

    let (soft, hard) = open_files_of(daemon.pid());
    assert!(
        soft > START_SOFT && soft == hard && hard >= ours.hard,
        "wharfd runs with {soft}:{hard}, started with {START_SOFT}:{}",
        ours.hard
    );

    let mut inits = Vec::new();
    let mut bundles = Vec::new();
    for n in 0..CONTAINERS {
        let id = format!("nofile-{n}");
        let bundle = Bundle::new(&id, &["sleep", "1000"]);
        let pid = daemon.run(&id, &bundle).await;
        inits.push((id, pid));
        bundles.push(bundle);
    }
    let state = daemon
        .client()
        .state(wharf_api::StateRequest {})
        .await
        .expect("State")
        .into_inner();
    assert_eq!(state.containers.len(), CONTAINERS, "{state:?}");
    // Otherwise the start limit would not have been in the way, and this proves nothing.
    let fds = fd_count(daemon.pid());
    assert!(
        fds as u64 > START_SOFT,
        "wharfd holds only {fds} fds for {CONTAINERS} containers"
    );
    let shims = daemon.shim_pids();
    assert_eq!(shims.len(), CONTAINERS, "shims: {shims:?}");
    for shim in shims {
        assert_eq!(
            open_files_of(shim),
            (START_SOFT, ours.hard),
            "shim {shim} did not get the limit wharfd started with"
        );
    }

    // Events still flow at that size: every kill is seen exiting.
    let mut events = daemon.events().await;
    for (id, _) in &inits {
        daemon.signal(id, 0, 9).await;
    }
    let mut pending: std::collections::HashSet<_> = inits.iter().cloned().collect();
    while !pending.is_empty() {
        let event = events.next().await;
        if event.r#type == "exit" {
            pending.remove(&(event.id, event.pid));
        }
    }
    daemon.assert_nothing_left().await;
    tokio::time::timeout(Duration::from_secs(30), daemon.stop())
        .await
        .expect("wharfd to stop");
}
