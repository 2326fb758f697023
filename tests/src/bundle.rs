//! OCI bundles on a shared, read-only busybox rootfs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use wharf_executor::oci_spec::runtime::{
    LinuxBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec,
};

use crate::system::{BUSYBOX, target_dir};

/// The cgroup (relative to each hierarchy's root) the tests give container `id`; a direct
/// child of the root, so nothing of it remains once the runtime removes the leaf.
pub fn test_cgroup(id: &str) -> String {
    format!("wharf-test-{id}")
}

/// The busybox rootfs shared by every test container (mounted read-only), built on first
/// use from `/bin/busybox`: the binary, a relative symlink per applet, and the usual dirs.
pub fn rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let path = target_dir().join("busybox-rootfs");
        if !path.join("bin/busybox").exists() {
            build_rootfs(&path);
        }
        path
    })
}

fn build_rootfs(path: &Path) {
    let parent = path.parent().expect("the rootfs has a parent dir");
    std::fs::create_dir_all(parent).expect("creating the rootfs parent");
    let staging = tempfile::tempdir_in(parent).expect("creating a staging dir for the rootfs");
    let root = staging.path();
    for dir in [
        "bin", "dev", "etc", "proc", "sys", "tmp", "root", "home", "var", "run", "usr",
    ] {
        std::fs::create_dir_all(root.join(dir)).expect("creating rootfs dirs");
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).expect("copying busybox");
    let list = std::process::Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .expect("listing busybox applets");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = root.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", link).expect("linking a busybox applet");
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("writing /etc/passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")
        .expect("writing /etc/group");
    // Another test binary may have built it meanwhile: then keep theirs.
    let staged = staging.keep();
    if std::fs::rename(&staged, path).is_err() {
        let _ = std::fs::remove_dir_all(&staged);
    }
}

/// A bundle directory holding `config.json`; removed on drop.
#[derive(Debug)]
pub struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    /// A bundle running `args` as container `id` (which names its cgroup), without a terminal.
    pub fn new(id: &str, args: &[&str]) -> Self {
        Self::with(id, args, |_| {})
    }

    /// Like [`Bundle::new`], then `edit` changes the spec.
    pub fn with(id: &str, args: &[&str], edit: impl FnOnce(&mut Spec)) -> Self {
        let mut spec = spec(id, args);
        edit(&mut spec);
        let dir = tempfile::Builder::new()
            .prefix("wharf-bundle-")
            .tempdir()
            .expect("creating a bundle dir");
        spec.save(dir.path().join("config.json"))
            .expect("writing config.json");
        Self { dir }
    }

    /// The bundle's absolute path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The bundle's path as the API wants it.
    pub fn path_string(&self) -> String {
        self.dir.path().display().to_string()
    }
}

fn spec(id: &str, args: &[&str]) -> Spec {
    let mut spec = Spec::default();
    let root = RootBuilder::default()
        .path(rootfs())
        .readonly(true)
        .build()
        .expect("building the root");
    spec.set_root(Some(root));
    spec.set_hostname(Some("wharf".into()));
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
        .env(vec![
            "PATH=/bin".to_string(),
            "HOME=/root".to_string(),
            "TERM=xterm".to_string(),
        ])
        .cwd("/")
        .capabilities(
            spec.process()
                .as_ref()
                .and_then(|p| p.capabilities().clone())
                .unwrap_or_default(),
        )
        .no_new_privileges(true)
        .build()
        .expect("building the process");
    spec.set_process(Some(process));
    let mut mounts: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
    mounts.push(
        MountBuilder::default()
            .destination("/tmp")
            .typ("tmpfs")
            .source("tmpfs")
            .options(vec!["nosuid".into(), "nodev".into(), "mode=1777".into()])
            .build()
            .expect("building the /tmp mount"),
    );
    spec.set_mounts(Some(mounts));
    let mut linux = spec
        .linux()
        .clone()
        .unwrap_or_else(|| LinuxBuilder::default().build().expect("linux"));
    linux.set_cgroups_path(Some(PathBuf::from(format!("/{}", test_cgroup(id)))));
    spec.set_linux(Some(linux));
    spec
}
