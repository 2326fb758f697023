//! The soak: client tasks churn containers through a real `wharfd` (create, exec, signal,
//! pause/resume, stats streams, exits of their own and by SIGKILL) while a chaos task
//! SIGKILLs the daemon at random moments, and now and then a random shim, and restarts it.
//! Afterwards every container a client saw created is either listed and running or has
//! exactly one `exit` of its init, with the status it should have, in the `wharf.v1.Events`
//! journal; then everything is stopped and nothing may be left (shims, container
//! processes, cgroups, mounts, state and executor directories), and the daemon's fds and
//! memory are back near where they started.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::Channel;
use wharf_api::{
    AddProcessRequest, ApiClient, CreateContainerRequest, SignalRequest, StateRequest,
    StatsRequest, UpdateContainerRequest,
};

use crate::ExecutorKind;
use crate::bundle::Bundle;
use crate::daemon::DaemonFixture;
use crate::system::fd_count;

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// The executor the daemon runs containers with.
    pub executor: ExecutorKind,
    /// Client tasks churning containers.
    pub clients: usize,
    /// How long the churn and the chaos last at least.
    pub duration: Duration,
    /// Daemon kills the chaos task makes at least (it goes on past `duration` until then).
    pub min_kills: usize,
}

/// What a soak did and found. It passed when [`SoakReport::passed`].
#[derive(Debug, Default)]
pub struct SoakReport {
    /// Requests answered OK.
    pub operations: usize,
    /// Containers the clients saw created.
    pub containers: usize,
    /// Times `wharfd` was SIGKILLed and restarted.
    pub daemon_kills: usize,
    /// Shims SIGKILLed.
    pub shim_kills: usize,
    /// Containers lost: neither listed nor with exactly one exit of the expected status.
    pub lost: Vec<String>,
    /// What was left after everything was stopped.
    pub leaked: Vec<String>,
    /// Requests that got no answer within the deadline.
    pub hung: Vec<String>,
    /// Open fds of the daemon after the warm-up and at the end.
    pub fds: (usize, usize),
    /// Resident memory of the daemon after the warm-up and at the end, in KiB.
    pub rss_kib: (u64, u64),
}

impl SoakReport {
    /// Nothing lost, leaked or hung, and the daemon's fds and memory back near their start.
    pub fn passed(&self) -> bool {
        self.lost.is_empty()
            && self.leaked.is_empty()
            && self.hung.is_empty()
            && self.fds.1 <= self.fds.0 + FD_SLACK
            && self.rss_kib.1 <= rss_bound(self.rss_kib.0)
    }

    /// The report as the soak prints it.
    pub fn render(&self) -> String {
        let list = |items: &[String]| {
            if items.is_empty() {
                "0".to_owned()
            } else {
                format!("{}:\n    {}", items.len(), items.join("\n    "))
            }
        };
        format!(
            "operations answered OK: {}\ncontainers created: {}\ndaemon kills survived: {}\n\
             shims killed: {}\ndaemon fds: {} after warm-up, {} at the end\n\
             daemon RSS: {} KiB after warm-up, {} KiB at the end\nlost: {}\nleaked: {}\nhung: {}\n",
            self.operations,
            self.containers,
            self.daemon_kills,
            self.shim_kills,
            self.fds.0,
            self.fds.1,
            self.rss_kib.0,
            self.rss_kib.1,
            list(&self.lost),
            list(&self.leaked),
            list(&self.hung),
        )
    }
}

/// The daemon may hold a few more fds at the end than after the warm-up (a client
/// connection more or less).
const FD_SLACK: usize = 3;
/// Allocator slack on top of doubling: a small daemon's RSS moves in MiB steps.
const RSS_SLACK_KIB: u64 = 16 * 1024;

/// The most resident memory a daemon that started at `start_kib` may hold once its
/// containers are gone.
fn rss_bound(start_kib: u64) -> u64 {
    start_kib.saturating_mul(2).max(start_kib + RSS_SLACK_KIB)
}
/// Deadline of one request, daemon restarts included.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// What a container is meant to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Killed by its client with SIGKILL: exit 137.
    Killed,
    /// Exits by itself with this status.
    Exits(u32),
    /// Still runs at the end.
    Stays,
}

impl Plan {
    fn args(self) -> Vec<String> {
        match self {
            Self::Exits(status) => vec![
                "sh".into(),
                "-c".into(),
                format!("sleep 0.{}; exit {status}", status % 10),
            ],
            Self::Killed | Self::Stays => vec!["sleep".into(), "100000".into()],
        }
    }
}

/// What the clients and the chaos task record.
#[derive(Default)]
struct Ledger {
    /// Containers a client saw created (a pid, or `AlreadyExists` on a retry), with their plan.
    created: BTreeMap<String, Plan>,
    /// Containers whose `CreateContainer` went unanswered: they may or may not exist.
    maybe_created: BTreeMap<String, Plan>,
    /// Containers whose shim the chaos task killed: they may also end with 137 or 255.
    shim_killed: BTreeSet<String>,
    hung: Vec<String>,
}

struct Shared {
    socket: PathBuf,
    ledger: Mutex<Ledger>,
    operations: AtomicUsize,
    stop: AtomicBool,
    /// Bundles of every container, kept until the end.
    bundles: Mutex<Vec<Bundle>>,
}

impl Shared {
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether an error only says the daemon is away (killed, restarting).
fn daemon_away(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    )
}

/// Calls `call` until it is answered by a daemon (anything but "away"), within the request
/// deadline. `None`: it hung.
async fn answered<T, F, Fut>(
    shared: &Shared,
    what: &str,
    mut call: F,
) -> Option<Result<T, tonic::Status>>
where
    F: FnMut(ApiClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = Instant::now() + REQUEST_DEADLINE;
    loop {
        if let Ok(client) = wharf_api::connect(&shared.socket).await {
            match tokio::time::timeout(REQUEST_DEADLINE, call(client)).await {
                Ok(Ok(response)) => {
                    shared.operations.fetch_add(1, Ordering::Relaxed);
                    return Some(Ok(response.into_inner()));
                }
                Ok(Err(status)) if !daemon_away(&status) => return Some(Err(status)),
                Ok(Err(_)) => {}
                Err(_) => {
                    shared.ledger().hung.push(what.to_owned());
                    return None;
                }
            }
        }
        if Instant::now() > deadline {
            shared.ledger().hung.push(format!(
                "{what}: no daemon answered for {REQUEST_DEADLINE:?}"
            ));
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One client: creates containers one after another and works them.
async fn client(shared: Arc<Shared>, index: usize) {
    let mut n = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        n += 1;
        let id = format!("soak-{index}-{n}");
        let plan = match fastrand::u32(0..10) {
            0..=3 => Plan::Killed,
            4..=7 => Plan::Exits(fastrand::u32(1..100)),
            _ => Plan::Stays,
        };
        let args: Vec<String> = plan.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let bundle = Bundle::new(&id, &args);
        let bundle_path = bundle.path_string();
        shared
            .bundles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(bundle);
        shared.ledger().maybe_created.insert(id.clone(), plan);
        let mut attempts = 0;
        let created = answered(&shared, &format!("CreateContainer {id}"), |mut c| {
            attempts += 1;
            let request = CreateContainerRequest {
                id: id.clone(),
                bundle_path: bundle_path.clone(),
                ..Default::default()
            };
            async move { c.create_container(request).await }
        })
        .await;
        let created = match created {
            Some(Ok(_)) => true,
            // An earlier attempt created it; its answer was lost with the daemon.
            Some(Err(status)) if status.code() == Code::AlreadyExists && attempts > 1 => true,
            _ => false,
        };
        if created {
            let mut ledger = shared.ledger();
            ledger.maybe_created.remove(&id);
            ledger.created.insert(id.clone(), plan);
        } else {
            continue;
        }
        work(&shared, &id).await;
        if plan == Plan::Killed {
            let _ = answered(&shared, &format!("Signal {id}"), |mut c| {
                let request = SignalRequest {
                    id: id.clone(),
                    pid: 0,
                    signal: 9,
                };
                async move { c.signal(request).await }
            })
            .await;
        }
    }
}

/// A few random operations on a live container; their answers may be errors (it may have
/// exited, its shim may be gone), but none may hang.
async fn work(shared: &Shared, id: &str) {
    for _ in 0..fastrand::usize(1..4) {
        match fastrand::u32(0..4) {
            0 => {
                let _ = answered(shared, &format!("AddProcess {id}"), |mut c| {
                    let request = AddProcessRequest {
                        id: id.to_owned(),
                        args: vec!["sleep".into(), "0.2".into()],
                        ..Default::default()
                    };
                    async move { c.add_process(request).await }
                })
                .await;
            }
            1 => {
                for status in ["paused", "running"] {
                    let _ = answered(
                        shared,
                        &format!("UpdateContainer {id} {status}"),
                        |mut c| {
                            let request = UpdateContainerRequest {
                                id: id.to_owned(),
                                signal: 0,
                                status: status.to_owned(),
                            };
                            async move { c.update_container(request).await }
                        },
                    )
                    .await;
                }
            }
            2 => {
                let stream = answered(shared, &format!("GetStats {id}"), |mut c| {
                    let request = StatsRequest { id: id.to_owned() };
                    async move { c.get_stats(request).await }
                })
                .await;
                if let Some(Ok(mut stream)) = stream {
                    let _ = tokio::time::timeout(Duration::from_secs(2), stream.message()).await;
                }
            }
            _ => {
                let _ = answered(shared, "State", |mut c| async move {
                    c.state(StateRequest {}).await
                })
                .await;
            }
        }
    }
}

/// Kills the daemon (and now and then a shim) at random moments and restarts it, until
/// told to stop and at least `min_kills` kills were made.
async fn chaos(
    shared: Arc<Shared>,
    mut daemon: DaemonFixture,
    extra: Vec<String>,
    min_kills: usize,
    clients_done: Arc<AtomicBool>,
) -> (DaemonFixture, usize, usize) {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (mut daemon_kills, mut shim_kills) = (0, 0);
    loop {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(300..2000))).await;
        if clients_done.load(Ordering::Relaxed) && daemon_kills >= min_kills {
            return (daemon, daemon_kills, shim_kills);
        }
        if fastrand::u32(0..5) == 0
            && let Some((pid, id)) = random_shim(&daemon)
            && let Some(pid) = rustix::process::Pid::from_raw(pid.cast_signed())
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            shared.ledger().shim_killed.insert(id);
            shim_kills += 1;
        }
        daemon.kill9().await;
        daemon_kills += 1;
        // Down for a moment, so that requests meet no daemon and exits happen meanwhile.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..300))).await;
        daemon.restart_with(&extra, &[]).await;
        // The next kill only once this daemon serves (its take-over done): a daemon killed
        // before it ever serves tests nothing but patience.
        let deadline = Instant::now() + REQUEST_DEADLINE;
        while daemon.client().state(StateRequest {}).await.is_err() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A live shim of `daemon` and its container id (the shim's working directory).
fn random_shim(daemon: &DaemonFixture) -> Option<(u32, String)> {
    let shims = daemon.shim_pids();
    if shims.is_empty() {
        return None;
    }
    let pid = shims[fastrand::usize(0..shims.len())];
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    let id = cwd.file_name()?.to_string_lossy().into_owned();
    Some((pid, id))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs a soak; returns what it did and found.
///
/// # Panics
/// When the daemon cannot be started or answered at all.
pub async fn run(config: SoakConfig) -> SoakReport {
    let extra = vec!["--event-retention".to_owned(), "10000000".to_owned()];
    let extra_refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let daemon = DaemonFixture::start_quiet_with(config.executor, &extra_refs).await;
    let shared = Arc::new(Shared {
        socket: daemon.socket.clone(),
        ledger: Mutex::new(Ledger::default()),
        operations: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        bundles: Mutex::new(Vec::new()),
    });
    // Warm-up: one container through every kind of work, so what the daemon opens once is
    // in the baseline.
    {
        let plan = Plan::Killed;
        let args = plan.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let bundle = Bundle::new("soak-warm-up", &args);
        let mut client = daemon.client();
        client
            .create_container(CreateContainerRequest {
                id: "soak-warm-up".into(),
                bundle_path: bundle.path_string(),
                ..Default::default()
            })
            .await
            .expect("the warm-up container starts");
        work(&shared, "soak-warm-up").await;
        shared.ledger().created.insert("soak-warm-up".into(), plan);
        client
            .signal(SignalRequest {
                id: "soak-warm-up".into(),
                pid: 0,
                signal: 9,
            })
            .await
            .expect("the warm-up container is killed");
        wait_listed_none(&shared, &["soak-warm-up".to_owned()]).await;
        shared
            .bundles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(bundle);
    }
    let start = (fd_count(daemon.pid()), rss_kib(daemon.pid()));

    let clients_done = Arc::new(AtomicBool::new(false));
    let chaos_task = tokio::spawn(chaos(
        shared.clone(),
        daemon,
        extra.clone(),
        config.min_kills,
        clients_done.clone(),
    ));
    let clients: Vec<_> = (0..config.clients)
        .map(|index| tokio::spawn(client(shared.clone(), index)))
        .collect();
    tokio::time::sleep(config.duration).await;
    shared.stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a client task panicked");
    }
    clients_done.store(true, Ordering::Relaxed);
    let (mut daemon, daemon_kills, shim_kills) = chaos_task.await.expect("the chaos task panicked");

    let mut report = SoakReport {
        operations: shared.operations.load(Ordering::Relaxed),
        daemon_kills,
        shim_kills,
        ..SoakReport::default()
    };
    let (created, maybe_created, shim_killed, hung) = {
        let ledger = shared.ledger();
        (
            ledger.created.clone(),
            ledger.maybe_created.clone(),
            ledger.shim_killed.clone(),
            ledger.hung.clone(),
        )
    };
    report.containers = created.len();
    report.hung = hung;
    for id in created.keys().chain(maybe_created.keys()) {
        daemon.track(id);
    }

    // Containers that exit by themselves get the time to (a `sleep` under a second).
    let exiting: Vec<String> = created
        .iter()
        .filter(|(_, plan)| matches!(plan, Plan::Exits(_)))
        .map(|(id, _)| id.clone())
        .collect();
    let _ = tokio::time::timeout(REQUEST_DEADLINE, wait_listed_none(&shared, &exiting)).await;

    // The verdict on every container, from the journal and the list.
    let listed = listed_ids(&shared).await;
    let journal = journal(&daemon).await;
    for (id, plan) in &created {
        let init = journal.starts.get(id).copied();
        let exits: Vec<u32> = init
            .and_then(|pid| journal.exits.get(&(id.clone(), pid)))
            .cloned()
            .unwrap_or_default();
        let shim_was_killed = shim_killed.contains(id);
        let expected = |status: u32| match plan {
            _ if shim_was_killed && (status == 137 || status == 255) => true,
            Plan::Killed => status == 137,
            Plan::Exits(expected) => status == *expected,
            Plan::Stays => false,
        };
        let is_listed = listed.contains(id);
        let fine = match exits.as_slice() {
            // Running at the end: only what was not meant to end by itself.
            [] => is_listed && !matches!(plan, Plan::Exits(_)),
            [status] => !is_listed && expected(*status),
            _ => false,
        };
        if !fine {
            let log = daemon.log();
            let mentions: Vec<&str> = log
                .lines()
                .filter(|line| {
                    line.contains(&format!("container_id={id} "))
                        || line.ends_with(&format!("container_id={id}"))
                })
                .collect();
            report.lost.push(format!(
                "{id} ({plan:?}{}): listed {is_listed}, init {init:?}, init exits {exits:?}; \
                 the daemon's log of it:\n      {}",
                if shim_was_killed { ", shim killed" } else { "" },
                mentions.join("\n      ")
            ));
        }
    }
    for id in maybe_created.keys() {
        let exits = journal
            .starts
            .get(id)
            .and_then(|pid| journal.exits.get(&(id.clone(), *pid)))
            .map_or(0, Vec::len);
        if exits > 1 {
            report.lost.push(format!("{id}: {exits} exits of its init"));
        }
    }

    // Stop everything, then nothing may be left.
    stop_all(&shared).await;
    wait_listed_none(&shared, &listed.iter().cloned().collect::<Vec<_>>()).await;
    report.leaked = daemon.leftovers().await;
    let pid = daemon.pid();
    report.fds = (start.0, fd_count(pid));
    // The daemon gives memory back a moment after its containers go (`malloc_trim`): poll.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while rss_kib(pid) > rss_bound(start.1) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report.rss_kib = (start.1, rss_kib(pid));
    daemon.stop().await;
    drop(shared);
    report
}

/// What the journal says: each container's init pid (from its start) and every exit.
struct Journal {
    starts: HashMap<String, u32>,
    exits: HashMap<(String, u32), Vec<u32>>,
}

/// Replays the whole journal, up to a marker container started and killed for that purpose.
async fn journal(daemon: &DaemonFixture) -> Journal {
    use wharf_api::v1::{EventsClient, SubscribeRequest};
    let marker = "soak-journal-marker";
    let bundle = Bundle::new(marker, &["sleep", "100000"]);
    let mut client = daemon.client();
    client
        .create_container(CreateContainerRequest {
            id: marker.into(),
            bundle_path: bundle.path_string(),
            ..Default::default()
        })
        .await
        .expect("the marker container starts");
    client
        .signal(SignalRequest {
            id: marker.into(),
            pid: 0,
            signal: 9,
        })
        .await
        .expect("the marker container is killed");
    let channel = wharf_api::channel(&daemon.socket)
        .await
        .expect("connecting wharf.v1.Events");
    let mut stream = EventsClient::new(channel)
        .subscribe(SubscribeRequest { after_seq: 0 })
        .await
        .expect("replaying the journal")
        .into_inner();
    let mut journal = Journal {
        starts: HashMap::new(),
        exits: HashMap::new(),
    };
    loop {
        let event = tokio::time::timeout(REQUEST_DEADLINE, stream.message())
            .await
            .expect("the journal replays up to the marker's exit")
            .expect("the journal stream")
            .expect("the journal reaches the marker's exit");
        let Some(event) = event.event else { continue };
        match event.r#type.as_str() {
            "start-container" => {
                journal.starts.insert(event.id.clone(), event.pid);
            }
            "exit" => {
                if event.id == marker {
                    return journal;
                }
                journal
                    .exits
                    .entry((event.id.clone(), event.pid))
                    .or_default()
                    .push(event.status);
            }
            _ => {}
        }
    }
}

async fn listed_ids(shared: &Shared) -> BTreeSet<String> {
    match answered(shared, "State", |mut c| async move {
        c.state(StateRequest {}).await
    })
    .await
    {
        Some(Ok(state)) => state.containers.into_iter().map(|c| c.id).collect(),
        _ => panic!("the daemon does not answer State after the soak"),
    }
}

async fn stop_all(shared: &Shared) {
    for id in listed_ids(shared).await {
        let _ = answered(shared, &format!("Signal {id}"), |mut c| {
            let request = SignalRequest {
                id: id.clone(),
                pid: 0,
                signal: 9,
            };
            async move { c.signal(request).await }
        })
        .await;
    }
}

/// Waits until none of `ids` is listed.
async fn wait_listed_none(shared: &Shared, ids: &[String]) {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    loop {
        let listed = listed_ids(shared).await;
        let left: Vec<_> = ids.iter().filter(|id| listed.contains(*id)).collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "containers still listed after SIGKILL: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
