//! What the tests need from the machine, and checks on what they leave behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Whether CI is running us: then a missing prerequisite fails the test instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Why container tests cannot run here, if they cannot: not root, no runc, no busybox-static.
pub fn missing_prerequisite() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root".into());
    }
    if !command_works("runc", &["--version"]) {
        return Some("needs runc (cargo xtask setup installs it)".into());
    }
    missing_busybox()
}

/// Why the busybox rootfs cannot be built here, if it cannot.
pub fn missing_busybox() -> Option<String> {
    let is_static = std::fs::read(BUSYBOX).is_ok_and(|elf| is_static_elf64(&elf));
    (!is_static).then(|| {
        format!("needs a static {BUSYBOX} from busybox-static (cargo xtask setup installs it)")
    })
}

/// Prints why `test` is skipped, or fails it under CI.
pub fn skip_or_fail(test: &str, reason: &str) {
    assert!(
        !in_ci(),
        "{test}: {reason}, and CI is set: nothing may be skipped in CI"
    );
    eprintln!("SKIP {test}: {reason}");
}

/// Returns from the test (printing why) unless it can run containers here; under CI, fails.
#[macro_export]
macro_rules! require_containers {
    () => {
        if let Some(reason) = $crate::system::missing_prerequisite() {
            $crate::system::skip_or_fail(module_path!(), &reason);
            return;
        }
    };
}

fn command_works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The static busybox the test rootfs is made of.
pub const BUSYBOX: &str = "/bin/busybox";

/// `target/` of this build (the test binary runs from `target/<profile>/deps/`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    exe.ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == "target"))
        .map(Path::to_path_buf)
        .unwrap_or_else(|| {
            exe.parent()
                .and_then(Path::parent)
                .and_then(Path::parent)
                .unwrap_or(Path::new("."))
                .to_path_buf()
        })
}

/// The directory holding this build's binaries (`target/debug`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // Tests and benches run from target/<profile>/deps/, binaries from target/<profile>/.
    let dir = exe.parent().expect("an executable lives in a directory");
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a wharf binary (`wharf-shim`, ...), built fresh from this workspace on first use,
/// so a test never runs a stale binary. `WHARF_BIN_DIR` points elsewhere.
pub fn wharf_binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        if let Ok(dir) = std::env::var("WHARF_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let dir = profile_dir();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "--package", "wharf-server", "--bins"]);
        if dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build for the wharf binaries");
        assert!(status.success(), "cargo build of the wharf binaries failed");
        dir
    });
    dir.join(name)
}

/// Polls `done` every 10 ms until it holds; panics naming `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Like [`wait_until`] for a check that must await (e.g. an RPC).
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a process with this pid exists (a zombie counts).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// How many file descriptors `pid` has open (0 if it is gone).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Whether a process with this pid runs (exists and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Every cgroup directory named `name` directly under a hierarchy root (v1 controllers and
/// the v2 unified tree).
pub fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let fstype = fields.get(sep + 1).copied().unwrap_or_default();
        if (fstype == "cgroup" || fstype == "cgroup2") && fields.len() > 4 {
            let dir = Path::new(fields[4]).join(name);
            if dir.exists() {
                found.push(dir);
            }
        }
    }
    found
}

/// After a failed test: thaws cgroup `name`, SIGKILLs every process in it and removes its
/// directories, whatever executor made it.
pub fn kill_cgroup(name: &str) {
    let _ = std::fs::write(
        format!("/sys/fs/cgroup/freezer/{name}/freezer.state"),
        "THAWED",
    );
    for dir in cgroup_dirs(name) {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .lines()
            .filter_map(|line| line.trim().parse::<i32>().ok())
        {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let dirs = cgroup_dirs(name);
        if dirs.is_empty() {
            break;
        }
        for dir in dirs {
            let _ = std::fs::remove_dir(dir);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines of this process's mount table that mention `needle`.
pub fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// The freezer state of a v1 cgroup (`FROZEN`, `THAWED`), if the freezer is mounted.
pub fn freezer_state(cgroup: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/fs/cgroup/freezer/{cgroup}/freezer.state"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Whether `elf` is a 64-bit little-endian executable without an interpreter (`PT_INTERP`),
/// i.e. one that runs in a rootfs holding nothing else.
fn is_static_elf64(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = usize::try_from(phoff)
            .unwrap_or(usize::MAX)
            .saturating_add(i * usize::from(phentsize));
        u32_at(at).is_some_and(|kind| kind != PT_INTERP)
    })
}

/// Runs `work` to completion on a fresh single-threaded runtime in a thread of its own, for
/// async work in a `Drop` (where the test's runtime may be the one blocked); a panic in
/// `work` comes back as the `Err`.
pub fn on_own_runtime<T: Send>(work: impl Future<Output = T> + Send) -> std::thread::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime of its own")
                    .block_on(work)
            })
            .join()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_static_from_dynamic_executables() {
        // /bin/sh is dynamic on Debian; busybox-static's busybox is not.
        assert!(!is_static_elf64(&std::fs::read("/bin/sh").unwrap()));
        assert!(!is_static_elf64(b"not an elf"));
        if in_ci() || Path::new(BUSYBOX).exists() {
            assert!(
                is_static_elf64(&std::fs::read(BUSYBOX).unwrap()),
                "{BUSYBOX} is not static"
            );
        }
    }
}
