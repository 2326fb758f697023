//! `cargo xtask bench scale`: wharf with many live containers, and containerd 1.6 with the
//! same containers side by side when `cargo xtask setup --peers` installed it.
//!
//! For each executor (libcontainer, then runc):
//! 1. an idle `wharfd`: its memory;
//! 2. `--at` (100) `sleep` containers: the memory of every shim and of the daemon, the
//!    latency of `State`, of a `CreateContainer`, and of an exit reaching an `Events`
//!    stream (a container killed, its `exit` awaited);
//! 3. the same at `--containers` (1000), plus the daemon's open files and limit;
//! 4. everything killed, every exit awaited, nothing left.
//!
//! Then containerd (`containerd` + `containerd-shim-runc-v2`, its own root and socket)
//! runs `--at` containers of the same rootfs through `ctr run -d --rootfs`; the memory of
//! the daemon and every shim is read the same way.
//!
//! Memory is read from `/proc/<pid>/smaps_rollup`: RSS (what `ps` shows; it counts the
//! pages of the binary every shim shares), PSS (shared pages divided among their sharers:
//! what each really costs) and USS (pages no other process has).
//!
//! Prints a table and writes the figures as JSON to `target/bench/scale.json`.
//! Options: `--containers N` (1000), `--at N` (100), `--calls N` (`State` calls per
//! size, 30), `--parallel N` (creates in flight, 8), `--peers 0|1` (1: run containerd if
//! installed).
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
use wharf_api::{CreateContainerRequest, SignalRequest, StateRequest};
use wharf_tests::ExecutorKind;
use wharf_tests::bench::{Summary, millis, numeric_flags};
use wharf_tests::bundle::{Bundle, rootfs};
use wharf_tests::daemon::{DaemonEvents, DaemonFixture};
use wharf_tests::system::{fd_count, missing_prerequisite, target_dir};

struct Args {
    containers: usize,
    at: usize,
    calls: usize,
    parallel: usize,
    peers: bool,
}

fn parse_args() -> Args {
    let [containers, at, calls, parallel, peers] = numeric_flags(
        "scale",
        [
            ("--containers", 1000),
            ("--at", 100),
            ("--calls", 30),
            ("--parallel", 8),
            ("--peers", 1),
        ],
    );
    let count = |n: u64| usize::try_from(n).expect("a count that fits in usize");
    let args = Args {
        containers: count(containers),
        at: count(at),
        calls: count(calls),
        parallel: count(parallel).max(1),
        peers: peers != 0,
    };
    assert!(
        args.at >= 10 && args.containers >= args.at,
        "bench scale: wants 10 <= --at <= --containers"
    );
    args
}

/// A process's memory, in KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    rss: u64,
    pss: u64,
    uss: u64,
}

impl Memory {
    fn of(pid: u32) -> Self {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let field = |name: &str| -> u64 {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Self {
            rss: field("Rss"),
            pss: field("Pss"),
            uss: field("Private_Clean") + field("Private_Dirty"),
        }
    }

    fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "rss_mib": mib(self.rss),
            "pss_mib": mib(self.pss),
            "uss_mib": mib(self.uss),
        })
    }
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 100.0).round() / 100.0
}

/// The median of each field over `pids` (the shims).
fn median_memory(pids: &[u32]) -> Memory {
    let all: Vec<Memory> = pids.iter().map(|&pid| Memory::of(pid)).collect();
    let median = |pick: fn(&Memory) -> u64| {
        let mut values: Vec<u64> = all.iter().map(pick).collect();
        values.sort_unstable();
        values.get(values.len() / 2).copied().unwrap_or(0)
    };
    Memory {
        rss: median(|m| m.rss),
        pss: median(|m| m.pss),
        uss: median(|m| m.uss),
    }
}

/// What one size of the wharf run measured.
struct AtSize {
    containers: usize,
    daemon: Memory,
    shim_median: Memory,
    state: Summary,
    create: Summary,
    exit_event: Summary,
    daemon_fds: usize,
}

impl AtSize {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "containers": self.containers,
            "daemon": self.daemon.to_json(),
            "shim_median": self.shim_median.to_json(),
            "state": self.state.to_json(),
            "create": self.create.to_json(),
            "exit_event": self.exit_event.to_json(),
            "daemon_fds": self.daemon_fds,
        })
    }
}

/// One executor's run through wharfd.
struct WharfRun {
    executor: ExecutorKind,
    idle: Memory,
    sizes: Vec<AtSize>,
    open_files_limit: String,
}

/// Starts containers `range` (ids `scale-<n>`), `parallel` at a time.
async fn start_many(
    daemon: &DaemonFixture,
    bundles: &Arc<Vec<Bundle>>,
    range: std::ops::Range<usize>,
    parallel: usize,
) {
    let gate = Arc::new(Semaphore::new(parallel));
    let mut starts = Vec::new();
    for n in range {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let mut client = daemon.client();
        let bundles = bundles.clone();
        starts.push(tokio::spawn(async move {
            let request = CreateContainerRequest {
                id: format!("scale-{n}"),
                bundle_path: bundles[n].path_string(),
                ..Default::default()
            };
            client
                .create_container(request)
                .await
                .unwrap_or_else(|status| panic!("CreateContainer scale-{n}: {status}"));
            drop(permit);
        }));
    }
    for start in starts {
        start.await.unwrap();
    }
}

/// `calls` `State` calls, each timed; checks every one lists `expected` containers.
async fn time_state(daemon: &DaemonFixture, calls: usize, expected: usize) -> Summary {
    let mut client = daemon.client();
    let mut samples = Vec::new();
    for _ in 0..calls {
        let started = Instant::now();
        let state = client
            .state(StateRequest {})
            .await
            .expect("State")
            .into_inner();
        samples.push(started.elapsed());
        assert_eq!(
            state.containers.len(),
            expected,
            "State lists the containers"
        );
    }
    Summary::of(&samples)
}

/// Kills `ids` one at a time and times each until its `exit` reaches `events`.
async fn time_exits(daemon: &DaemonFixture, events: &mut DaemonEvents, ids: &[String]) -> Summary {
    let mut samples = Vec::new();
    for id in ids {
        let started = Instant::now();
        daemon.signal(id, 0, 9).await;
        events
            .until(|event| event.r#type == "exit" && event.id == *id)
            .await;
        samples.push(started.elapsed());
    }
    Summary::of(&samples)
}

/// Times `CreateContainer` of `ids` (which `bundles` hold at `indices`), one at a time.
async fn time_creates(
    daemon: &DaemonFixture,
    bundles: &[Bundle],
    indices: std::ops::Range<usize>,
) -> Summary {
    let mut client = daemon.client();
    let mut samples = Vec::new();
    for n in indices {
        let started = Instant::now();
        client
            .create_container(CreateContainerRequest {
                id: format!("scale-{n}"),
                bundle_path: bundles[n].path_string(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("CreateContainer scale-{n}: {status}"));
        samples.push(started.elapsed());
    }
    Summary::of(&samples)
}

async fn wharf_run(executor: ExecutorKind, args: &Args) -> WharfRun {
    const PROBES: usize = 10;
    let mut daemon = DaemonFixture::start_quiet(executor).await;
    // Let the daemon settle after its start before reading its idle memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = Memory::of(daemon.pid());
    // Probes: containers killed to time exits and started again to time creates, beyond
    // the measured population.
    let total = args.containers + 2 * PROBES;
    let bundles: Arc<Vec<Bundle>> = Arc::new(
        (0..total)
            .map(|n| Bundle::new(&format!("scale-{n}"), &["sleep", "100000"]))
            .collect(),
    );
    let mut events = daemon.events().await;
    let mut sizes = Vec::new();
    let mut live = 0;
    let mut probe = args.containers;
    for size in [args.at, args.containers] {
        eprintln!("bench scale: {}: {size} containers", executor.as_str());
        let started = Instant::now();
        start_many(&daemon, &bundles, live..size, args.parallel).await;
        eprintln!(
            "bench scale: {}: started {} in {:.1} s",
            executor.as_str(),
            size - live,
            started.elapsed().as_secs_f64()
        );
        live = size;
        // Reads after the starts have settled (no spawn half-done).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let shims = daemon.shim_pids();
        assert_eq!(shims.len(), size, "one shim per container");
        let daemon_memory = Memory::of(daemon.pid());
        let shim_median = median_memory(&shims);
        let state = time_state(&daemon, args.calls, size).await;
        // Probes: PROBES more containers started (timed), then killed (timed), so the
        // population stays at `size`.
        let create = time_creates(&daemon, &bundles, probe..probe + PROBES).await;
        let ids: Vec<String> = (probe..probe + PROBES)
            .map(|n| format!("scale-{n}"))
            .collect();
        let exit_event = time_exits(&daemon, &mut events, &ids).await;
        probe += PROBES;
        sizes.push(AtSize {
            containers: size,
            daemon: daemon_memory,
            shim_median,
            state,
            create,
            exit_event,
            daemon_fds: fd_count(daemon.pid()),
        });
    }
    let open_files_limit = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid()))
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .map(|line| {
            line.split_whitespace()
                .skip(3)
                .take(2)
                .collect::<Vec<_>>()
                .join(":")
        })
        .unwrap_or_default();

    eprintln!("bench scale: {}: killing {live}", executor.as_str());
    let mut client = daemon.client();
    for n in 0..live {
        client
            .signal(SignalRequest {
                id: format!("scale-{n}"),
                pid: 0,
                signal: 9,
            })
            .await
            .expect("Signal");
    }
    let mut pending: std::collections::HashSet<String> =
        (0..live).map(|n| format!("scale-{n}")).collect();
    while !pending.is_empty() {
        let event = events.next().await;
        if event.r#type == "exit" {
            pending.remove(&event.id);
        }
    }
    for n in 0..total {
        daemon.track(&format!("scale-{n}"));
    }
    daemon.assert_nothing_left().await;
    daemon.stop().await;
    WharfRun {
        executor,
        idle,
        sizes,
        open_files_limit,
    }
}

/// containerd 1.6 on a root of its own, for the side-by-side run.
struct Containerd {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Containerd {
    fn installed() -> bool {
        ["containerd", "ctr", "containerd-shim-runc-v2"]
            .iter()
            .all(|binary| which(binary).is_some())
    }

    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("wharf-bench-containerd-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        let config = format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{0}/containerd.sock\"\n\
             [debug]\n  level = \"warn\"\n",
            root.display()
        );
        std::fs::write(root.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(root.join("containerd.log")).unwrap();
        let child = std::process::Command::new("containerd")
            .arg("--config")
            .arg(root.join("config.toml"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let containerd = Self { dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !containerd.ctr(&["version"]).success() {
            assert!(Instant::now() < deadline, "containerd did not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
        containerd
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn ctr(&self, args: &[&str]) -> std::process::ExitStatus {
        std::process::Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("running ctr")
    }

    /// Pids of the shims this containerd started.
    fn shim_pids(&self) -> Vec<u32> {
        let needle = self.socket().display().to_string();
        wharf_tests::daemon::processes_with_cmdline(|cmdline| {
            cmdline.contains("containerd-shim-runc-v2") && cmdline.contains(&needle)
        })
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in self.shim_pids() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

fn which(binary: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(binary))
        .find(|path| path.is_file())
}

struct ContainerdRun {
    idle: Memory,
    daemon: Memory,
    shim_median: Memory,
    containers: usize,
}

fn containerd_run(count: usize, parallel: usize, rootfs: &Path) -> ContainerdRun {
    let containerd = Containerd::start();
    std::thread::sleep(Duration::from_millis(500));
    let idle = Memory::of(containerd.child.id());
    eprintln!("bench scale: containerd: {count} containers");
    let rootfs = rootfs.display().to_string();
    std::thread::scope(|scope| {
        for worker in 0..parallel {
            let (containerd, rootfs) = (&containerd, &rootfs);
            scope.spawn(move || {
                for n in (worker..count).step_by(parallel) {
                    let id = format!("scale-{n}");
                    let status = containerd.ctr(&[
                        "run",
                        "-d",
                        "--rootfs",
                        rootfs,
                        &id,
                        "/bin/sleep",
                        "100000",
                    ]);
                    assert!(status.success(), "ctr run {id}: {status}");
                }
            });
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let shims = containerd.shim_pids();
    assert_eq!(shims.len(), count, "one containerd shim per container");
    let run = ContainerdRun {
        idle,
        daemon: Memory::of(containerd.child.id()),
        shim_median: median_memory(&shims),
        containers: count,
    };
    eprintln!("bench scale: containerd: removing {count}");
    std::thread::scope(|scope| {
        for worker in 0..parallel {
            let containerd = &containerd;
            scope.spawn(move || {
                for n in (worker..count).step_by(parallel) {
                    let id = format!("scale-{n}");
                    containerd.ctr(&["task", "kill", "-s", "9", &id]);
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while !containerd.ctr(&["task", "rm", &id]).success() {
                        assert!(Instant::now() < deadline, "ctr task rm {id}");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    containerd.ctr(&["container", "rm", &id]);
                }
            });
        }
    });
    run
}

fn print_memory(label: &str, memory: Memory) {
    println!(
        "  {label:<40} RSS {:>7.2} MiB   PSS {:>7.2} MiB   USS {:>7.2} MiB",
        mib(memory.rss),
        mib(memory.pss),
        mib(memory.uss)
    );
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    if let Some(reason) = missing_prerequisite() {
        eprintln!("bench scale: {reason}");
        std::process::exit(1);
    }
    let mut runs = Vec::new();
    for executor in [ExecutorKind::Libcontainer, ExecutorKind::Runc] {
        runs.push(wharf_run(executor, &args).await);
    }
    let peer = if !args.peers {
        None
    } else if Containerd::installed() {
        let (at, parallel) = (args.at, args.parallel);
        let rootfs = rootfs();
        Some(
            tokio::task::spawn_blocking(move || containerd_run(at, parallel, rootfs))
                .await
                .unwrap(),
        )
    } else {
        eprintln!(
            "bench scale: containerd is not installed (`cargo xtask setup --peers`): no side-by-side run"
        );
        None
    };

    let mut json_runs = Vec::new();
    for run in &runs {
        println!("\nwharf, {} executor", run.executor.as_str());
        print_memory("wharfd idle", run.idle);
        for size in &run.sizes {
            println!("  at {} containers:", size.containers);
            print_memory("  wharfd", size.daemon);
            print_memory("  wharf-shim (median)", size.shim_median);
            let share =
                (size.daemon.rss.saturating_sub(run.idle.rss)) as f64 / size.containers as f64;
            println!(
                "    wharfd growth per container {:>6.1} KiB; per container in all (shim PSS + wharfd growth) {:.2} MiB",
                share,
                (size.shim_median.pss as f64 + share) / 1024.0
            );
            println!(
                "    State          median {:>8.2} ms  p95 {:>8.2} ms (target < 50 ms)",
                millis(size.state.median),
                millis(size.state.p95)
            );
            println!(
                "    CreateContainer median {:>7.2} ms  p95 {:>8.2} ms",
                millis(size.create.median),
                millis(size.create.p95)
            );
            println!(
                "    kill to exit event median {:>5.2} ms  p95 {:>8.2} ms",
                millis(size.exit_event.median),
                millis(size.exit_event.p95)
            );
            println!("    wharfd open files {}", size.daemon_fds);
        }
        println!("  wharfd open-file limit {}", run.open_files_limit);
        json_runs.push(serde_json::json!({
            "executor": run.executor.as_str(),
            "idle": run.idle.to_json(),
            "sizes": run.sizes.iter().map(AtSize::to_json).collect::<Vec<_>>(),
            "open_files_limit": run.open_files_limit,
        }));
    }
    if let Some(peer) = &peer {
        println!("\ncontainerd 1.6 + containerd-shim-runc-v2 [side by side]");
        print_memory("containerd idle", peer.idle);
        println!("  at {} containers:", peer.containers);
        print_memory("  containerd", peer.daemon);
        print_memory("  containerd-shim-runc-v2 (median)", peer.shim_median);
    }
    println!(
        "\ntargets at {}: shim <= 2 MiB RSS, daemon <= 20 MiB",
        args.at
    );
    let report = serde_json::json!({
        "containers": args.containers,
        "at": args.at,
        "wharf": json_runs,
        "containerd": peer.as_ref().map(|peer| serde_json::json!({
            "containers": peer.containers,
            "idle": peer.idle.to_json(),
            "daemon": peer.daemon.to_json(),
            "shim_median": peer.shim_median.to_json(),
        })),
    });
    let out = target_dir().join("bench/scale.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("\nJSON: {}", out.display());
}
