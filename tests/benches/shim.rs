//! `cargo xtask bench shim`: how long until a container's process runs, side by side in one
//! run, alternating so that machine noise hits every variant alike:
//!
//! - (a) raw `runc run -d` of a `sleep` bundle: the baseline;
//! - (b) spawn `wharf-shim`, connect, `Create`, `Start`: what wharf adds;
//! - (c) `runc create` + `runc start`: the floor of any create/start split, which (b) needs
//!   so that exits and output are watched before the process runs.
//!
//! Reports median, p95 and min per variant, the ratios b/a and b/c, and where (b)'s time
//! goes. Options: `--iterations N` (default 60), `--warmup N` (default 3).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wharf_server::spawn::{ShimOptions, spawn_shim};
use wharf_shim_proto::{CreateRequest, DeleteRequest, StartRequest};
use wharf_tests::ExecutorKind;
use wharf_tests::bench::{Summary, numeric_flags};
use wharf_tests::bundle::Bundle;
use wharf_tests::system::{missing_prerequisite, wharf_binary};

struct Args {
    iterations: usize,
    warmup: usize,
}

fn parse_args() -> Args {
    let [iterations, warmup] = numeric_flags("shim", [("--iterations", 60), ("--warmup", 3)])
        .map(|n| usize::try_from(n).expect("a count that fits in usize"));
    Args { iterations, warmup }
}

/// Reaps one child (a container init re-parented to us) once the runtime deleted it.
fn reap(pid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
    }
}

fn runc(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("runc");
    command
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn checked(command: &mut Command) {
    let status = command.status().expect("running runc");
    assert!(status.success(), "{command:?} failed with {status}");
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// (a) `runc run -d`; returns the time until it returned.
fn raw_run(root: &Path, bundle: &Bundle, id: &str, scratch: &Path) -> Duration {
    let pid_file = scratch.join(format!("{id}.pid"));
    let pid_file_arg = pid_file.display().to_string();
    let bundle_arg = bundle.path_string();
    let started = Instant::now();
    checked(&mut runc(
        root,
        &[
            "run",
            "-d",
            "--pid-file",
            &pid_file_arg,
            "--bundle",
            &bundle_arg,
            id,
        ],
    ));
    let elapsed = started.elapsed();
    let pid = read_pid(&pid_file);
    checked(&mut runc(root, &["delete", "--force", id]));
    reap(pid);
    elapsed
}

/// (c) `runc create` then `runc start`; returns the time of each.
fn raw_create_start(root: &Path, bundle: &Bundle, id: &str, scratch: &Path) -> [Duration; 2] {
    let pid_file = scratch.join(format!("{id}.pid"));
    let pid_file_arg = pid_file.display().to_string();
    let bundle_arg = bundle.path_string();
    let started = Instant::now();
    checked(&mut runc(
        root,
        &[
            "create",
            "--pid-file",
            &pid_file_arg,
            "--bundle",
            &bundle_arg,
            id,
        ],
    ));
    let created = Instant::now();
    checked(&mut runc(root, &["start", id]));
    let done = Instant::now();
    let pid = read_pid(&pid_file);
    checked(&mut runc(root, &["delete", "--force", id]));
    reap(pid);
    [created - started, done - created]
}

/// Where (b)'s time goes.
#[derive(Default)]
struct ShimPhases {
    spawn_and_connect: Vec<Duration>,
    create: Vec<Duration>,
    start: Vec<Duration>,
}

/// (b) spawn the shim, connect, Create, Start.
async fn through_shim(
    options: &ShimOptions,
    state_root: &Path,
    bundle: &Bundle,
    id: &str,
) -> [Duration; 3] {
    let state_dir = state_root.join(id);
    let started = Instant::now();
    std::fs::create_dir(&state_dir).unwrap();
    let mut shim = spawn_shim(options, &state_dir).expect("spawning wharf-shim");
    let mut client = wharf_shim_proto::connect(&shim.socket)
        .await
        .expect("connecting to the shim");
    let connected = Instant::now();
    let pid = client
        .create(CreateRequest {
            id: id.into(),
            bundle: bundle.path_string(),
            ..Default::default()
        })
        .await
        .expect("Create")
        .into_inner()
        .pid;
    let created = Instant::now();
    client.start(StartRequest {}).await.expect("Start");
    let done = Instant::now();
    client.delete(DeleteRequest { pid }).await.expect("Delete");
    // Close our connection before blocking this (only) thread on the shim's exit.
    drop(client);
    shim.child.wait().await.expect("waiting for the shim");
    std::fs::remove_dir_all(&state_dir).unwrap();
    [connected - started, created - connected, done - created]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = parse_args();
    if let Some(reason) = missing_prerequisite() {
        eprintln!("bench shim: {reason}");
        std::process::exit(1);
    }
    // Container inits are re-parented to us when runc exits; we reap them after deleting.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .expect("becoming a subreaper");

    let work = tempfile::Builder::new()
        .prefix("wharf-bench-")
        .tempdir()
        .unwrap();
    let runc_root: PathBuf = work.path().join("runc");
    let state_root = work.path().join("state");
    std::fs::create_dir_all(&state_root).unwrap();
    let bundles = [
        Bundle::new("bench-raw-run", &["sleep", "1000"]),
        Bundle::new("bench-shim", &["sleep", "1000"]),
        Bundle::new("bench-raw-split", &["sleep", "1000"]),
    ];
    let options = ShimOptions {
        binary: wharf_binary("wharf-shim"),
        executor: ExecutorKind::Runc,
        executor_root: runc_root.clone(),
        default_runtime: "runc".into(),
        criu: wharf_server::daemon::config::DEFAULT_CRIU_PATH.into(),
        debug: false,
        json_logs: false,
        open_files: None,
    };

    let mut raw = Vec::new();
    let mut shim = Vec::new();
    let mut split = Vec::new();
    let (mut split_create, mut split_start) = (Vec::new(), Vec::new());
    let mut phases = ShimPhases::default();
    let total = args.warmup + args.iterations;
    eprintln!(
        "bench shim: {} iterations after {} warm-up, variants alternating",
        args.iterations, args.warmup
    );
    for i in 0..total {
        let keep = i >= args.warmup;
        for variant in 0..3 {
            // Rotate the order each round so no variant always runs first.
            match (variant + i) % 3 {
                0 => {
                    let d = raw_run(
                        &runc_root,
                        &bundles[0],
                        &format!("raw-run-{i}"),
                        work.path(),
                    );
                    if keep {
                        raw.push(d);
                    }
                }
                1 => {
                    let [spawn, create, start] =
                        through_shim(&options, &state_root, &bundles[1], &format!("shim-{i}"))
                            .await;
                    if keep {
                        shim.push(spawn + create + start);
                        phases.spawn_and_connect.push(spawn);
                        phases.create.push(create);
                        phases.start.push(start);
                    }
                }
                _ => {
                    let [create, start] = raw_create_start(
                        &runc_root,
                        &bundles[2],
                        &format!("raw-split-{i}"),
                        work.path(),
                    );
                    if keep {
                        split.push(create + start);
                        split_create.push(create);
                        split_start.push(start);
                    }
                }
            }
        }
    }

    let (a, b, c) = (Summary::of(&raw), Summary::of(&shim), Summary::of(&split));
    println!(
        "\nstart latency, {} runs each (runc {})",
        args.iterations,
        runc_version()
    );
    println!(
        "{:<46} {:>10} {:>10} {:>10}",
        "variant", "median", "p95", "min"
    );
    for (name, s) in [
        ("(a) runc run -d                  [baseline]", &a),
        ("(b) wharf-shim spawn + Create + Start", &b),
        ("(c) runc create + runc start     [floor]", &c),
    ] {
        println!(
            "{name:<46} {:>10} {:>10} {:>10}",
            ms(s.median),
            ms(s.p95),
            ms(s.min)
        );
    }
    let ratio = |x: Duration, y: Duration| x.as_secs_f64() / y.as_secs_f64();
    println!(
        "\nratio b/a (medians): {:.2}   (target <= 1.10)",
        ratio(b.median, a.median)
    );
    println!(
        "ratio b/c (medians): {:.2}   (wharf's overhead over the create/start floor)",
        ratio(b.median, c.median)
    );
    println!("\nwhere the time goes (medians)            (b) wharf     (c) bare runc");
    let phase = |samples: &[Duration]| ms(Summary::of(samples).median);
    println!(
        "  {:<38} {:>10} {:>16}",
        "spawn wharf-shim + connect",
        phase(&phases.spawn_and_connect),
        "-"
    );
    println!(
        "  {:<38} {:>10} {:>16}",
        "create",
        phase(&phases.create),
        phase(&split_create)
    );
    println!(
        "  {:<38} {:>10} {:>16}",
        "start",
        phase(&phases.start),
        phase(&split_start)
    );
}

fn runc_version() -> String {
    Command::new("runc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_default()
}
