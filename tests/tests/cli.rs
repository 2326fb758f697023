//! The `wharf` CLI against a real `wharfd`: tables and `--json` (snapshots, with pids and
//! paths redacted), `--attach` exit statuses, errors.

use std::process::Output;

use rstest::rstest;
use rstest_reuse::apply;
use tokio::io::{AsyncBufReadExt, BufReader};
use wharf_tests::bundle::Bundle;
use wharf_tests::daemon::DaemonFixture;
use wharf_tests::require_containers;
use wharf_tests::shim::DEADLINE;
use wharf_tests::system::wharf_binary;
use wharf_tests::{ExecutorKind, executors};

/// Runs `wharf --address <socket> args...` with `stdin` as its input.
async fn wharf(daemon: &DaemonFixture, args: &[&str], stdin: &[u8]) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(wharf_binary("wharf"))
        .arg("--address")
        .arg(&daemon.socket)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running wharf");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).await.expect("writing wharf's stdin");
    drop(input);
    tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("wharf {args:?} did not finish"))
        .expect("waiting for wharf")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A table with its padding folded to two spaces: column widths follow the pids' digit
/// counts, which vary between runs (alignment itself has a unit test).
fn fold_padding(table: &str) -> String {
    let lines: Vec<String> = table
        .lines()
        .map(|line| {
            let cells: Vec<&str> = line
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            cells.join("  ")
        })
        .collect();
    lines.join("\n")
}

/// Replaces what changes between runs.
fn redact(text: &str, replacements: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in replacements {
        out = out.replace(from, to);
    }
    out
}

async fn start(daemon: &DaemonFixture, id: &str, bundle: &Bundle) -> String {
    let out = wharf(
        daemon,
        &["containers", "start", id, &bundle.path_string()],
        b"",
    )
    .await;
    assert!(out.status.success(), "start {id}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

#[apply(executors)]
#[tokio::test]
async fn tables_and_json_for_list_state_exec_and_events(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = DaemonFixture::start_with(executor, &["--id", "cli-machine"]).await;
    let (a, b) = ("cli-a", "cli-b");
    daemon.track(a);
    daemon.track(b);
    let bundle_a = Bundle::new(a, &["sleep", "1000"]);
    let bundle_b = Bundle::new(b, &["sleep", "1000"]);
    let pid_a = start(&daemon, a, &bundle_a).await;
    let pid_b = start(&daemon, b, &bundle_b).await;
    let exec = wharf(
        &daemon,
        &[
            "containers",
            "exec",
            "--id",
            a,
            "--cwd",
            "/tmp",
            "--",
            "sleep",
            "999",
        ],
        b"",
    )
    .await;
    assert!(exec.status.success(), "{}", text(&exec.stderr));
    let exec_pid = text(&exec.stdout).trim().to_owned();
    let pause = wharf(&daemon, &["containers", "pause", b], b"").await;
    assert!(
        pause.status.success() && pause.stdout.is_empty(),
        "{}",
        text(&pause.stderr)
    );

    let redactions = [
        (pid_a.as_str(), "<pid-a>"),
        (pid_b.as_str(), "<pid-b>"),
        (exec_pid.as_str(), "<exec-pid>"),
        (&bundle_a.path_string(), "<bundle-a>"),
        (&bundle_b.path_string(), "<bundle-b>"),
    ];
    let list = wharf(&daemon, &["containers"], b"").await;
    let list = fold_padding(&redact(&text(&list.stdout), &redactions));
    insta::assert_snapshot!("containers_list", list);
    let list_json = wharf(&daemon, &["--json", "containers", "list"], b"").await;
    let list_json = redact(&text(&list_json.stdout), &redactions);
    insta::assert_snapshot!("containers_list_json", list_json);
    let state = wharf(&daemon, &["state"], b"").await;
    let state = text(&state.stdout);
    let machine_line = state.lines().next().unwrap_or_default().to_owned();
    assert!(
        machine_line.starts_with("machine cli-machine: "),
        "{machine_line}"
    );
    let state = fold_padding(&redact(
        &state.replace(&machine_line, "<machine line>"),
        &redactions,
    ));
    insta::assert_snapshot!("state", state);

    // Events, as a table and as JSON lines, while both containers are killed.
    let mut table = events_child(&daemon, false);
    let mut json = events_child(&daemon, true);
    let mut table_lines = BufReader::new(table.stdout.take().expect("stdout")).lines();
    let mut json_lines = BufReader::new(json.stdout.take().expect("stdout")).lines();
    let header = tokio::time::timeout(DEADLINE, table_lines.next_line())
        .await
        .expect("the events header")
        .unwrap()
        .unwrap();
    assert!(header.starts_with("TYPE"), "{header}");
    // Both streams are subscribed once each shows the exit of a probe container.
    let probe = "cli-probe";
    daemon.track(probe);
    let probe_bundle = Bundle::new(probe, &["true"]);
    start(&daemon, probe, &probe_bundle).await;
    for lines in [&mut table_lines, &mut json_lines] {
        loop {
            let line = tokio::time::timeout(DEADLINE, lines.next_line())
                .await
                .expect("the probe's events")
                .unwrap()
                .unwrap();
            if line.contains(probe) && line.contains("exit") {
                break;
            }
        }
    }
    for (id, pid) in [(a, &exec_pid), (a, &pid_a), (b, &pid_b)] {
        let kill = wharf(
            &daemon,
            &["containers", "kill", id, "--pid", pid, "--signal", "KILL"],
            b"",
        )
        .await;
        assert!(
            kill.status.success(),
            "kill {id} {pid}: {}",
            text(&kill.stderr)
        );
        // One kill at a time, so the event order is fixed.
        let mut seen = String::new();
        while !seen.contains(pid.as_str()) || !seen.starts_with("exit") {
            seen = tokio::time::timeout(DEADLINE, table_lines.next_line())
                .await
                .expect("an event row")
                .unwrap()
                .unwrap();
        }
    }
    let mut rows = Vec::new();
    while rows.len() < 3 {
        let line = tokio::time::timeout(DEADLINE, json_lines.next_line())
            .await
            .expect("a json event")
            .unwrap()
            .unwrap();
        rows.push(line);
    }
    let _ = table.start_kill();
    let _ = json.start_kill();
    let events = redact(&rows.join("\n"), &redactions);
    insta::assert_snapshot!("events_json", events);
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

fn events_child(daemon: &DaemonFixture, json: bool) -> tokio::process::Child {
    let mut command = tokio::process::Command::new(wharf_binary("wharf"));
    command.arg("--address").arg(&daemon.socket);
    if json {
        command.arg("--json");
    }
    command
        .arg("events")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("running wharf events")
}

#[apply(executors)]
#[tokio::test]
async fn attach_copies_stdio_and_exits_with_the_status(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let id = "cli-attach";
    daemon.track(id);
    let bundle = Bundle::new(
        id,
        &[
            "sh",
            "-c",
            "echo out; echo err >&2; read line; echo got $line; exit 7",
        ],
    );
    let out = wharf(
        &daemon,
        &["containers", "start", id, &bundle.path_string(), "--attach"],
        b"hello\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(7), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\ngot hello\n");
    assert_eq!(text(&out.stderr), "err\n");

    let sleeper = "cli-attach-exec";
    daemon.track(sleeper);
    let sleeper_bundle = Bundle::new(sleeper, &["sleep", "1000"]);
    let pid = start(&daemon, sleeper, &sleeper_bundle).await;
    let exec = wharf(
        &daemon,
        &[
            "containers",
            "exec",
            "--id",
            sleeper,
            "--attach",
            "--env",
            "GREETING=hi",
            "--",
            "sh",
            "-c",
            "echo $GREETING from $(pwd); exit 4",
        ],
        b"",
    )
    .await;
    assert_eq!(
        exec.status.code(),
        Some(4),
        "stderr: {}",
        text(&exec.stderr)
    );
    assert_eq!(
        text(&exec.stdout),
        "hi from /\n",
        "--env adds to the container's env (PATH kept)"
    );

    let terminal = "cli-attach-tty";
    daemon.track(terminal);
    let tty_bundle = Bundle::with(terminal, &["sh"], |spec| {
        let mut process = spec.process().clone().unwrap();
        process.set_terminal(Some(true));
        spec.set_process(Some(process));
    });
    let tty = wharf(
        &daemon,
        &[
            "containers",
            "start",
            terminal,
            &tty_bundle.path_string(),
            "--attach",
        ],
        b"test -t 0 && echo on-a-$((6*7))-tty; exit 5\n",
    )
    .await;
    assert_eq!(tty.status.code(), Some(5), "stderr: {}", text(&tty.stderr));
    assert!(
        text(&tty.stdout).contains("on-a-42-tty"),
        "{}",
        text(&tty.stdout)
    );

    let kill = wharf(
        &daemon,
        &[
            "containers",
            "kill",
            sleeper,
            "--signal",
            "9",
            "--pid",
            &pid,
        ],
        b"",
    )
    .await;
    assert!(kill.status.success());
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn errors_go_to_stderr_with_a_failure_status(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let unknown = wharf(&daemon, &["containers", "kill", "nope"], b"").await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(unknown.stdout.is_empty());
    assert_eq!(
        text(&unknown.stderr),
        "wharf: not found: container nope not found\n"
    );
    let bad_signal = wharf(
        &daemon,
        &["containers", "kill", "nope", "--signal", "BOGUS"],
        b"",
    )
    .await;
    assert_eq!(
        bad_signal.status.code(),
        Some(2),
        "usage errors exit 2: {}",
        text(&bad_signal.stderr)
    );
    let completions = wharf(&daemon, &["completions", "bash"], b"").await;
    assert!(completions.status.success() && text(&completions.stdout).contains("wharf"));
    let nowhere = tokio::process::Command::new(wharf_binary("wharf"))
        .args(["--address", "/nonexistent/wharf.sock", "containers"])
        .output()
        .await
        .unwrap();
    assert_eq!(nowhere.status.code(), Some(1));
    assert!(
        text(&nowhere.stderr)
            .starts_with("wharf: cannot connect to wharfd at /nonexistent/wharf.sock"),
        "{}",
        text(&nowhere.stderr)
    );
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}

#[apply(executors)]
#[tokio::test]
async fn events_since_replays_the_journal_with_sequence_numbers(#[case] executor: ExecutorKind) {
    require_containers!();
    let mut daemon = DaemonFixture::start(executor).await;
    let id = "cli-since";
    daemon.track(id);
    let bundle = Bundle::new(id, &["sh", "-c", "exit 6"]);
    let pid = start(&daemon, id, &bundle).await;
    let mut events = daemon.events().await;
    assert_eq!(events.exit_status(id, pid.parse().unwrap()).await, 6);

    let mut replay = tokio::process::Command::new(wharf_binary("wharf"))
        .arg("--address")
        .arg(&daemon.socket)
        .args(["events", "--since", "0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("running wharf events --since");
    let mut lines = BufReader::new(replay.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("a replayed line")
            .unwrap()
            .unwrap();
        let fields: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        let done = fields.get(2).is_some_and(|t| t == "exit");
        seen.push(fields);
        if done {
            break;
        }
    }
    let _ = replay.start_kill();
    let header = &seen[0];
    assert_eq!(header, &["SEQ", "TIME", "TYPE", "ID", "PID", "STATUS"]);
    let rows: Vec<Vec<&str>> = seen[1..]
        .iter()
        .map(|r| r.iter().map(String::as_str).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        (rows[0][0], rows[0][2], rows[0][3]),
        ("1", "start-container", id)
    );
    assert_eq!(
        (rows[1][0], rows[1][2], rows[1][4], rows[1][5]),
        ("2", "exit", pid.as_str(), "6")
    );
    daemon.assert_nothing_left().await;
    daemon.stop().await;
}
