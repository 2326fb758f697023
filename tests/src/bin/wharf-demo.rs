//! `cargo xtask demo`: wharfd on a temporary socket, a busybox container driven with the
//! `wharf` CLI, every command shown with its output, then everything stopped.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use wharf_tests::bundle::Bundle;
use wharf_tests::system::{missing_prerequisite, wharf_binary};

/// Runs `wharf <args>` and prints the command line and what it printed.
fn wharf(socket: &Path, args: &[&str]) -> String {
    let shown: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                (*a).to_owned()
            }
        })
        .collect();
    println!("\n$ wharf {}", shown.join(" "));
    let out = Command::new(wharf_binary("wharf"))
        .arg("--address")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running wharf");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        println!("(exit status {})", out.status.code().unwrap_or(-1));
    }
    stdout
}

/// Polls `wharf containers` until `id` is gone (its exit was published).
fn wait_gone(socket: &Path, id: &str) {
    for _ in 0..500 {
        let out = Command::new(wharf_binary("wharf"))
            .arg("--address")
            .arg(socket)
            .args(["containers"])
            .output()
            .expect("running wharf");
        if !String::from_utf8_lossy(&out.stdout).contains(id) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("container {id} still listed after 5 s");
}

fn main() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("demo: {reason}");
        std::process::exit(1);
    }
    let work = tempfile::Builder::new()
        .prefix("wharf-demo-")
        .tempdir()
        .unwrap();
    let socket = work.path().join("wharf.sock");
    let state = work.path().join("state");
    let id = "demo";
    let bundle = Bundle::new(
        id,
        &["sh", "-c", "echo hello from the init; exec sleep 1000"],
    );

    println!("== wharf demo: wharfd and the wharf CLI on a busybox container");
    println!(
        "\n$ wharfd --listen {} --state-dir {} &",
        socket.display(),
        state.display()
    );
    let mut daemon = Command::new(wharf_binary("wharfd"))
        .arg("--listen")
        .arg(&socket)
        .arg("--state-dir")
        .arg(&state)
        .stderr(std::fs::File::create(work.path().join("wharfd.log")).unwrap())
        .spawn()
        .expect("starting wharfd");
    for _ in 0..500 {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    println!("\n$ wharf events &    (its output is shown at the end)");
    let mut events = Command::new(wharf_binary("wharf"))
        .arg("--address")
        .arg(&socket)
        .arg("events")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting wharf events");
    // It prints its header once subscribed: from then on it sees every event.
    let mut events_out = std::io::BufReader::new(events.stdout.take().expect("events stdout"));
    let mut header = String::new();
    std::io::BufRead::read_line(&mut events_out, &mut header).expect("the events header");

    wharf(&socket, &["containers", "start", id, &bundle.path_string()]);
    wharf(&socket, &["containers"]);
    wharf(
        &socket,
        &[
            "containers",
            "exec",
            "--id",
            id,
            "--attach",
            "--",
            "sh",
            "-c",
            "echo hello from an exec in $(hostname); ps",
        ],
    );
    wharf(&socket, &["containers", "pause", id]);
    wharf(&socket, &["containers"]);
    wharf(&socket, &["containers", "resume", id]);
    wharf(&socket, &["--json", "state"]);
    wharf(&socket, &["containers", "kill", id, "--signal", "KILL"]);
    wait_gone(&socket, id);
    wharf(&socket, &["containers"]);

    let _ = events.kill();
    let _ = events.wait();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut events_out, &mut rest).expect("the events output");
    println!("\n(what `wharf events` printed meanwhile)");
    print!("{header}{rest}");

    println!("\n$ kill -TERM <wharfd>   (containers would keep running under their shims)");
    if let Some(pid) = rustix::process::Pid::from_raw(daemon.id() as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let status = daemon.wait().expect("waiting for wharfd");
    println!("wharfd exited: {status}");
}
