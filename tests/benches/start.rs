//! `cargo xtask bench start`: container start through `wharfd`, with each executor, against
//! raw `runc run -d` (and `crun run -d`, the floor of a fork-free runtime, when crun runs
//! here), side by side in one run.
//!
//! 1. Detached start latency: `CreateContainer` returns with the init running (shim spawn,
//!    create, start) against `runc run -d` of the same kind of bundle, the variants in turn
//!    (rotating which goes first); median, p95 and the ratio of medians to `runc run -d`.
//! 2. Throughput, the shape of containerd's 2015 `hack/benchmark.go`: `--count` (1000)
//!    `CreateContainer` calls from 100 concurrent clients on one connection, against the
//!    same number of raw `runc run -d` with the same parallelism; containers per second.
//!
//! Prints a table and writes the figures as JSON to `target/bench/start.json`.
//! Options: `--iterations N` (latency, default 40), `--count N` (default 1000),
//! `--clients N` (default 100).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tonic::transport::Channel;
use wharf_api::{ApiClient, CreateContainerRequest, EventsRequest, SignalRequest};
use wharf_tests::ExecutorKind;
use wharf_tests::bench::{Summary, millis, numeric_flags};
use wharf_tests::bundle::Bundle;
use wharf_tests::daemon::DaemonFixture;
use wharf_tests::system::{missing_prerequisite, target_dir};

struct Args {
    iterations: usize,
    count: usize,
    clients: usize,
}

fn parse_args() -> Args {
    let [iterations, count, clients] = numeric_flags(
        "start",
        [("--iterations", 40), ("--count", 1000), ("--clients", 100)],
    )
    .map(|n| usize::try_from(n).expect("a count that fits in usize"));
    Args {
        iterations,
        count,
        clients,
    }
}

fn runc(root: &Path, args: &[&str]) -> tokio::process::Command {
    runtime("runc", root, args)
}

fn runtime(binary: &str, root: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

async fn checked(mut command: tokio::process::Command) {
    let status = command.status().await.expect("running runc");
    assert!(status.success(), "{command:?} failed with {status}");
}

/// `<binary> run -d` of `bundle` as `id`; returns how long it took.
async fn raw_run(binary: &str, root: &Path, bundle: &Bundle, id: &str) -> Duration {
    let pid_file = root.join(format!("{id}.pid")).display().to_string();
    let started = Instant::now();
    checked(runtime(
        binary,
        root,
        &[
            "run",
            "-d",
            "--pid-file",
            &pid_file,
            "--bundle",
            &bundle.path_string(),
            id,
        ],
    ))
    .await;
    started.elapsed()
}

/// Deletes a raw container and reaps its init (re-parented to us, a subreaper).
async fn raw_delete(binary: &str, root: &Path, id: &str) {
    let pid_file = root.join(format!("{id}.pid"));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    checked(runtime(binary, root, &["delete", "--force", id])).await;
    std::fs::remove_file(&pid_file).unwrap();
    tokio::task::spawn_blocking(move || {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
        }
    })
    .await
    .unwrap();
}

/// `CreateContainer` through wharfd; returns (pid, how long it took).
async fn create(client: &mut ApiClient<Channel>, bundle: &Bundle, id: &str) -> (u32, Duration) {
    let started = Instant::now();
    let pid = client
        .create_container(CreateContainerRequest {
            id: id.into(),
            bundle_path: bundle.path_string(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("CreateContainer {id}: {status}"))
        .into_inner()
        .pid;
    (pid, started.elapsed())
}

/// Kills the containers and waits for every exit event.
async fn kill_all(client: &mut ApiClient<Channel>, containers: &[(String, u32)]) {
    let mut events = client
        .events(EventsRequest {})
        .await
        .expect("Events")
        .into_inner();
    for (id, _) in containers {
        client
            .signal(SignalRequest {
                id: id.clone(),
                pid: 0,
                signal: 9,
            })
            .await
            .unwrap_or_else(|status| panic!("Signal {id}: {status}"));
    }
    let mut left: std::collections::HashSet<u32> = containers.iter().map(|(_, pid)| *pid).collect();
    while !left.is_empty() {
        let event = tokio::time::timeout(Duration::from_secs(300), events.message())
            .await
            .expect("exits within 5 minutes")
            .expect("events stream")
            .expect("an event");
        if event.r#type == "exit" {
            left.remove(&event.pid);
        }
    }
}

/// What a latency run starts containers with.
enum Starter<'a> {
    /// `<binary> run -d`, state in the root.
    Raw { binary: &'static str, root: PathBuf },
    /// `CreateContainer` through a daemon.
    Wharf(&'a DaemonFixture),
}

impl Starter<'_> {
    /// Starts one container as `id`, stops and removes it; returns the start's duration.
    async fn once(&self, bundle: &Bundle, id: &str) -> Duration {
        match self {
            Starter::Raw { binary, root } => {
                let took = raw_run(binary, root, bundle, id).await;
                raw_delete(binary, root, id).await;
                took
            }
            Starter::Wharf(daemon) => {
                let mut client = daemon.client();
                let (pid, took) = create(&mut client, bundle, id).await;
                kill_all(&mut client, &[(id.to_owned(), pid)]).await;
                took
            }
        }
    }
}

/// Each starter in turn, `iterations` times after 3 warm-up rounds, rotating which goes
/// first so that drift hits all alike; the summaries in the starters' order.
async fn latency(args: &Args, starters: &[Starter<'_>]) -> Vec<Summary> {
    let bundles: Vec<Bundle> = (0..starters.len())
        .map(|n| Bundle::new(&format!("bench-lat-{n}"), &["sleep", "1000"]))
        .collect();
    let mut samples = vec![Vec::new(); starters.len()];
    let warmup = 3;
    for i in 0..warmup + args.iterations {
        for k in 0..starters.len() {
            let n = (i + k) % starters.len();
            let took = starters[n].once(&bundles[n], &format!("lat-{n}-{i}")).await;
            if i >= warmup {
                samples[n].push(took);
            }
        }
    }
    samples.iter().map(|s| Summary::of(s)).collect()
}

fn crun_runs_here() -> bool {
    std::process::Command::new("crun")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Runs `count` starts, at most `clients` at a time; returns wall time.
async fn throughput_raw(args: &Args, runc_root: &Path, bundles: &[Bundle]) -> Duration {
    let limit = Arc::new(Semaphore::new(args.clients));
    let root = Arc::new(runc_root.to_path_buf());
    let started = Instant::now();
    let tasks: Vec<_> = bundles
        .iter()
        .enumerate()
        .map(|(n, bundle)| {
            let (limit, root, path) = (limit.clone(), root.clone(), bundle.path_string());
            tokio::spawn(async move {
                let _permit = limit.acquire().await.expect("semaphore");
                let id = format!("tp-raw-{n}");
                let pid_file = root.join(format!("{id}.pid")).display().to_string();
                checked(runc(
                    &root,
                    &["run", "-d", "--pid-file", &pid_file, "--bundle", &path, &id],
                ))
                .await;
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("start task");
    }
    let took = started.elapsed();
    let deletes: Vec<_> = (0..bundles.len())
        .map(|n| {
            let (limit, root) = (limit.clone(), root.clone());
            tokio::spawn(async move {
                let _permit = limit.acquire().await.expect("semaphore");
                raw_delete("runc", &root, &format!("tp-raw-{n}")).await;
            })
        })
        .collect();
    for task in deletes {
        task.await.expect("delete task");
    }
    took
}

async fn throughput_wharf(args: &Args, daemon: &DaemonFixture, bundles: &[Bundle]) -> Duration {
    let limit = Arc::new(Semaphore::new(args.clients));
    let started = Instant::now();
    let tasks: Vec<_> = bundles
        .iter()
        .enumerate()
        .map(|(n, bundle)| {
            let (limit, mut client) = (limit.clone(), daemon.client());
            let request = CreateContainerRequest {
                id: format!("tp-wharf-{n}"),
                bundle_path: bundle.path_string(),
                ..Default::default()
            };
            tokio::spawn(async move {
                let _permit = limit.acquire().await.expect("semaphore");
                let id = request.id.clone();
                let pid = client
                    .create_container(request)
                    .await
                    .unwrap_or_else(|status| panic!("CreateContainer {id}: {status}"))
                    .into_inner()
                    .pid;
                (id, pid)
            })
        })
        .collect();
    let mut containers = Vec::new();
    for task in tasks {
        containers.push(task.await.expect("create task"));
    }
    let took = started.elapsed();
    kill_all(&mut daemon.client(), &containers).await;
    took
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    if let Some(reason) = missing_prerequisite() {
        eprintln!("bench start: {reason}");
        std::process::exit(1);
    }
    // Containers started by raw runc are re-parented to us; raw_delete reaps each one.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .expect("becoming a subreaper");
    let work = tempfile::Builder::new()
        .prefix("wharf-bench-start-")
        .tempdir()
        .unwrap();
    let runc_root: PathBuf = work.path().join("runc");
    std::fs::create_dir_all(&runc_root).unwrap();
    let mut with_runc = DaemonFixture::start_quiet(ExecutorKind::Runc).await;
    let mut with_libcontainer = DaemonFixture::start_quiet(ExecutorKind::Libcontainer).await;
    let crun_root = work.path().join("crun");
    std::fs::create_dir_all(&crun_root).unwrap();
    let mut names = vec![
        "runc run -d   [baseline]",
        "wharfd, runc executor",
        "wharfd, libcontainer executor",
    ];
    let mut starters = vec![
        Starter::Raw {
            binary: "runc",
            root: runc_root.clone(),
        },
        Starter::Wharf(&with_runc),
        Starter::Wharf(&with_libcontainer),
    ];
    if crun_runs_here() {
        names.push("crun run -d   [floor]");
        starters.push(Starter::Raw {
            binary: "crun",
            root: crun_root,
        });
    }
    eprintln!(
        "bench start: latency, {} runs each after 3 warm-up, in turn",
        args.iterations
    );
    let summaries = latency(&args, &starters).await;
    drop(starters);

    eprintln!(
        "bench start: throughput, {} starts from {} concurrent clients, each variant",
        args.count, args.clients
    );
    let bundles = |prefix: &str| -> Vec<Bundle> {
        (0..args.count)
            .map(|n| Bundle::new(&format!("{prefix}-{n}"), &["sleep", "1000"]))
            .collect()
    };
    let raw_wall = throughput_raw(&args, &runc_root, &bundles("tp-raw")).await;
    let runc_wall = throughput_wharf(&args, &with_runc, &bundles("tp-wharf")).await;
    let libcontainer_wall = throughput_wharf(&args, &with_libcontainer, &bundles("tp-wharf")).await;
    for daemon in [&mut with_runc, &mut with_libcontainer] {
        daemon.assert_nothing_left().await;
        daemon.stop().await;
    }

    let baseline = millis(summaries[0].median);
    let names = [
        "runc run -d   [baseline]",
        "wharfd, runc executor",
        "wharfd, libcontainer executor",
        "crun run -d   [floor]",
    ];
    println!(
        "\nstart latency ({} runs each)               median        p95        min   ratio",
        args.iterations
    );
    for (name, summary) in names.iter().zip(&summaries) {
        println!(
            "  {name:<32} {:>9.1} ms {:>7.1} ms {:>7.1} ms   {:.2}",
            millis(summary.median),
            millis(summary.p95),
            millis(summary.min),
            millis(summary.median) / baseline
        );
    }
    println!("  targets: runc executor <= 1.10, libcontainer executor <= 0.50 (ratio of medians)");
    let rate = |wall: Duration| args.count as f64 / wall.as_secs_f64();
    println!(
        "\nthroughput: {} starts, {} concurrent clients",
        args.count, args.clients
    );
    for (name, wall) in [
        ("runc run -d   [baseline]", raw_wall),
        ("wharfd, runc executor", runc_wall),
        ("wharfd, libcontainer executor", libcontainer_wall),
    ] {
        println!(
            "  {name:<32} {:>7.1} containers/s ({:.1} s)   {:.2}",
            rate(wall),
            wall.as_secs_f64(),
            rate(wall) / rate(raw_wall)
        );
    }

    let latency_json: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .zip(&summaries)
        .map(|(name, summary)| {
            let mut value = summary.to_json();
            value["ratio_to_runc_run_d"] = serde_json::json!(millis(summary.median) / baseline);
            (name.split_whitespace().collect::<Vec<_>>().join(" "), value)
        })
        .collect();
    let throughput = |wall: Duration| serde_json::json!({ "seconds": wall.as_secs_f64(), "containers_per_second": rate(wall) });
    let report = serde_json::json!({
        "latency": { "iterations": args.iterations, "medians_ms": latency_json },
        "throughput": {
            "count": args.count,
            "clients": args.clients,
            "runc_run_d": throughput(raw_wall),
            "wharfd_runc_executor": throughput(runc_wall),
            "wharfd_libcontainer_executor": throughput(libcontainer_wall),
        },
    });
    let out = target_dir().join("bench/start.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("\nJSON: {}", out.display());
}
