//! A real `wharf-shim` for one test container, and the checks that it left nothing behind.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use std::time::Duration;
use tokio::process::Child;

use tokio_stream::StreamExt;
use tonic::Streaming;
use tonic::transport::Channel;
use wharf_server::daemon::config::ExecutorKind;
use wharf_server::spawn::{ShimOptions, spawn_shim};
use wharf_shim_proto::{Event, EventType, EventsRequest, ShimClient};

use crate::bundle::test_cgroup;
use crate::system::{
    cgroup_dirs, kill_cgroup, mounts_mentioning, process_alive, process_exists, wait_until,
    wharf_binary,
};

/// Default deadline for anything a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A shim serving one container, in a private state directory and runtime root.
#[derive(Debug)]
pub struct ShimFixture {
    /// The container id the test uses.
    pub id: String,
    root: Option<tempfile::TempDir>,
    /// `<root>/state/<id>`: the shim's working directory.
    pub state_dir: PathBuf,
    /// The executor the shim runs the container with.
    pub executor: ExecutorKind,
    /// `<root>/<executor>`: the executor's state directory.
    pub executor_root: PathBuf,
    /// The shim, when it is our child.
    child: Option<Child>,
    /// The shim's pid, when its parent is not this test (started by a helper that died).
    adopted_pid: Option<u32>,
    client: ShimClient<Channel>,
    pids: Vec<u32>,
}

fn signal(pid: u32, signal: rustix::process::Signal) {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .expect("a valid pid");
    let _ = rustix::process::kill_process(pid, signal);
}

impl ShimFixture {
    /// Starts a shim for container `id` (unique per test: it names the cgroup) that runs it
    /// with `executor`.
    pub async fn start(executor: ExecutorKind, id: &str) -> Self {
        let (root, state_dir, executor_root) = Self::dirs(executor, id);
        let options = ShimOptions {
            binary: wharf_binary("wharf-shim"),
            executor,
            executor_root: executor_root.clone(),
            default_runtime: "runc".into(),
            criu: wharf_server::daemon::config::DEFAULT_CRIU_PATH.into(),
            debug: true,
            json_logs: false,
            open_files: None,
        };
        let spawned = spawn_shim(&options, &state_dir).expect("spawning wharf-shim");
        let client = wharf_shim_proto::connect(&spawned.socket)
            .await
            .expect("connecting to the shim");
        Self {
            id: id.to_owned(),
            root: Some(root),
            state_dir,
            executor,
            executor_root,
            child: Some(spawned.child),
            adopted_pid: None,
            client,
            pids: Vec::new(),
        }
    }

    /// Starts a shim through a helper shell that runs it in the background, then SIGKILLs
    /// the helper: the shim must live on without the process that spawned it.
    pub async fn start_orphaned(executor: ExecutorKind, id: &str) -> Self {
        let (root, state_dir, executor_root) = Self::dirs(executor, id);
        let socket = state_dir.join(wharf_shim_proto::SOCKET_NAME);
        let listener = wharf_shim_proto::bind(&socket).expect("binding the shim socket");
        let log = std::fs::File::create(state_dir.join("shim.log")).expect("creating shim.log");
        // A background job's stdin is /dev/null unless redirected: keep the socket on fd 3.
        let script = r#"exec 3<&0; "$0" --socket-from-stdin --debug --executor "$1" --executor-root "$2" <&3 3<&- & echo $!; exec sleep 1000"#;
        let mut helper = Command::new("sh")
            .args(["-c", script])
            .arg(wharf_binary("wharf-shim"))
            .arg(executor.as_str())
            .arg(&executor_root)
            .current_dir(&state_dir)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(listener)))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting the helper shell");
        let mut line = String::new();
        let helper_stdout = helper.stdout.take().expect("helper stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(helper_stdout), &mut line)
            .expect("reading the shim pid from the helper");
        let shim_pid: u32 = line.trim().parse().expect("the helper prints the shim pid");
        helper.kill().expect("SIGKILL to the helper");
        helper.wait().expect("reaping the helper");
        let client = wharf_shim_proto::connect(&socket)
            .await
            .expect("connecting to the orphaned shim");
        Self {
            id: id.to_owned(),
            root: Some(root),
            state_dir,
            executor,
            executor_root,
            child: None,
            adopted_pid: Some(shim_pid),
            client,
            pids: Vec::new(),
        }
    }

    fn dirs(executor: ExecutorKind, id: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let root = tempfile::Builder::new()
            .prefix("wharf-shim-test-")
            .tempdir()
            .expect("creating the test state root");
        let state_dir = root.path().join("state").join(id);
        let executor_root = root.path().join(executor.as_str());
        std::fs::create_dir_all(&state_dir).expect("creating the state dir");
        (root, state_dir, executor_root)
    }

    /// A client of the shim.
    pub fn client(&self) -> ShimClient<Channel> {
        self.client.clone()
    }

    /// The shim's pid.
    pub fn shim_pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .or(self.adopted_pid)
            .unwrap_or(0)
    }

    /// Remembers a container process, to check at the end that it is gone.
    pub fn track(&mut self, pid: u32) {
        self.pids.push(pid);
    }

    /// Opens an `Events` stream.
    pub async fn events(&self) -> Events {
        let stream = self
            .client()
            .events(EventsRequest {})
            .await
            .expect("opening an events stream")
            .into_inner();
        Events { stream }
    }

    /// Sends SIGTERM to the shim, then checks it exits cleanly leaving nothing behind.
    pub async fn terminate(self) {
        signal(self.shim_pid(), rustix::process::Signal::TERM);
        self.assert_clean_exit().await;
    }

    /// Checks that the shim exited on its own (after `Delete` of the init, or a signal) and
    /// that nothing of the container is left: processes, cgroups, runtime state, mounts,
    /// files in the state directory.
    pub async fn assert_clean_exit(mut self) {
        self.check_clean_exit().await;
    }

    async fn check_clean_exit(&mut self) {
        if let Some(mut child) = self.child.take() {
            let mut status = None;
            wait_until("the shim to exit", DEADLINE, || {
                status = child.try_wait().expect("waiting for the shim");
                status.is_some()
            })
            .await;
            let status = status.expect("set when the wait ended");
            assert!(
                status.success(),
                "the shim exited with {status}; log:\n{}",
                self.log()
            );
        } else if let Some(pid) = self.adopted_pid.take() {
            // Not our child: its new parent reaps it (a zombie has exited too).
            wait_until("the adopted shim to exit", DEADLINE, || !process_alive(pid)).await;
        }
        self.assert_nothing_left().await;
    }

    /// Checks that nothing of the container is left (the shim may still run).
    pub async fn assert_nothing_left(&self) {
        for &pid in &self.pids {
            wait_until(
                &format!("container process {pid} to be gone"),
                DEADLINE,
                || !process_exists(pid),
            )
            .await;
        }
        let cgroup = test_cgroup(&self.id);
        wait_until(&format!("cgroup {cgroup} to be removed"), DEADLINE, || {
            cgroup_dirs(&cgroup).is_empty()
        })
        .await;
        let executor_state: Vec<_> = std::fs::read_dir(&self.executor_root)
            .map(|dir| dir.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            executor_state.is_empty(),
            "executor state left in {}: {executor_state:?}",
            self.executor_root.display()
        );
        let leftovers: Vec<String> = std::fs::read_dir(&self.state_dir)
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name != "shim.log")
                    .collect()
            })
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "left in the state dir: {leftovers:?}");
        let root = self
            .root
            .as_ref()
            .expect("root lives until drop")
            .path()
            .display()
            .to_string();
        let mounts = mounts_mentioning(&root);
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    }

    /// The shim's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("shim.log")).unwrap_or_default()
    }
}

impl ShimFixture {
    /// Whether the shim still runs.
    fn shim_running(&mut self) -> bool {
        let child_runs = self
            .child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)));
        child_runs || self.adopted_pid.is_some_and(process_alive)
    }
}

impl Drop for ShimFixture {
    /// After a passing test that left its shim running: the leak check every test gets,
    /// through the shim's own teardown (SIGTERM, as [`ShimFixture::terminate`]), on a
    /// runtime of its own. After a failed test: remove whatever is left, so later tests
    /// start clean.
    fn drop(&mut self) {
        if !std::thread::panicking() && self.shim_running() {
            signal(self.shim_pid(), rustix::process::Signal::TERM);
            if let Err(panic) = crate::system::on_own_runtime(self.check_clean_exit()) {
                self.kill_everything();
                std::panic::resume_unwind(panic);
            }
        }
        self.kill_everything();
    }
}

impl ShimFixture {
    fn kill_everything(&mut self) {
        let shim_left = self.child.is_some() || self.adopted_pid.is_some();
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
        }
        if let Some(pid) = self.adopted_pid.take() {
            signal(pid, rustix::process::Signal::KILL);
        }
        if shim_left {
            eprintln!("--- shim log ---\n{}", self.log());
        }
        kill_cgroup(&test_cgroup(&self.id));
    }
}

/// An `Events` stream with deadlines.
#[derive(Debug)]
pub struct Events {
    stream: Streaming<Event>,
}

impl Events {
    /// The next event; panics after `DEADLINE` or if the stream ends.
    pub async fn next(&mut self) -> Event {
        match tokio::time::timeout(DEADLINE, self.stream.next()).await {
            Ok(Some(Ok(event))) => event,
            Ok(Some(Err(status))) => panic!("events stream failed: {status}"),
            Ok(None) => panic!("events stream ended while an event was awaited"),
            Err(_) => panic!("no event within {DEADLINE:?}"),
        }
    }

    /// The next event of `kind` for `pid`, skipping others.
    pub async fn next_of(&mut self, kind: EventType, pid: u32) -> Event {
        loop {
            let event = self.next().await;
            if event.r#type() == kind && event.pid == pid {
                return event;
            }
        }
    }

    /// The exit status published for `pid`.
    pub async fn exit_status(&mut self, pid: u32) -> u32 {
        self.next_of(EventType::Exit, pid).await.exit_status
    }

    /// Every remaining event, once the stream ends (within a deadline).
    pub async fn rest(mut self) -> Vec<Event> {
        let mut events = Vec::new();
        loop {
            match tokio::time::timeout(DEADLINE, self.stream.next()).await {
                Ok(Some(Ok(event))) => events.push(event),
                Ok(Some(Err(status))) => panic!("events stream failed: {status}"),
                Ok(None) => return events,
                Err(_) => panic!("events stream did not end within {DEADLINE:?}"),
            }
        }
    }
}
