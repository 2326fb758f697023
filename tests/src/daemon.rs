//! A real `wharfd` on a private socket and state directory, and the checks that it left
//! nothing behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio_stream::StreamExt;
use tonic::Streaming;
use tonic::transport::Channel;
use wharf_api::{ApiClient, Event, EventsRequest};
use wharf_server::daemon::config::ExecutorKind;

use crate::bundle::test_cgroup;
use crate::shim::DEADLINE;
use crate::system::{cgroup_dirs, kill_cgroup, mounts_mentioning, process_alive, wharf_binary};

/// A `wharfd` serving a temporary socket, with its own state directory and runtime root.
#[derive(Debug)]
pub struct DaemonFixture {
    root: tempfile::TempDir,
    /// The daemon's socket.
    pub socket: PathBuf,
    /// `--state-dir`.
    pub state_dir: PathBuf,
    child: Option<Child>,
    client: Option<ApiClient<Channel>>,
    /// Container ids the test used, for the leak checks.
    ids: Vec<String>,
    debug: bool,
    /// The flags of the last launch, for the final sweep's take-over.
    flags: Vec<String>,
    /// The executor the daemon runs containers with.
    pub executor: ExecutorKind,
}

impl DaemonFixture {
    /// Starts `wharfd` with `executor` and waits until it answers.
    pub async fn start(executor: ExecutorKind) -> Self {
        Self::start_with(executor, &[]).await
    }

    /// Starts `wharfd` (debug logs on) with extra flags.
    pub async fn start_with(executor: ExecutorKind, extra: &[&str]) -> Self {
        Self::spawn(executor, true, extra, &[]).await
    }

    /// Starts `wharfd` without debug logs, as benchmarks want it.
    pub async fn start_quiet(executor: ExecutorKind) -> Self {
        Self::spawn(executor, false, &[], &[]).await
    }

    /// Starts `wharfd` without debug logs, with extra flags.
    pub async fn start_quiet_with(executor: ExecutorKind, extra: &[&str]) -> Self {
        Self::spawn(executor, false, extra, &[]).await
    }

    async fn spawn(
        executor: ExecutorKind,
        debug: bool,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let root = tempfile::Builder::new()
            .prefix("wharfd-test-")
            .tempdir()
            .expect("creating the daemon's test root");
        let socket = root.path().join("wharf.sock");
        let state_dir = root.path().join("state");
        let mut fixture = Self {
            root,
            socket,
            state_dir,
            child: None,
            client: None,
            ids: Vec::new(),
            debug,
            flags: Vec::new(),
            executor,
        };
        fixture.launch(extra, env).await;
        fixture
    }

    /// Starts `wharfd` with extra flags and environment.
    pub async fn start_with_env(
        executor: ExecutorKind,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn(executor, true, extra, env).await
    }

    /// Starts a `wharfd` on the fixture's socket and state directory and waits until it
    /// answers (after it has taken over the containers it found).
    async fn launch(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        let child = self.spawn_daemon(extra, env);
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let client = loop {
            if let Ok(client) = wharf_api::connect(&self.socket).await {
                break client;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "wharfd did not answer on its socket within {DEADLINE:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        self.client = Some(client);
    }

    /// Starts `wharfd` again with `env` naming a fault point it reaches before it serves
    /// (during the take-over), and waits for it to die there.
    pub async fn restart_until_crash(&mut self, env: &[(&str, &str)]) -> std::process::ExitStatus {
        assert!(self.child.is_none(), "restart a stopped or killed daemon");
        let flags = self.flags.clone();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut child = self.spawn_daemon(&flags, env);
        tokio::time::timeout(DEADLINE, child.wait())
            .await
            .expect("wharfd to die at its fault point")
            .expect("reaping wharfd")
    }

    fn spawn_daemon(&mut self, extra: &[&str], env: &[(&str, &str)]) -> Child {
        self.flags = extra.iter().map(|flag| (*flag).to_owned()).collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join("wharfd.log"))
            .expect("opening wharfd.log");
        Command::new(wharf_binary("wharfd"))
            .arg("--listen")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--shim")
            .arg(wharf_binary("wharf-shim"))
            .args(["--executor", self.executor.as_str()])
            .args(self.debug.then_some("--debug"))
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("starting wharfd")
    }

    /// Starts `wharfd` again on the same socket and state directory (after a SIGKILL, a
    /// crash or a stop): it takes over the containers it finds.
    pub async fn restart(&mut self) {
        self.restart_with(&[], &[]).await;
    }

    /// [`DaemonFixture::restart`] with extra flags and environment.
    pub async fn restart_with(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "restart a stopped or killed daemon");
        self.launch(extra, env).await;
    }

    /// SIGKILL: the daemon dies without any cleanup.
    pub async fn kill9(&mut self) {
        let mut child = self.child.take().expect("a running daemon");
        child.start_kill().expect("SIGKILL to wharfd");
        child.wait().await.expect("reaping wharfd");
    }

    /// Waits for the daemon to die by itself (a test fault point aborted it).
    pub async fn wait_crash(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("a running daemon");
        tokio::time::timeout(DEADLINE, child.wait())
            .await
            .expect("wharfd to die at its fault point")
            .expect("reaping wharfd")
    }

    /// A client on the fixture's connection.
    pub fn client(&self) -> ApiClient<Channel> {
        self.client.clone().expect("a daemon was started")
    }

    /// Remembers a container id, to check at the end that nothing of it is left.
    pub fn track(&mut self, id: &str) {
        self.ids.push(id.to_owned());
    }

    /// Creates and starts container `id` from `bundle` with default stdio, tracked for the
    /// leak checks; returns its init's pid.
    pub async fn run(&mut self, id: &str, bundle: &crate::bundle::Bundle) -> u32 {
        self.track(id);
        self.client()
            .create_container(wharf_api::CreateContainerRequest {
                id: id.to_owned(),
                bundle_path: bundle.path_string(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("CreateContainer {id}: {status}"))
            .into_inner()
            .pid
    }

    /// Sends `signal` to every process of container `id` (pid 0: its init).
    pub async fn signal(&self, id: &str, pid: u32, signal: u32) {
        self.client()
            .signal(wharf_api::SignalRequest {
                id: id.to_owned(),
                pid,
                signal,
            })
            .await
            .unwrap_or_else(|status| panic!("Signal {signal} to {id}/{pid}: {status}"));
    }

    /// A new `Events` stream.
    pub async fn events(&self) -> DaemonEvents {
        let stream = self
            .client()
            .events(EventsRequest {})
            .await
            .expect("opening an events stream")
            .into_inner();
        DaemonEvents { stream }
    }

    /// A directory for the test's fifos and files, removed with the fixture.
    pub fn scratch(&self) -> PathBuf {
        let dir = self.root.path().join("scratch");
        std::fs::create_dir_all(&dir).expect("creating the scratch dir");
        dir
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("wharfd.log")).unwrap_or_default()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(Child::id).unwrap_or(0)
    }

    /// Pids of every `wharf-shim` this daemon started that still runs.
    pub fn shim_pids(&self) -> Vec<u32> {
        let needle = self.executor_root().display().to_string();
        processes_with_cmdline(|cmdline| {
            cmdline.contains("wharf-shim") && cmdline.contains(&needle)
        })
    }

    /// Waits until the containers the test used are gone, then checks nothing of them or
    /// the daemon's state is left: no shim, container process, cgroup, mount or state dir.
    pub async fn assert_nothing_left(&self) {
        let left = self.leftovers().await;
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    /// What is left, a while after the containers the test used ended: state dirs, shims,
    /// executor state, cgroups of tracked ids, mounts under the fixture's root. Empty when
    /// nothing is.
    pub async fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let containers = self.state_dir.join("containers");
        let dirs_gone = eventually(|| {
            std::fs::read_dir(&containers).map_or(true, |mut dir| dir.next().is_none())
        })
        .await;
        if !dirs_gone {
            let names: Vec<_> = std::fs::read_dir(&containers)
                .map(|dir| dir.filter_map(Result::ok).map(|e| e.file_name()).collect())
                .unwrap_or_default();
            left.push(format!("container state dirs: {names:?}"));
        }
        if !eventually(|| self.shim_pids().is_empty()).await {
            left.push(format!("shims: {:?}", self.shim_pids()));
        }
        let executor_root = self.executor_root();
        let state: Vec<_> = std::fs::read_dir(&executor_root)
            .map(|dir| dir.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if !state.is_empty() {
            left.push(format!(
                "executor state in {}: {state:?}",
                executor_root.display()
            ));
        }
        for id in &self.ids {
            let cgroup = test_cgroup(id);
            if !eventually(|| cgroup_dirs(&cgroup).is_empty()).await {
                left.push(format!("cgroups: {:?}", cgroup_dirs(&cgroup)));
            }
        }
        let mounts = mounts_mentioning(&self.root.path().display().to_string());
        if !mounts.is_empty() {
            left.push(format!("mounts: {mounts:?}"));
        }
        left
    }

    /// `<state-dir>/<executor>`: the executor's state directory.
    pub fn executor_root(&self) -> PathBuf {
        self.state_dir.join(self.executor.as_str())
    }

    /// SIGTERM; the daemon must exit 0.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("the daemon is stopped once");
        let pid = child
            .id()
            .and_then(|pid| rustix::process::Pid::from_raw(pid as i32));
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let status = tokio::time::timeout(DEADLINE, child.wait())
            .await
            .expect("wharfd to exit after SIGTERM")
            .expect("waiting for wharfd");
        assert!(
            status.success(),
            "wharfd exited with {status}; log:\n{}",
            self.log()
        );
    }
}

impl DaemonFixture {
    /// The leak check every test gets when it ends: whatever it left running is taken down
    /// through the daemon's own paths (a daemon is started again if the test stopped or
    /// killed it, and takes over what it finds; each listed container is killed and its
    /// exit awaited), then nothing may be left. Runs on a runtime of its own, since the
    /// test's may be blocked in this very drop.
    fn sweep(&mut self) -> Vec<String> {
        crate::system::on_own_runtime(self.sweep_async())
            .unwrap_or_else(|_| vec!["the final sweep panicked".to_owned()])
    }

    async fn sweep_async(&mut self) -> Vec<String> {
        let running = self
            .child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)));
        if !running {
            // The environment (fault points) is not passed again: only the flags.
            let flags = std::mem::take(&mut self.flags);
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            self.child = None;
            self.launch(&flags, &[]).await;
        }
        let mut client = match wharf_api::connect(&self.socket).await {
            Ok(client) => client,
            Err(err) => return vec![format!("the daemon does not answer the sweep: {err}")],
        };
        let listed = |state: wharf_api::StateResponse| -> Vec<String> {
            state.containers.into_iter().map(|c| c.id).collect()
        };
        let Ok(state) = client.state(wharf_api::StateRequest {}).await else {
            return vec!["State failed in the sweep".to_owned()];
        };
        let ids = listed(state.into_inner());
        for id in &ids {
            self.ids.push(id.clone());
            let _ = client
                .signal(wharf_api::SignalRequest {
                    id: id.clone(),
                    pid: 0,
                    signal: 9,
                })
                .await;
        }
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut left = loop {
            let still = match client.state(wharf_api::StateRequest {}).await {
                Ok(state) => listed(state.into_inner()),
                Err(status) => return vec![format!("State failed in the sweep: {status}")],
            };
            if still.is_empty() {
                break Vec::new();
            }
            if tokio::time::Instant::now() > deadline {
                break vec![format!("containers still listed after SIGKILL: {still:?}")];
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        left.extend(self.leftovers().await);
        // Nothing is left to hand over, so no graceful stop (it would wait out its grace
        // period for the test's connections, whose runtime is blocked in this drop).
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
            let deadline = std::time::Instant::now() + DEADLINE;
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if !ids.is_empty() && left.is_empty() {
            eprintln!("final sweep: stopped what the test left running: {ids:?}");
        }
        left
    }
}

impl Drop for DaemonFixture {
    /// After a passing test: the final sweep ([`DaemonFixture::sweep`]), failing the test if
    /// anything is left. After a failed test: kill the daemon and everything it started.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let left = self.sweep();
            if !left.is_empty() {
                self.kill_everything();
                let log = self.log();
                let tail: Vec<&str> = log.lines().rev().take(80).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                // What the log says of each container something of was left.
                let mut mentions = Vec::new();
                for id in self
                    .ids
                    .iter()
                    .filter(|id| left.iter().any(|l| l.contains(*id)))
                {
                    let needle = format!("container_id={id}");
                    mentions.extend(log.lines().filter(|line| {
                        line.contains(&format!("{needle} ")) || line.ends_with(&needle)
                    }));
                }
                panic!(
                    "the test left behind: {left:?}\nwharfd's log of those containers:\n{}\n\
                     the end of wharfd's log:\n{}",
                    mentions.join("\n"),
                    tail.join("\n")
                );
            }
            self.kill_everything();
            return;
        }
        self.kill_everything();
    }
}

impl DaemonFixture {
    fn kill_everything(&mut self) {
        let shims = self.shim_pids();
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            if std::thread::panicking() {
                eprintln!("--- wharfd log ---\n{}", self.log());
            }
        }
        for pid in shims {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        for id in &self.ids {
            kill_cgroup(&test_cgroup(id));
        }
    }
}

/// Whether `done` holds within [`DEADLINE`], polled.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pids of live processes whose command line (NULs as spaces) satisfies `matches`.
pub fn processes_with_cmdline(matches: impl Fn(&str) -> bool) -> Vec<u32> {
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc.filter_map(Result::ok)
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
        })
        .filter(|&pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            matches(&cmdline) && process_alive(pid)
        })
        .collect()
}

/// A `types.API` Events stream with deadlines.
#[derive(Debug)]
pub struct DaemonEvents {
    stream: Streaming<Event>,
}

impl DaemonEvents {
    /// The next event; panics after the deadline or if the stream ends.
    pub async fn next(&mut self) -> Event {
        match tokio::time::timeout(DEADLINE, self.stream.next()).await {
            Ok(Some(Ok(event))) => event,
            Ok(Some(Err(status))) => panic!("events stream failed: {status}"),
            Ok(None) => panic!("events stream ended while an event was awaited"),
            Err(_) => panic!("no event within {DEADLINE:?}"),
        }
    }

    /// Events until (and with) the first that `done` accepts.
    pub async fn until(&mut self, mut done: impl FnMut(&Event) -> bool) -> Vec<Event> {
        let mut seen = Vec::new();
        loop {
            let event = self.next().await;
            let stop = done(&event);
            seen.push(event);
            if stop {
                return seen;
            }
        }
    }

    /// The status of the `exit` event of (`id`, `pid`), skipping other events.
    pub async fn exit_status(&mut self, id: &str, pid: u32) -> u32 {
        let events = self
            .until(|e| e.r#type == "exit" && e.id == id && e.pid == pid)
            .await;
        events.last().map(|e| e.status).unwrap_or_default()
    }

    /// Events of container `id` until its init's exit, as (type, pid, status).
    pub async fn of_container_until_exit(
        &mut self,
        id: &str,
        init: u32,
    ) -> Vec<(String, u32, u32)> {
        self.until(|e| e.r#type == "exit" && e.id == id && e.pid == init)
            .await
            .into_iter()
            .filter(|e| e.id == id)
            .map(|e| (e.r#type, e.pid, e.status))
            .collect()
    }

    /// Whatever arrives within `window` (for checks that nothing more comes).
    pub async fn within(&mut self, window: Duration) -> Vec<Event> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(Ok(event))) = tokio::time::timeout_at(deadline, self.stream.next()).await
        {
            seen.push(event);
        }
        seen
    }

    /// The raw stream.
    pub fn into_inner(self) -> Streaming<Event> {
        self.stream
    }
}

/// Exit events by pid, from a list of events.
pub fn exits_by_pid(events: &[Event]) -> HashMap<u32, u32> {
    events
        .iter()
        .filter(|e| e.r#type == "exit")
        .map(|e| (e.pid, e.status))
        .collect()
}

/// A path as the API wants it.
pub fn path_string(path: &Path) -> String {
    path.display().to_string()
}
