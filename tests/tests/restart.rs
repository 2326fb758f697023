//! Restart without loss: `wharfd` is SIGKILLed, stopped or crashes, comes back, and finds
//! every container and every exit. Real daemon, real shims, real containers.

use std::time::Duration;

use rstest::rstest;
use rstest_reuse::apply;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use wharf_api::v1::{EventsClient, JournaledEvent, SubscribeRequest};
use wharf_api::{
    AddProcessRequest, ApiClient, CreateContainerRequest, SignalRequest, StateRequest,
};
use wharf_tests::bundle::Bundle;
use wharf_tests::daemon::DaemonFixture;
use wharf_tests::fifo::OutputFifo;
use wharf_tests::require_containers;
use wharf_tests::shim::DEADLINE;
use wharf_tests::system::{process_alive, wait_until};
use wharf_tests::{ExecutorKind, executors};

fn create(id: &str, bundle: &Bundle) -> CreateContainerRequest {
    CreateContainerRequest {
        id: id.into(),
        bundle_path: bundle.path_string(),
        ..Default::default()
    }
}

async fn start(client: &mut ApiClient<Channel>, request: CreateContainerRequest) -> u32 {
    client
        .create_container(request)
        .await
        .expect("CreateContainer")
        .into_inner()
        .pid
}

/// (id, pids) of every listed container, sorted.
async fn listed(client: &mut ApiClient<Channel>) -> Vec<(String, Vec<u32>)> {
    let state = client
        .state(StateRequest {})
        .await
        .expect("State")
        .into_inner();
    state
        .containers
        .into_iter()
        .map(|c| (c.id, c.processes.iter().map(|p| p.pid).collect()))
        .collect()
}

fn kill(pid: u32, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    rustix::process::kill_process(pid, signal).expect("signalling a process");
}

/// Every journaled event after `after_seq`, up to and with the first `done` accepts.
async fn journal_until(
    daemon: &DaemonFixture,
    after_seq: u64,
    mut done: impl FnMut(&JournaledEvent) -> bool,
) -> Vec<JournaledEvent> {
    let channel = wharf_api::channel(&daemon.socket)
        .await
        .expect("a channel to wharfd");
    let mut stream = EventsClient::new(channel)
        .subscribe(SubscribeRequest { after_seq })
        .await
        .expect("wharf.v1.Events/Subscribe")
        .into_inner();
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("a journaled event within the deadline")
            .expect("the stream goes on")
            .expect("a journaled event");
        let stop = done(&event);
        seen.push(event);
        if stop {
            return seen;
        }
    }
}

fn exits(events: &[JournaledEvent]) -> Vec<(String, u32, u32)> {
    events
        .iter()
        .filter_map(|j| j.event.as_ref())
        .filter(|e| e.r#type == "exit")
        .map(|e| (e.id.clone(), e.pid, e.status))
        .collect()
}

#[apply(executors)]
#[tokio::test]
async fn sigkill_and_restart_reattach_ten_containers_with_their_pids_exec_and_stdout(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let mut client = daemon.client();
    let counter = OutputFifo::create(&daemon.scratch(), "counter");
    let mut expected = Vec::new();
    let mut bundles = Vec::new();
    for n in 0..10 {
        let id = format!("r-ten-{n}");
        daemon.track(&id);
        let (bundle, stdout) = if n == 0 {
            let counting = "i=0; while true; do i=$((i+1)); echo $i; sleep 0.01; done";
            (
                Bundle::new(&id, &["sh", "-c", counting]),
                counter.path_string(),
            )
        } else {
            (Bundle::new(&id, &["sleep", "1000"]), String::new())
        };
        let pid = start(
            &mut client,
            CreateContainerRequest {
                stdout,
                ..create(&id, &bundle)
            },
        )
        .await;
        bundles.push(bundle);
        expected.push((id, vec![pid]));
    }
    wait_until("the counter to print", DEADLINE, || {
        counter.text_now().lines().count() > 5
    })
    .await;

    daemon.kill9().await;
    let printed_before = counter.text_now().lines().count();
    daemon.restart().await;
    let mut client = daemon.client();
    assert_eq!(
        listed(&mut client).await,
        expected,
        "every container, with the same pids"
    );

    let exec_out = OutputFifo::create(&daemon.scratch(), "exec-out");
    let mut events = daemon.events().await;
    let exec_pid = client
        .add_process(AddProcessRequest {
            id: "r-ten-3".into(),
            args: vec!["sh".into(), "-c".into(), "echo exec after restart".into()],
            stdout: exec_out.path_string(),
            ..Default::default()
        })
        .await
        .expect("AddProcess after a restart")
        .into_inner()
        .pid;
    let status = events.exit_status("r-ten-3", exec_pid).await;
    assert_eq!(
        (status, exec_out.text_now().as_str()),
        (0, "exec after restart\n")
    );
    wait_until("the init's stdout to keep flowing", DEADLINE, || {
        counter.text_now().lines().count() > printed_before + 5
    })
    .await;

    for (id, pids) in &expected {
        client
            .signal(SignalRequest {
                id: id.clone(),
                pid: 0,
                signal: 9,
            })
            .await
            .expect("Signal after a restart");
        assert_eq!(events.exit_status(id, pids[0]).await, 137);
    }
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn exits_while_the_daemon_is_down_are_published_after_the_restart(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let mut client = daemon.client();
    let (a, b) = ("r-down-a", "r-down-b");
    daemon.track(a);
    daemon.track(b);
    let a_init = start(&mut client, create(a, &Bundle::new(a, &["sleep", "1000"]))).await;
    let a_exec = client
        .add_process(AddProcessRequest {
            id: a.into(),
            args: vec!["sleep".into(), "999".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .pid;
    let b_init = start(&mut client, create(b, &Bundle::new(b, &["sleep", "1000"]))).await;
    let b_exec = client
        .add_process(AddProcessRequest {
            id: b.into(),
            args: vec!["sleep".into(), "999".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .pid;
    let before = journal_until(&daemon, 0, |j| {
        j.event.as_ref().is_some_and(|e| e.pid == b_exec)
    })
    .await;
    let last_seq = before.last().map_or(0, |j| j.seq);

    daemon.kill9().await;
    // While no daemon runs: A loses its exec, B its init (and with it, its exec).
    kill(a_exec, rustix::process::Signal::KILL);
    kill(b_init, rustix::process::Signal::KILL);
    wait_until(
        "the killed processes to be reaped by their shims",
        DEADLINE,
        || !process_alive(a_exec) && !process_alive(b_init) && !process_alive(b_exec),
    )
    .await;

    daemon.restart().await;
    let mut right_after = daemon.events().await;
    let first: Vec<_> = [(a, a_exec), (b, b_exec), (b, b_init)]
        .into_iter()
        .map(|(id, pid)| (id.to_owned(), pid))
        .collect();
    let mut seen = Vec::new();
    while seen.len() < first.len() {
        let event = right_after.next().await;
        if event.r#type == "exit" {
            seen.push((event.id, event.pid, event.status));
        }
    }
    for (id, pid) in &first {
        assert!(
            seen.contains(&(id.clone(), *pid, 137)),
            "{id}/{pid} in {seen:?}"
        );
    }
    let b_init_at = seen.iter().position(|e| e.1 == b_init).unwrap();
    let b_exec_at = seen.iter().position(|e| e.1 == b_exec).unwrap();
    assert!(
        b_exec_at < b_init_at,
        "the exec's exit before its init's: {seen:?}"
    );

    // A stream opened 2 s later, within the replay window, gets them too, once each.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut later = daemon.events().await;
    let replayed = later.within(Duration::from_millis(500)).await;
    let mut replayed_exits: Vec<_> = replayed
        .iter()
        .filter(|e| e.r#type == "exit")
        .map(|e| (e.id.clone(), e.pid, e.status))
        .collect();
    replayed_exits.sort();
    let mut expected = seen.clone();
    expected.sort();
    assert_eq!(replayed_exits, expected, "each recovered exit once");
    let nothing_more = right_after.within(Duration::from_millis(300)).await;
    assert!(
        nothing_more.iter().all(|e| e.r#type != "exit"),
        "no duplicates: {nothing_more:?}"
    );

    // The journal has them after what it had before, and State lost them.
    let journaled = journal_until(&daemon, last_seq, |j| {
        j.event.as_ref().is_some_and(|e| e.pid == b_init)
    })
    .await;
    assert_eq!(exits(&journaled).len(), 3);
    let mut client = daemon.client();
    assert_eq!(listed(&mut client).await, [(a.to_owned(), vec![a_init])]);

    client
        .signal(SignalRequest {
            id: a.into(),
            pid: 0,
            signal: 9,
        })
        .await
        .unwrap();
    assert_eq!(right_after.exit_status(a, a_init).await, 137);
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

/// An init that exited while no daemon ran is found at the take-over; the daemon taking over
/// is killed right after the shim's `Delete` let the shim (which kept the status) go. The
/// next daemon still reports the true status, not 255 ("unknown"): the status was asked
/// without deleting and written down first.
#[apply(executors)]
#[tokio::test]
async fn an_exit_found_at_takeover_survives_a_daemon_killed_while_finishing_it(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let id = "r-finish";
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let init = daemon.run(id, &bundle).await;
    daemon.kill9().await;
    kill(init, rustix::process::Signal::KILL);
    wait_until("the init to be reaped by its shim", DEADLINE, || {
        !process_alive(init)
    })
    .await;

    let crash = daemon
        .restart_until_crash(&[("WHARF_TEST_FAULT", "finish:deleted")])
        .await;
    assert!(
        !crash.success(),
        "the daemon died at its fault point: {crash}"
    );
    daemon.restart().await;
    let mut events = daemon.events().await;
    assert_eq!(events.exit_status(id, init).await, 137);
    assert!(listed(&mut daemon.client()).await.is_empty());
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

/// libcontainer rewrites its `state.json` in place: a daemon killed while deleting a
/// container can leave it empty. The next daemon, finding the container's shim dead, still
/// removes everything of it (by its cgroup) and reports the init killed.
#[tokio::test]
async fn a_container_whose_libcontainer_state_was_torn_is_still_removed() {
    require_containers!();
    let mut daemon = DaemonFixture::start(ExecutorKind::Libcontainer).await;
    let id = "r-torn-state";
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let init = daemon.run(id, &bundle).await;
    let shims = daemon.shim_pids();
    daemon.kill9().await;
    for shim in shims {
        kill(shim, rustix::process::Signal::KILL);
    }
    let state = daemon.executor_root().join(id).join("state.json");
    std::fs::write(&state, "").expect("tearing the container's state.json");

    daemon.restart().await;
    let mut events = daemon.events().await;
    assert_eq!(events.exit_status(id, init).await, 137);
    assert!(!process_alive(init), "the init was killed");
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn a_graceful_stop_leaves_containers_and_a_restart_reattaches_them(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let id = "r-graceful";
    daemon.track(id);
    let mut client = daemon.client();
    let pid = start(
        &mut client,
        create(id, &Bundle::new(id, &["sleep", "1000"])),
    )
    .await;
    daemon.stop().await;
    assert!(process_alive(pid));
    daemon.restart().await;
    let mut client = daemon.client();
    assert_eq!(listed(&mut client).await, [(id.to_owned(), vec![pid])]);
    let mut events = daemon.events().await;
    client
        .signal(SignalRequest {
            id: id.into(),
            pid: 0,
            signal: 9,
        })
        .await
        .unwrap();
    assert_eq!(events.exit_status(id, pid).await, 137);
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn a_killed_shim_gives_137_at_once_and_frees_the_id(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let id = "r-shim-kill";
    daemon.track(id);
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let mut client = daemon.client();
    let mut events = daemon.events().await;
    let pid = start(&mut client, create(id, &bundle)).await;
    let exec = client
        .add_process(AddProcessRequest {
            id: id.into(),
            args: vec!["sleep".into(), "999".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .pid;
    let shims = daemon.shim_pids();
    assert_eq!(shims.len(), 1);
    kill(shims[0], rustix::process::Signal::KILL);
    // Noticed at once: no request needed.
    assert_eq!(events.exit_status(id, exec).await, 137);
    assert_eq!(events.exit_status(id, pid).await, 137);
    // Killed; an init of a pid namespace finishes exiting once the other processes of its
    // namespace, orphans now, are reaped by the host.
    wait_until("the orphans to die", DEADLINE, || {
        !process_alive(pid) && !process_alive(exec)
    })
    .await;
    assert!(listed(&mut client).await.is_empty());
    let again = start(&mut client, create(id, &bundle)).await;
    client
        .signal(SignalRequest {
            id: id.into(),
            pid: 0,
            signal: 9,
        })
        .await
        .unwrap();
    assert_eq!(events.exit_status(id, again).await, 137);
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn a_shim_that_died_while_the_daemon_was_down_is_reported_at_restart(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let id = "r-shim-down";
    daemon.track(id);
    let mut client = daemon.client();
    let pid = start(
        &mut client,
        create(id, &Bundle::new(id, &["sleep", "1000"])),
    )
    .await;
    let shims = daemon.shim_pids();
    daemon.kill9().await;
    kill(shims[0], rustix::process::Signal::KILL);
    wait_until("the shim to die", DEADLINE, || !process_alive(shims[0])).await;
    daemon.restart().await;
    let mut events = daemon.events().await;
    assert_eq!(
        events.exit_status(id, pid).await,
        137,
        "the orphaned init was killed"
    );
    assert!(!process_alive(pid));
    let mut client = daemon.client();
    assert!(listed(&mut client).await.is_empty());
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn a_journal_with_a_torn_last_line_still_starts_and_events_survive_three_restarts(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let mut expected_exits = Vec::new();
    for round in 0..3 {
        let id = format!("r-journal-{round}");
        daemon.track(&id);
        let mut client = daemon.client();
        let mut events = daemon.events().await;
        let pid = start(
            &mut client,
            create(
                &id,
                &Bundle::new(&id, &["sh", "-c", &format!("exit {round}")]),
            ),
        )
        .await;
        assert_eq!(events.exit_status(&id, pid).await, round);
        expected_exits.push((id, pid, round));
        if round == 1 {
            daemon.kill9().await;
            // A crash in the middle of an append.
            let journal = daemon.state_dir.join("events.journal");
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&journal)
                .unwrap();
            std::io::Write::write_all(
                &mut file,
                br#"{"seq":999,"unixNanos":1,"event":{"type":"ex"#,
            )
            .unwrap();
        } else {
            daemon.stop().await;
        }
        daemon.restart().await;
    }
    let last_pid = expected_exits.last().map(|e| e.1).unwrap();
    let all = journal_until(&daemon, 0, |j| {
        j.event
            .as_ref()
            .is_some_and(|e| e.r#type == "exit" && e.pid == last_pid)
    })
    .await;
    assert_eq!(
        exits(&all),
        expected_exits,
        "every exit, across three restarts"
    );
    let seqs: Vec<u64> = all.iter().map(|j| j.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers only grow: {seqs:?}"
    );
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn a_daemon_killed_during_create_leaves_a_listed_container_or_nothing(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    for (step, survives) in [
        ("create:state-dir", false),
        ("create:spawned", false),
        ("create:created", false),
        ("create:started", false),
        ("create:recorded", true),
    ] {
        let id = format!("r-fault-{}", step.trim_start_matches("create:"));
        let mut daemon =
            DaemonFixture::start_with_env(executor, &[], &[("WHARF_TEST_FAULT", step)]).await;
        daemon.track(&id);
        let bundle = Bundle::new(&id, &["sleep", "1000"]);
        let mut client = daemon.client();
        let err = client.create_container(create(&id, &bundle)).await;
        assert!(err.is_err(), "{step}: the daemon died answering");
        let status = daemon.wait_crash().await;
        assert!(!status.success(), "{step}: aborted");
        daemon.restart().await;
        let mut client = daemon.client();
        let listed = listed(&mut client).await;
        if survives {
            assert_eq!(listed.len(), 1, "{step}: the container made it: {listed:?}");
            let mut events = daemon.events().await;
            client
                .signal(SignalRequest {
                    id: id.clone(),
                    pid: 0,
                    signal: 9,
                })
                .await
                .unwrap();
            assert_eq!(events.exit_status(&id, listed[0].1[0]).await, 137);
        } else {
            assert!(listed.is_empty(), "{step}: nothing listed: {listed:?}");
        }
        daemon.assert_nothing_left().await;
        // The id works again.
        let mut events = daemon.events().await;
        let pid = start(&mut client, create(&id, &bundle)).await;
        client
            .signal(SignalRequest {
                id: id.clone(),
                pid: 0,
                signal: 9,
            })
            .await
            .unwrap();
        assert_eq!(events.exit_status(&id, pid).await, 137, "{step}");
        daemon.assert_nothing_left().await;
        daemon.stop().await;
    }
}

#[apply(executors)]
#[tokio::test]
async fn stop_containers_on_exit_stops_them_and_journals_their_exits(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let mut daemon = DaemonFixture::start_with(
        executor,
        &["--stop-containers-on-exit", "--stop-timeout", "1"],
    )
    .await;
    let (polite, stubborn) = ("r-stop-polite", "r-stop-stubborn");
    daemon.track(polite);
    daemon.track(stubborn);
    let mut client = daemon.client();
    // `top` exits on SIGTERM; `sleep` as pid 1 ignores it and needs the SIGKILL.
    let polite_pid = start(
        &mut client,
        create(polite, &Bundle::new(polite, &["top", "-b"])),
    )
    .await;
    let stubborn_pid = start(
        &mut client,
        create(stubborn, &Bundle::new(stubborn, &["sleep", "1000"])),
    )
    .await;
    daemon.stop().await;
    assert!(
        !process_alive(polite_pid) && !process_alive(stubborn_pid),
        "every container stopped"
    );
    daemon.restart().await;
    let journaled = journal_until(&daemon, 0, |j| {
        j.event
            .as_ref()
            .is_some_and(|e| e.r#type == "exit" && e.pid == stubborn_pid)
    })
    .await;
    let exits = exits(&journaled);
    assert!(
        exits.contains(&(polite.to_owned(), polite_pid, 143)),
        "{exits:?}"
    );
    assert!(
        exits.contains(&(stubborn.to_owned(), stubborn_pid, 137)),
        "{exits:?}"
    );
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}
