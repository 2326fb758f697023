//! Hostile input against a real `wharfd` and a real `wharf-shim`: at least 10,000 random
//! requests across every RPC of `types.API`, `wharf.v1.Events`, `containerd.shim.v1.Shim` and
//! `wharf.shim.v1.Control`, plus raw garbage (random bytes, random HTTP/2 frames, random HPACK
//! blocks, random gRPC messages) on both sockets. The values are drawn by proptest
//! strategies from a seed the test prints (`WHARF_FUZZ_SEED=<n>` replays a run): ids and names
//! with `/`, `..`, NUL and 10 kB strings, huge signal numbers and pids, paths to `/proc`,
//! `/etc`, symlinks out of a bundle, fifos nobody ever opens; sometimes valid enough to start
//! real containers, exec in them, pause them or checkpoint them.
//!
//! Every answer must come within a deadline and be a proper gRPC status (never `Unknown`,
//! `Unavailable` or an empty message), the daemon and the shim must live to the end, and
//! afterwards nothing is left: no container, shim, cgroup or mount, no file anywhere a request
//! pointed at, no fd more than the daemon started with.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};
use rstest::rstest;
use rstest_reuse::apply;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Status};
use wharf_api as api;
use wharf_shim_proto as shim;
use wharf_tests::bundle::{Bundle, rootfs};
use wharf_tests::daemon::DaemonFixture;
use wharf_tests::require_containers;
use wharf_tests::shim::{DEADLINE, ShimFixture};
use wharf_tests::system::{fd_count, wait_until_async};
use wharf_tests::{ExecutorKind, executors};

const DAEMON_REQUESTS: usize = 6_000;
const EVENTS_REQUESTS: usize = 800;
const SHIM_REQUESTS: usize = 2_600;
/// Garbage connections per socket.
const GARBAGE_CONNECTIONS: usize = 350;

/// Draws values from proptest strategies with one seeded generator.
struct Draw(TestRunner);

impl Draw {
    fn new(seed: u64) -> Self {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Self(TestRunner::new_with_rng(
            RunnerConfig::default(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
        ))
    }

    fn value<S: Strategy>(&mut self, strategy: S) -> S::Value {
        strategy
            .new_tree(&mut self.0)
            .expect("the strategies always produce a value")
            .current()
    }

    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        let index = self.value(0..from.len());
        from[index].clone()
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.value(0u32..100) < percent
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        self.value(prop::collection::vec(any::<u8>(), 0..max))
    }
}

/// Strings no handler should trust.
fn nasty_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "", "/", ".", "..", "../..", "../../../etc", "a/b", "nul\0byte", "-rf", "--help",
            " ", "\n", "😀", "%s%n", "\u{202e}", "CON", "*", "fuzz-0/..",
        ])
        .prop_map(str::to_owned),
        3 => "[a-z0-9._-]{1,16}",
        1 => any::<String>(),
        1 => Just("x".repeat(10_000)),
        1 => "\\PC{0,64}",
    ]
}

/// Numbers around every edge a handler could trip on.
fn nasty_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => prop::sample::select(vec![0, 1, 2, 9, 15, 19, 31, 32, 34, 64, 65, 128, 255, 256,
            i32::MAX as u32, i32::MAX as u32 + 1, u32::MAX]),
        1 => any::<u32>(),
    ]
}

/// The places requests point at, prepared before the run.
struct Terrain {
    scratch: tempfile::TempDir,
    /// Valid bundles, one per pool id (its cgroup is named after the id).
    bundles: BTreeMap<String, Bundle>,
    /// Bundle-like paths that must all be refused.
    bad_bundles: Vec<String>,
    /// Paths for stdin (read only).
    inputs: Vec<String>,
    /// Paths for stdout/stderr: never a file of the host, whatever happens.
    outputs: Vec<String>,
    /// An empty directory outside every bundle, the target of a rootfs symlink; kept until
    /// the end.
    _outside: tempfile::TempDir,
}

impl Terrain {
    fn new(ids: &[&str]) -> Self {
        let scratch = tempfile::Builder::new()
            .prefix("wharf-fuzz-")
            .tempdir()
            .expect("creating the scratch dir");
        let outside = tempfile::Builder::new()
            .prefix("wharf-fuzz-outside-")
            .tempdir()
            .expect("creating the outside dir");
        let dir = scratch.path();
        let fifo = |name: &str| {
            let path = dir.join(name);
            rustix::fs::mkfifoat(
                rustix::fs::CWD,
                &path,
                rustix::fs::Mode::from_bits_truncate(0o600),
            )
            .expect("creating a fifo");
            path.display().to_string()
        };
        let never_written = fifo("never-written");
        let never_read = fifo("never-read");
        let file = dir.join("file");
        std::fs::write(&file, b"input\n").expect("writing a file");
        let file = file.display().to_string();
        let missing = dir.join("missing/deeper/x").display().to_string();

        // A bundle whose rootfs is a symlink out of it, one whose config.json is a symlink
        // to a host file, one with garbage for a config, one that is a symlink to /etc.
        let symlinked_rootfs = dir.join("symlinked-rootfs");
        std::fs::create_dir(&symlinked_rootfs).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), symlinked_rootfs.join("rootfs"))
            .expect("symlink");
        let mut spec = serde_json::to_value(wharf_executor::oci_spec::runtime::Spec::default())
            .expect("a default spec");
        spec["root"] = serde_json::json!({ "path": "rootfs" });
        std::fs::write(
            symlinked_rootfs.join("config.json"),
            serde_json::to_vec(&spec).expect("json"),
        )
        .expect("writing config.json");
        let symlinked_config = dir.join("symlinked-config");
        std::fs::create_dir(&symlinked_config).expect("mkdir");
        std::os::unix::fs::symlink("/etc/passwd", symlinked_config.join("config.json"))
            .expect("symlink");
        let garbage_config = dir.join("garbage-config");
        std::fs::create_dir(&garbage_config).expect("mkdir");
        std::fs::write(garbage_config.join("config.json"), b"{\"ociVersion\": [}")
            .expect("writing garbage");
        let to_etc = dir.join("to-etc");
        std::os::unix::fs::symlink("/etc", &to_etc).expect("symlink");

        let bundles = ids
            .iter()
            .map(|id| ((*id).to_owned(), Bundle::new(id, &["sleep", "1000"])))
            .collect();
        let display = |p: &Path| p.display().to_string();
        Self {
            bad_bundles: vec![
                String::new(),
                "/".into(),
                "/etc".into(),
                "/proc".into(),
                "/proc/self".into(),
                "/proc/1/root".into(),
                "/dev/null".into(),
                "relative/bundle".into(),
                display(rootfs()),
                display(&symlinked_rootfs),
                display(&symlinked_config),
                display(&garbage_config),
                display(&to_etc),
                never_written.clone(),
                missing.clone(),
                format!("/{}", "x".repeat(10_000)),
                "/tmp/\0nul".into(),
            ],
            inputs: vec![
                String::new(),
                never_written.clone(),
                never_read.clone(),
                file.clone(),
                missing.clone(),
                "/etc/hostname".into(),
                "/etc".into(),
                "/proc/self/status".into(),
                "/dev/zero".into(),
                "/dev/null".into(),
                "/dev/tty".into(),
                "relative".into(),
                "/tmp/\0nul".into(),
                format!("/{}", "x".repeat(10_000)),
            ],
            outputs: vec![
                String::new(),
                never_written,
                never_read,
                file,
                missing,
                "/etc".into(),
                "/proc/self/status".into(),
                "/proc/sys/kernel/hostname".into(),
                "/sys/kernel/mm".into(),
                "/dev/zero".into(),
                "/dev/null".into(),
                "/dev/pts/424242".into(),
                "relative".into(),
                "/tmp/\0nul".into(),
                format!("/{}", "x".repeat(10_000)),
            ],
            scratch,
            bundles,
            _outside: outside,
        }
    }

    /// Everything under the places requests point at, to compare before and after.
    fn snapshot(&self) -> BTreeSet<PathBuf> {
        let mut seen = BTreeSet::new();
        for dir in [Path::new("/"), Path::new("/etc"), Path::new("/dev")] {
            list(dir, false, &mut seen);
        }
        list(self.scratch.path(), true, &mut seen);
        // `outside` is not listed: it is the rootfs of a bundle, and a runtime makes mount
        // points in a rootfs.
        list(rootfs(), false, &mut seen);
        for bundle in self.bundles.values() {
            list(bundle.path(), false, &mut seen);
        }
        seen
    }
}

fn list(dir: &Path, recursive: bool, into: &mut BTreeSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if recursive && entry.file_type().is_ok_and(|t| t.is_dir()) {
            list(&path, true, into);
        }
        into.insert(path);
    }
}

/// What the run saw: answers by RPC and code, and every violation.
#[derive(Default)]
struct Tally {
    requests: usize,
    codes: BTreeMap<(String, String), usize>,
    /// One message per RPC and code, for the report.
    examples: BTreeMap<(String, String), String>,
    /// Every distinct `Internal` message (its start), for the report.
    internal: BTreeSet<String>,
    violations: Vec<String>,
}

impl Tally {
    /// Judges one answer. `what` describes the request for the report.
    fn judge<T>(&mut self, rpc: &str, what: &dyn std::fmt::Debug, answer: Result<T, Answer>) {
        self.requests += 1;
        let code = match answer {
            Ok(_) => "Ok".to_owned(),
            Err(Answer::Hung) => {
                self.violate(rpc, what, "no answer within the deadline");
                "hung".to_owned()
            }
            Err(Answer::Status(status)) => {
                let code = status.code();
                if matches!(code, Code::Unknown | Code::Unavailable | Code::Cancelled)
                    || status.message().is_empty()
                {
                    self.violate(rpc, what, &format!("{code:?}: {:?}", status.message()));
                }
                let mut example = status.message().to_owned();
                example.truncate(example.floor_char_boundary(160));
                if code == Code::Internal {
                    let mut message = status.message().to_owned();
                    message.truncate(message.floor_char_boundary(600));
                    self.internal.insert(format!("{rpc}: {message}"));
                }
                self.examples
                    .entry((rpc.to_owned(), format!("{code:?}")))
                    .or_insert(example);
                format!("{code:?}")
            }
        };
        *self.codes.entry((rpc.to_owned(), code)).or_default() += 1;
    }

    fn violate(&mut self, rpc: &str, what: &dyn std::fmt::Debug, why: &str) {
        let mut request = format!("{what:?}");
        if request.len() > 300 {
            let mut end = 300;
            while !request.is_char_boundary(end) {
                end -= 1;
            }
            request.truncate(end);
            request.push('…');
        }
        self.violations.push(format!("{rpc} {request}: {why}"));
    }

    fn report(&self, seed: u64) {
        eprintln!(
            "fuzz seed {seed}: {} requests; answers by RPC and code:",
            self.requests
        );
        for ((rpc, code), count) in &self.codes {
            let example = self
                .examples
                .get(&(rpc.clone(), code.clone()))
                .map_or("", String::as_str);
            eprintln!("  {rpc:<30} {code:<18} {count:>5}  {example:?}");
        }
        eprintln!("Internal answers:");
        for message in &self.internal {
            eprintln!("  {message:?}");
        }
    }
}

#[derive(Debug)]
enum Answer {
    Hung,
    Status(Status),
}

/// Awaits `call` under the deadline.
async fn answer<T>(
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Answer> {
    match tokio::time::timeout(DEADLINE, call).await {
        Err(_) => Err(Answer::Hung),
        Ok(Err(status)) => Err(Answer::Status(status)),
        Ok(Ok(response)) => Ok(response.into_inner()),
    }
}

fn seed() -> u64 {
    std::env::var("WHARF_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}

const POOL: [&str; 3] = ["fuzz-a", "fuzz-b", "fuzz-c"];

#[apply(executors)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_and_garbage_get_proper_answers_and_leave_nothing(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let seed = seed();
    eprintln!("fuzz seed {seed} (WHARF_FUZZ_SEED={seed} replays it)");
    let mut draw = Draw::new(seed);
    let terrain = Terrain::new(&POOL);
    let mut daemon = DaemonFixture::start_with(executor, &["--stats-interval", "50"]).await;
    for id in POOL {
        daemon.track(id);
    }
    let before = terrain.snapshot();
    let mut tally = Tally::default();

    let mut client = daemon.client();
    let mut events = api::v1::EventsClient::new(
        api::channel(&daemon.socket)
            .await
            .expect("connecting wharf.v1.Events"),
    );
    // Once through every kind of work, so what is opened once per daemon (cached handles,
    // the second client's connection) is in the baseline: growth after that is a leak.
    warm_up(&mut client, &mut events, &terrain).await;
    let daemon_fds = fds(daemon.pid());
    for _ in 0..DAEMON_REQUESTS {
        daemon_request(&mut draw, &terrain, &daemon, &mut client, &mut tally).await;
    }
    for _ in 0..EVENTS_REQUESTS {
        let request = api::v1::SubscribeRequest {
            after_seq: draw.value(prop_oneof![Just(0), Just(u64::MAX), any::<u64>(), 0u64..64]),
        };
        let answered = answer(events.subscribe(request)).await;
        if let Ok(mut stream) = answered {
            // The replay, if any, starts at once; then the stream is dropped mid-flight.
            let _ = tokio::time::timeout(Duration::from_millis(5), stream.message()).await;
            tally.judge("wharf.v1.Events/Subscribe", &request, Ok(()));
        } else {
            tally.judge("wharf.v1.Events/Subscribe", &request, answered.map(drop));
        }
    }
    for _ in 0..GARBAGE_CONNECTIONS {
        garbage(&mut draw, &daemon.socket, api::METHOD_PATHS, &mut tally).await;
    }
    let state = answer(client.state(api::StateRequest {})).await;
    assert!(
        state.is_ok(),
        "the daemon does not answer after the garbage"
    );
    assert!(
        daemon_alive(&mut daemon),
        "wharfd died; log:\n{}",
        daemon.log()
    );

    // Everything the run started is stopped; then nothing may be left.
    stop_everything(&mut client).await;
    daemon.assert_nothing_left().await;
    let after = terrain.snapshot();
    let created: Vec<_> = after
        .difference(&before)
        .filter(|path| !is_checkpoint_of_a_pool_bundle(path, &terrain))
        .collect();
    let removed: Vec<_> = before.difference(&after).collect();
    tally.report(seed);
    assert!(
        tally.requests >= DAEMON_REQUESTS + EVENTS_REQUESTS + GARBAGE_CONNECTIONS,
        "{} requests",
        tally.requests
    );
    assert!(
        tally.violations.is_empty(),
        "{} improper answers (seed {seed}):\n{}",
        tally.violations.len(),
        tally.violations.join("\n")
    );
    assert!(
        created.is_empty() && removed.is_empty(),
        "files appeared {created:?} or vanished {removed:?} outside the state dir"
    );
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while fd_count(daemon.pid()) > daemon_fds.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "wharfd's fds did not return to their start; new ones: {:?}",
            fds(daemon.pid())
                .into_iter()
                .filter(|fd| !daemon_fds.contains(fd))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(terrain);
}

#[apply(executors)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_shim_requests_and_garbage_get_proper_answers_and_leave_nothing(
    #[case] executor: ExecutorKind,
) {
    require_containers!();
    let seed = seed();
    eprintln!("fuzz seed {seed} (WHARF_FUZZ_SEED={seed} replays it)");
    let mut draw = Draw::new(seed);
    let id = "fuzz-shim";
    let terrain = Terrain::new(&[id]);
    let shim_fixture = ShimFixture::start(executor, id).await;
    let before = terrain.snapshot();
    let mut tally = Tally::default();
    let mut client = shim_fixture.client();
    let socket = shim_fixture.state_dir.join(shim::SOCKET_NAME);
    let mut control = shim::control::ControlClient::new(
        shim::channel(&socket).await.expect("connecting Control"),
    );
    for _ in 0..SHIM_REQUESTS {
        shim_request(
            &mut draw,
            &terrain,
            id,
            &mut client,
            &mut control,
            &mut tally,
        )
        .await;
    }
    let shim_methods: Vec<&str> = shim::METHOD_PATHS
        .iter()
        .chain(shim::control::METHOD_PATHS)
        .copied()
        .filter(|path| !path.ends_with("/Shutdown"))
        .collect();
    for _ in 0..GARBAGE_CONNECTIONS {
        garbage(&mut draw, &socket, &shim_methods, &mut tally).await;
    }
    // A run that never created a container ends with a shim that properly says so.
    let state = match answer(client.state(shim::StateRequest {})).await {
        Ok(state) => Some(state),
        Err(Answer::Status(status)) if status.code() == tonic::Code::FailedPrecondition => None,
        Err(other) => panic!(
            "the shim does not answer after the garbage ({other:?}); log:\n{}",
            shim_fixture.log()
        ),
    };
    tally.report(seed);
    assert!(
        tally.requests >= SHIM_REQUESTS + GARBAGE_CONNECTIONS,
        "{} requests",
        tally.requests
    );
    assert!(
        tally.violations.is_empty(),
        "{} improper answers (seed {seed}):\n{}",
        tally.violations.len(),
        tally.violations.join("\n")
    );

    // Stop whatever runs, delete it, and let the shim go: nothing may be left.
    let mut shim_fixture = shim_fixture;
    let state = state.unwrap_or_default();
    for process in &state.processes {
        shim_fixture.track(process.pid);
    }
    if state.init_pid != 0 {
        let kill = shim::control::KillRequest {
            pid: 0,
            signal: 9,
            all: true,
        };
        let _ = answer(control.kill(kill)).await;
        wait_until_async("the fuzzed init to exit", DEADLINE, || {
            let mut client = client.clone();
            async move {
                client
                    .delete(shim::DeleteRequest {
                        pid: state.init_pid,
                    })
                    .await
                    .is_ok()
            }
        })
        .await;
    }
    let after = terrain.snapshot();
    let created: Vec<_> = after.difference(&before).collect();
    assert!(created.is_empty(), "files appeared: {created:?}");
    shim_fixture.terminate().await;
}

/// One random `types.API` request, sometimes valid enough to do something.
async fn daemon_request(
    draw: &mut Draw,
    terrain: &Terrain,
    daemon: &DaemonFixture,
    client: &mut api::ApiClient<tonic::transport::Channel>,
    tally: &mut Tally,
) {
    let id = if draw.chance(60) {
        draw.pick(&POOL).to_owned()
    } else {
        draw.value(nasty_text())
    };
    let live_pid = |draw: &mut Draw| -> u32 {
        draw.value(prop_oneof![
            Just(0u32),
            Just(1),
            Just(daemon.pid()),
            Just(std::process::id()),
            nasty_u32(),
        ])
    };
    match draw.value(0u32..11) {
        0 | 1 => {
            let bundle_path = match terrain.bundles.get(&id) {
                Some(bundle) if draw.chance(50) => bundle.path_string(),
                _ => draw.pick(&terrain.bad_bundles),
            };
            let request = api::CreateContainerRequest {
                id,
                bundle_path,
                stdin: draw.pick(&terrain.inputs),
                stdout: draw.pick(&terrain.outputs),
                stderr: draw.pick(&terrain.outputs),
                console: if draw.chance(10) {
                    draw.pick(&terrain.outputs)
                } else {
                    String::new()
                },
                checkpoint: if draw.chance(10) {
                    let other = draw.value(nasty_text());
                    draw.pick(&["cp".to_owned(), other])
                } else {
                    String::new()
                },
            };
            let answered = answer(client.create_container(request.clone())).await;
            tally.judge("types.API/CreateContainer", &request, answered);
        }
        2 => {
            let other = draw.value(nasty_text());
            let request = api::UpdateContainerRequest {
                id,
                signal: if draw.chance(20) {
                    draw.value(nasty_u32())
                } else {
                    0
                },
                status: draw.pick(&[
                    "paused".to_owned(),
                    "running".to_owned(),
                    String::new(),
                    "stopped".to_owned(),
                    other,
                ]),
            };
            let answered = answer(client.update_container(request.clone())).await;
            tally.judge("types.API/UpdateContainer", &request, answered);
        }
        3 => {
            // SIGKILL of the init now and then keeps the pool turning over.
            let request = api::SignalRequest {
                id,
                pid: live_pid(draw),
                signal: draw.value(prop_oneof![Just(9u32), Just(0), Just(19), nasty_u32()]),
            };
            let answered = answer(client.signal(request.clone())).await;
            tally.judge("types.API/Signal", &request, answered);
        }
        4 => {
            let args = draw.pick(&[
                vec!["sleep".to_owned(), "1000".to_owned()],
                vec!["true".to_owned()],
                vec!["/nonexistent".to_owned()],
                vec![],
                vec![String::new()],
                vec!["sleep".to_owned(), "x".repeat(10_000)],
                vec!["nul\0".to_owned()],
            ]);
            let request = api::AddProcessRequest {
                id,
                terminal: draw.chance(10),
                user: draw.chance(50).then(|| api::User {
                    uid: draw.value(nasty_u32()),
                    gid: draw.value(nasty_u32()),
                    additional_gids: draw.value(prop::collection::vec(nasty_u32(), 0..4)),
                }),
                args,
                env: draw.value(prop::collection::vec(nasty_text(), 0..3)),
                cwd: draw.pick(&[
                    String::new(),
                    "/".to_owned(),
                    "/nonexistent".to_owned(),
                    "relative".to_owned(),
                    "/proc/self".to_owned(),
                ]),
                stdin: draw.pick(&terrain.inputs),
                stdout: draw.pick(&terrain.outputs),
                stderr: draw.pick(&terrain.outputs),
                console: if draw.chance(10) {
                    draw.pick(&terrain.outputs)
                } else {
                    String::new()
                },
            };
            let answered = answer(client.add_process(request.clone())).await;
            tally.judge("types.API/AddProcess", &request, answered);
        }
        5 => {
            let name = if draw.chance(70) {
                "cp".to_owned()
            } else {
                draw.value(nasty_text())
            };
            // A real dump is slow: most requests are for ids that are not live.
            let request = api::CreateCheckpointRequest {
                id: if draw.chance(80) {
                    draw.value(nasty_text())
                } else {
                    id
                },
                checkpoint: draw.chance(90).then(|| api::Checkpoint {
                    name,
                    exit: draw.chance(50),
                    tcp: draw.chance(20),
                    unix_sockets: draw.chance(20),
                    shell: draw.chance(20),
                }),
            };
            let answered = answer(client.create_checkpoint(request.clone())).await;
            tally.judge("types.API/CreateCheckpoint", &request, answered);
        }
        6 => {
            let other = draw.value(nasty_text());
            let request = api::DeleteCheckpointRequest {
                id,
                name: draw.pick(&["cp".to_owned(), other]),
            };
            let answered = answer(client.delete_checkpoint(request.clone())).await;
            tally.judge("types.API/DeleteCheckpoint", &request, answered);
        }
        7 => {
            let request = api::ListCheckpointRequest { id };
            let answered = answer(client.list_checkpoint(request.clone())).await;
            tally.judge("types.API/ListCheckpoint", &request, answered);
        }
        8 => {
            let answered = answer(client.state(api::StateRequest {})).await;
            tally.judge("types.API/State", &"State", answered);
        }
        9 => {
            let answered = answer(client.events(api::EventsRequest {})).await;
            tally.judge("types.API/Events", &"Events", answered.map(drop));
        }
        _ => {
            let request = api::StatsRequest { id };
            let answered = answer(client.get_stats(request.clone())).await;
            if let Ok(mut stream) = answered {
                let _ = tokio::time::timeout(Duration::from_millis(5), stream.message()).await;
                tally.judge("types.API/GetStats", &request, Ok(()));
            } else {
                tally.judge("types.API/GetStats", &request, answered.map(drop));
            }
        }
    }
}

/// One random request to the shim, sometimes valid enough to do something.
async fn shim_request(
    draw: &mut Draw,
    terrain: &Terrain,
    id: &str,
    client: &mut shim::ShimClient<tonic::transport::Channel>,
    control: &mut shim::control::ControlClient<tonic::transport::Channel>,
    tally: &mut Tally,
) {
    let bundle = |draw: &mut Draw| match terrain.bundles.get(id) {
        Some(bundle) if draw.chance(50) => bundle.path_string(),
        _ => draw.pick(&terrain.bad_bundles),
    };
    let runtime = |draw: &mut Draw| {
        draw.pick(&[
            String::new(),
            "runc".to_owned(),
            "/nonexistent/runtime".to_owned(),
            "no-such-runtime".to_owned(),
        ])
    };
    let bad_dir = |draw: &mut Draw| {
        draw.pick(&[
            String::new(),
            "relative".to_owned(),
            "/proc/self/fuzz".to_owned(),
            "/dev/null/fuzz".to_owned(),
            "/tmp/\0nul".to_owned(),
        ])
    };
    let pid = |draw: &mut Draw| {
        draw.value(prop_oneof![
            Just(0u32),
            Just(1),
            Just(std::process::id()),
            nasty_u32()
        ])
    };
    let create = |draw: &mut Draw| shim::CreateRequest {
        id: if draw.chance(70) {
            id.to_owned()
        } else {
            draw.value(nasty_text())
        },
        bundle: bundle(draw),
        runtime: runtime(draw),
        no_pivot: draw.chance(10),
        terminal: draw.chance(10),
        stdin: draw.pick(&terrain.inputs),
        stdout: draw.pick(&terrain.outputs),
        stderr: draw.pick(&terrain.outputs),
    };
    match draw.value(0u32..13) {
        0 | 1 => {
            let request = create(draw);
            let answered = answer(client.create(request.clone())).await;
            tally.judge("Shim/Create", &request, answered);
        }
        2 => {
            let answered = answer(client.start(shim::StartRequest {})).await;
            tally.judge("Shim/Start", &"Start", answered);
        }
        3 => {
            let request = shim::DeleteRequest { pid: pid(draw) };
            let answered = answer(client.delete(request)).await;
            tally.judge("Shim/Delete", &request, answered);
        }
        4 => {
            let request = shim::ExecRequest {
                terminal: draw.chance(10),
                stdin: draw.pick(&terrain.inputs),
                stdout: draw.pick(&terrain.outputs),
                stderr: draw.pick(&terrain.outputs),
                selinux_label: draw.value(nasty_text()),
                user: draw.chance(50).then(|| shim::User {
                    uid: draw.value(nasty_u32()),
                    gid: draw.value(nasty_u32()),
                    additional_gids: draw.value(prop::collection::vec(nasty_u32(), 0..4)),
                }),
                args: draw.pick(&[
                    vec!["sleep".to_owned(), "1000".to_owned()],
                    vec!["true".to_owned()],
                    vec![],
                    vec!["nul\0".to_owned()],
                ]),
                env: draw.value(prop::collection::vec(nasty_text(), 0..3)),
                cwd: draw.pick(&[String::new(), "/".to_owned(), "relative".to_owned()]),
                capabilities: draw.value(prop::collection::vec(nasty_text(), 0..3)),
                rlimits: draw.value(prop::collection::vec(
                    (nasty_text(), any::<u64>(), any::<u64>())
                        .prop_map(|(r#type, hard, soft)| shim::Rlimit { r#type, hard, soft }),
                    0..3,
                )),
                no_new_privileges: draw.chance(50),
                apparmor_profile: draw.value(nasty_text()),
            };
            let answered = answer(client.exec(request.clone())).await;
            tally.judge("Shim/Exec", &request, answered);
        }
        5 => {
            let request = shim::PtyRequest {
                pid: pid(draw),
                width: draw.value(nasty_u32()),
                height: draw.value(nasty_u32()),
            };
            let answered = answer(client.pty(request)).await;
            tally.judge("Shim/Pty", &request, answered);
        }
        6 => {
            let answered = answer(client.events(shim::EventsRequest {})).await;
            tally.judge("Shim/Events", &"Events", answered.map(drop));
        }
        7 => {
            let answered = answer(client.state(shim::StateRequest {})).await;
            tally.judge("Shim/State", &"State", answered);
        }
        8 => {
            let answered = if draw.chance(50) {
                answer(client.pause(shim::PauseRequest {})).await
            } else {
                answer(client.resume(shim::ResumeRequest {})).await
            };
            tally.judge("Shim/Pause|Resume", &"Pause|Resume", answered);
        }
        9 => {
            let request = shim::control::KillRequest {
                pid: pid(draw),
                signal: draw.value(prop_oneof![Just(9u32), Just(0), nasty_u32()]),
                all: draw.chance(30),
            };
            let answered = answer(control.kill(request)).await;
            tally.judge("Control/Kill", &request, answered);
        }
        10 => {
            let request = shim::control::CheckpointRequest {
                image_path: bad_dir(draw),
                work_path: bad_dir(draw),
                options: draw.chance(50).then(|| shim::control::CriuOptions {
                    leave_running: draw.chance(50),
                    tcp_established: draw.chance(50),
                    external_unix_sockets: draw.chance(50),
                    shell_job: draw.chance(50),
                }),
            };
            let answered = answer(control.checkpoint(request.clone())).await;
            tally.judge("Control/Checkpoint", &request, answered);
        }
        11 => {
            let request = shim::control::ExitStatusRequest { pid: pid(draw) };
            let answered = answer(control.exit_status(request)).await;
            tally.judge("Control/ExitStatus", &request, answered);
        }
        _ => {
            let create = create(draw);
            let request = shim::control::RestoreRequest {
                id: create.id,
                bundle: create.bundle,
                runtime: create.runtime,
                no_pivot: create.no_pivot,
                terminal: create.terminal,
                stdin: create.stdin,
                stdout: create.stdout,
                stderr: create.stderr,
                image_path: bad_dir(draw),
                work_path: bad_dir(draw),
                options: None,
            };
            let answered = answer(control.restore(request.clone())).await;
            tally.judge("Control/Restore", &request, answered);
        }
    }
}

/// One connection sending garbage: random bytes, random HTTP/2 frames, a random HPACK block,
/// or a well-formed call carrying a random message. The server may answer or close; it must
/// not stop serving others.
async fn garbage(draw: &mut Draw, socket: &Path, methods: &[&str], tally: &mut Tally) {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let kind = draw.value(0u32..4);
    let mut bytes = Vec::new();
    match kind {
        0 => bytes = draw.bytes(2048),
        1 => {
            bytes.extend_from_slice(PREFACE);
            for _ in 0..draw.value(1usize..8) {
                let payload = draw.bytes(512);
                let declared = if draw.chance(80) {
                    payload.len() as u32
                } else {
                    draw.value(any::<u32>()) & 0x00ff_ffff
                };
                let (kind, flags, stream) = (
                    draw.value(0u8..12),
                    draw.value(any::<u8>()),
                    draw.value(any::<u32>()),
                );
                push_frame(&mut bytes, declared, kind, flags, stream, &payload);
            }
        }
        2 => {
            bytes.extend_from_slice(PREFACE);
            push_frame(&mut bytes, 0, 4, 0, 0, &[]);
            let block = draw.bytes(256);
            push_frame(&mut bytes, block.len() as u32, 1, 0x4 | 0x1, 1, &block);
        }
        _ => {
            bytes.extend_from_slice(PREFACE);
            push_frame(&mut bytes, 0, 4, 0, 0, &[]);
            let path = draw.pick(methods);
            let authority = draw.pick(&["localhost", "", "/run/wharf/wharf.sock", "%2Frun"]);
            let mut block = Vec::new();
            for (name, value) in [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", authority),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ] {
                block.push(0);
                block.push(name.len() as u8);
                block.extend_from_slice(name.as_bytes());
                block.push(value.len() as u8);
                block.extend_from_slice(value.as_bytes());
            }
            push_frame(&mut bytes, block.len() as u32, 1, 0x4, 1, &block);
            let message = draw.bytes(512);
            let mut data = vec![draw.pick(&[0u8, 0, 0, 1, 2])];
            let length = if draw.chance(80) {
                message.len() as u32
            } else {
                draw.value(any::<u32>())
            };
            data.extend_from_slice(&length.to_be_bytes());
            data.extend_from_slice(&message);
            push_frame(&mut bytes, data.len() as u32, 0, 0x1, 1, &data);
        }
    }
    let what = format!("{kind}: {} bytes", bytes.len());
    let sent = async {
        let mut stream = tokio::net::UnixStream::connect(socket).await?;
        stream.write_all(&bytes).await?;
        // Whatever comes back (a GOAWAY, a status, nothing) within a moment; then close.
        let mut reply = vec![0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(20), stream.read(&mut reply)).await;
        std::io::Result::Ok(())
    };
    // The server may close on us mid-write: that is an answer too; only hanging is not.
    if tokio::time::timeout(DEADLINE, sent).await.is_err() {
        tally.violate("garbage", &what, "the connection hung");
    }
    tally.judge("garbage", &what, Ok::<(), Answer>(()));
}

fn push_frame(out: &mut Vec<u8>, length: u32, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&length.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

fn is_checkpoint_of_a_pool_bundle(path: &Path, terrain: &Terrain) -> bool {
    terrain
        .bundles
        .values()
        .any(|bundle| path == bundle.path().join("checkpoints"))
}

fn daemon_alive(daemon: &mut DaemonFixture) -> bool {
    wharf_tests::system::process_alive(daemon.pid())
}

/// The open fds of `pid`, as `fd -> target`.
fn fds(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .map(|entry| {
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            format!(
                "{} -> {}",
                entry.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect()
}

/// Starts a container, streams its stats and events, execs in it, kills it, and waits until
/// it is gone.
async fn warm_up(
    client: &mut api::ApiClient<tonic::transport::Channel>,
    events: &mut api::v1::EventsClient<tonic::transport::Channel>,
    terrain: &Terrain,
) {
    let id = POOL[0];
    let bundle = terrain.bundles[id].path_string();
    client
        .create_container(api::CreateContainerRequest {
            id: id.into(),
            bundle_path: bundle,
            ..Default::default()
        })
        .await
        .expect("warm-up CreateContainer");
    let mut stats = client
        .get_stats(api::StatsRequest { id: id.into() })
        .await
        .expect("warm-up GetStats")
        .into_inner();
    stats.message().await.expect("warm-up stats sample");
    drop(stats);
    let subscription = events
        .subscribe(api::v1::SubscribeRequest { after_seq: 0 })
        .await
        .expect("warm-up Subscribe");
    drop(subscription);
    client
        .add_process(api::AddProcessRequest {
            id: id.into(),
            args: vec!["true".into()],
            ..Default::default()
        })
        .await
        .expect("warm-up AddProcess");
    stop_everything(client).await;
}

/// Kills every container still listed and waits until none is.
async fn stop_everything(client: &mut api::ApiClient<tonic::transport::Channel>) {
    let state = answer(client.state(api::StateRequest {}))
        .await
        .unwrap_or_else(|_| panic!("State at the end"));
    for container in state.containers {
        let _ = client
            .update_container(api::UpdateContainerRequest {
                id: container.id.clone(),
                signal: 9,
                status: String::new(),
            })
            .await;
    }
    wait_until_async("every fuzzed container to be gone", DEADLINE, || {
        let mut client = client.clone();
        async move {
            client
                .state(api::StateRequest {})
                .await
                .is_ok_and(|state| state.into_inner().containers.is_empty())
        }
    })
    .await;
}
