//! `cargo xtask bench start`: container start through `wharfd` against raw `runc run -d`,
//! side by side in one run.
//!
//! 1. Detached start latency: `CreateContainer` returns with the init running (shim spawn,
//!    `runc create`, `runc start`) against `runc run -d` of the same kind of bundle,
//!    alternating; median, p95 and the ratio of medians.
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
use wharf_tests::bundle::Bundle;
use wharf_tests::daemon::DaemonFixture;
use wharf_tests::system::{missing_prerequisite, target_dir};

struct Args {
    iterations: usize,
    count: usize,
    clients: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        iterations: 40,
        count: 1000,
        clients: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .and_then(|v| v.parse().ok())
                .expect("a number after the flag")
        };
        match arg.as_str() {
            "--iterations" => args.iterations = value(),
            "--count" => args.count = value(),
            "--clients" => args.clients = value(),
            "--bench" => {}
            other => {
                panic!("unknown argument {other}; expected --iterations N, --count N, --clients N")
            }
        }
    }
    args
}

fn runc(root: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("runc");
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

/// `runc run -d` of `bundle` as `id`; returns how long it took.
async fn raw_run(root: &Path, bundle: &Bundle, id: &str) -> Duration {
    let pid_file = root.join(format!("{id}.pid")).display().to_string();
    let started = Instant::now();
    checked(runc(
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
async fn raw_delete(root: &Path, id: &str) {
    let pid_file = root.join(format!("{id}.pid"));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    checked(runc(root, &["delete", "--force", id])).await;
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

#[derive(Clone, Copy, serde::Serialize)]
struct Summary {
    median_ms: f64,
    p95_ms: f64,
    min_ms: f64,
}

fn summarize(samples: &[Duration]) -> Summary {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank =
        |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
    Summary {
        median_ms: ms(rank(0.5)),
        p95_ms: ms(rank(0.95)),
        min_ms: ms(sorted[0]),
    }
}

async fn latency(args: &Args, daemon: &DaemonFixture, runc_root: &Path) -> (Summary, Summary) {
    let mut client = daemon.client();
    let raw_bundle = Bundle::new("bench-lat-raw", &["sleep", "1000"]);
    let wharf_bundle = Bundle::new("bench-lat-wharf", &["sleep", "1000"]);
    let (mut raw, mut wharf) = (Vec::new(), Vec::new());
    let warmup = 3;
    for i in 0..warmup + args.iterations {
        let keep = i >= warmup;
        // Alternate which goes first, so drift hits both alike.
        for variant in [i % 2, 1 - i % 2] {
            if variant == 0 {
                let id = format!("lat-raw-{i}");
                let took = raw_run(runc_root, &raw_bundle, &id).await;
                raw_delete(runc_root, &id).await;
                if keep {
                    raw.push(took);
                }
            } else {
                let id = format!("lat-wharf-{i}");
                let (pid, took) = create(&mut client, &wharf_bundle, &id).await;
                kill_all(&mut client, &[(id, pid)]).await;
                if keep {
                    wharf.push(took);
                }
            }
        }
    }
    (summarize(&raw), summarize(&wharf))
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
                raw_delete(&root, &format!("tp-raw-{n}")).await;
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
    let mut daemon = DaemonFixture::start_quiet(ExecutorKind::Runc).await;

    eprintln!(
        "bench start: latency, {} runs each after 3 warm-up, alternating",
        args.iterations
    );
    let (raw, wharf) = latency(&args, &daemon, &runc_root).await;

    eprintln!(
        "bench start: throughput, {} starts from {} concurrent clients, each variant",
        args.count, args.clients
    );
    let raw_bundles: Vec<Bundle> = (0..args.count)
        .map(|n| Bundle::new(&format!("tp-raw-{n}"), &["sleep", "1000"]))
        .collect();
    let wharf_bundles: Vec<Bundle> = (0..args.count)
        .map(|n| Bundle::new(&format!("tp-wharf-{n}"), &["sleep", "1000"]))
        .collect();
    let raw_wall = throughput_raw(&args, &runc_root, &raw_bundles).await;
    let wharf_wall = throughput_wharf(&args, &daemon, &wharf_bundles).await;
    daemon.assert_nothing_left().await;
    daemon.stop().await;

    let rate = |wall: Duration| args.count as f64 / wall.as_secs_f64();
    let ratio = wharf.median_ms / raw.median_ms;
    println!(
        "\nstart latency ({} runs each)             median        p95        min",
        args.iterations
    );
    println!(
        "  runc run -d   [baseline]          {:>9.1} ms {:>7.1} ms {:>7.1} ms",
        raw.median_ms, raw.p95_ms, raw.min_ms
    );
    println!(
        "  wharfd CreateContainer            {:>9.1} ms {:>7.1} ms {:>7.1} ms",
        wharf.median_ms, wharf.p95_ms, wharf.min_ms
    );
    println!("  ratio of medians: {ratio:.2}   (target <= 1.10)");
    println!(
        "\nthroughput: {} starts, {} concurrent clients",
        args.count, args.clients
    );
    println!(
        "  runc run -d   [baseline]          {:>7.1} containers/s ({:.1} s)",
        rate(raw_wall),
        raw_wall.as_secs_f64()
    );
    println!(
        "  wharfd CreateContainer            {:>7.1} containers/s ({:.1} s)",
        rate(wharf_wall),
        wharf_wall.as_secs_f64()
    );
    println!(
        "  ratio wharfd/raw: {:.2}",
        rate(wharf_wall) / rate(raw_wall)
    );

    let report = serde_json::json!({
        "latency": { "iterations": args.iterations, "runc_run_d": raw, "wharfd_create": wharf, "ratio_of_medians": ratio },
        "throughput": {
            "count": args.count,
            "clients": args.clients,
            "runc_run_d": { "seconds": raw_wall.as_secs_f64(), "containers_per_second": rate(raw_wall) },
            "wharfd_create": { "seconds": wharf_wall.as_secs_f64(), "containers_per_second": rate(wharf_wall) },
        },
    });
    let out = target_dir().join("bench/start.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("\nJSON: {}", out.display());
}
