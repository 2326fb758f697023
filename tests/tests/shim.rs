//! `wharf-shim` driven over its socket with a tonic client, on real runc containers.
//!
//! Every test needs root and runc (skipped with a reason elsewhere, failed under CI) and
//! ends by checking the shim left nothing behind.

use rstest::rstest;
use rstest_reuse::apply;
use tonic::Code;
use tonic::transport::Channel;
use wharf_shim_proto::{
    CreateRequest, DeleteRequest, EventType, ExecRequest, PauseRequest, PtyRequest, ResumeRequest,
    ShimClient, StartRequest, State, StateRequest, User,
};
use wharf_tests::bundle::{Bundle, rootfs, test_cgroup};
use wharf_tests::fifo::{InputFifo, OutputFifo};
use wharf_tests::require_containers;
use wharf_tests::shim::{DEADLINE, ShimFixture};
use wharf_tests::system::{freezer_state, process_alive, wait_until, wait_until_async};
use wharf_tests::{ExecutorKind, executors};

fn create_request(id: &str, bundle: &Bundle) -> CreateRequest {
    CreateRequest {
        id: id.into(),
        bundle: bundle.path_string(),
        ..Default::default()
    }
}

/// Creates and starts the container; returns the init's pid.
async fn create_and_start(shim: &mut ShimFixture, request: CreateRequest) -> u32 {
    let mut client = shim.client();
    let pid = client
        .create(request)
        .await
        .expect("Create")
        .into_inner()
        .pid;
    shim.track(pid);
    client.start(StartRequest {}).await.expect("Start");
    pid
}

async fn state_of(client: &mut ShimClient<Channel>, pid: u32) -> State {
    let state = client
        .state(StateRequest {})
        .await
        .expect("State")
        .into_inner();
    state
        .processes
        .iter()
        .find(|p| p.pid == pid)
        .unwrap_or_else(|| panic!("process {pid} not in State: {state:?}"))
        .state()
}

async fn delete(client: &mut ShimClient<Channel>, pid: u32) -> u32 {
    client
        .delete(DeleteRequest { pid })
        .await
        .expect("Delete")
        .into_inner()
        .exit_status
}

#[apply(executors)]
#[tokio::test]
async fn create_shows_created_then_start_shows_running(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "lifecycle";
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let mut shim = ShimFixture::start(executor, id).await;
    let mut client = shim.client();
    let mut events = shim.events().await;

    let pid = client
        .create(create_request(id, &bundle))
        .await
        .unwrap()
        .into_inner()
        .pid;
    shim.track(pid);
    let created = events.next().await;
    assert_eq!(
        (created.r#type(), created.pid, created.id.as_str()),
        (EventType::Create, pid, id)
    );
    let state = client.state(StateRequest {}).await.unwrap().into_inner();
    assert_eq!(state.id, id);
    assert_eq!(state.init_pid, pid);
    assert_eq!(state.bundle, bundle.path_string());
    assert_eq!(state.processes.len(), 1);
    assert_eq!(state.processes[0].state(), State::Created);

    client.start(StartRequest {}).await.unwrap();
    let started = events.next().await;
    assert_eq!((started.r#type(), started.pid), (EventType::Start, pid));
    assert_eq!(state_of(&mut client, pid).await, State::Running);

    assert_eq!(
        delete(&mut client, pid).await,
        137,
        "Delete kills a running init"
    );
    assert_eq!(events.exit_status(pid).await, 137);
    shim.assert_clean_exit().await;
}

/// The init and an exec run with every signal at its default and none blocked, whatever
/// the shim's own handlers and ignored signals (an in-process executor clones them).
#[apply(executors)]
#[tokio::test]
async fn container_processes_start_with_default_signal_dispositions(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let id = "signals-clean";
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let mut shim = ShimFixture::start(executor, id).await;
    let mut client = shim.client();
    let mut events = shim.events().await;
    let init = create_and_start(&mut shim, create_request(id, &bundle)).await;
    let io = tempfile::tempdir().unwrap();
    // The init is pid 1 of its namespace; `grep` reads its own status as `self`.
    for (whose, status) in [("init", "/proc/1/status"), ("exec", "/proc/self/status")] {
        let out = OutputFifo::create(io.path(), whose);
        let exec = client
            .exec(ExecRequest {
                stdout: out.path_string(),
                args: ["grep", "-E", "^Sig(Blk|Ign|Cgt)", status]
                    .map(String::from)
                    .to_vec(),
                env: vec!["PATH=/bin:/sbin:/usr/bin".into()],
                ..Default::default()
            })
            .await
            .expect("Exec")
            .into_inner()
            .pid;
        shim.track(exec);
        assert_eq!(events.exit_status(exec).await, 0);
        assert_eq!(
            out.text_now(),
            "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000000000\n",
            "{whose}"
        );
    }
    assert_eq!(delete(&mut client, init).await, 137);
    shim.assert_clean_exit().await;
}

#[apply(executors)]
#[tokio::test]
async fn stdout_of_ls_arrives_complete_before_exit(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "ls-slash";
    let bundle = Bundle::new(id, &["ls", "/"]);
    let io = tempfile::tempdir().unwrap();
    let stdout = OutputFifo::create(io.path(), "stdout");
    let mut shim = ShimFixture::start(executor, id).await;
    let mut events = shim.events().await;
    let request = CreateRequest {
        stdout: stdout.path_string(),
        ..create_request(id, &bundle)
    };
    let pid = create_and_start(&mut shim, request).await;
    assert_eq!(events.exit_status(pid).await, 0);
    // Taken at the exit event: what the fifo holds now is all there will be.
    let listing = stdout.text_now();
    let mut expected: Vec<String> = std::fs::read_dir(rootfs())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    expected.sort();
    assert_eq!(listing.lines().collect::<Vec<_>>(), expected);
    assert_eq!(delete(&mut shim.client(), pid).await, 0);
    shim.assert_clean_exit().await;
}

#[apply(executors)]
#[tokio::test]
async fn a_mebibyte_of_output_arrives_complete_before_exit(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "mebibyte";
    let bundle = Bundle::new(id, &["sh", "-c", "yes 0123456789abcde | head -c 1048576"]);
    let io = tempfile::tempdir().unwrap();
    let stdout = OutputFifo::create(io.path(), "stdout");
    let stderr = OutputFifo::create(io.path(), "stderr");
    let mut shim = ShimFixture::start(executor, id).await;
    let mut events = shim.events().await;
    let request = CreateRequest {
        stdout: stdout.path_string(),
        stderr: stderr.path_string(),
        ..create_request(id, &bundle)
    };
    let pid = create_and_start(&mut shim, request).await;
    assert_eq!(events.exit_status(pid).await, 0);
    let out = stdout.contents_now();
    assert_eq!(out.len(), 1 << 20, "all of stdout before the exit event");
    assert!(out.chunks(16).all(|line| line == b"0123456789abcde\n"));
    assert_eq!(stderr.text_now(), "");
    assert_eq!(delete(&mut shim.client(), pid).await, 0);
    shim.assert_clean_exit().await;
}

#[apply(executors)]
#[tokio::test]
async fn exit_code_reaches_the_event_and_delete(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "exit-3";
    let bundle = Bundle::new(id, &["sh", "-c", "exit 3"]);
    let mut shim = ShimFixture::start(executor, id).await;
    let mut events = shim.events().await;
    let pid = create_and_start(&mut shim, create_request(id, &bundle)).await;
    assert_eq!(events.exit_status(pid).await, 3);
    let mut client = shim.client();
    assert_eq!(state_of(&mut client, pid).await, State::Stopped);
    assert_eq!(delete(&mut client, pid).await, 3);
    shim.assert_clean_exit().await;
}

#[apply(executors)]
#[tokio::test]
async fn sigkill_gives_137(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "sigkill";
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let mut shim = ShimFixture::start(executor, id).await;
    let mut events = shim.events().await;
    let pid = create_and_start(&mut shim, create_request(id, &bundle)).await;
    kill(pid, rustix::process::Signal::KILL);
    assert_eq!(events.exit_status(pid).await, 137);
    assert_eq!(delete(&mut shim.client(), pid).await, 137);
    shim.assert_clean_exit().await;
}

#[apply(executors)]
#[tokio::test]
async fn sigterm_to_top_gives_143(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "top-sigterm";
    let bundle = Bundle::new(id, &["top", "-b"]);
    let io = tempfile::tempdir().unwrap();
    let stdout = OutputFifo::create(io.path(), "stdout");
    let mut shim = ShimFixture::start(executor, id).await;
    let mut events = shim.events().await;
    let request = CreateRequest {
        stdout: stdout.path_string(),
        ..create_request(id, &bundle)
    };
    let pid = create_and_start(&mut shim, request).await;
    // top installs its SIGTERM handler at start; its first screen says it is running.
    wait_until("top to print its first screen", DEADLINE, || {
        stdout.text_now().contains("PID")
    })
    .await;
    kill(pid, rustix::process::Signal::TERM);
    assert_eq!(events.exit_status(pid).await, 143);
    assert_eq!(delete(&mut shim.client(), pid).await, 143);
    shim.assert_clean_exit().await;
}

fn kill(pid: u32, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a positive pid");
    rustix::process::kill_process(pid, signal).expect("signalling a container process");
}

#[apply(executors)]
#[tokio::test]
async fn exec_runs_with_env_cwd_uid_gid_and_has_its_own_exit(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "exec";
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let io = tempfile::tempdir().unwrap();
    let stdout = OutputFifo::create(io.path(), "exec-stdout");
    let mut shim = ShimFixture::start(executor, id).await;
    let mut client = shim.client();
    let mut events = shim.events().await;
    let init = create_and_start(&mut shim, create_request(id, &bundle)).await;

    let exec = client
        .exec(ExecRequest {
            args: vec![
                "sh".into(),
                "-c".into(),
                r#"echo "$FOO"; pwd; id -u; id -g; exit 5"#.into(),
            ],
            env: vec!["FOO=bar".into(), "PATH=/bin".into()],
            cwd: "/tmp".into(),
            user: Some(User {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![],
            }),
            stdout: stdout.path_string(),
            ..Default::default()
        })
        .await
        .expect("Exec")
        .into_inner()
        .pid;
    shim.track(exec);
    assert_ne!(exec, init);
    let added = events.next_of(EventType::ExecAdded, exec).await;
    assert_eq!(added.id, id);
    assert_eq!(events.exit_status(exec).await, 5);
    assert_eq!(stdout.text_now(), "bar\n/tmp\n1000\n1000\n");
    assert_eq!(state_of(&mut client, exec).await, State::Stopped);
    assert_eq!(
        state_of(&mut client, init).await,
        State::Running,
        "the init is unaffected"
    );
    assert_eq!(delete(&mut client, exec).await, 5);
    let state = client.state(StateRequest {}).await.unwrap().into_inner();
    assert!(
        state.processes.iter().all(|p| p.pid != exec),
        "a deleted exec leaves State"
    );

    assert_eq!(delete(&mut client, init).await, 137);
    shim.assert_clean_exit().await;
}

#[apply(executors)]
#[tokio::test]
async fn exec_without_user_runs_as_root(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "exec-root";
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let io = tempfile::tempdir().unwrap();
    let stdout = OutputFifo::create(io.path(), "stdout");
    let mut shim = ShimFixture::start(executor, id).await;
    let mut client = shim.client();
    let mut events = shim.events().await;
    let init = create_and_start(&mut shim, create_request(id, &bundle)).await;
    let exec = client
        .exec(ExecRequest {
            args: vec!["id".into()],
            stdout: stdout.path_string(),
            ..Default::default()
        })
        .await
        .expect("Exec")
        .into_inner()
        .pid;
    shim.track(exec);
    assert_eq!(events.exit_status(exec).await, 0);
    assert!(
        stdout.text_now().starts_with("uid=0(root) gid=0(root)"),
        "{}",
        stdout.text_now()
    );
    assert_eq!(delete(&mut client, init).await, 137);
    shim.assert_clean_exit().await;
}

#[apply(executors)]
#[tokio::test]
async fn pause_freezes_and_resume_thaws(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "pause";
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let mut shim = ShimFixture::start(executor, id).await;
    let mut client = shim.client();
    let init = create_and_start(&mut shim, create_request(id, &bundle)).await;
    let cgroup = test_cgroup(id);

    client.pause(PauseRequest {}).await.expect("Pause");
    assert_eq!(state_of(&mut client, init).await, State::Paused);
    assert_eq!(freezer_state(&cgroup).as_deref(), Some("FROZEN"));

    client.resume(ResumeRequest {}).await.expect("Resume");
    assert_eq!(state_of(&mut client, init).await, State::Running);
    assert_eq!(freezer_state(&cgroup).as_deref(), Some("THAWED"));

    let err = client.resume(ResumeRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not paused"), "{err:?}");

    // Deleting a paused container works too.
    client.pause(PauseRequest {}).await.expect("Pause");
    assert_eq!(delete(&mut client, init).await, 137);
    shim.assert_clean_exit().await;
}

#[apply(executors)]
#[tokio::test]
async fn two_event_streams_both_see_every_event(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "two-streams";
    let bundle = Bundle::new(id, &["sh", "-c", "exit 7"]);
    let mut shim = ShimFixture::start(executor, id).await;
    let first = shim.events().await;
    let second = shim.events().await;
    let init = create_and_start(&mut shim, create_request(id, &bundle)).await;
    assert_eq!(delete(&mut shim.client(), init).await, 7);
    // Delete of the init ends the shim, and with it the streams: collect everything.
    let summary = |events: Vec<wharf_shim_proto::Event>| -> Vec<(EventType, u32, u32)> {
        events
            .iter()
            .map(|e| (e.r#type(), e.pid, e.exit_status))
            .collect()
    };
    let expected = vec![
        (EventType::Create, init, 0),
        (EventType::Start, init, 0),
        (EventType::Exit, init, 7),
    ];
    assert_eq!(summary(first.rest().await), expected);
    assert_eq!(summary(second.rest().await), expected);
    shim.assert_clean_exit().await;
}

#[apply(executors)]
#[tokio::test]
async fn events_without_a_stream_reach_the_next_stream(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "backlog";
    let bundle = Bundle::new(id, &["sh", "-c", "exit 4"]);
    let mut shim = ShimFixture::start(executor, id).await;
    let mut client = shim.client();
    let init = create_and_start(&mut shim, create_request(id, &bundle)).await;
    wait_until_async("the shim to see the init stop", DEADLINE, || {
        let mut client = client.clone();
        async move { state_of(&mut client, init).await == State::Stopped }
    })
    .await;
    let mut events = shim.events().await;
    let create = events.next().await;
    assert_eq!((create.r#type(), create.pid), (EventType::Create, init));
    assert_eq!(events.next().await.r#type(), EventType::Start);
    let exit = events.next().await;
    assert_eq!(
        (exit.r#type(), exit.pid, exit.exit_status),
        (EventType::Exit, init, 4)
    );
    assert_eq!(delete(&mut client, init).await, 4);
    shim.assert_clean_exit().await;
}

#[apply(executors)]
#[tokio::test]
async fn shim_keeps_serving_after_its_spawner_is_killed(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "orphaned";
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let mut shim = ShimFixture::start_orphaned(executor, id).await;
    assert!(
        process_alive(shim.shim_pid()),
        "the shim outlives its spawner"
    );
    let mut events = shim.events().await;
    let init = create_and_start(&mut shim, create_request(id, &bundle)).await;
    let mut client = shim.client();
    assert_eq!(state_of(&mut client, init).await, State::Running);
    kill(init, rustix::process::Signal::KILL);
    assert_eq!(events.exit_status(init).await, 137, "the shim still reaps");
    assert_eq!(delete(&mut client, init).await, 137);
    shim.assert_clean_exit().await;
}

#[apply(executors)]
#[tokio::test]
async fn missing_binary_fails_create_with_the_runtime_message(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "no-such-file";
    let bundle = Bundle::new(id, &["NoSuchFile"]);
    let shim = ShimFixture::start(executor, id).await;
    let err = shim
        .client()
        .create(create_request(id, &bundle))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let said = match executor {
        ExecutorKind::Runc => r#"exec: "NoSuchFile": executable file not found in $PATH"#,
        ExecutorKind::Libcontainer => "executable 'NoSuchFile' not found in $PATH",
    };
    assert!(err.message().contains(said), "{err:?}");
    assert!(
        err.message()
            .contains(&format!("{} create", executor.as_str())),
        "names the command: {err:?}"
    );
    // The shim is still empty and serving, and a terminated shim leaves nothing.
    let state = shim.client().state(StateRequest {}).await.unwrap_err();
    assert_eq!(state.code(), Code::FailedPrecondition);
    shim.terminate().await;
}

#[apply(executors)]
#[tokio::test]
async fn requests_out_of_order_fail_with_clear_codes(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "order";
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let mut shim = ShimFixture::start(executor, id).await;
    let mut client = shim.client();
    for (rpc, err) in [
        ("State", client.state(StateRequest {}).await.unwrap_err()),
        ("Start", client.start(StartRequest {}).await.unwrap_err()),
        ("Pause", client.pause(PauseRequest {}).await.unwrap_err()),
        (
            "Delete",
            client.delete(DeleteRequest { pid: 1 }).await.unwrap_err(),
        ),
        (
            "Exec",
            client
                .exec(ExecRequest {
                    args: vec!["true".into()],
                    ..Default::default()
                })
                .await
                .unwrap_err(),
        ),
    ] {
        assert_eq!(
            err.code(),
            Code::FailedPrecondition,
            "{rpc} before Create: {err:?}"
        );
    }
    let bad_id = client
        .create(CreateRequest {
            id: "../etc".into(),
            ..create_request(id, &bundle)
        })
        .await
        .unwrap_err();
    assert_eq!(bad_id.code(), Code::InvalidArgument, "{bad_id:?}");
    let relative = client
        .create(CreateRequest {
            bundle: "bundle".into(),
            ..create_request(id, &bundle)
        })
        .await
        .unwrap_err();
    assert_eq!(relative.code(), Code::InvalidArgument, "{relative:?}");
    let missing_fifo = client
        .create(CreateRequest {
            stdout: "/nonexistent/stdout".into(),
            ..create_request(id, &bundle)
        })
        .await
        .unwrap_err();
    assert_eq!(missing_fifo.code(), Code::NotFound, "{missing_fifo:?}");
    assert!(
        missing_fifo.message().contains("/nonexistent/stdout"),
        "{missing_fifo:?}"
    );

    let init = client
        .create(create_request(id, &bundle))
        .await
        .unwrap()
        .into_inner()
        .pid;
    shim.track(init);
    let again = client
        .create(create_request(id, &bundle))
        .await
        .unwrap_err();
    assert_eq!(
        again.code(),
        Code::FailedPrecondition,
        "second Create: {again:?}"
    );
    let early_exec = client
        .exec(ExecRequest {
            args: vec!["true".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        early_exec.code(),
        Code::FailedPrecondition,
        "{early_exec:?}"
    );
    client.start(StartRequest {}).await.unwrap();
    let twice = client.start(StartRequest {}).await.unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition, "{twice:?}");
    let unknown = client
        .delete(DeleteRequest { pid: 999_999 })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let no_args = client.exec(ExecRequest::default()).await.unwrap_err();
    assert_eq!(no_args.code(), Code::InvalidArgument, "{no_args:?}");
    let no_tty = client
        .pty(PtyRequest {
            pid: init,
            width: 80,
            height: 24,
        })
        .await
        .unwrap_err();
    assert_eq!(no_tty.code(), Code::FailedPrecondition, "{no_tty:?}");
    let missing = client
        .exec(ExecRequest {
            args: vec!["NoSuchFile".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument, "{missing:?}");
    assert!(missing.message().contains("NoSuchFile"), "{missing:?}");

    assert_eq!(delete(&mut client, init).await, 137);
    shim.assert_clean_exit().await;
}

#[apply(executors)]
#[tokio::test]
async fn stdin_reaches_eof_when_the_writer_closes(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "stdin";
    let bundle = Bundle::new(id, &["cat"]);
    let io = tempfile::tempdir().unwrap();
    let mut stdin = InputFifo::create(io.path(), "stdin");
    let stdout = OutputFifo::create(io.path(), "stdout");
    let mut shim = ShimFixture::start(executor, id).await;
    let mut events = shim.events().await;
    let request = CreateRequest {
        stdin: stdin.path_string(),
        stdout: stdout.path_string(),
        ..create_request(id, &bundle)
    };
    let init = create_and_start(&mut shim, request).await;
    stdin.write(b"hello through a fifo\n").await;
    stdin.close();
    assert_eq!(events.exit_status(init).await, 0, "cat saw EOF and exited");
    assert_eq!(stdout.text_now(), "hello through a fifo\n");
    assert_eq!(delete(&mut shim.client(), init).await, 0);
    shim.assert_clean_exit().await;
}

#[apply(executors)]
#[tokio::test]
async fn output_without_a_path_never_blocks_the_container(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "no-stdio";
    let bundle = Bundle::new(
        id,
        &[
            "sh",
            "-c",
            "yes | head -c 4000000; yes | head -c 4000000 >&2",
        ],
    );
    let mut shim = ShimFixture::start(executor, id).await;
    let mut events = shim.events().await;
    let init = create_and_start(&mut shim, create_request(id, &bundle)).await;
    assert_eq!(events.exit_status(init).await, 0);
    assert_eq!(delete(&mut shim.client(), init).await, 0);
    shim.assert_clean_exit().await;
}

#[apply(executors)]
#[tokio::test]
async fn a_reader_that_goes_away_neither_blocks_nor_kills_the_container(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let id = "reader-gone";
    let bundle = Bundle::new(
        id,
        &[
            "sh",
            "-c",
            "i=0; while true; do echo line $i; i=$((i+1)); done",
        ],
    );
    let io = tempfile::tempdir().unwrap();
    let first = OutputFifo::create(io.path(), "stdout");
    let mut shim = ShimFixture::start(executor, id).await;
    let mut events = shim.events().await;
    let request = CreateRequest {
        stdout: first.path_string(),
        ..create_request(id, &bundle)
    };
    let init = create_and_start(&mut shim, request).await;
    wait_until("output through the first reader", DEADLINE, || {
        first.text_now().contains("line 100\n")
    })
    .await;
    let last_seen = last_line_number(&first.text_now());
    let path = first.path.clone();
    drop(first);

    // The container keeps running and writing; a new reader gets newer output.
    let second = OutputFifo::open(path);
    wait_until("newer output through a second reader", DEADLINE, || {
        last_line_number(&second.text_now()) > last_seen + 1000
    })
    .await;
    assert!(process_alive(init), "no SIGPIPE, no exit");
    assert_eq!(
        delete(&mut shim.client(), init).await,
        137,
        "killed by Delete, not by SIGPIPE"
    );
    assert_eq!(events.exit_status(init).await, 137);
    shim.assert_clean_exit().await;
}

fn last_line_number(text: &str) -> u64 {
    text.lines()
        .rev()
        .find_map(|line| line.strip_prefix("line ").and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

#[apply(executors)]
#[tokio::test]
async fn regular_file_stdout_is_appended(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "file-stdout";
    let bundle = Bundle::new(id, &["echo", "to a file"]);
    let io = tempfile::tempdir().unwrap();
    let file = io.path().join("out.log");
    std::fs::write(&file, "before\n").unwrap();
    let mut shim = ShimFixture::start(executor, id).await;
    let mut events = shim.events().await;
    let request = CreateRequest {
        stdout: file.display().to_string(),
        ..create_request(id, &bundle)
    };
    let init = create_and_start(&mut shim, request).await;
    assert_eq!(events.exit_status(init).await, 0);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "before\nto a file\n"
    );
    assert_eq!(delete(&mut shim.client(), init).await, 0);
    shim.assert_clean_exit().await;
}

#[apply(executors)]
#[tokio::test]
async fn terminal_output_and_resize_reach_the_process(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "tty";
    let bundle = Bundle::with(
        id,
        &["sh", "-c", "read line; stty size; echo got $line"],
        |spec| {
            let mut process = spec.process().clone().unwrap();
            process.set_terminal(Some(true));
            spec.set_process(Some(process));
        },
    );
    let io = tempfile::tempdir().unwrap();
    let mut stdin = InputFifo::create(io.path(), "stdin");
    let stdout = OutputFifo::create(io.path(), "stdout");
    let mut shim = ShimFixture::start(executor, id).await;
    let mut client = shim.client();
    let mut events = shim.events().await;
    let request = CreateRequest {
        terminal: true,
        stdin: stdin.path_string(),
        stdout: stdout.path_string(),
        ..create_request(id, &bundle)
    };
    let init = create_and_start(&mut shim, request).await;
    client
        .pty(PtyRequest {
            pid: init,
            width: 123,
            height: 45,
        })
        .await
        .expect("Pty");
    stdin.write(b"typed\n").await;
    assert_eq!(events.exit_status(init).await, 0);
    let text = stdout.text_now();
    assert!(text.contains("45 123"), "stty sees the new size: {text:?}");
    assert!(text.contains("got typed"), "{text:?}");
    assert_eq!(delete(&mut client, init).await, 0);
    shim.assert_clean_exit().await;
}

#[apply(executors)]
#[tokio::test]
async fn terminal_mismatch_with_the_bundle_is_rejected(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "tty-mismatch";
    let bundle = Bundle::new(id, &["true"]);
    let shim = ShimFixture::start(executor, id).await;
    let err = shim
        .client()
        .create(CreateRequest {
            terminal: true,
            ..create_request(id, &bundle)
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("terminal"), "{err:?}");
    shim.terminate().await;
}

#[apply(executors)]
#[tokio::test]
async fn sigterm_to_the_shim_kills_and_deletes_its_container(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "shim-sigterm";
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let mut shim = ShimFixture::start(executor, id).await;
    create_and_start(&mut shim, create_request(id, &bundle)).await;
    shim.terminate().await;
}

#[apply(executors)]
#[tokio::test]
async fn a_128_byte_id_works_despite_the_socket_path_limit(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "i".repeat(128);
    let bundle = Bundle::new(&id, &["sh", "-c", "exit 9"]);
    let mut shim = ShimFixture::start(executor, &id).await;
    let mut events = shim.events().await;
    let init = create_and_start(&mut shim, create_request(&id, &bundle)).await;
    assert_eq!(events.exit_status(init).await, 9);
    assert_eq!(delete(&mut shim.client(), init).await, 9);
    shim.assert_clean_exit().await;
}

#[apply(executors)]
#[tokio::test]
async fn delete_of_a_created_never_started_init_kills_it(#[case] executor: ExecutorKind) {
    require_containers!();
    let id = "never-started";
    let bundle = Bundle::new(id, &["sh", "-c", "echo must not run"]);
    let io = tempfile::tempdir().unwrap();
    let stdout = OutputFifo::create(io.path(), "stdout");
    let mut shim = ShimFixture::start(executor, id).await;
    let mut client = shim.client();
    let mut events = shim.events().await;
    let init = client
        .create(CreateRequest {
            stdout: stdout.path_string(),
            ..create_request(id, &bundle)
        })
        .await
        .unwrap()
        .into_inner()
        .pid;
    shim.track(init);
    assert_eq!(state_of(&mut client, init).await, State::Created);
    assert_eq!(delete(&mut client, init).await, 137);
    assert_eq!(events.next_of(EventType::Exit, init).await.exit_status, 137);
    assert_eq!(stdout.text_now(), "", "the bundle's process never ran");
    shim.assert_clean_exit().await;
}

#[apply(executors)]
#[tokio::test]
async fn control_kill_signals_one_process_or_all_and_checks_the_pid(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    use wharf_shim_proto::control::{ControlClient, KillRequest};
    let id = "control-kill";
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let mut shim = ShimFixture::start(executor, id).await;
    let mut client = shim.client();
    let mut control = ControlClient::new(
        wharf_shim_proto::channel(shim.state_dir.join("shim.sock"))
            .await
            .unwrap(),
    );
    let mut events = shim.events().await;
    let init = create_and_start(&mut shim, create_request(id, &bundle)).await;
    let exec = client
        .exec(ExecRequest {
            args: vec!["sleep".into(), "1000".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .pid;
    shim.track(exec);

    // SIGTERM to the exec (not pid 1 in its namespace: the default action applies).
    control
        .kill(KillRequest {
            pid: exec,
            signal: 15,
            all: false,
        })
        .await
        .expect("Kill exec");
    assert_eq!(events.exit_status(exec).await, 143);
    assert_eq!(
        state_of(&mut client, init).await,
        State::Running,
        "the init lives on"
    );

    let exited = control
        .kill(KillRequest {
            pid: exec,
            signal: 15,
            all: false,
        })
        .await
        .unwrap_err();
    assert_eq!(exited.code(), Code::FailedPrecondition, "{exited:?}");
    let stranger = control
        .kill(KillRequest {
            pid: 1,
            signal: 9,
            all: false,
        })
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), Code::NotFound, "{stranger:?}");
    assert!(stranger.message().contains('1'), "{stranger:?}");
    for signal in [0, 65, 1000] {
        let bad = control
            .kill(KillRequest {
                pid: init,
                signal,
                all: false,
            })
            .await
            .unwrap_err();
        assert_eq!(
            bad.code(),
            Code::InvalidArgument,
            "signal {signal}: {bad:?}"
        );
    }

    control
        .kill(KillRequest {
            pid: 0,
            signal: 9,
            all: true,
        })
        .await
        .expect("Kill all");
    assert_eq!(events.exit_status(init).await, 137);
    assert_eq!(delete(&mut client, init).await, 137);
    shim.assert_clean_exit().await;
}

/// `Control.ExitStatus` tells a kept exit status without deleting anything: refused while
/// the process runs, the same answer as often as asked once it exited, and `Delete` still
/// gives it afterwards.
#[apply(executors)]
#[tokio::test]
async fn exit_status_is_told_without_deleting(#[case] executor: ExecutorKind) {
    require_containers!();
    use wharf_shim_proto::control::{ControlClient, ExitStatusRequest, KillRequest};
    let id = "shim-exit-status";
    let bundle = Bundle::new(id, &["sleep", "1000"]);
    let mut shim = ShimFixture::start(executor, id).await;
    let mut control = ControlClient::new(
        wharf_shim_proto::channel(shim.state_dir.join("shim.sock"))
            .await
            .expect("connecting Control"),
    );
    let mut events = shim.events().await;
    let init = create_and_start(&mut shim, create_request(id, &bundle)).await;
    let ask = |pid| ExitStatusRequest { pid };
    let running = control.exit_status(ask(init)).await.unwrap_err();
    assert_eq!(running.code(), Code::FailedPrecondition, "{running:?}");
    let stranger = control.exit_status(ask(init + 100_000)).await.unwrap_err();
    assert_eq!(stranger.code(), Code::NotFound, "{stranger:?}");

    control
        .kill(KillRequest {
            pid: init,
            signal: 9,
            all: false,
        })
        .await
        .expect("Kill");
    assert_eq!(events.exit_status(init).await, 137);
    for _ in 0..2 {
        let told = control.exit_status(ask(init)).await.expect("ExitStatus");
        assert_eq!(told.into_inner().exit_status, 137);
    }
    let mut client = shim.client();
    assert_eq!(state_of(&mut client, init).await, State::Stopped);
    assert_eq!(delete(&mut client, init).await, 137);
    shim.assert_clean_exit().await;
}
