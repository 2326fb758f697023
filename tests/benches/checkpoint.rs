//! `cargo xtask bench checkpoint`: checkpoint and restore of a busybox loop through
//! `wharfd` (each executor) against raw `runc checkpoint` / `runc restore` with the same
//! CRIU, side by side in one run.
//!
//! Each round, for each variant in turn (rotating which goes first): start the loop (not
//! timed), then time
//! 1. a leave-running checkpoint (`CreateCheckpoint{exit: false}` / `runc checkpoint
//!    --leave-running`),
//! 2. an exit checkpoint (`CreateCheckpoint{exit: true}` / `runc checkpoint`),
//! 3. a restore of the second (`CreateContainer{checkpoint}` / `runc restore -d`),
//!
//! then kill and remove it all (not timed). Prints median, p95 and the ratio of medians to
//! raw runc per operation, and writes them as JSON to `target/bench/checkpoint.json`.
//! Options: `--iterations N` (default 10), `--warmup N` (default 2).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use wharf_api::{
    Checkpoint, CreateCheckpointRequest, CreateContainerRequest, DeleteCheckpointRequest,
    SignalRequest,
};
use wharf_server::daemon::config::DEFAULT_CRIU_PATH;
use wharf_tests::ExecutorKind;
use wharf_tests::bench::{Summary, millis, numeric_flags};
use wharf_tests::bundle::Bundle;
use wharf_tests::daemon::{DaemonEvents, DaemonFixture};
use wharf_tests::system::{missing_prerequisite, target_dir};

const LOOP: [&str; 3] = [
    "sh",
    "-c",
    "i=0; while true; do i=$((i+1)); sleep 0.1; done",
];
const OPERATIONS: [&str; 3] = ["leave-running checkpoint", "exit checkpoint", "restore"];

/// One round's three timings, in [`OPERATIONS`] order.
type Round = [Duration; 3];

/// Raw runc with its own root, CRIU and scratch directory.
struct RawRunc {
    root: PathBuf,
    scratch: PathBuf,
}

impl RawRunc {
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new("runc");
        command
            .arg("--root")
            .arg(&self.root)
            .args(["--criu", DEFAULT_CRIU_PATH])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        command
    }

    /// Runs runc; returns how long it took. `run` and `restore` give the container runc's
    /// stdio, so theirs is `/dev/null` (a pipe would stay open in the container).
    fn timed(&self, args: &[&str]) -> Duration {
        let mut command = self.command(args);
        if matches!(args.first(), Some(&"run" | &"restore")) {
            command.stderr(std::process::Stdio::null());
        }
        let started = Instant::now();
        let output = command.output().expect("running runc");
        let took = started.elapsed();
        assert!(
            output.status.success(),
            "runc {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        took
    }

    fn dir(&self, name: &str) -> String {
        self.scratch.join(name).display().to_string()
    }

    fn round(&self, bundle: &Bundle, n: usize) -> Round {
        let id = format!("raw-{n}");
        let pid_file = self.dir(&format!("{id}.pid"));
        self.timed(&[
            "run",
            "-d",
            "--pid-file",
            &pid_file,
            "--bundle",
            &bundle.path_string(),
            &id,
        ]);
        let first = read_pid(&pid_file);
        let (running, stopped) = (self.dir(&format!("{id}-lr")), self.dir(&format!("{id}-ex")));
        let leave_running = self.timed(&[
            "checkpoint",
            "--leave-running",
            "--image-path",
            &running,
            "--work-path",
            &self.dir(&format!("{id}-lr-work")),
            &id,
        ]);
        let exit = self.timed(&[
            "checkpoint",
            "--image-path",
            &stopped,
            "--work-path",
            &self.dir(&format!("{id}-ex-work")),
            &id,
        ]);
        reap(first);
        let restore = self.timed(&[
            "restore",
            "-d",
            "--image-path",
            &stopped,
            "--work-path",
            &self.dir(&format!("{id}-rs-work")),
            "--pid-file",
            &pid_file,
            "--bundle",
            &bundle.path_string(),
            &id,
        ]);
        let restored = read_pid(&pid_file);
        self.timed(&["kill", &id, "KILL"]);
        reap(restored);
        self.timed(&["delete", "--force", &id]);
        for entry in std::fs::read_dir(&self.scratch).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
        [leave_running, exit, restore]
    }
}

fn read_pid(pid_file: &str) -> u32 {
    std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Waits for a container init re-parented to us (a subreaper) once it is dead.
fn reap(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
    }
}

/// A daemon with its event stream.
struct Wharf {
    daemon: DaemonFixture,
    events: DaemonEvents,
}

impl Wharf {
    async fn start(executor: ExecutorKind) -> Self {
        let daemon = DaemonFixture::start_quiet(executor).await;
        let events = daemon.events().await;
        Self { daemon, events }
    }

    async fn round(&mut self, bundle: &Bundle, n: usize) -> Round {
        let id = format!("cp-{n}");
        let mut client = self.daemon.client();
        let create = |checkpoint: &str| CreateContainerRequest {
            id: id.clone(),
            bundle_path: bundle.path_string(),
            checkpoint: checkpoint.into(),
            ..Default::default()
        };
        let dump = |name: &str, exit: bool| CreateCheckpointRequest {
            id: id.clone(),
            checkpoint: Some(Checkpoint {
                name: name.into(),
                exit,
                ..Checkpoint::default()
            }),
        };
        let first = client
            .create_container(create(""))
            .await
            .expect("CreateContainer")
            .into_inner()
            .pid;
        let started = Instant::now();
        client
            .create_checkpoint(dump("running", false))
            .await
            .expect("CreateCheckpoint leave-running");
        let leave_running = started.elapsed();
        let started = Instant::now();
        client
            .create_checkpoint(dump("stopped", true))
            .await
            .expect("CreateCheckpoint exit");
        let exit = started.elapsed();
        self.events.exit_status(&id, first).await;
        let started = Instant::now();
        let restored = client
            .create_container(create("stopped"))
            .await
            .expect("CreateContainer from a checkpoint")
            .into_inner()
            .pid;
        let restore = started.elapsed();
        for name in ["running", "stopped"] {
            client
                .delete_checkpoint(DeleteCheckpointRequest {
                    id: id.clone(),
                    name: name.into(),
                })
                .await
                .expect("DeleteCheckpoint");
        }
        client
            .signal(SignalRequest {
                id: id.clone(),
                pid: 0,
                signal: 9,
            })
            .await
            .expect("Signal");
        self.events.exit_status(&id, restored).await;
        [leave_running, exit, restore]
    }
}

enum Variant {
    Raw(RawRunc),
    Wharf(Box<Wharf>),
}

impl Variant {
    async fn round(&mut self, bundle: &Bundle, n: usize) -> Round {
        match self {
            Variant::Raw(raw) => raw.round(bundle, n),
            Variant::Wharf(wharf) => wharf.round(bundle, n).await,
        }
    }
}

fn criu_works() -> bool {
    std::process::Command::new(DEFAULT_CRIU_PATH)
        .arg("--version")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("Version: 4."))
}

#[tokio::main]
async fn main() {
    let [iterations, warmup] = numeric_flags("checkpoint", [("--iterations", 10), ("--warmup", 2)])
        .map(|n| usize::try_from(n).unwrap());
    if let Some(reason) = missing_prerequisite() {
        eprintln!("bench checkpoint: {reason}");
        std::process::exit(1);
    }
    if !criu_works() {
        eprintln!("bench checkpoint: needs CRIU 4 at {DEFAULT_CRIU_PATH} (cargo xtask setup)");
        std::process::exit(1);
    }
    // Raw runc's inits (started and restored) are re-parented to us; each round reaps them.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .expect("becoming a subreaper");
    let work = tempfile::Builder::new()
        .prefix("wharf-bench-checkpoint-")
        .tempdir()
        .unwrap();
    let raw = RawRunc {
        root: work.path().join("runc"),
        scratch: work.path().join("scratch"),
    };
    std::fs::create_dir_all(&raw.root).unwrap();
    std::fs::create_dir_all(&raw.scratch).unwrap();
    let names = [
        "runc checkpoint/restore [baseline]",
        "wharfd, runc executor",
        "wharfd, libcontainer executor",
    ];
    let mut variants = vec![
        Variant::Raw(raw),
        Variant::Wharf(Box::new(Wharf::start(ExecutorKind::Runc).await)),
        Variant::Wharf(Box::new(Wharf::start(ExecutorKind::Libcontainer).await)),
    ];
    let bundles: Vec<Bundle> = (0..variants.len())
        .map(|n| Bundle::new(&format!("bench-cp-{n}"), &LOOP))
        .collect();
    eprintln!("bench checkpoint: {iterations} rounds each after {warmup} warm-up, in turn");
    let mut samples: Vec<[Vec<Duration>; 3]> =
        (0..variants.len()).map(|_| Default::default()).collect();
    for i in 0..warmup + iterations {
        for k in 0..variants.len() {
            let n = (i + k) % variants.len();
            let round = variants[n].round(&bundles[n], i).await;
            if i >= warmup {
                for (op, took) in round.into_iter().enumerate() {
                    samples[n][op].push(took);
                }
            }
        }
    }
    for variant in variants {
        if let Variant::Wharf(mut wharf) = variant {
            wharf.daemon.assert_nothing_left().await;
            wharf.daemon.stop().await;
        }
    }

    let summaries: Vec<[Summary; 3]> = samples
        .iter()
        .map(|ops| [0, 1, 2].map(|op| Summary::of(&ops[op])))
        .collect();
    let mut report = serde_json::Map::new();
    for (op, operation) in OPERATIONS.iter().enumerate() {
        let baseline = summaries[0][op].median;
        println!("\n{operation} ({iterations} runs each)            median        p95   ratio");
        let mut rows = serde_json::Map::new();
        for (name, summary) in names.iter().zip(&summaries) {
            let ratio = summary[op].median.as_secs_f64() / baseline.as_secs_f64();
            println!(
                "  {name:<36} {:>7.1} ms {:>7.1} ms   {ratio:.2}",
                millis(summary[op].median),
                millis(summary[op].p95),
            );
            let mut value = summary[op].to_json();
            value["ratio_to_runc"] = serde_json::json!(ratio);
            rows.insert((*name).to_owned(), value);
        }
        report.insert((*operation).to_owned(), serde_json::Value::Object(rows));
    }
    println!("  target: <= 1.05 (ratio of medians to raw runc)");
    let out = target_dir().join("bench/checkpoint.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&serde_json::json!({
            "iterations": iterations,
            "operations": report,
        }))
        .unwrap(),
    )
    .unwrap();
    println!("\nJSON: {}", out.display());
}
