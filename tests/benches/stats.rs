//! `cargo xtask bench stats`: what `GetStats` costs with many containers, against what the
//! same number of `runc events --stats` calls cost, in one run.
//!
//! 1. `--containers` (100) idle `sleep` containers through `wharfd`; the CPU time of the
//!    daemon and every shim is measured for `--seconds` (30) without streams (idle), then
//!    with one `GetStats` stream per container (one sample per second each).
//! 2. Baseline: `runc events --stats` on one raw runc container, `--calls` (100) times; the
//!    CPU time of those processes per call.
//!
//! Prints a table and writes the figures as JSON to `target/bench/stats.json`.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::time::{Duration, Instant};

use tokio_stream::StreamExt;
use wharf_api::{CreateContainerRequest, SignalRequest, StatsRequest};
use wharf_tests::ExecutorKind;
use wharf_tests::bench::numeric_flags;
use wharf_tests::bundle::Bundle;
use wharf_tests::daemon::DaemonFixture;
use wharf_tests::system::{missing_prerequisite, target_dir};

struct Args {
    containers: usize,
    seconds: u64,
    calls: usize,
}

fn parse_args() -> Args {
    let [containers, seconds, calls] = numeric_flags(
        "stats",
        [("--containers", 100), ("--seconds", 30), ("--calls", 100)],
    );
    let count = |n: u64| usize::try_from(n).expect("a count that fits in usize");
    Args {
        containers: count(containers),
        seconds,
        calls: count(calls),
    }
}

/// Clock ticks in `/proc/<pid>/stat` fields after the command name, at `indices`.
fn ticks(pid: &str, indices: [usize; 2]) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = indices
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    let hz = rustix::param::clock_ticks_per_second();
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// CPU time (user + system: `utime`, `stime`) of `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    ticks(&pid.to_string(), [11, 12])
}

fn cpu_of(pids: &[u32]) -> Duration {
    pids.iter().map(|&pid| cpu_time(pid)).sum()
}

/// CPU time of the children this process has waited for (`cutime`, `cstime`).
fn children_cpu() -> Duration {
    ticks("self", [13, 14])
}

/// The collector alone, in this process, on the first container: microseconds per
/// `Sampler::sample()` (cgroup and interfaces), and per cgroup read alone.
async fn in_process_sample_cost(
    client: &mut wharf_api::ApiClient<tonic::transport::Channel>,
) -> (f64, f64) {
    let state = client
        .state(wharf_api::StateRequest {})
        .await
        .expect("State")
        .into_inner();
    let init = state
        .containers
        .iter()
        .find_map(|c| c.processes.first().map(|p| p.pid))
        .expect("a container");
    let cgroup = wharf_stats_collector::cgroup_of(init).expect("the init's cgroup");
    let runs = 1000;
    let per_run = |init: Option<u32>| {
        let sampler = wharf_stats_collector::Sampler::new(&cgroup, init).expect("a sampler");
        let started = Instant::now();
        for _ in 0..runs {
            sampler.sample().expect("a sample");
        }
        started.elapsed().as_secs_f64() * 1e6 / runs as f64
    };
    (per_run(Some(init)), per_run(None))
}

/// `runc events --stats` on a raw container, `calls` times; CPU time per call.
fn runc_events_per_call(calls: usize) -> Duration {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("runc");
    let bundle = Bundle::new("bench-stats-raw", &["sleep", "1000"]);
    let runc = |args: &[&str]| {
        let status = std::process::Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "runc {args:?} failed");
    };
    runc(&[
        "run",
        "-d",
        "--bundle",
        &bundle.path_string(),
        "bench-stats-raw",
    ]);
    let before = children_cpu();
    for _ in 0..calls {
        runc(&["events", "--stats", "bench-stats-raw"]);
    }
    let per_call = (children_cpu() - before) / calls as u32;
    runc(&["delete", "--force", "bench-stats-raw"]);
    per_call
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    if let Some(reason) = missing_prerequisite() {
        eprintln!("bench stats: {reason}");
        std::process::exit(1);
    }
    let mut daemon = DaemonFixture::start_quiet(ExecutorKind::Libcontainer).await;
    let mut client = daemon.client();
    eprintln!("bench stats: starting {} containers", args.containers);
    let bundles: Vec<Bundle> = (0..args.containers)
        .map(|n| Bundle::new(&format!("bench-stats-{n}"), &["sleep", "1000"]))
        .collect();
    for (n, bundle) in bundles.iter().enumerate() {
        client
            .create_container(CreateContainerRequest {
                id: format!("bench-stats-{n}"),
                bundle_path: bundle.path_string(),
                ..Default::default()
            })
            .await
            .expect("CreateContainer");
    }
    let (sample_us, cgroup_us) = in_process_sample_cost(&mut client).await;
    let mut processes = vec![daemon.pid()];
    processes.extend(daemon.shim_pids());
    let window = Duration::from_secs(args.seconds);

    eprintln!("bench stats: {} s without streams", args.seconds);
    let before = cpu_of(&processes);
    tokio::time::sleep(window).await;
    let idle = cpu_of(&processes) - before;

    eprintln!(
        "bench stats: {} s with one GetStats stream per container",
        args.seconds
    );
    let samples = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut readers = Vec::new();
    for n in 0..args.containers {
        let mut stream = client
            .get_stats(StatsRequest {
                id: format!("bench-stats-{n}"),
            })
            .await
            .expect("GetStats")
            .into_inner();
        let samples = samples.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(_)) = stream.next().await {
                samples.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    // The first samples come at once; measure whole seconds after them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, counted, started) = (
        cpu_of(&processes),
        samples.load(std::sync::atomic::Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(window).await;
    let streaming = cpu_of(&processes) - before;
    let taken = samples.load(std::sync::atomic::Ordering::Relaxed) - counted;
    let elapsed = started.elapsed();
    for reader in &readers {
        reader.abort();
    }
    for n in 0..args.containers {
        client
            .signal(SignalRequest {
                id: format!("bench-stats-{n}"),
                pid: 0,
                signal: 9,
            })
            .await
            .expect("Signal");
    }
    daemon.assert_nothing_left().await;
    daemon.stop().await;

    eprintln!("bench stats: {} runc events --stats calls", args.calls);
    let runc_call = runc_events_per_call(args.calls);

    let per_second = |cpu: Duration, over: Duration| cpu.as_secs_f64() / over.as_secs_f64();
    let idle_share = per_second(idle, window);
    let streaming_share = per_second(streaming, elapsed);
    let sampling_share = (streaming_share - idle_share).max(0.0);
    let per_sample_us = if taken == 0 {
        0.0
    } else {
        (streaming.as_secs_f64() - idle_share * elapsed.as_secs_f64()).max(0.0) * 1e6 / taken as f64
    };
    let runc_share = runc_call.as_secs_f64() * args.containers as f64;
    println!(
        "\nstats of {} idle containers, one stream each, {} s",
        args.containers, args.seconds
    );
    println!(
        "  wharfd + shims, no streams        {:>7.2} % of a core",
        idle_share * 100.0
    );
    println!(
        "  wharfd + shims, streaming         {:>7.2} % of a core ({taken} samples)",
        streaming_share * 100.0
    );
    println!(
        "  sampling cost                     {:>7.2} % of a core, {per_sample_us:.0} us per sample (target <= 1 %, <= 100 us)",
        sampling_share * 100.0
    );
    println!(
        "  in-process Sampler::sample()      {sample_us:>7.0} us per sample ({cgroup_us:.0} us of it the cgroup)"
    );
    println!(
        "  runc events --stats [baseline]    {:>7.2} ms CPU per call; {} calls/s = {:.1} % of a core",
        runc_call.as_secs_f64() * 1e3,
        args.containers,
        runc_share * 100.0
    );
    let report = serde_json::json!({
        "containers": args.containers,
        "seconds": args.seconds,
        "samples": taken,
        "idle_core_share": idle_share,
        "streaming_core_share": streaming_share,
        "sampling_core_share": sampling_share,
        "sampling_us_per_sample": per_sample_us,
        "in_process_sample_us": sample_us,
        "in_process_cgroup_us": cgroup_us,
        "runc_events_ms_per_call": runc_call.as_secs_f64() * 1e3,
        "runc_events_core_share_same_rate": runc_share,
    });
    let out = target_dir().join("bench/stats.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("\nJSON: {}", out.display());
}
