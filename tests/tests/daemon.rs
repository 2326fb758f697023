//! `wharfd` on real containers, through real shims, driven with a tonic client.
//!
//! Every test needs root and runc (skipped with a reason elsewhere, failed under CI) and
//! ends by checking that nothing is left: shims, container processes, cgroups, mounts,
//! state directories.

use std::time::Duration;

use rstest::rstest;
use rstest_reuse::apply;
use tonic::Code;
use tonic::transport::Channel;
use wharf_api::{
    AddProcessRequest, ApiClient, Checkpoint, CreateCheckpointRequest, CreateContainerRequest,
    DeleteCheckpointRequest, ListCheckpointRequest, SignalRequest, StateRequest, StatsRequest,
    UpdateContainerRequest, User,
};
use wharf_tests::bundle::{Bundle, rootfs, test_cgroup};
use wharf_tests::daemon::{DaemonFixture, exits_by_pid};
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

async fn exec(client: &mut ApiClient<Channel>, id: &str, args: &[&str], stdout: &str) -> u32 {
    client
        .add_process(AddProcessRequest {
            id: id.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            stdout: stdout.into(),
            ..Default::default()
        })
        .await
        .expect("AddProcess")
        .into_inner()
        .pid
}

async fn signal(client: &mut ApiClient<Channel>, id: &str, pid: u32, signal: u32) {
    client
        .signal(SignalRequest {
            id: id.into(),
            pid,
            signal,
        })
        .await
        .expect("Signal");
}

async fn container_state(
    client: &mut ApiClient<Channel>,
    id: &str,
) -> Option<wharf_api::Container> {
    let state = client
        .state(StateRequest {})
        .await
        .expect("State")
        .into_inner();
    state.containers.into_iter().find(|c| c.id == id)
}

#[apply(executors)]
#[tokio::test]
async fn create_runs_the_container_and_its_exit_frees_the_id(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let id = "d-smoke";
    daemon.track(id);
    let bundle = Bundle::new(id, &["sh", "-c", "echo hello; exit 3"]);
    let stdout = OutputFifo::create(&daemon.scratch(), "stdout");
    let mut events = daemon.events().await;
    let mut client = daemon.client();
    let request = CreateContainerRequest {
        stdout: stdout.path_string(),
        ..create(id, &bundle)
    };
    let pid = start(&mut client, request).await;
    let seen = events.of_container_until_exit(id, pid).await;
    assert_eq!(
        seen,
        [("start-container".into(), pid, 0), ("exit".into(), pid, 3)]
    );
    assert_eq!(stdout.text_now(), "hello\n");
    assert!(
        container_state(&mut client, id).await.is_none(),
        "gone from State after its exit"
    );
    // The id is free again at once.
    let again = start(&mut client, create(id, &bundle)).await;
    assert_eq!(events.exit_status(id, again).await, 3);
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

/// A seccomp profile in the bundle that forbids `mkdir` is enforced on the init and on an
/// exec; everything else still works.
#[apply(executors)]
#[tokio::test]
async fn a_seccomp_profile_forbidding_mkdir_is_enforced(#[case] executor: ExecutorKind) {
    use wharf_executor::oci_spec::runtime::{
        Arch, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder,
    };
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let mut client = daemon.client();
    let mut events = daemon.events().await;
    let id = "d-seccomp";
    daemon.track(id);
    let script = "mkdir /tmp/denied; echo mkdir=$?; touch /tmp/allowed; echo touch=$?; \
                  exec sleep 1000";
    let bundle = Bundle::with(id, &["sh", "-c", script], |spec| {
        let forbid_mkdir = LinuxSyscallBuilder::default()
            .names(vec!["mkdir".to_owned(), "mkdirat".to_owned()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(1u32)
            .build()
            .unwrap();
        let seccomp = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .architectures(vec![Arch::ScmpArchX86_64])
            .syscalls(vec![forbid_mkdir])
            .build()
            .unwrap();
        let mut linux = spec.linux().clone().unwrap();
        linux.set_seccomp(Some(seccomp));
        spec.set_linux(Some(linux));
    });
    let init_out = OutputFifo::create(&daemon.scratch(), "init");
    let init = start(
        &mut client,
        CreateContainerRequest {
            stdout: init_out.path_string(),
            ..create(id, &bundle)
        },
    )
    .await;
    wait_until("the init to try mkdir and touch", DEADLINE, || {
        init_out.text_now().lines().count() == 2
    })
    .await;
    assert_eq!(
        init_out.text_now(),
        "mkdir=1\ntouch=0\n",
        "EPERM for mkdir only"
    );
    let exec_out = OutputFifo::create(&daemon.scratch(), "exec");
    let exec_pid = exec(
        &mut client,
        id,
        &["sh", "-c", "mkdir /tmp/denied-too 2>&1; echo mkdir=$?"],
        &exec_out.path_string(),
    )
    .await;
    assert_eq!(events.exit_status(id, exec_pid).await, 0);
    assert_eq!(
        exec_out.text_now(),
        "mkdir: can't create directory '/tmp/denied-too': Operation not permitted\nmkdir=1\n"
    );
    signal(&mut client, id, init, 9).await;
    assert_eq!(events.exit_status(id, init).await, 137);
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn outputs_of_ls_and_a_mebibyte_are_complete_at_exit(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let mut client = daemon.client();
    let mut events = daemon.events().await;
    let (ls, big) = ("d-ls", "d-mib");
    daemon.track(ls);
    daemon.track(big);
    let ls_out = OutputFifo::create(&daemon.scratch(), "ls-stdout");
    let big_out = OutputFifo::create(&daemon.scratch(), "big-stdout");
    let ls_bundle = Bundle::new(ls, &["ls", "/"]);
    let big_bundle = Bundle::new(big, &["sh", "-c", "yes 0123456789abcde | head -c 1048576"]);
    let ls_pid = start(
        &mut client,
        CreateContainerRequest {
            stdout: ls_out.path_string(),
            ..create(ls, &ls_bundle)
        },
    )
    .await;
    assert_eq!(events.exit_status(ls, ls_pid).await, 0);
    let mut expected: Vec<String> = std::fs::read_dir(rootfs())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    expected.sort();
    assert_eq!(ls_out.text_now().lines().collect::<Vec<_>>(), expected);

    let big_pid = start(
        &mut client,
        CreateContainerRequest {
            stdout: big_out.path_string(),
            ..create(big, &big_bundle)
        },
    )
    .await;
    assert_eq!(events.exit_status(big, big_pid).await, 0);
    let out = big_out.contents_now();
    assert_eq!(out.len(), 1 << 20, "all of stdout by the exit event");
    assert!(out.chunks(16).all(|line| line == b"0123456789abcde\n"));
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn exit_codes_sigkill_and_sigterm(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let mut client = daemon.client();
    let mut events = daemon.events().await;
    for id in ["d-exit-42", "d-kill", "d-term"] {
        daemon.track(id);
    }
    let pid = start(
        &mut client,
        create(
            "d-exit-42",
            &Bundle::new("d-exit-42", &["sh", "-c", "exit 42"]),
        ),
    )
    .await;
    assert_eq!(events.exit_status("d-exit-42", pid).await, 42);

    let pid = start(
        &mut client,
        create("d-kill", &Bundle::new("d-kill", &["sleep", "1000"])),
    )
    .await;
    signal(&mut client, "d-kill", pid, 9).await;
    assert_eq!(events.exit_status("d-kill", pid).await, 137);

    let top = OutputFifo::create(&daemon.scratch(), "top");
    let bundle = Bundle::new("d-term", &["top", "-b"]);
    let pid = start(
        &mut client,
        CreateContainerRequest {
            stdout: top.path_string(),
            ..create("d-term", &bundle)
        },
    )
    .await;
    wait_until("top to print its first screen", DEADLINE, || {
        top.text_now().contains("PID")
    })
    .await;
    // pid 0 means the init.
    signal(&mut client, "d-term", 0, 15).await;
    assert_eq!(events.exit_status("d-term", pid).await, 143);
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn a_trap_on_sigusr1_in_pid_1_runs(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let id = "d-trap";
    daemon.track(id);
    let mut client = daemon.client();
    let mut events = daemon.events().await;
    let stdout = OutputFifo::create(&daemon.scratch(), "stdout");
    let bundle = Bundle::new(
        id,
        &[
            "sh",
            "-c",
            "trap 'echo -n booh!' USR1; echo ready; sleep 60 & wait",
        ],
    );
    let pid = start(
        &mut client,
        CreateContainerRequest {
            stdout: stdout.path_string(),
            ..create(id, &bundle)
        },
    )
    .await;
    wait_until("the trap to be set", DEADLINE, || {
        stdout.text_now() == "ready\n"
    })
    .await;
    signal(&mut client, id, pid, 10).await;
    // The trapped signal interrupts `wait`, which then returns 128 + SIGUSR1 (POSIX); as
    // the script's last command, that is sh's exit status.
    assert_eq!(events.exit_status(id, pid).await, 138);
    assert_eq!(stdout.text_now(), "ready\nbooh!");
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn killing_an_exec_leaves_its_container_running(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let id = "d-exec-kill";
    daemon.track(id);
    let mut client = daemon.client();
    let mut events = daemon.events().await;
    let init = start(
        &mut client,
        create(id, &Bundle::new(id, &["sleep", "1000"])),
    )
    .await;
    let sleeper = exec(&mut client, id, &["sleep", "1000"], "").await;
    let seen = events.until(|e| e.r#type == "start-process").await;
    assert_eq!(
        seen.last().map(|e| (e.id.as_str(), e.pid)),
        Some((id, sleeper))
    );
    signal(&mut client, id, sleeper, 9).await;
    assert_eq!(events.exit_status(id, sleeper).await, 137);
    let state = container_state(&mut client, id)
        .await
        .expect("still listed");
    assert_eq!(state.status, "running");
    assert_eq!(
        state.processes.iter().map(|p| p.pid).collect::<Vec<_>>(),
        [init],
        "the exec left State"
    );
    assert!(process_alive(init));
    signal(&mut client, id, init, 9).await;
    assert_eq!(events.exit_status(id, init).await, 137);
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn killing_the_init_kills_its_execs_whose_exits_come_first(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let id = "d-init-kill";
    daemon.track(id);
    let mut client = daemon.client();
    let mut events = daemon.events().await;
    let init = start(
        &mut client,
        create(id, &Bundle::new(id, &["sleep", "1000"])),
    )
    .await;
    let first = exec(&mut client, id, &["sleep", "1000"], "").await;
    let second = exec(&mut client, id, &["sleep", "1000"], "").await;
    signal(&mut client, id, init, 9).await;
    let seen = events.of_container_until_exit(id, init).await;
    let exits: Vec<_> = seen
        .iter()
        .filter(|(kind, _, _)| kind == "exit")
        .map(|(_, pid, status)| (*pid, *status))
        .collect();
    assert_eq!(exits.len(), 3, "{seen:?}");
    assert_eq!(exits[2], (init, 137), "the init's exit is last: {seen:?}");
    let mut exec_exits = exits[..2].to_vec();
    exec_exits.sort();
    let mut expected = vec![(first, 137), (second, 137)];
    expected.sort();
    assert_eq!(exec_exits, expected);
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn a_detached_grandchild_of_an_exec_outlives_the_exec(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let id = "d-grandchild";
    daemon.track(id);
    let mut client = daemon.client();
    let mut events = daemon.events().await;
    let init = start(
        &mut client,
        create(id, &Bundle::new(id, &["sleep", "1000"])),
    )
    .await;
    let out = OutputFifo::create(&daemon.scratch(), "exec-out");
    let parent = exec(
        &mut client,
        id,
        &["sh", "-c", "sleep 999 >/dev/null 2>&1 & echo started"],
        &out.path_string(),
    )
    .await;
    assert_eq!(events.exit_status(id, parent).await, 0);
    assert_eq!(out.text_now(), "started\n");
    let procs = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/pids/{}/cgroup.procs",
        test_cgroup(id)
    ))
    .unwrap();
    let survivors: Vec<u32> = procs
        .lines()
        .filter_map(|l| l.parse().ok())
        .filter(|&pid| pid != init)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"sleep\x00999"))
        })
        .collect();
    assert_eq!(
        survivors.len(),
        1,
        "the grandchild still runs in the container: {procs}"
    );
    assert!(container_state(&mut client, id).await.is_some());
    signal(&mut client, id, init, 9).await;
    assert_eq!(events.exit_status(id, init).await, 137);
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn state_reports_processes_and_the_machine_in_bytes(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = DaemonFixture::start_with(executor, &["--id", "test-machine"]).await;
    let id = "d-state";
    daemon.track(id);
    let mut client = daemon.client();
    let mut events = daemon.events().await;
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let init = start(&mut client, create(id, &bundle)).await;
    let exec_pid = client
        .add_process(AddProcessRequest {
            id: id.into(),
            args: vec!["sleep".into(), "999".into()],
            env: vec!["A=1".into(), "PATH=/bin".into()],
            cwd: "/tmp".into(),
            user: Some(User {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .pid;
    let defaults = exec(&mut client, id, &["sleep", "998"], "").await;

    let state = client.state(StateRequest {}).await.unwrap().into_inner();
    let machine = state.machine.expect("machine");
    assert_eq!(machine.id, "test-machine");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(machine.memory, kib * 1024, "memory in bytes");
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    assert_eq!(machine.cpus as usize, cpus);

    let container = state
        .containers
        .iter()
        .find(|c| c.id == id)
        .expect("listed");
    assert_eq!(container.bundle_path, bundle.path_string());
    assert_eq!(container.status, "running");
    let pids: Vec<u32> = container.processes.iter().map(|p| p.pid).collect();
    assert_eq!(
        pids,
        [init, exec_pid, defaults],
        "init first, then execs in start order"
    );
    let init_process = &container.processes[0];
    assert_eq!(init_process.args, ["sleep", "1000"]);
    assert_eq!(init_process.cwd, "/");
    assert!(init_process.env.contains(&"PATH=/bin".to_string()));
    assert!(!init_process.terminal);
    assert_eq!(
        init_process.user.as_ref().map(|u| (u.uid, u.gid)),
        Some((0, 0))
    );
    let exec_process = &container.processes[1];
    assert_eq!(exec_process.args, ["sleep", "999"]);
    assert_eq!(exec_process.env, ["A=1", "PATH=/bin"]);
    assert_eq!(exec_process.cwd, "/tmp");
    let user = exec_process.user.as_ref().unwrap();
    assert_eq!(
        (user.uid, user.gid, user.additional_gids.as_slice()),
        (1000, 1000, &[10][..])
    );
    let default_process = &container.processes[2];
    assert_eq!(default_process.cwd, "/", "an empty cwd means /");
    assert_eq!(
        default_process.env, init_process.env,
        "an empty env means the init's"
    );
    assert_eq!(
        default_process.user.as_ref().map(|u| (u.uid, u.gid)),
        Some((0, 0)),
        "no user means root"
    );

    signal(&mut client, id, init, 9).await;
    assert_eq!(events.exit_status(id, init).await, 137);
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn pause_stops_the_counter_and_resume_restarts_it(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let id = "d-pause";
    daemon.track(id);
    let mut client = daemon.client();
    let mut events = daemon.events().await;
    let counter = OutputFifo::create(&daemon.scratch(), "counter");
    let bundle = Bundle::new(
        id,
        &["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i; done"],
    );
    let init = start(
        &mut client,
        CreateContainerRequest {
            stdout: counter.path_string(),
            ..create(id, &bundle)
        },
    )
    .await;
    wait_until("the counter to run", DEADLINE, || {
        counter.contents_now().len() > 1000
    })
    .await;

    let update = |status: &str| UpdateContainerRequest {
        id: id.into(),
        status: status.into(),
        signal: 0,
    };
    client
        .update_container(update("paused"))
        .await
        .expect("pause");
    assert_eq!(
        container_state(&mut client, id).await.unwrap().status,
        "paused"
    );
    let paused_at = counter.contents_now().len();
    // A negative check needs a window: the frozen counter must not print for 300 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        counter.contents_now().len(),
        paused_at,
        "a paused container does not run"
    );
    let again = client.update_container(update("paused")).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    let into_paused = client
        .add_process(AddProcessRequest {
            id: id.into(),
            args: vec!["true".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        into_paused.code(),
        Code::FailedPrecondition,
        "{into_paused:?}"
    );

    client
        .update_container(update("running"))
        .await
        .expect("resume");
    assert_eq!(
        container_state(&mut client, id).await.unwrap().status,
        "running"
    );
    wait_until("the counter to advance after resume", DEADLINE, || {
        counter.contents_now().len() > paused_at + 1000
    })
    .await;

    // Pause, then signal in the same update: both happen, in that order (SIGKILL thaws).
    client
        .update_container(UpdateContainerRequest {
            id: id.into(),
            status: "paused".into(),
            signal: 9,
        })
        .await
        .expect("pause and kill");
    let seen = events.of_container_until_exit(id, init).await;
    let kinds: Vec<&str> = seen.iter().map(|(kind, _, _)| kind.as_str()).collect();
    // SIGKILL thawed the paused container so it could die; the exit says it all.
    assert_eq!(
        kinds,
        ["start-container", "pause", "resume", "pause", "exit"]
    );
    assert_eq!(seen.last().map(|e| e.2), Some(137));
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn events_have_every_type_in_order(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let id = "d-events";
    daemon.track(id);
    let mut client = daemon.client();
    let mut events = daemon.events().await;
    let out = OutputFifo::create(&daemon.scratch(), "exec-out");
    let init = start(
        &mut client,
        create(id, &Bundle::new(id, &["sleep", "1000"])),
    )
    .await;
    let writer = exec(
        &mut client,
        id,
        &["sh", "-c", "yes | head -c 300000; exit 4"],
        &out.path_string(),
    )
    .await;
    let until_exec_exit = events
        .until(|e| e.r#type == "exit" && e.pid == writer)
        .await;
    assert_eq!(
        out.contents_now().len(),
        300_000,
        "the exec's output is complete at its exit"
    );
    let update = |status: &str| UpdateContainerRequest {
        id: id.into(),
        status: status.into(),
        signal: 0,
    };
    client.update_container(update("paused")).await.unwrap();
    client.update_container(update("running")).await.unwrap();
    signal(&mut client, id, init, 9).await;
    let rest = events.of_container_until_exit(id, init).await;
    let all: Vec<(String, u32, u32)> = until_exec_exit
        .into_iter()
        .map(|e| (e.r#type, e.pid, e.status))
        .chain(rest)
        .collect();
    assert_eq!(
        all,
        [
            ("start-container".into(), init, 0),
            ("start-process".into(), writer, 0),
            ("exit".into(), writer, 4),
            ("pause".into(), 0, 0),
            ("resume".into(), 0, 0),
            ("exit".into(), init, 137),
        ]
    );
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn two_subscribers_see_everything_and_one_leaving_hurts_nothing(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let mut client = daemon.client();
    let mut staying = daemon.events().await;
    let mut leaving = daemon.events().await;
    let (a, b) = ("d-sub-a", "d-sub-b");
    daemon.track(a);
    daemon.track(b);
    let a_pid = start(
        &mut client,
        create(a, &Bundle::new(a, &["sh", "-c", "exit 1"])),
    )
    .await;
    assert_eq!(leaving.exit_status(a, a_pid).await, 1);
    assert_eq!(staying.exit_status(a, a_pid).await, 1);
    drop(leaving);
    let b_pid = start(
        &mut client,
        create(b, &Bundle::new(b, &["sh", "-c", "exit 2"])),
    )
    .await;
    let seen = staying.of_container_until_exit(b, b_pid).await;
    assert_eq!(
        seen,
        [
            ("start-container".into(), b_pid, 0),
            ("exit".into(), b_pid, 2)
        ]
    );
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn fifty_containers_started_in_parallel_all_report_their_exits(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let mut events = daemon.events().await;
    let ids: Vec<String> = (0..50).map(|n| format!("d-par-{n}")).collect();
    for id in &ids {
        daemon.track(id);
    }
    let bundles: Vec<Bundle> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| Bundle::new(id, &["sh", "-c", &format!("exit {n}")]))
        .collect();
    let starts = ids.iter().zip(&bundles).map(|(id, bundle)| {
        let mut client = daemon.client();
        let request = create(id, bundle);
        tokio::spawn(async move { start(&mut client, request).await })
    });
    let mut pids = Vec::new();
    for started in starts.collect::<Vec<_>>() {
        pids.push(started.await.expect("start task"));
    }
    let mut exits = Vec::new();
    while exits.len() < ids.len() {
        let event = events.next().await;
        if event.r#type == "exit" {
            exits.push(event);
        }
    }
    let by_pid = exits_by_pid(&exits);
    for (n, pid) in pids.iter().enumerate() {
        assert_eq!(
            by_pid.get(pid),
            Some(&(n as u32)),
            "exit of container {n} (pid {pid})"
        );
    }
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn bad_requests_get_clear_codes_and_leave_nothing(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let mut client = daemon.client();
    let mut events = daemon.events().await;
    let id = "d-errors";
    daemon.track(id);
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let scratch = daemon.scratch();

    // CreateContainer
    let cases = [
        (
            "empty id",
            CreateContainerRequest {
                id: String::new(),
                ..create(id, &bundle)
            },
            Code::InvalidArgument,
        ),
        (
            "bad id",
            CreateContainerRequest {
                id: "../x".into(),
                ..create(id, &bundle)
            },
            Code::InvalidArgument,
        ),
        (
            "empty bundle",
            CreateContainerRequest {
                bundle_path: String::new(),
                ..create(id, &bundle)
            },
            Code::InvalidArgument,
        ),
        (
            "relative bundle",
            CreateContainerRequest {
                bundle_path: "b".into(),
                ..create(id, &bundle)
            },
            Code::InvalidArgument,
        ),
        (
            "no config.json",
            CreateContainerRequest {
                bundle_path: scratch.display().to_string(),
                ..create(id, &bundle)
            },
            Code::InvalidArgument,
        ),
        (
            "checkpoint",
            CreateContainerRequest {
                checkpoint: "cp".into(),
                ..create(id, &bundle)
            },
            Code::NotFound,
        ),
        (
            "missing stdout",
            CreateContainerRequest {
                stdout: "/nonexistent/out".into(),
                ..create(id, &bundle)
            },
            Code::NotFound,
        ),
    ];
    for (what, request, code) in cases {
        let err = client.create_container(request).await.unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err:?}");
    }
    std::fs::write(scratch.join("config.json"), "{ not json").unwrap();
    let invalid = client
        .create_container(CreateContainerRequest {
            bundle_path: scratch.display().to_string(),
            ..create(id, &bundle)
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid:?}");
    assert!(invalid.message().contains("config.json"), "{invalid:?}");
    let no_such_file = Bundle::new(id, &["NoSuchFile"]);
    let missing = client
        .create_container(create(id, &no_such_file))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument, "{missing:?}");
    assert!(
        missing.message().contains("NoSuchFile")
            && missing.message().contains("not found in $PATH"),
        "{missing:?}"
    );
    assert!(
        missing.message().contains(id),
        "names the container: {missing:?}"
    );
    daemon.assert_nothing_left().await;

    // A live container, then requests about it.
    let init = start(&mut client, create(id, &bundle)).await;
    let duplicate = client
        .create_container(create(id, &bundle))
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists, "{duplicate:?}");
    let bad_status = client
        .update_container(UpdateContainerRequest {
            id: id.into(),
            status: "sleeping".into(),
            signal: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(bad_status.code(), Code::InvalidArgument, "{bad_status:?}");
    for bad_signal in [0, 65, 300] {
        let err = client
            .signal(SignalRequest {
                id: id.into(),
                pid: init,
                signal: bad_signal,
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "signal {bad_signal}: {err:?}"
        );
    }
    let update_bad_signal = client
        .update_container(UpdateContainerRequest {
            id: id.into(),
            status: String::new(),
            signal: 99,
        })
        .await
        .unwrap_err();
    assert_eq!(update_bad_signal.code(), Code::InvalidArgument);
    // A pid of no process of this container: NotFound naming it, and nothing signalled.
    let me = std::process::id();
    let stranger = client
        .signal(SignalRequest {
            id: id.into(),
            pid: me,
            signal: 9,
        })
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), Code::NotFound, "{stranger:?}");
    assert!(stranger.message().contains(&me.to_string()), "{stranger:?}");
    let no_args = client
        .add_process(AddProcessRequest {
            id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(no_args.code(), Code::InvalidArgument, "{no_args:?}");
    let relative_cwd = client
        .add_process(AddProcessRequest {
            id: id.into(),
            args: vec!["true".into()],
            cwd: "tmp".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        relative_cwd.code(),
        Code::InvalidArgument,
        "{relative_cwd:?}"
    );
    let missing_checkpoint = client
        .create_checkpoint(CreateCheckpointRequest {
            id: id.into(),
            checkpoint: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        missing_checkpoint.code(),
        Code::InvalidArgument,
        "{missing_checkpoint:?}"
    );
    let empty_name = client
        .create_checkpoint(CreateCheckpointRequest {
            id: id.into(),
            checkpoint: Some(Checkpoint::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(empty_name.code(), Code::InvalidArgument, "{empty_name:?}");
    let named = Some(Checkpoint {
        name: "cp1".into(),
        ..Default::default()
    });
    // Leave-running: the container goes on (tests/checkpoint.rs covers the rest).
    client
        .create_checkpoint(CreateCheckpointRequest {
            id: id.into(),
            checkpoint: named.clone(),
        })
        .await
        .expect("a leave-running checkpoint");
    let delete_empty = client
        .delete_checkpoint(DeleteCheckpointRequest {
            id: id.into(),
            name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(delete_empty.code(), Code::InvalidArgument);
    let list = client
        .list_checkpoint(ListCheckpointRequest { id: id.into() })
        .await
        .expect("ListCheckpoint")
        .into_inner()
        .checkpoints;
    assert_eq!(list.len(), 1, "{list:?}");

    signal(&mut client, id, init, 9).await;
    assert_eq!(events.exit_status(id, init).await, 137);

    // Unknown id, or the id of a container that has exited: NotFound everywhere.
    for unknown in ["d-never", id] {
        let codes = [
            client
                .update_container(UpdateContainerRequest {
                    id: unknown.into(),
                    status: "paused".into(),
                    signal: 0,
                })
                .await
                .unwrap_err(),
            client
                .signal(SignalRequest {
                    id: unknown.into(),
                    pid: 0,
                    signal: 9,
                })
                .await
                .unwrap_err(),
            client
                .add_process(AddProcessRequest {
                    id: unknown.into(),
                    args: vec!["true".into()],
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            client
                .create_checkpoint(CreateCheckpointRequest {
                    id: unknown.into(),
                    checkpoint: named.clone(),
                })
                .await
                .unwrap_err(),
            client
                .delete_checkpoint(DeleteCheckpointRequest {
                    id: unknown.into(),
                    name: "cp1".into(),
                })
                .await
                .unwrap_err(),
            client
                .list_checkpoint(ListCheckpointRequest { id: unknown.into() })
                .await
                .unwrap_err(),
            client
                .get_stats(StatsRequest { id: unknown.into() })
                .await
                .unwrap_err(),
        ];
        for err in codes {
            assert_eq!(err.code(), Code::NotFound, "{unknown}: {err:?}");
            assert!(err.message().contains(unknown), "names the id: {err:?}");
        }
    }
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn a_console_carries_a_terminal_container_and_exec_both_ways(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let id = "d-console";
    daemon.track(id);
    let mut client = daemon.client();
    let mut events = daemon.events().await;
    let bundle = Bundle::with(id, &["sh"], |spec| {
        let mut process = spec.process().clone().unwrap();
        process.set_terminal(Some(true));
        spec.set_process(Some(process));
    });
    let mut console = wharf_tests::pty::TestPty::open();
    let init = start(
        &mut client,
        CreateContainerRequest {
            console: console.slave_string(),
            ..create(id, &bundle)
        },
    )
    .await;
    // Markers computed by the shell, so the echo of the typed line cannot match them.
    console.type_in(b"echo typed-$((6*7)); tty; echo done-$((1+1))\n");
    let shown = console.read_until("done-2").await;
    assert!(shown.contains("typed-42"), "{shown:?}");
    assert!(
        shown.contains("/dev/pts/"),
        "the shell runs on a terminal: {shown:?}"
    );

    let mut exec_console = wharf_tests::pty::TestPty::open();
    let exec_pid = client
        .add_process(AddProcessRequest {
            id: id.into(),
            terminal: true,
            console: exec_console.slave_string(),
            args: vec![
                "sh".into(),
                "-c".into(),
                "read line; echo exec-got-$line; exit 6".into(),
            ],
            ..Default::default()
        })
        .await
        .expect("AddProcess with a console")
        .into_inner()
        .pid;
    exec_console.type_in(b"abc\n");
    exec_console.read_until("exec-got-abc").await;
    assert_eq!(events.exit_status(id, exec_pid).await, 6);

    console.type_in(b"exit 9\n");
    assert_eq!(events.exit_status(id, init).await, 9);
    let no_tty = client
        .create_container(CreateContainerRequest {
            console: console.slave_string(),
            ..create("d-console-2", &Bundle::new("d-console-2", &["true"]))
        })
        .await
        .unwrap_err();
    assert_eq!(
        no_tty.code(),
        Code::InvalidArgument,
        "a console needs a terminal bundle: {no_tty:?}"
    );
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn sigterm_stops_wharfd_and_leaves_containers_running(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let id = "d-survivor";
    daemon.track(id);
    let mut client = daemon.client();
    let init = start(
        &mut client,
        create(id, &Bundle::new(id, &["sleep", "1000"])),
    )
    .await;
    let shims = daemon.shim_pids();
    assert_eq!(shims.len(), 1, "one shim per container");
    let state_dir = daemon.state_dir.join("containers").join(id);

    daemon.stop().await; // asserts exit status 0
    assert!(process_alive(init), "the container runs on without wharfd");
    assert!(process_alive(shims[0]), "its shim too");
    assert!(
        state_dir.join("shim.sock").exists(),
        "and its shim still serves"
    );

    // Clean up as an operator would: a shim told to stop deletes its container.
    if let Some(pid) = rustix::process::Pid::from_raw(shims[0] as i32) {
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    }
    wait_until("the container to be deleted by its shim", DEADLINE, || {
        !process_alive(init)
    })
    .await;
    wait_until("the shim to exit", DEADLINE, || !process_alive(shims[0])).await;
    // With no daemon to remove it, the shim's directory (its log) remains.
    std::fs::remove_dir_all(&state_dir).unwrap();
    daemon.assert_nothing_left().await;
}

#[apply(executors)]
#[tokio::test]
async fn health_print_config_and_a_second_daemon_on_the_same_socket(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let mut daemon = DaemonFixture::start_with(executor, &["--id", "healthy"]).await;
    let channel = wharf_api::channel(&daemon.socket)
        .await
        .expect("a channel to wharfd");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "types.API"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("Health/Check")
            .into_inner()
            .status();
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service:?}"
        );
    }

    let printed = std::process::Command::new(wharf_tests::system::wharf_binary("wharfd"))
        .args(["--print-config", "--id", "printed", "--runtime", "crun"])
        .output()
        .unwrap();
    assert!(printed.status.success());
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(
        text.contains("id = \"printed\"") && text.contains("runtime = \"crun\""),
        "{text}"
    );

    let second = std::process::Command::new(wharf_tests::system::wharf_binary("wharfd"))
        .arg("--listen")
        .arg(&daemon.socket)
        .arg("--state-dir")
        .arg(&daemon.state_dir)
        .output()
        .unwrap();
    assert!(
        !second.status.success(),
        "a second daemon on a live socket is refused"
    );
    assert!(String::from_utf8_lossy(&second.stderr).contains("already serving"));
    daemon.stop().await;
}
